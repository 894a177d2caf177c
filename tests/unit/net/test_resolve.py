"""Address policy and name normalization: pure, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from guard.errors import GuardError
from guard.net.errors import BadDestination, ResolveFailed
from guard.net.resolve import check_host_map, format_target, normalize_host, resolve, special_range


@pytest.mark.parametrize(("address", "kind"), [
    ("169.254.169.254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared address space (carrier-grade NAT)"),
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private (unique local)"),
    ("fd12:3456::1", "private (unique local)"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("64:ff9b::7f00:1", "NAT64 (embeds an IPv4 address)"),
    ("2002:7f00:1::1", "6to4 (embeds an IPv4 address)"),
])
def test_special_ranges_are_named(address: str, kind: str) -> None:
    assert special_range(address) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "172.32.0.1", "2606:4700:4700::1111"])
def test_public_addresses_are_not_special(address: str) -> None:
    assert special_range(address) is None


def test_special_range_rejects_a_name() -> None:
    with pytest.raises(BadDestination):
        special_range("example.com")


@pytest.mark.parametrize(("given", "normal"), [
    ("Example.COM", "example.com"),
    ("example.com.", "example.com"),
    ("[::1]", "::1"),
    ("::FFFF:10.0.0.1", "10.0.0.1"),
    ("[2001:DB8::1]", "2001:db8::1"),
    ("_dmarc.example.com", "_dmarc.example.com"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_normalize_host(given: str, normal: str) -> None:
    assert normalize_host(given) == normal


@pytest.mark.parametrize("bad", [
    "", ".", "a..b", "user@example.com", "exa mple.com", "exa%2fmple.com", "bücher.example",
    "2130706433", "0x7f.1", "127.1", "0177.0.0.1", "example.123", "a" * 64 + ".com", "x." * 130 + "com",
    "fe80::1%eth0", "[example.com]", "[1.2.3.4]", "a/b",
])
def test_normalize_host_refuses(bad: str) -> None:
    with pytest.raises(BadDestination) as info:
        normalize_host(bad)
    assert isinstance(info.value, GuardError)
    assert info.value.message


def test_format_target_brackets_ipv6() -> None:
    assert format_target("::1", 443) == "[::1]:443"
    assert format_target("example.com", 80) == "example.com:80"


def test_host_map_is_validated_and_normalized() -> None:
    assert check_host_map({"Pypi.Local.": "127.0.0.1", "v6.local": "[::1]"}) == {
        "pypi.local": "127.0.0.1", "v6.local": "::1"}
    with pytest.raises(BadDestination, match=r"network\.hosts\.pypi\.local: 'nowhere' is not an IP"):
        check_host_map({"pypi.local": "nowhere"})


def _resolver(answers: Sequence[str] | Exception, calls: list[str]):  # type: ignore[no-untyped-def]
    async def resolver(name: str) -> Sequence[str]:
        calls.append(name)
        if isinstance(answers, Exception):
            raise answers
        return answers
    return resolver


def test_resolve_sources_order_and_dedup() -> None:
    calls: list[str] = []
    resolver = _resolver(["93.184.216.34", "::ffff:93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"],
                         calls)

    async def go() -> None:
        lit = await resolve("10.0.0.1", host_map={}, resolver=resolver)
        assert (lit.addresses, lit.source) == (("10.0.0.1",), "literal")
        mapped = await resolve("pypi.local", host_map={"pypi.local": "127.0.0.1"}, resolver=resolver)
        assert (mapped.addresses, mapped.source) == (("127.0.0.1",), "map")
        assert calls == []
        dns = await resolve("example.com", host_map={}, resolver=resolver)
        assert dns.addresses == ("93.184.216.34", "2606:2800:220:1::1")
        assert dns.source == "dns"
        assert calls == ["example.com"]

    asyncio.run(go())


def test_resolve_failure_is_a_resolve_error() -> None:
    async def go() -> None:
        with pytest.raises(ResolveFailed, match=r"cannot resolve nx\.example"):
            await resolve("nx.example", host_map={}, resolver=_resolver(OSError(-2, "Name or service not known"), []))
        with pytest.raises(ResolveFailed, match="no addresses"):
            await resolve("empty.example", host_map={}, resolver=_resolver([], []))

    asyncio.run(go())
