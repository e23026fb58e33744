"""The internal-network guard for hosts that users type (``netguard``).

Names resolve through a resolver with fixed answers (the ``resolve`` seam), so the
guard's success path is tested with public addresses that are never contacted, and
every refusal is tested on every Python line: :mod:`ipaddress` judges some IPv6 ranges
differently from one version to the next (6to4 is "global" on 3.11 and 3.12).
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from django_multismtp.netguard import InternalAddressError, public_addresses

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def resolver(*addresses: str):
    """``getaddrinfo`` with fixed answers: one entry per socket type, like the real one,
    unless a type is asked for."""

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        types = [type] if type else [socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW]
        infos = []
        for address in addresses:
            family_ = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family_ == socket.AF_INET6 else (address, port)
            infos += [(family_, kind, 0, "", sockaddr) for kind in types]
        return infos

    return resolve


def teredo(server: str, client: str) -> str:
    """A Teredo address (RFC 4380): the client's address is stored inverted."""
    value = (
        (0x20010000 << 96)
        | (int(ipaddress.IPv4Address(server)) << 64)
        | (0xFFFF << 32)
        | (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)
    )
    return str(ipaddress.IPv6Address(value))


def refusal(address: str) -> str:
    with pytest.raises(InternalAddressError) as caught:
        public_addresses("mail.example.com", 587, resolve=resolver(address))
    return str(caught.value)


# -- the success path -------------------------------------------------------------------


def test_a_public_host_gives_its_addresses_in_order():
    found = public_addresses("mail.example.com", 587, resolve=resolver(PUBLIC_V4, PUBLIC_V6))
    assert found == [(socket.AF_INET, PUBLIC_V4), (socket.AF_INET6, PUBLIC_V6)]


def test_an_address_given_twice_is_connected_to_once():
    found = public_addresses("mail.example.com", 587, resolve=resolver(PUBLIC_V4, PUBLIC_V4))
    assert found == [(socket.AF_INET, PUBLIC_V4)]


def test_a_public_ipv4_address_in_ipv6_notation_is_public():
    mapped = f"::ffff:{PUBLIC_V4}"
    found = public_addresses("mail.example.com", 587, resolve=resolver(mapped))
    assert found == [(socket.AF_INET6, mapped)]


def test_the_system_resolver_is_the_default():
    # A numeric host: getaddrinfo answers without asking DNS, and nothing is contacted.
    assert public_addresses(PUBLIC_V4, 587) == [(socket.AF_INET, PUBLIC_V4)]


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "169.254.169.254",  # cloud metadata services
        "100.100.100.200",  # Alibaba Cloud's metadata service (shared 100.64.0.0/10)
        "100.64.0.1",  # carrier-grade NAT, Tailscale hosts
        "0.0.0.0",  # noqa: S104 (refused, never bound)
        "224.0.0.1",  # multicast: "global" to ipaddress
        "240.0.0.1",  # reserved
        "::1",
        "::",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",  # multicast
        "4000::1",  # reserved (unallocated): "global" to ipaddress
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_internal_addresses_are_refused(address):
    message = refusal(address)
    assert message == (
        f"mail.example.com resolves to the internal address {address}, which is not allowed"
    )


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4
        ("2002:7f00:1::1", "127.0.0.1"),
        ("2002:a00:1::", "10.0.0.1"),
        ("2002:6464:64c8::1", "100.100.100.200"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64
        ("64:ff9b::a00:1", "10.0.0.1"),
        (teredo("65.54.227.120", "10.0.0.1"), "10.0.0.1"),  # Teredo: the client
        (teredo("65.54.227.120", "169.254.169.254"), "169.254.169.254"),
    ],
)
def test_ipv6_addresses_carrying_an_internal_ipv4_address_are_refused(address, inner):
    assert refusal(address) == (
        f"mail.example.com resolves to the internal address {address} (it carries {inner}), "
        "which is not allowed"
    )


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::808:808",  # NAT64 of a public address: the prefix is reserved
        teredo("65.54.227.120", PUBLIC_V4),  # Teredo is a private range
    ],
)
def test_gateway_ranges_are_refused_whatever_they_carry(address):
    assert refusal(address) == (
        f"mail.example.com resolves to the internal address {address}, which is not allowed"
    )


def test_a_name_with_one_internal_address_among_public_ones_is_refused():
    resolve = resolver(PUBLIC_V4, "10.0.0.5", PUBLIC_V6)
    with pytest.raises(InternalAddressError, match=r"internal address 10\.0\.0\.5,"):
        public_addresses("mail.example.com", 587, resolve=resolve)


def test_a_name_that_does_not_resolve_is_an_error():
    def resolve(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(socket.gaierror):
        public_addresses("nowhere.example.com", 587, resolve=resolve)
