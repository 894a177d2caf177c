"""Network matchers: host names, CIDR ranges and port ranges.

Host names compare case-insensitively with any trailing dot removed. `*.example.com` matches names
below example.com at any depth, never example.com itself and never a lookalike such as badexample.com:
matching works on whole labels (dictionary lookups of proper suffixes), never on string suffixes.
IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry, so `::ffff:10.0.0.1` cannot slip
past a rule about 10.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import Enum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_IP_CHARS = frozenset("0123456789abcdef.:[]%")  # % for zone ids, which ip_address then rejects
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class HostKind(Enum):
    EXACT = "exact"
    SUBDOMAINS = "subdomains"  # *.suffix
    ANY = "any"  # *


class HostPatternError(ValueError):
    """A host, CIDR or port that cannot be understood; the message says why."""


@dataclass(frozen=True, slots=True)
class HostPattern:
    text: str
    kind: HostKind
    key: str  # the exact name, or the suffix after "*."
    specificity: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        base = {HostKind.EXACT: 1000, HostKind.SUBDOMAINS: 1, HostKind.ANY: 0}[self.kind]
        object.__setattr__(self, "specificity", base + len(self.key))

    def matches(self, host: str) -> bool:
        """`host` must already be normalized with `normalize_host`."""
        if self.kind is HostKind.EXACT:
            return host == self.key
        if self.kind is HostKind.SUBDOMAINS:
            return host.endswith("." + self.key) and len(host) > len(self.key) + 1
        return True


@dataclass(frozen=True, slots=True)
class PortRange:
    low: int
    high: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def normalize_host(host: str) -> str:
    """Lower-case, strip a trailing dot and IPv6 brackets; IP literals in their canonical form."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ip = parse_ip(host)
    return str(ip) if ip is not None else host


def parse_ip(text: str) -> IPAddress | None:
    """An IP literal (IPv4-mapped IPv6 unwrapped to IPv4), or None when `text` is a name."""
    if not _IP_CHARS.issuperset(text.lower()):
        return None  # a name: skip ipaddress's two failing parses
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def compile_host(text: str) -> HostPattern:
    raw = text
    text = text.strip().lower().rstrip(".")
    if text == "*":
        return HostPattern(raw, HostKind.ANY, "")
    if text.startswith("["):
        text = text.strip("[]")
    ip = parse_ip(text)
    if ip is not None:
        return HostPattern(raw, HostKind.EXACT, str(ip))
    wildcard = text.startswith("*.")
    name = text[2:] if wildcard else text
    if "*" in name:
        raise HostPatternError(f"bad host pattern {raw!r}: '*' is allowed only as a leading '*.' label "
                               "(or '*' alone for any host)")
    if "/" in name:
        raise HostPatternError(f"bad host pattern {raw!r}: a network range belongs under 'cidrs'")
    if ":" in name:
        raise HostPatternError(f"bad host pattern {raw!r}: ports belong under 'ports'")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise HostPatternError(f"bad host pattern {raw!r}: not a valid DNS name")
    return HostPattern(raw, HostKind.SUBDOMAINS if wildcard else HostKind.EXACT, name)


def compile_cidr(text: str) -> IPNetwork:
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise HostPatternError(f"bad CIDR {text!r}: host bits are set; did you mean "
                                   f"{ipaddress.ip_network(text.strip(), strict=False)}?") from None
        raise HostPatternError(f"bad CIDR {text!r}: {exc}") from None
    return net


def compile_port(value: object) -> PortRange:
    if isinstance(value, bool):
        raise HostPatternError(f"bad port {value!r}: expected a number or a range like 8000-8999")
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", value):
        first, _, second = value.partition("-")
        low, high = int(first), int(second or first)
    else:
        raise HostPatternError(f"bad port {value!r}: expected a number or a range like 8000-8999")
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise HostPatternError(f"bad port {value!r}: ports are 1-65535")
    if low > high:
        raise HostPatternError(f"bad port range {value!r}: the start is above the end")
    return PortRange(low, high)


def in_networks(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def proper_suffixes(host: str) -> list[str]:
    """`a.b.c` -> ["b.c", "c"]: the keys under which `*.` rules that may match `host` are indexed."""
    out: list[str] = []
    idx = host.find(".")
    while idx != -1:
        out.append(host[idx + 1:])
        idx = host.find(".", idx + 1)
    return out
