"""The outbound URL policy (SSRF guard) for analysis-service URLs."""

from __future__ import annotations

import pytest

from shared.urlpolicy import URLPolicy, URLPolicyError

STRICT = URLPolicy()
LOOPBACK_ONLY = URLPolicy(allow_loopback=True)
PRIVATE_ONLY = URLPolicy(allow_private=True)
PERMISSIVE = URLPolicy(allow_private=True, allow_loopback=True)


async def refused(policy: URLPolicy, url: str) -> str:
    with pytest.raises(URLPolicyError) as caught:
        await policy.check(url)
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
    ("http://localhost:8000/", "127.0.0.1"),
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
    await LOOPBACK_ONLY.check(url)
    await PERMISSIVE.check(url)


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
    await PRIVATE_ONLY.check(url)


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
    await STRICT.check(url)


async def test_unresolvable_hosts_are_refused() -> None:
    message = await refused(PERMISSIVE, "http://skyhook-no-such-host.invalid/x")
    assert message == "host 'skyhook-no-such-host.invalid' cannot be resolved"


async def test_allowed_hosts_bypass_loopback_and_private_rules_only() -> None:
    policy = URLPolicy(allowed_hosts=frozenset({"localhost", "10.1.2.3", "svc.cluster.invalid"}))
    await policy.check("http://localhost:8000/x")
    await policy.check("http://LocalHost./x")
    await policy.check("http://10.1.2.3/x")
    # Not resolvable here; the dispatcher checks again when it sends.
    await policy.check("https://svc.cluster.invalid/x")
    assert "loopback" in await refused(policy, "http://127.0.0.1/x")
    assert "private" in await refused(policy, "http://10.1.2.4/x")
    assert "credentials" in await refused(policy, "http://u:p@localhost/x")
    assert "http(s)" in await refused(policy, "ftp://localhost/x")
