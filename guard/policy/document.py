"""One policy file checked against the v1 schema, before `extends`, variables and lists are resolved.

Everything here is shape: known keys (with did-you-mean), types, one verdict per rule, operations that
exist and fit together, matchers that fit the operations. Every problem is recorded with its location
and reading goes on, so `guard policy lint` can report all of them at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from guard.errors import Location
from guard.model import Kind, Op, Verdict
from guard.policy._yaml import YamlSyntaxError, YMap, YNode, YScalar, YSeq, parse_yaml, type_name
from guard.policy.diagnostics import Collector, did_you_mean
from guard.policy.hosts import compile_host, parse_ip

TOP_KEYS = ("version", "name", "description", "extends", "mode", "vars", "lists", "defaults", "settings",
            "network", "rules", "tests")
RULE_KEYS = ("id", "allow", "deny", "ask", "paths", "hosts", "ports", "cidrs", "commands", "except",
             "reason", "mode", "description", "applies_to", "writes")
APPLIES_TO = ("any", "existing", "outside-new-repos")
WRITES = ("in-place", "private")
SETTINGS_KEYS = ("ask_timeout", "scan_max_entries", "pass_env")
NETWORK_KEYS = ("hosts",)
MATCHERS_BY_KIND: dict[Kind, tuple[str, ...]] = {
    Kind.FILE: ("paths",),
    Kind.NETWORK: ("hosts", "cidrs", "ports"),
    Kind.PROCESS: ("commands",),
}
ALL_MATCHERS = ("paths", "hosts", "cidrs", "ports", "commands")
MODES = ("enforce", "audit")
DEFAULT_ASK_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of a matcher, list or `extends`, before expansion."""

    value: str | int
    loc: Location


@dataclass(frozen=True, slots=True)
class RawRule:
    id: str
    loc: Location
    verdict: Verdict
    ops: frozenset[Op]
    kind: Kind
    matchers: dict[str, tuple[Item, ...]]
    excepts: tuple[Item, ...]
    reason: str | None
    audit: bool
    file: str
    existing_only: bool = False
    outside_new_repos: bool = False  # `applies_to: outside-new-repos`
    private: bool = False  # `writes: private`: writes land in a layer of the session's own


@dataclass(frozen=True, slots=True)
class RawTest:
    text: str
    expected: Verdict
    loc: Location


@dataclass(slots=True)
class RawFile:
    path: Path
    display: str
    name: str | None = None
    description: str | None = None
    extends: tuple[Item, ...] = ()
    mode: str | None = None
    vars: dict[str, Item] = field(default_factory=dict)
    lists: dict[str, tuple[Location, tuple[Item, ...]]] = field(default_factory=dict)
    defaults: dict[Kind, Verdict] = field(default_factory=dict)
    ask_timeout: float | None = None
    scan_max_entries: int | None = None
    pass_env: tuple[str, ...] | None = None
    host_map: dict[str, tuple[str, Location]] = field(default_factory=dict)
    rules: list[RawRule] = field(default_factory=list)
    tests: list[RawTest] = field(default_factory=list)


def parse_document(text: str, path: Path, display: str, col: Collector) -> RawFile | None:
    """Check one file's shape; None when it is not even a YAML mapping."""
    try:
        root = parse_yaml(text, display)
    except YamlSyntaxError as exc:
        col.error(exc.message, exc.loc)
        return None
    if root is None:
        col.error("empty policy file", Location(display, 1, 1), hint="start with 'version: 1'")
        return None
    if not isinstance(root, YMap):
        col.error(f"a policy must be a mapping, not {type_name(root)}", root.loc)
        return None
    doc = RawFile(path=path, display=display)
    seen = _entries(root, TOP_KEYS, "top-level key", col)
    version = seen.get("version")
    if version is None:
        col.error("missing 'version: 1'", root.loc)
    elif not (isinstance(version, YScalar) and version.value == 1 and not isinstance(version.value, bool)):
        col.error("unsupported policy version: this guard reads 'version: 1'", version.loc)
    doc.name = _string(seen.get("name"), "name", col)
    doc.description = _string(seen.get("description"), "description", col)
    if "extends" in seen:
        doc.extends = _string_items(seen["extends"], "extends", col, allow_single=True)
    if "mode" in seen:
        doc.mode = _choice(seen["mode"], "mode", MODES, col)
    if "vars" in seen:
        doc.vars = _vars(seen["vars"], col)
    if "lists" in seen:
        doc.lists = _lists(seen["lists"], col)
    if "defaults" in seen:
        doc.defaults = _defaults(seen["defaults"], col)
    if "settings" in seen:
        doc.ask_timeout, doc.scan_max_entries, doc.pass_env = _settings(seen["settings"], col)
    if "network" in seen:
        doc.host_map = _network(seen["network"], col)
    if "rules" in seen:
        doc.rules = _rules(seen["rules"], display, col)
    if "tests" in seen:
        doc.tests = _tests(seen["tests"], col)
    return doc


def _entries(node: YMap, known: tuple[str, ...], what: str, col: Collector) -> dict[str, YNode]:
    """Key -> value, reporting unknown keys (with a did-you-mean) and duplicate keys."""
    out: dict[str, YNode] = {}
    for key, value in node.entries:
        if not isinstance(key.value, str):
            col.error(f"{what} must be a string, not {type_name(key)}", key.loc)
            continue
        name = key.value
        if name not in known:
            col.error(f"unknown {what} {name!r}", key.loc,
                      hint=did_you_mean(name, known) or f"expected one of: {', '.join(known)}")
            continue
        if name in out:
            col.error(f"duplicate key {name!r}", key.loc)
            continue
        out[name] = value
    return out


def _string(node: YNode | None, field_name: str, col: Collector) -> str | None:
    if node is None:
        return None
    if isinstance(node, YScalar) and isinstance(node.value, str):
        return node.value
    col.error(f"'{field_name}' must be a string, not {type_name(node)}", node.loc)
    return None


def _choice(node: YNode, field_name: str, choices: tuple[str, ...], col: Collector) -> str | None:
    value = _string(node, field_name, col)
    if value is None:
        return None
    if value not in choices:
        col.error(f"'{field_name}' must be one of {', '.join(choices)}, not {value!r}", node.loc,
                  hint=did_you_mean(value, choices))
        return None
    return value


def _string_items(node: YNode, field_name: str, col: Collector, *, allow_single: bool = False,
                  allow_int: bool = False) -> tuple[Item, ...]:
    if allow_single and isinstance(node, YScalar):
        nodes: tuple[YNode, ...] = (node,)
    elif isinstance(node, YSeq):
        nodes = node.items
    else:
        col.error(f"'{field_name}' must be a list, not {type_name(node)}", node.loc)
        return ()
    items: list[Item] = []
    for item in nodes:
        ok_int = allow_int and isinstance(item, YScalar) and isinstance(item.value, int) \
            and not isinstance(item.value, bool)
        if isinstance(item, YScalar) and (isinstance(item.value, str) or ok_int):
            assert isinstance(item.value, str | int)
            if isinstance(item.value, str) and not item.value.strip():
                col.error(f"empty entry in '{field_name}'", item.loc)
                continue
            items.append(Item(item.value, item.loc))
        else:
            wanted = "a string or a number" if allow_int else "a string"
            col.error(f"each entry of '{field_name}' must be {wanted}, not {type_name(item)}", item.loc,
                      hint="quote entries that start with '*' or contain ': '" if isinstance(item, YMap)
                      else None)
    return tuple(items)


def _name_ok(name: str) -> bool:
    return name.replace("_", "a").replace("-", "a").isalnum() and not name[0].isdigit()


def _vars(node: YNode, col: Collector) -> dict[str, Item]:
    if not isinstance(node, YMap):
        col.error(f"'vars' must be a mapping, not {type_name(node)}", node.loc)
        return {}
    out: dict[str, Item] = {}
    for key, value in node.entries:
        if not isinstance(key.value, str) or not _name_ok(key.value):
            col.error(f"bad variable name {key.value!r}: use letters, digits, '_' and '-'", key.loc)
            continue
        if key.value in ("workspace", "home", "tmp") or key.value.startswith("env"):
            col.error(f"variable {key.value!r} is built in and cannot be redefined", key.loc)
            continue
        if key.value in out:
            col.error(f"duplicate variable {key.value!r}", key.loc)
            continue
        if isinstance(value, YScalar) and isinstance(value.value, str):
            out[key.value] = Item(value.value, value.loc)
        else:
            col.error(f"variable {key.value!r} must be a string, not {type_name(value)}", value.loc)
    return out


def _lists(node: YNode, col: Collector) -> dict[str, tuple[Location, tuple[Item, ...]]]:
    if not isinstance(node, YMap):
        col.error(f"'lists' must be a mapping, not {type_name(node)}", node.loc)
        return {}
    out: dict[str, tuple[Location, tuple[Item, ...]]] = {}
    for key, value in node.entries:
        if not isinstance(key.value, str) or not _name_ok(key.value):
            col.error(f"bad list name {key.value!r}: use letters, digits, '_' and '-'", key.loc)
            continue
        if key.value in out:
            col.error(f"duplicate list {key.value!r}", key.loc)
            continue
        out[key.value] = (key.loc, _string_items(value, f"lists.{key.value}", col, allow_int=True))
    return out


def _defaults(node: YNode, col: Collector) -> dict[Kind, Verdict]:
    if not isinstance(node, YMap):
        col.error(f"'defaults' must be a mapping, not {type_name(node)}", node.loc)
        return {}
    kinds = tuple(k.value for k in Kind)
    seen = _entries(node, kinds, "kind in 'defaults'", col)
    out: dict[Kind, Verdict] = {}
    for name, value in seen.items():
        verdict = _choice(value, f"defaults.{name}", tuple(v.value for v in Verdict), col)
        if verdict is not None:
            out[Kind(name)] = Verdict(verdict)
    return out


_ENV_NAME = re.compile(r"[A-Za-z_*][A-Za-z0-9_*]*")


def _settings(node: YNode, col: Collector) -> tuple[float | None, int | None, tuple[str, ...] | None]:
    """-> (ask_timeout, scan_max_entries, pass_env), None where not set or wrong (the error is collected)."""
    if not isinstance(node, YMap):
        col.error(f"'settings' must be a mapping, not {type_name(node)}", node.loc)
        return None, None, None
    seen = _entries(node, SETTINGS_KEYS, "setting", col)
    ask_timeout: float | None = None
    value = seen.get("ask_timeout")
    if value is not None:
        number = value.value if isinstance(value, YScalar) else None
        if isinstance(number, int | float) and not isinstance(number, bool) and number > 0:
            ask_timeout = float(number)
        else:
            col.error("'settings.ask_timeout' must be a positive number of seconds", value.loc)
    scan_max: int | None = None
    value = seen.get("scan_max_entries")
    if value is not None:
        number = value.value if isinstance(value, YScalar) else None
        if isinstance(number, int) and not isinstance(number, bool) and number > 0:
            scan_max = number
        else:
            col.error("'settings.scan_max_entries' must be a positive whole number of directory entries",
                      value.loc)
    pass_env: tuple[str, ...] | None = None
    value = seen.get("pass_env")
    if value is not None:
        names: list[str] = []
        for item in _string_items(value, "settings.pass_env", col):
            if _ENV_NAME.fullmatch(str(item.value)):
                names.append(str(item.value))
            else:
                col.error(f"'settings.pass_env': {item.value!r} is not an environment variable name "
                          "(letters, digits, '_', and '*' for any run of characters)", item.loc)
        pass_env = tuple(names)
    return ask_timeout, scan_max, pass_env


def _network(node: YNode, col: Collector) -> dict[str, tuple[str, Location]]:
    if not isinstance(node, YMap):
        col.error(f"'network' must be a mapping, not {type_name(node)}", node.loc)
        return {}
    seen = _entries(node, NETWORK_KEYS, "key in 'network'", col)
    hosts = seen.get("hosts")
    if hosts is None:
        return {}
    if not isinstance(hosts, YMap):
        col.error(f"'network.hosts' must be a mapping of name: address, not {type_name(hosts)}", hosts.loc)
        return {}
    out: dict[str, tuple[str, Location]] = {}
    for key, value in hosts.entries:
        if not isinstance(key.value, str):
            col.error("host names in 'network.hosts' must be strings", key.loc)
            continue
        try:
            pattern = compile_host(key.value)
        except ValueError as exc:
            col.error(str(exc), key.loc)
            continue
        if pattern.text.startswith("*"):
            col.error(f"'network.hosts' maps exact names, not patterns like {key.value!r}", key.loc)
            continue
        if not (isinstance(value, YScalar) and isinstance(value.value, str) and parse_ip(value.value)):
            col.error(f"'network.hosts.{key.value}' must be an IP address", value.loc)
            continue
        out[pattern.key] = (str(parse_ip(value.value)), key.loc)
    return out


def _rules(node: YNode, display: str, col: Collector) -> list[RawRule]:
    if not isinstance(node, YSeq):
        col.error(f"'rules' must be a list, not {type_name(node)}", node.loc)
        return []
    rules: list[RawRule] = []
    for item in node.items:
        rule = _rule(item, display, col)
        if rule is not None:
            rules.append(rule)
    return rules


def _rule(node: YNode, display: str, col: Collector) -> RawRule | None:
    if not isinstance(node, YMap):
        col.error(f"a rule must be a mapping, not {type_name(node)}", node.loc)
        return None
    seen = _entries(node, RULE_KEYS, "rule key", col)
    keys = {key.value: key.loc for key, _ in node.entries if isinstance(key.value, str)}
    ok = True
    rule_id = _string(seen.get("id"), "id", col)
    if "id" not in seen:
        col.error("a rule needs an 'id'", node.loc)
        ok = False
    elif rule_id is None or not rule_id.strip():
        ok = False
    verdicts = [v for v in Verdict if v.value in seen]
    if len(verdicts) != 1:
        col.error("a rule needs exactly one of 'allow', 'deny' or 'ask' listing its operations"
                  + ("" if not verdicts else f" (found {', '.join(v.value for v in verdicts)})"),
                  keys.get(verdicts[1].value, node.loc) if len(verdicts) > 1 else node.loc)
        return None
    verdict = verdicts[0]
    ops: set[Op] = set()
    for item in _string_items(seen[verdict.value], verdict.value, col, allow_single=True):
        try:
            ops.add(Op(str(item.value)))
        except ValueError:
            col.error(f"unknown operation {item.value!r}", item.loc,
                      hint=did_you_mean(str(item.value), [o.value for o in Op])
                      or f"expected one of: {', '.join(o.value for o in Op)}")
            ok = False
    if not ops:
        if ok:
            col.error(f"'{verdict.value}' lists no operations", seen[verdict.value].loc)
        return None
    kinds = {op.kind for op in ops}
    if len(kinds) > 1:
        col.error(f"a rule's operations must be of one kind, but {', '.join(sorted(o.value for o in ops))} "
                  f"mix {', '.join(sorted(k.value for k in kinds))}", seen[verdict.value].loc,
                  hint="split it into one rule per kind")
        return None
    kind = kinds.pop()
    fitting = MATCHERS_BY_KIND[kind]
    ops_text = ", ".join(sorted(o.value for o in ops))
    matchers: dict[str, tuple[Item, ...]] = {}
    for name in ALL_MATCHERS:
        if name not in seen:
            continue
        if name not in fitting:
            col.error(f"'{name}' does not apply to {ops_text}: {kind.value} rules take "
                      f"{' / '.join(repr(f) for f in fitting)}", keys[name])
            ok = False
            continue
        matchers[name] = _string_items(seen[name], name, col, allow_int=name == "ports")
    if kind is Kind.NETWORK:
        if "hosts" not in seen and "cidrs" not in seen:
            col.error(f"a {ops_text} rule needs 'hosts' or 'cidrs'", node.loc,
                      hint="use hosts: ['*'] for any host")
            ok = False
    elif fitting[0] not in seen:
        col.error(f"a {ops_text} rule needs '{fitting[0]}'", node.loc)
        ok = False
    excepts = _string_items(seen["except"], "except", col) if "except" in seen else ()
    reason = _string(seen.get("reason"), "reason", col)
    _string(seen.get("description"), "description", col)
    mode = _choice(seen["mode"], "mode", MODES, col) if "mode" in seen else None
    applies_to = _choice(seen["applies_to"], "applies_to", APPLIES_TO, col) if "applies_to" in seen else None
    if applies_to in ("existing", "outside-new-repos") and (kind is not Kind.FILE or Op.READ in ops
                                                            or Op.EXEC in ops):
        what = ("protects files that exist at launch from being changed" if applies_to == "existing" else
                "leaves out repositories created during the session")
        col.error(f"'applies_to: {applies_to}' {what}: it fits only write rules, not {ops_text}",
                  keys["applies_to"],
                  hint="remove it, or split the write operation into its own rule")
        ok = False
    writes = _choice(seen["writes"], "writes", WRITES, col) if "writes" in seen else None
    fits = kind is Kind.FILE and verdict is Verdict.ALLOW and Op.WRITE in ops
    if writes == "private" and not fits:
        col.error("'writes: private' keeps what an allow rule lets the agent write in a layer of the "
                  f"session's own: it fits only allow rules with write, not {verdict.value}: {ops_text}",
                  keys["writes"],
                  hint="remove it, or put it on the allow rule that grants the write")
        ok = False
    if not ok or rule_id is None:
        return None
    return RawRule(id=rule_id, loc=node.loc, verdict=verdict, ops=frozenset(ops), kind=kind,
                   matchers=matchers, excepts=excepts, reason=reason, audit=mode == "audit", file=display,
                   existing_only=applies_to == "existing",
                   outside_new_repos=applies_to == "outside-new-repos", private=writes == "private")


def _tests(node: YNode, col: Collector) -> list[RawTest]:
    if not isinstance(node, YSeq):
        col.error(f"'tests' must be a list, not {type_name(node)}", node.loc)
        return []
    out: list[RawTest] = []
    verdicts = tuple(v.value for v in Verdict)
    for item in node.items:
        if not (isinstance(item, YMap) and len(item.entries) == 1):
            col.error("a test is one '<op> <target>: <verdict>' entry", item.loc)
            continue
        key, value = item.entries[0]
        if not isinstance(key.value, str):
            col.error("a test is one '<op> <target>: <verdict>' entry", key.loc)
            continue
        expected = _choice(value, "expected verdict", verdicts, col)
        if expected is not None:
            out.append(RawTest(key.value, Verdict(expected), key.loc))
    return out
