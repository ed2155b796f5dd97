"""Outbound URL policy for analysis services (guards against SSRF).

Rules, in order:
1. the URL must be absolute ``http`` or ``https`` with a host and no credentials;
2. link-local (169.254.0.0/16, fe80::/10) and cloud-metadata hosts and addresses are always
   refused, also inside IPv4-mapped and 6to4 IPv6 addresses, and also for allowed hosts;
3. hosts listed in ``SKYHOOK_ALLOWED_URL_HOSTS`` are otherwise allowed;
4. unspecified (0.0.0.0, ::), multicast and reserved addresses are refused;
5. loopback addresses only with ``SKYHOOK_ALLOW_LOOPBACK_URLS``; private, shared and
   unique-local ranges only with ``SKYHOOK_ALLOW_PRIVATE_URLS``.

Host names are resolved and every address they resolve to must pass. The dispatcher checks
again at send time, since DNS answers may change after registration.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


class URLPolicyError(ValueError):
    """The URL breaks the policy; the message says why."""


@dataclass(frozen=True)
class URLPolicy:
    allow_private: bool = False
    allow_loopback: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)

    def check_syntax(self, url: str) -> tuple[str, int]:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise URLPolicyError("must be an absolute http(s) URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise URLPolicyError("has an invalid port") from exc
        if parts.username or parts.password:
            raise URLPolicyError("must not embed credentials; use authentication_type instead")
        # A trailing dot names the same host; drop it so host lists match.
        return parts.hostname.lower().rstrip("."), port

    def check_address(self, host: str, address: IPAddress, *, allowed: bool = False) -> None:
        if isinstance(address, ipaddress.IPv6Address):
            address = address.ipv4_mapped or address.sixtofour or address
        if address in METADATA_ADDRESSES or address.is_link_local:
            raise URLPolicyError(f"points to a link-local or metadata address ({address})")
        if allowed:
            return
        # 0.0.0.0 and :: reach the local host on Linux, so they are never "private" targets.
        if address.is_unspecified or address.is_multicast:
            raise URLPolicyError(f"points to a reserved address ({address})")
        if address.is_loopback:
            if not self.allow_loopback:
                raise URLPolicyError(
                    f"points to a loopback address ({address}); "
                    "set SKYHOOK_ALLOW_LOOPBACK_URLS=true to allow it"
                )
            return
        if address.is_reserved:
            raise URLPolicyError(f"points to a reserved address ({address})")
        if address.is_private or address in ipaddress.ip_network("100.64.0.0/10"):
            if not self.allow_private:
                raise URLPolicyError(
                    f"points to a private address ({address}); "
                    "set SKYHOOK_ALLOW_PRIVATE_URLS=true to allow it"
                )
            return

    async def check(self, url: str) -> None:
        host, port = self.check_syntax(url)
        if host in METADATA_HOSTS:
            raise URLPolicyError(f"points to a cloud metadata host ({host})")
        allowed = host in self.allowed_hosts
        try:
            addresses = await self._resolve(host, port)
        except URLPolicyError:
            if allowed:
                return  # an operator-listed host; the dispatcher checks again at send time
            raise
        for address in addresses:
            self.check_address(host, address, allowed=allowed)

    @staticmethod
    async def _resolve(host: str, port: int) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise URLPolicyError(f"host {host!r} cannot be resolved") from exc
        return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
