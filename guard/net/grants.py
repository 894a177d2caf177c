"""Which special-purpose addresses a policy grants to the proxy, and only by CIDR.

A policy's `connect` rules are written for two places: inside the sandbox's own network namespace, where
`127.0.0.1` is the sandbox's loopback (the shipped `loopback` rule allows it by host name), and at the
proxy, where the same address is the *host's* loopback. A rule that names an address as a host, or `*`,
therefore never opens a special-purpose address at the proxy: only an allow rule whose `cidrs` contain the
address (for that port) does, and only when the policy as a whole still allows the connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from guard.model import Action, Op, Verdict
from guard.net.resolve import format_target, parse_ip
from guard.policy import Policy

CidrGrant = Callable[[str, int], bool]


def policy_cidr_grant(policy: Policy) -> CidrGrant:
    """A `cidr_grant` for `Proxy` backed by `policy`'s CIDR allow rules."""

    def granted(address: str, port: int) -> bool:
        ip = parse_ip(address)
        if ip is None:
            return False
        action = Action(op=Op.CONNECT, target=format_target(str(ip), port), addresses=(str(ip),))
        if policy.decide(action).enforced is not Verdict.ALLOW:
            return False
        for rule in policy.rules:
            if rule.verdict is not Verdict.ALLOW or Op.CONNECT not in rule.ops or not rule.cidrs:
                continue
            if rule.ports and not any(port in r for r in rule.ports):
                continue
            if not any(_inside(ip, net) for net in rule.cidrs):
                continue
            if rule.network_excluded_by(str(ip), (ip,)) is None:
                return True
        return False

    return granted


def _inside(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
            net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return ip.version == net.version and ip in net
