"""Outbound URL policy for analysis services (guards against SSRF).

Rules, in order:
1. the URL must be absolute ``http`` or ``https`` with a host and no credentials;
2. link-local (169.254.0.0/16, fe80::/10) and cloud-metadata hosts and addresses are always
   refused, also inside IPv4-mapped and 6to4 IPv6 addresses, and also for allowed hosts;
3. hosts listed in ``SKYHOOK_ALLOWED_URL_HOSTS`` are otherwise allowed;
4. unspecified (0.0.0.0, ::), multicast and reserved addresses are refused;
5. loopback addresses only with ``SKYHOOK_ALLOW_LOOPBACK_URLS``; private, shared and
   unique-local ranges only with ``SKYHOOK_ALLOW_PRIVATE_URLS``.

Registration checks only what needs no lookup (:meth:`URLPolicy.check_url`): the syntax,
metadata host names and literal addresses. Host names are resolved when a request is sent, once,
by the dispatcher's resolver (:meth:`URLPolicy.allowed_addresses`): only the addresses that pass
are handed to the connection, so what was checked is what is connected to.
"""

from __future__ import annotations

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

    def check_url(self, url: str) -> tuple[str, int]:
        """(host, port) when the URL passes every rule that needs no DNS lookup."""
        host, port = self.check_syntax(url)
        self.check_host_name(host)
        address = literal_address(host)
        if address is not None:
            self.check_address(host, address, allowed=host in self.allowed_hosts)
        return host, port

    @staticmethod
    def check_host_name(host: str) -> None:
        name = host.lower().rstrip(".")
        if name in METADATA_HOSTS:
            raise URLPolicyError(f"points to a cloud metadata host ({name})")

    def allowed_addresses(self, host: str, addresses: list[IPAddress]) -> list[IPAddress]:
        """The addresses a host name resolved to that the policy allows; URLPolicyError (the
        first refusal) when none is."""
        self.check_host_name(host)
        name = host.lower().rstrip(".")
        allowed, refusals = [], []
        for address in addresses:
            try:
                self.check_address(name, address, allowed=name in self.allowed_hosts)
            except URLPolicyError as exc:
                refusals.append(exc)
            else:
                allowed.append(address)
        if not allowed:
            raise refusals[0] if refusals else URLPolicyError(f"host {name!r} has no address")
        return allowed


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as an address means (IPv6 in brackets or with a zone,
    dotted IPv4 and its legacy forms such as ``2130706433`` or ``0x7f.1``); None for a name.
    Parsing only: never a DNS lookup."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None
