"""The dispatcher's DNS resolver: where the URL policy is applied to host names.

Registration does not resolve names; this resolver does, once per connection: it resolves the
name, checks every address against the policy and hands aiohttp only the allowed ones, so
aiohttp connects to exactly the addresses that were checked (no second lookup in between for
DNS rebinding to slip into). A name whose every address is refused raises ``URLPolicyError``;
a name that does not resolve raises the inner resolver's ``OSError`` (aiohttp's DNS error).
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from shared.security.urlpolicy import URLPolicy


class PolicyResolver(AbstractResolver):
    def __init__(self, policy: URLPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self._policy.check_host_name(host)
        results = await self._inner.resolve(host, port, family)
        addresses = [ipaddress.ip_address(r["host"].split("%", 1)[0]) for r in results]
        allowed = set(self._policy.allowed_addresses(host, addresses))
        return [r for r, address in zip(results, addresses, strict=True) if address in allowed]

    async def close(self) -> None:
        await self._inner.close()
