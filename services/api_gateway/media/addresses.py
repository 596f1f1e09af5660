"""Which IP addresses the image fetcher may connect to.

Default: only globally routable unicast addresses. Refused: loopback, private, link-local (cloud metadata
169.254.169.254), CGNAT, multicast, reserved, unspecified (0.0.0.0, ::), and IPv6 forms that embed one
of those IPv4 addresses (IPv4-mapped, 6to4, Teredo, NAT64). Operators may allow given CIDRs (e.g. an
internal image store). A refusal names the address's class and its registry block ("a private address
(10.0.0.0/8)"), never the address itself: the class is a public fact, the address a DNS answer the client
may not be able to see from outside.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# What a refused address is, from the IANA special-purpose registries; the first match names it.
_KINDS = [
    (ipaddress.ip_network(block), kind)
    for block, kind in (
        ("0.0.0.0/8", "an unspecified address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local/metadata address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("100::/64", "a discard-only address"),
        ("2001:db8::/32", "a documentation address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("ff00::/8", "a multicast address"),
    )
]


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address can route to."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or address in _NAT64_LOCAL:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def ip_of(text: str) -> IPAddress | None:
    """`text` as an IP address (an IPv6 zone, `%eth0`, dropped), or None when it is not one (a host name)."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def describe(address: IPAddress) -> str:
    """What a non-public address is, for an error message: "a loopback address (127.0.0.0/8)"."""
    for block, kind in _KINDS:
        if address.version == block.version and address in block:
            return f"{kind} ({block})"
    inner = [a for a in embedded_ipv4(address) if not _is_public(a)]
    if inner:
        return f"an IPv6 form of {describe(inner[0])}"
    return "a non-public address"


def _is_public(address: IPAddress) -> bool:
    if not address.is_global or address.is_multicast or address.is_unspecified or address.is_reserved:
        return False
    return all(_is_public(inner) for inner in embedded_ipv4(address))


class AddressPolicy:
    """Decides whether one resolved address may be connected to."""

    def __init__(self, allowed_networks: Iterable[str] = ()) -> None:
        self._allowed = [ipaddress.ip_network(cidr, strict=False) for cidr in allowed_networks]

    def permits(self, address: str) -> bool:
        """True for public addresses and for addresses inside an operator-allowed network."""
        return self.refusal(address) is None

    def refusal(self, address: str) -> str | None:
        """None when `address` may be connected to; else what it is (see `describe`)."""
        ip = ip_of(address)
        if ip is None:
            return "not an IP address"
        candidates = [ip, *embedded_ipv4(ip)]
        if any(c in net for c in candidates for net in self._allowed if c.version == net.version):
            return None
        return None if _is_public(ip) else describe(ip)
