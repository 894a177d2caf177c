from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.policy.hosts import (
    HostKind,
    HostPatternError,
    compile_cidr,
    compile_host,
    compile_port,
    in_networks,
    normalize_host,
    parse_ip,
    proper_suffixes,
)

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)


@given(_domain, _label)
def test_wildcard_never_matches_the_apex_nor_lookalikes(apex: str, prefix: str) -> None:
    pattern = compile_host("*." + apex)
    assert not pattern.matches(normalize_host(apex))
    assert not pattern.matches(normalize_host(prefix + apex))  # badexample.com style
    evil = apex + "." + prefix  # example.com.evil style
    if not evil.endswith("." + apex):  # e.g. apex "a", prefix "a": "a.a" really is below "a"
        assert not pattern.matches(normalize_host(evil))
    assert pattern.matches(normalize_host(prefix + "." + apex))
    assert pattern.matches(normalize_host(f"a.{prefix}.{apex}"))  # any depth


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("example.com", "EXAMPLE.com.", True),  # case and trailing dot ignored
    ("example.com", "www.example.com", False),
    ("*.example.com", "Deep.A.example.com.", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "badexample.com", False),
    ("*", "anything.at.all", True),
    ("10.0.0.1", "10.0.0.1", True),
    ("[::1]", "0:0::1", True),
])
def test_host_patterns(pattern: str, host: str, expected: bool) -> None:
    assert compile_host(pattern).matches(normalize_host(host)) is expected


@pytest.mark.parametrize(("pattern", "message"), [
    ("api.*.com", "only as a leading"),
    ("ex ample.com", "not a valid DNS name"),
    ("10.0.0.0/8", "belongs under 'cidrs'"),
    ("example.com:443", "ports belong under 'ports'"),
    ("-bad.com", "not a valid DNS name"),
])
def test_bad_hosts(pattern: str, message: str) -> None:
    with pytest.raises(HostPatternError, match=message):
        compile_host(pattern)


def test_kinds() -> None:
    assert compile_host("*").kind is HostKind.ANY
    assert compile_host("*.a.b").kind is HostKind.SUBDOMAINS
    assert compile_host("a.b").kind is HostKind.EXACT


def test_cidrs_v4_v6_and_mapped_addresses() -> None:
    nets = (compile_cidr("10.0.0.0/8"), compile_cidr("fd00::/8"))
    assert in_networks(ipaddress.ip_address("10.1.2.3"), nets)
    assert in_networks(ipaddress.ip_address("fd00::1"), nets)
    assert not in_networks(ipaddress.ip_address("11.0.0.1"), nets)
    mapped = parse_ip("::ffff:10.0.0.1")  # an IPv4-mapped address is judged as IPv4
    assert mapped == ipaddress.ip_address("10.0.0.1")
    assert mapped is not None and in_networks(mapped, nets)
    with pytest.raises(HostPatternError, match=r"host bits are set; did you mean 10\.0\.0\.0/8"):
        compile_cidr("10.0.0.1/8")
    with pytest.raises(HostPatternError, match="bad CIDR"):
        compile_cidr("10.0.0/33")


def test_ports() -> None:
    assert 443 in compile_port(443)
    r = compile_port("8000-8999")
    assert 8000 in r and 8999 in r and 9000 not in r
    for bad, msg in ((0, "1-65535"), (70000, "1-65535"), ("9-1", "start is above"), ("x", "expected a number"),
                     (True, "expected a number")):
        with pytest.raises(HostPatternError, match=msg):
            compile_port(bad)


def test_proper_suffixes() -> None:
    assert proper_suffixes("a.b.c") == ["b.c", "c"]
    assert proper_suffixes("localhost") == []
