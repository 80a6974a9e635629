"""Where a webhook delivery may connect: the SSRF rule, judged at connect time.

An endpoint's URL is checked when it is written, but the name in it may resolve
elsewhere later (DNS rebinding), so the addresses are judged again each time a
connection is made, by the resolver the delivery's connector uses: only addresses that
pass are handed to the connector, which connects to exactly those. A URL whose host is
an address literal never reaches a resolver (aiohttp skips it), so `literal_refused`
judges such a host before the request.

The rule (`address_refused`, a pure function): link-local, cloud-metadata, multicast,
unspecified and reserved addresses are refused always; loopback, private and shared
(carrier-grade NAT) ones unless the endpoint allows private networks.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance-metadata services that are not link-local: Alibaba's, and AWS's over IPv6.
_METADATA = frozenset(
    {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class AddressRefused(OSError):
    """No address of the endpoint's host may be connected to."""


def address_refused(address: IPAddress, allow_private_network: bool) -> str | None:
    """Why a delivery may not connect to `address`, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA or address.is_link_local:
        return "link-local and metadata addresses are never allowed"
    if address.is_multicast or address.is_unspecified:
        return "the address cannot be a webhook endpoint"
    # Before `is_reserved`, which also covers IPv6 loopback (::/8).
    if address.is_loopback or address.is_private or address in _SHARED:
        if allow_private_network:
            return None
        return "private addresses are allowed only with allow_private_network"
    if address.is_reserved:
        return "the address cannot be a webhook endpoint"
    return None


def literal_refused(host: str, allow_private_network: bool) -> str | None:
    """The rule for a URL host that is an address literal; None for a name."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return address_refused(address, allow_private_network)


class GuardedResolver(AbstractResolver):
    """Resolves as the default resolver does, then keeps only the allowed addresses."""

    def __init__(self, allow_private_network: bool) -> None:
        self.allow_private_network = allow_private_network
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        resolved = await self._inner.resolve(host, port, family)
        allowed = []
        reasons = set()
        for result in resolved:
            refused = address_refused(
                ipaddress.ip_address(result["host"]), self.allow_private_network
            )
            if refused is None:
                allowed.append(result)
            else:
                reasons.add(refused)
        if not allowed:
            raise AddressRefused(f"the endpoint's host is refused: {'; '.join(sorted(reasons))}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def tls_context() -> ssl.SSLContext:
    """The system's trust store, TLS 1.2 or newer."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def connector(allow_private_network: bool, **options: Any) -> aiohttp.TCPConnector:
    """A connector for deliveries to endpoints with this setting."""
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private_network), ssl=tls_context(), **options
    )
