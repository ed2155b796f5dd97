"""The outbound URL policy (SSRF guard) for analysis-service URLs: what is checked without a
lookup (registration), and what the dispatcher's resolver lets through when it sends."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher.resolver import PolicyResolver
from shared.security.urlpolicy import URLPolicy, URLPolicyError

STRICT = URLPolicy()
LOOPBACK_ONLY = URLPolicy(allow_loopback=True)
PRIVATE_ONLY = URLPolicy(allow_private=True)
PERMISSIVE = URLPolicy(allow_private=True, allow_loopback=True)


async def refused(policy: URLPolicy, url: str) -> str:
    with pytest.raises(URLPolicyError) as caught:
        policy.check_url(url)
    return str(caught.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://8.8.8.8/x", "must be an absolute http(s) URL"),
        ("file:///etc/passwd", "must be an absolute http(s) URL"),
        ("javascript:alert(1)", "must be an absolute http(s) URL"),
        ("http:///no-host", "must be an absolute http(s) URL"),
        ("//8.8.8.8/x", "must be an absolute http(s) URL"),
        ("8.8.8.8/x", "must be an absolute http(s) URL"),
        ("", "must be an absolute http(s) URL"),
        ("http://8.8.8.8:99999/", "has an invalid port"),
        ("http://user:pw@8.8.8.8/", "must not embed credentials"),
        ("http://user@8.8.8.8/", "must not embed credentials"),
        ("http://:pw@8.8.8.8/", "must not embed credentials"),
        ("http://127.0.0.1\\@8.8.8.8/", "must not embed credentials"),
    ],
)
async def test_malformed_urls_and_credentials_are_refused(url: str, reason: str) -> None:
    assert reason in await refused(PERMISSIVE, url)


METADATA_AND_LINK_LOCAL = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254./latest/meta-data/",
    "http://169.254.0.1:8080/",
    "http://100.100.100.200/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fd00:ec2::254]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 wrapping of 169.254.169.254
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./computeMetadata/v1/",
    "http://METADATA/",
    "http://instance-data/",
]


@pytest.mark.parametrize("url", METADATA_AND_LINK_LOCAL)
async def test_metadata_and_link_local_are_always_refused(url: str) -> None:
    message = await refused(PERMISSIVE, url)
    assert message.startswith(
        ("points to a cloud metadata host", "points to a link-local or metadata address")
    )
    host = url.split("//", 1)[1].split("/", 1)[0].strip("[]").lower().rstrip(".")
    everything_allowed = URLPolicy(True, True, frozenset({host, host.split("%")[0]}))
    assert await refused(everything_allowed, url)


LOOPBACK = [
    ("http://127.0.0.1:8000/x", "127.0.0.1"),
    ("http://127.9.9.9/", "127.9.9.9"),
    ("http://[::1]:8000/", "::1"),
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
    ("http://2130706433/", "127.0.0.1"),  # 127.0.0.1 as one decimal number
    ("http://0x7f.1/", "127.0.0.1"),
]


@pytest.mark.parametrize(("url", "address"), LOOPBACK)
async def test_loopback_only_when_allowed(url: str, address: str) -> None:
    message = await refused(STRICT, url)
    assert message == (
        f"points to a loopback address ({address}); "
        "set SKYHOOK_ALLOW_LOOPBACK_URLS=true to allow it"
    )
    assert "loopback" in await refused(PRIVATE_ONLY, url)
    LOOPBACK_ONLY.check_url(url)
    PERMISSIVE.check_url(url)


PRIVATE = [
    ("http://10.0.0.1/", "10.0.0.1"),
    ("http://172.16.5.4/", "172.16.5.4"),
    ("http://192.168.1.1:5000/", "192.168.1.1"),
    ("http://100.64.0.1/", "100.64.0.1"),  # carrier-grade NAT (shared address space)
    ("http://[fd12:3456::1]/", "fd12:3456::1"),
    ("http://[::ffff:10.0.0.1]/", "10.0.0.1"),
    ("http://[2002:a00:1::1]/", "10.0.0.1"),  # 6to4 wrapping of 10.0.0.1
]


@pytest.mark.parametrize(("url", "address"), PRIVATE)
async def test_private_only_when_allowed(url: str, address: str) -> None:
    message = await refused(STRICT, url)
    assert message == (
        f"points to a private address ({address}); set SKYHOOK_ALLOW_PRIVATE_URLS=true to allow it"
    )
    assert "private" in await refused(LOOPBACK_ONLY, url)
    PRIVATE_ONLY.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://0.0.0.0:8000/",  # reaches the local host on Linux
        "http://0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://[64:ff9b::a9fe:a9fe]/",
    ],
)
async def test_unspecified_multicast_and_reserved_are_refused_even_when_permissive(
    url: str,
) -> None:
    assert "reserved" in await refused(PERMISSIVE, url)


@pytest.mark.parametrize(
    "url",
    [
        "http://8.8.8.8/analysis",
        "https://1.1.1.1:8443/run?x=1",
        "http://[2001:4860:4860::8888]/",
        "HTTPS://8.8.4.4/",
    ],
)
async def test_public_addresses_pass_the_strict_policy(url: str) -> None:
    STRICT.check_url(url)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The host names passed to the system resolver while the test runs."""
    asked: list[Any] = []
    real = socket.getaddrinfo

    def recording(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    return asked


async def test_host_names_are_checked_without_a_lookup(lookups: list[Any]) -> None:
    """SkyPortal's documented example registers although the name does not resolve."""
    url = "http://amazing.analysis.edu:6801/analysis/rrl_analysis"
    assert STRICT.check_url(url) == ("amazing.analysis.edu", 6801)
    assert STRICT.check_url("http://skyhook-no-such-host.invalid/x")[0] == (
        "skyhook-no-such-host.invalid"
    )
    assert STRICT.check_url("http://localhost:8000/")[0] == "localhost"  # checked when sent
    assert lookups == []


class _FixedResolver(AbstractResolver):
    """What a DNS server answered for any name (the connector's own lookup)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_the_resolver_hands_over_only_the_allowed_addresses() -> None:
    dns = _FixedResolver("10.0.0.7", "93.184.216.34", "127.0.0.1", "ff02::1")
    resolved = await PolicyResolver(STRICT, dns).resolve("mixed.example", 443)
    assert [r["host"] for r in resolved] == ["93.184.216.34"]
    assert dns.asked == ["mixed.example"]  # one lookup, and the checked answer is the one used
    everything = await PolicyResolver(PERMISSIVE, dns).resolve("mixed.example", 443)
    assert [r["host"] for r in everything] == ["10.0.0.7", "93.184.216.34", "127.0.0.1"]


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (("127.0.0.1", "::1"), "points to a loopback address (127.0.0.1)"),
        (("10.1.2.3",), "points to a private address (10.1.2.3)"),
        (("169.254.169.254",), "points to a link-local or metadata address"),
    ],
)
async def test_a_name_resolving_only_to_refused_addresses_is_refused(
    addresses: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(URLPolicyError) as caught:
        await PolicyResolver(STRICT, _FixedResolver(*addresses)).resolve("sneaky.example", 80)
    assert str(caught.value).startswith(reason)


async def test_localhost_is_refused_when_resolved() -> None:
    with pytest.raises(URLPolicyError) as caught:
        await PolicyResolver(STRICT).resolve("localhost", 80, socket.AF_UNSPEC)
    assert "points to a loopback address" in str(caught.value)
    allowed = URLPolicy(allowed_hosts=frozenset({"localhost"}))
    assert await PolicyResolver(allowed).resolve("localhost", 80, socket.AF_INET)
    dns = _FixedResolver("93.184.216.34")
    with pytest.raises(URLPolicyError, match="cloud metadata host"):
        await PolicyResolver(PERMISSIVE, dns).resolve("Metadata.Google.Internal.", 80)
    assert dns.asked == []


async def test_allowed_hosts_bypass_loopback_and_private_rules_only() -> None:
    policy = URLPolicy(allowed_hosts=frozenset({"localhost", "10.1.2.3", "svc.cluster.invalid"}))
    policy.check_url("http://localhost:8000/x")
    policy.check_url("http://LocalHost./x")
    policy.check_url("http://10.1.2.3/x")
    policy.check_url("https://svc.cluster.invalid/x")
    assert "loopback" in await refused(policy, "http://127.0.0.1/x")
    assert "private" in await refused(policy, "http://10.1.2.4/x")
    assert "credentials" in await refused(policy, "http://u:p@localhost/x")
    assert "http(s)" in await refused(policy, "ftp://localhost/x")
