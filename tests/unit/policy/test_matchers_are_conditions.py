"""A rule's matchers are conditions that must all hold, never alternatives (issue 13, class 13).

`hosts: [api.corp.test]` with `cidrs: [10.0.0.0/8]` grants that one name while it resolves inside 10/8:
not every name, not every address of the range. The proxy (guard.net) decides through the same engine,
so explain, lint and enforcement agree; these tests drive the real engine, lint and the real proxy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from guard.model import Action, Op, Verdict
from guard.net.errors import Denied
from guard.net.grants import policy_cidr_grant
from guard.net.proxy import Proxy
from guard.policy.lint import lint

from .helpers import compiled, load, write

POLICY = """
version: 1
name: corp
defaults: {file: deny, network: deny, process: deny}
rules:
  - id: corp-api
    allow: [connect]
    hosts: [api.corp.test]
    cidrs: [10.0.0.0/8]
    ports: [443]
tests:
  - connect api.corp.test:443: allow
"""


def _decide(policy, target: str, *addresses: str) -> Verdict:
    return policy.decide(Action(op=Op.CONNECT, target=target, addresses=tuple(addresses))).verdict


def test_the_name_and_its_addresses_must_both_match(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    assert _decide(policy, "api.corp.test:443", "10.1.2.3") is Verdict.ALLOW
    assert _decide(policy, "api.corp.test:443", "10.1.2.3", "203.0.113.9") is Verdict.DENY  # one outside
    assert _decide(policy, "api.corp.test:443", "192.168.1.1") is Verdict.DENY
    # other names in the range, and the range's addresses themselves, are not granted
    assert _decide(policy, "db.corp.test:443", "10.1.2.4") is Verdict.DENY
    assert _decide(policy, "10.1.2.3:443", "10.1.2.3") is Verdict.DENY
    assert _decide(policy, "api.corp.test:80", "10.1.2.3") is Verdict.DENY


def test_before_resolution_the_name_alone_is_judged(tmp_path: Path) -> None:
    """The proxy's first check happens before any DNS query: the name may go on to be resolved, and the
    connection is decided again with its addresses. A deny rule with both matchers counts unknown
    addresses against the action."""
    policy = load(tmp_path, POLICY)
    assert _decide(policy, "api.corp.test:443") is Verdict.ALLOW
    deny = load(tmp_path, """
        version: 1
        name: corp-deny
        defaults: {file: deny, network: allow, process: deny}
        rules:
          - id: no-internal-api
            deny: [connect]
            hosts: [api.corp.test]
            cidrs: [10.0.0.0/8]
        """, name="deny.yaml")
    assert _decide(deny, "api.corp.test:443") is Verdict.DENY
    assert _decide(deny, "api.corp.test:443", "203.0.113.9") is Verdict.ALLOW
    assert _decide(deny, "api.corp.test:443", "203.0.113.9", "10.0.0.1") is Verdict.DENY
    assert _decide(deny, "other.test:443", "10.0.0.1") is Verdict.ALLOW


def test_the_proxy_grants_the_name_at_its_private_address_and_nothing_else(tmp_path: Path) -> None:
    """The real proxy's vetting (what `guard policy explain` runs too): the name resolves into 10/8 and
    is granted; the same address asked for by another name, or as a literal, is refused."""
    policy = load(tmp_path, POLICY)

    async def decide(action: Action):
        return policy.decide(action)

    async def vet(host: str) -> tuple[str, ...]:
        proxy = Proxy(decide, lambda _r: None, cidr_grant=policy_cidr_grant(policy),
                      resolver=lambda _name: _answer(["10.1.2.3"]))
        return await proxy.vet(host, 443)

    assert asyncio.run(vet("api.corp.test")) == ("10.1.2.3",)
    for host in ("db.corp.test", "10.1.2.3"):
        with pytest.raises(Denied):
            asyncio.run(vet(host))
    grant = policy_cidr_grant(policy)
    assert grant("10.1.2.3", 443, "api.corp.test") and not grant("10.1.2.3", 443, "db.corp.test")
    assert not grant("10.1.2.3", 443, "")


async def _answer(addresses: list[str]) -> list[str]:
    return addresses


def test_lint_warns_where_the_meaning_changed(tmp_path: Path) -> None:
    path = write(tmp_path, "corp.yaml", POLICY)
    report = lint(path, workspace=tmp_path)
    hits = [d for d in report.diagnostics if "both 'hosts' and 'cidrs'" in d.message]
    assert report.ok and len(hits) == 1 and hits[0].severity.value == "warning"
    assert "split it" in (hits[0].hint or "")


def test_a_hosts_only_or_cidrs_only_rule_is_unchanged(tmp_path: Path) -> None:
    result = compiled(tmp_path, """
        version: 1
        name: split
        defaults: {file: deny, network: deny, process: deny}
        rules:
          - id: by-name
            allow: [connect]
            hosts: [api.corp.test]
          - id: by-range
            allow: [connect]
            cidrs: [10.0.0.0/8]
        """)
    assert result.policy is not None
    assert _decide(result.policy, "api.corp.test:443", "203.0.113.9") is Verdict.ALLOW
    assert _decide(result.policy, "db.corp.test:443", "10.1.2.4") is Verdict.ALLOW


def test_one_internal_name_on_top_of_coding_agent(tmp_path: Path) -> None:
    """coding-agent denies private ranges; a policy extending it names the internal hosts it grants (the
    `internal-hosts` list, excepted from that deny) and grants each at its range only. Asked through the
    proxy's own vetting (what explain shows and guard run enforces)."""
    from guard.net.explain import explain_connect
    from guard.policy import load_policy

    path = write(tmp_path, "corp.yaml", """
        version: 1
        name: corp
        extends: [coding-agent]
        lists:
          internal-hosts: [api.corp.test]
        rules:
          - id: corp-api
            allow: [connect]
            hosts: [api.corp.test]
            cidrs: [10.0.0.0/8]
            ports: [443]
        """)
    policy = load_policy(path, workspace=tmp_path)

    def proxy(host: str, address: str) -> bool:
        return explain_connect(policy, host, 443, resolve={host: address}).allowed

    assert proxy("api.corp.test", "10.1.2.3")
    assert not proxy("api.corp.test", "203.0.113.7")  # the name alone is not enough
    assert not proxy("db.corp.test", "10.1.2.4")  # nor is the range
    assert not proxy("pypi.org", "10.1.2.5")  # a granted registry resolving inside still is not
    assert not explain_connect(policy, "10.1.2.3", 443).allowed
