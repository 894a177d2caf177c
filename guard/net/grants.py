"""Which special-purpose addresses a policy grants to the proxy, and only by CIDR.

A policy's `connect` rules are written for two places: inside the sandbox's own network namespace, where
`127.0.0.1` is the sandbox's loopback (the shipped `loopback` rule allows it by host name), and at the
proxy, where the same address is the *host's* loopback. A rule that names an address as a host, or `*`,
therefore never opens a special-purpose address at the proxy: only an allow rule whose `cidrs` contain the
address (for that port) does, and only when the policy as a whole still allows the connection.
"""

from __future__ import annotations

from collections.abc import Callable

from guard.model import Action, Op, Verdict
from guard.net.resolve import format_target, normalize_host, parse_ip
from guard.policy import Policy

CidrGrant = Callable[[str, int, str], bool]


def policy_cidr_grant(policy: Policy) -> CidrGrant:
    """A `cidr_grant` for `Proxy` backed by `policy`'s CIDR allow rules: `granted(address, port, host)`
    says whether an allow rule with `cidrs` grants `host` (the name asked for; the address itself when
    empty) at that address and port, every one of its matchers holding, and the policy as a whole allows
    the connection."""

    def granted(address: str, port: int, host: str = "") -> bool:
        ip = parse_ip(address)
        if ip is None:
            return False
        name = normalize_host(host) if host else str(ip)
        action = Action(op=Op.CONNECT, target=format_target(name, port), addresses=(str(ip),))
        if policy.decide(action).enforced is not Verdict.ALLOW:
            return False
        for rule in policy.rules:
            if rule.verdict is not Verdict.ALLOW or Op.CONNECT not in rule.ops or not rule.cidrs:
                continue
            if rule.match_network(name, port, (ip,)) < 0:
                continue
            if rule.network_excluded_by(name, (ip,)) is None:
                return True
        return False

    return granted
