"""Refuse SMTP hosts on internal networks for accounts that users type themselves.

A "My SMTP settings" page that connects wherever a user says would turn the site into a
port scanner of its own network. Hosts of such accounts must resolve to public
addresses, and the check is made on the address actually connected to: the transport
resolves the name once, checks every address, and connects the socket to the checked
address itself (so DNS cannot answer differently between check and connect).
"""

from __future__ import annotations

import ipaddress
import socket


class InternalAddressError(OSError):
    """The host resolves to a loopback, private, link-local or otherwise internal address."""


def is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def public_addresses(host: str, port: int) -> list[tuple[int, str]]:
    """Resolve ``host`` and return ``(family, address)`` pairs, refusing internal ones.

    Raises :class:`InternalAddressError` if any address is internal (a name resolving to
    both public and internal addresses is refused too), ``socket.gaierror`` if it does
    not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    result: list[tuple[int, str]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if is_internal(address):
            raise InternalAddressError(
                f"{host} resolves to the internal address {address}, which is not allowed"
            )
        if (family, address) not in result:
            result.append((family, address))
    return result
