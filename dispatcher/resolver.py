"""A DNS resolver that applies the URL policy to the addresses actually connected to.

The policy is checked before each attempt, but a host name may resolve differently a moment
later (DNS rebinding). Checking every address the connector receives closes that gap: a
refused address raises ``URLPolicyError`` instead of being connected to.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from shared.urlpolicy import METADATA_HOSTS, URLPolicy, URLPolicyError


class PolicyResolver(AbstractResolver):
    def __init__(self, policy: URLPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        name = host.lower().rstrip(".")
        if name in METADATA_HOSTS:
            raise URLPolicyError(f"points to a cloud metadata host ({name})")
        allowed = name in self._policy.allowed_hosts
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            self._policy.check_address(name, address, allowed=allowed)
        return results

    async def close(self) -> None:
        await self._inner.close()
