"""`guard policy explain` answers `connect host:port` as the proxy would, resolution included."""

from __future__ import annotations

import json

from click.testing import CliRunner

from guard.cli.main import main


def explain(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(main, ["policy", "explain", "coding-agent", *args, "--json"])
    return res.exit_code, (json.loads(res.output) if res.exit_code == 0 else {"output": res.output})


def test_allowed_name_shows_the_addresses_the_proxy_would_use() -> None:
    code, out = explain("connect pypi.org:443", "--resolve", "pypi.org:151.101.0.223")
    assert code == 0, out
    assert out["decision"]["verdict"] == "allow"
    assert out["proxy"] == {"host": "pypi.org", "port": 443, "addresses": ["151.101.0.223"], "allowed": True,
                            "rule_id": None, "reason": "would connect to 151.101.0.223"}


def test_allowed_name_resolving_to_cloud_metadata_is_refused_by_the_proxy() -> None:
    code, out = explain("connect pypi.org:443", "--resolve", "pypi.org:169.254.169.254")
    assert code == 0, out
    assert out["decision"]["verdict"] == "allow"  # the name alone is allowed...
    assert out["proxy"]["allowed"] is False  # ...but not where it leads
    assert out["proxy"]["addresses"] == []


def test_allowed_loopback_name_does_not_reach_the_hosts_loopback() -> None:
    """The policy allows `localhost` (the sandbox's own loopback); resolved by the system, it is the host's
    loopback, which only a CIDR rule opens. (A `--resolve` pin is the engineer's explicit say-so.)"""
    code, out = explain("connect localhost:22")
    assert code == 0, out
    assert out["proxy"]["allowed"] is False and out["proxy"]["rule_id"] == "guard:special-address"


def test_a_denied_name_is_never_resolved() -> None:
    # a pin for the name would be used if anything resolved it; the denial comes first, by name
    code, out = explain("connect exfil.evil.example:443", "--resolve", "exfil.evil.example:151.101.0.1")
    assert code == 0, out
    assert out["proxy"]["allowed"] is False and out["proxy"]["addresses"] == []
    assert out["proxy"]["reason"] == out["decision"]["reason"]


def test_no_resolve_leaves_the_proxy_out() -> None:
    code, out = explain("connect pypi.org:443", "--no-resolve")
    assert code == 0 and "proxy" not in out


def test_connect_without_a_port_is_a_usage_error() -> None:
    res = CliRunner().invoke(main, ["policy", "explain", "coding-agent", "connect pypi.org"])
    assert res.exit_code == 2 and "name a port" in res.output
