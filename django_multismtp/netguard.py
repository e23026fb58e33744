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
from collections.abc import Callable
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: NAT64's well-known prefix (RFC 6052): ``64:ff9b::a9fe:a9fe`` is 169.254.169.254.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

#: ``socket.getaddrinfo``'s signature; tests pass a resolver with fixed answers.
Resolver = Callable[..., list[tuple[Any, ...]]]


class InternalAddressError(OSError):
    """The host resolves to a loopback, private, link-local or otherwise internal address."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to a gateway, if any.

    6to4 (``2002::/16``), Teredo (``2001::/32``, its client) and NAT64
    (``64:ff9b::/96``) addresses reach the IPv4 address inside them (IPv4-mapped ones,
    ``::ffff:0:0/96``, are IPv4 addresses and judged as such by the caller).
    Which of these ranges :mod:`ipaddress` itself calls non-global changed between
    Python versions (6to4 is "global" on 3.11 and 3.12, "private" on 3.13), so the
    embedded address is checked on its own, the same on every version.
    """
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _not_public(ip: IPAddress) -> bool:
    # ``is_global`` is False for private, loopback, link-local, unspecified, shared
    # (100.64.0.0/10: carrier-grade NAT, Alibaba Cloud's metadata service, Tailscale) and
    # documentation ranges; multicast and reserved (unallocated) ones count as "global"
    # there, so they are named too.
    return not ip.is_global or ip.is_multicast or ip.is_reserved


def _internal_reason(address: str) -> str | None:
    """Why ``address`` is internal ("" for no detail), or None when it is public."""
    ip = ipaddress.ip_address(address)  # scoped IPv6 ("fe80::1%eth0") included
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # An IPv4 address in IPv6 notation: judged as itself (the range ::ffff:0:0/96
        # is "private" to ipaddress whatever it holds).
        ip = ip.ipv4_mapped
    inner = embedded_ipv4(ip)
    if inner is not None and _not_public(inner):
        return f" (it carries {inner})"
    if _not_public(ip):
        return ""
    return None


def public_addresses(
    host: str, port: int, *, resolve: Resolver = socket.getaddrinfo
) -> list[tuple[int, str]]:
    """Resolve ``host`` and return ``(family, address)`` pairs, refusing internal ones.

    Raises :class:`InternalAddressError` if any address is internal (a name resolving to
    both public and internal addresses is refused too), ``socket.gaierror`` if it does
    not resolve. ``resolve`` is :func:`socket.getaddrinfo`; tests give fixed answers.
    """
    infos = resolve(host, port, type=socket.SOCK_STREAM)
    result: list[tuple[int, str]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        reason = _internal_reason(address)
        if reason is not None:
            raise InternalAddressError(
                f"{host} resolves to the internal address {address}{reason}, which is not allowed"
            )
        if (family, address) not in result:
            result.append((family, address))
    return result
