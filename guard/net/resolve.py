"""Destination names and addresses: what a client asked for, what it resolves to, and which addresses are
special-purpose (private, loopback, link-local, cloud metadata, ...).

Kept apart from the proxy so the address policy is pure and testable without sockets. The proxy decides on
the addresses returned here and then connects to exactly one of them, never resolving again: a name whose
DNS answer changes between check and use (rebinding) cannot steer the connection.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from guard.net.errors import BadDestination, ResolveFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[Sequence[str]]]

_MAX_NAME = 253
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")

CLOUD_METADATA = "cloud metadata"

# Checked in order, so the specific names (cloud metadata) win over the ranges that contain them.
_SPECIAL: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), what)
    for net, what in (
        ("169.254.169.254/32", CLOUD_METADATA),
        ("100.100.100.200/32", CLOUD_METADATA),
        ("fd00:ec2::254/128", CLOUD_METADATA),
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b::/96", "NAT64 (embeds an IPv4 address)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4 (embeds an IPv4 address)"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)


def parse_ip(text: str) -> IPAddress | None:
    """An IP literal in canonical form, or None when `text` is a name.

    IPv4-mapped IPv6 addresses become their IPv4 address, so `::ffff:127.0.0.1` is judged (and reached) as
    127.0.0.1. Scoped IPv6 (`fe80::1%eth0`) is refused: a scope names an interface of the host.
    """
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            raise BadDestination(f"scoped IPv6 address {text!r} is not allowed")
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def normalize_host(text: str) -> str:
    """The host as the policy sees it: an IP literal in canonical form, or a lower-case DNS name.

    Refused: empty or over-long names, characters outside letters, digits, `-`, `.`, `_` (so no userinfo,
    percent-escapes, spaces or non-ASCII; IDNs arrive as punycode), empty labels, and numeric forms that the
    C resolver would read as IPv4 (`2130706433`, `0x7f.1`, `127.1`), which would otherwise pass as names.
    One trailing dot (the DNS root) is dropped so `example.com.` is decided as `example.com`.
    """
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        ip = parse_ip(inner)
        if ip is None or ":" not in inner:
            raise BadDestination(f"bad IPv6 literal {text[:80]!r}")
        return str(ip)
    ip = parse_ip(text)
    if ip is not None:
        return str(ip)
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > _MAX_NAME:
        raise BadDestination(f"bad host name {text[:80]!r}: empty or longer than {_MAX_NAME} characters")
    bad = set(name) - _NAME_CHARS
    if bad:
        raise BadDestination(f"bad host name {text[:80]!r}: character {sorted(bad)[0]!r} is not allowed")
    labels = name.split(".")
    if any(not label or len(label) > 63 for label in labels):
        raise BadDestination(f"bad host name {text[:80]!r}: empty or over-long label")
    if _looks_numeric(name):
        raise BadDestination(f"non-canonical IPv4 literal {text[:80]!r}",
                             hint="write the address in dotted-quad form")
    return name


def _looks_numeric(name: str) -> bool:
    try:
        socket.inet_aton(name)
    except OSError:
        return _last_label_numeric(name)
    return True


def _last_label_numeric(name: str) -> bool:
    """True when the last label is numeric (decimal or 0x-hex), as URL parsers treat such hosts as IPv4."""
    last = name.rsplit(".", 1)[-1]
    if last.isdigit():
        return True
    return last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:])


def special_range(address: str | IPAddress) -> str | None:
    """What kind of special-purpose address this is, or None for a globally routable one."""
    ip = address if not isinstance(address, str) else parse_ip(address)
    if ip is None:
        raise BadDestination(f"{address!r} is not an IP address")
    for net, what in _SPECIAL:
        if ip.version == net.version and ip in net:
            return what
    if not ip.is_global:
        return "not globally routable"
    return None


def format_target(host: str, port: int) -> str:
    """`host:port`, with IPv6 literals bracketed as guard.model.split_host_port expects."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The addresses a destination host stands for, and where they came from.

    `source` is "literal" (the client gave an IP), "map" (the static host map names the address, which
    counts as an explicit grant of that address) or "dns".
    """

    host: str
    addresses: tuple[str, ...]
    source: str


def check_host_map(host_map: Mapping[str, str]) -> dict[str, str]:
    """Validate and normalize a static host map (`network.hosts`, `--resolve NAME:ADDR`)."""
    out: dict[str, str] = {}
    for name, address in host_map.items():
        if not isinstance(name, str) or not isinstance(address, str):
            raise BadDestination(f"network.hosts: entry {name!r}: expected a name and an address string")
        ip = parse_ip(address.strip("[]"))
        if ip is None:
            raise BadDestination(f"network.hosts.{name}: {address!r} is not an IP address",
                                 hint="map a name to an IPv4 or IPv6 literal")
        out[normalize_host(name)] = str(ip)
    return out


async def system_resolver(name: str) -> Sequence[str]:
    """getaddrinfo in the loop's executor: the proxy never blocks on DNS."""
    import asyncio  # here: `guard run` imports this module at launch, and asyncio only once a loop runs

    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


async def resolve(host: str, *, host_map: Mapping[str, str], resolver: Resolver) -> Resolution:
    """Resolve a normalized host: literal, then the static map, then the resolver. Order kept, duplicates
    dropped, mapped IPv6 folded to IPv4."""
    ip = parse_ip(host)
    if ip is not None:
        return Resolution(host, (str(ip),), "literal")
    if host in host_map:
        return Resolution(host, (host_map[host],), "map")
    try:
        raw = await resolver(host)
    except (OSError, UnicodeError) as exc:
        raise ResolveFailed(f"cannot resolve {host}: {exc}") from exc
    seen: dict[str, None] = {}
    for text in raw:
        parsed = parse_ip(text.split("%", 1)[0])
        if parsed is not None:
            seen.setdefault(str(parsed), None)
    if not seen:
        raise ResolveFailed(f"cannot resolve {host}: no addresses")
    return Resolution(host, tuple(seen), "dns")
