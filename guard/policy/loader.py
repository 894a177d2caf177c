"""From a policy reference to a compiled `Policy`: read files, follow `extends`, expand, compile.

`extends` is followed depth first, parents before children, each file once (a diamond is fine, a cycle
is an error naming the chain). Merging: rules concatenate (ids must stay unique), and a var, list,
default or setting defined again in a child replaces the parent's, also where the parent's own rules
use it. Every error is collected with its location; `load_policy` raises them all together.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from guard.errors import Location, UsageError
from guard.model import Kind, Op, Verdict, parse_action
from guard.policy.commands import CommandPattern, CommandPatternError, compile_command
from guard.policy.diagnostics import Collector, Diagnostic, PolicyLoadError, did_you_mean
from guard.policy.document import (
    DEFAULT_ASK_TIMEOUT,
    Item,
    RawFile,
    RawRule,
    RawTest,
    parse_document,
)
from guard.policy.engine import DEFAULT_SCAN_MAX_ENTRIES, Policy, PolicyTest
from guard.policy.hosts import (
    HostPattern,
    HostPatternError,
    IPNetwork,
    PortRange,
    compile_cidr,
    compile_host,
    compile_port,
    parse_ip,
)
from guard.policy.paths import GlobError, PathPattern, compile_path, normalize_path
from guard.policy.refs import is_policy_name
from guard.policy.rules import Rule

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "policies"
_LIST_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_-]*)")
_VAR_REF = re.compile(r"\$\{([^{}]*)\}")


def list_shipped() -> list[str]:
    """Names of the policies shipped with guard (usable in `extends` and wherever a policy is named)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def shipped_policy_path(name: str) -> Path:
    path = SHIPPED_DIR / f"{name}.yaml"
    if not _is_name(name) or not path.is_file():
        raise UsageError(f"no shipped policy named {name!r}",
                         hint=did_you_mean(name, list_shipped()) or f"shipped: {', '.join(list_shipped())}")
    return path


_is_name = is_policy_name


@dataclass(slots=True)
class Compiled:
    """Everything lint and test need: the policy (None on errors) and what was learned on the way."""

    policy: Policy | None
    diagnostics: list[Diagnostic]
    top: RawFile | None
    files: list[RawFile] = field(default_factory=list)
    used_lists: set[str] = field(default_factory=set)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity.value == "error"]


def load_policy(ref: str | Path, *, workspace: Path, home: Path | None = None,
                env: Mapping[str, str] | None = None) -> Policy:
    """Load a shipped policy by name or a policy file; raises PolicyLoadError with every problem."""
    compiled = compile_policy(ref, workspace=workspace, home=home, env=env)
    if compiled.policy is None:
        raise PolicyLoadError(compiled.errors)
    return compiled.policy


def guard_runtime(home: Path) -> dict[str, str]:
    """${guard_code}, ${python_prefix}, ${python_base}: where this guard's code and interpreter live, so a
    policy can let an agent's hook run `guard hook` inside the sandbox (read and exec only).

    A directory that is `/` or holds the home directory would grant far more than guard itself: it is
    replaced by the guard package's own directory, which holds nothing but guard's code. The paths are
    resolved (the loader's one read beside the policy files): the sandbox judges canonical paths, so a
    venv reached through a symlink must be named by where it really is.
    """
    code = Path(__file__).resolve().parent.parent
    home_text = normalize_path(str(home.absolute()))

    def safe(path: str) -> str:
        norm = normalize_path(str(Path(path).resolve()))
        if norm == "/" or home_text == norm or home_text.startswith(norm.rstrip("/") + "/"):
            return normalize_path(str(code))
        return norm

    return {"guard_code": normalize_path(str(code)), "python_prefix": safe(sys.prefix),
            "python_base": safe(sys.base_prefix)}


def compile_policy(ref: str | Path, *, workspace: Path, home: Path | None = None,
                   env: Mapping[str, str] | None = None) -> Compiled:
    env = os.environ if env is None else env
    if isinstance(ref, str) and _is_name(ref):
        path = shipped_policy_path(ref)
        display = str(path)
    else:
        path = Path(ref)
        display = str(ref)
    try:
        path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read policy file {display}: {exc.strerror or exc}") from None
    col = Collector()
    reader = _Reader(col)
    reader.visit(path, display, via=None)
    top = reader.top
    result = Compiled(policy=None, diagnostics=col.items, top=top, files=reader.order)
    if top is None or reader.incomplete:
        # without every file, names defined in a missing parent would be reported as undefined: stop here
        result.diagnostics = _sorted(col.items, reader.order)
        return result
    home_path = home if home is not None else Path(env.get("HOME") or Path.home())
    builtins = {"workspace": normalize_path(str(Path(workspace).absolute())),
                "home": normalize_path(str(home_path.absolute())),
                "tmp": normalize_path(env.get("TMPDIR") or "/tmp"),
                **guard_runtime(home_path)}
    merged = _merge(reader.order, col)
    expander = _Expander(merged.vars, merged.lists, builtins, env, col)
    rules = [_compile_rule(raw, expander) for raw in merged.rules]
    tests = tuple(t for t in (_compile_test(raw, expander) for raw in top.tests) if t is not None)
    variables = {**builtins, **{k: v for k in merged.vars if (v := expander.var_value(k)) is not None}}
    result.used_lists = expander.used_lists
    result.diagnostics = _sorted(col.items, reader.order)
    if col.errors:
        return result
    result.policy = Policy(
        name=top.name or path.stem, description=top.description or "", mode=merged.mode,
        defaults=merged.defaults,
        rules=[r for r in rules if r is not None], sources=tuple(f.path.resolve() for f in reader.order),
        ask_timeout=merged.ask_timeout, host_map=merged.host_map, tests=tests, home=builtins["home"],
        variables=variables, scan_max_entries=merged.scan_max_entries, pass_env=merged.pass_env)
    return result


def _sorted(items: list[Diagnostic], files: list[RawFile]) -> list[Diagnostic]:
    """File order as read (parents first would bury the file being linted: the top file goes first)."""
    rank = {doc.display: i for i, doc in enumerate(reversed(files))}
    return sorted(items, key=lambda d: (rank.get(d.location.file, -1), d.location.line, d.location.col))


class _Reader:
    """Reads a file and its parents, depth first, each once, recording cycles."""

    def __init__(self, col: Collector) -> None:
        self.col = col
        self.order: list[RawFile] = []
        self.done: set[Path] = set()
        self.stack: list[tuple[Path, str]] = []
        self.top: RawFile | None = None
        self.incomplete = False  # a file could not be read or parsed at all

    def visit(self, path: Path, display: str, via: Location | None) -> None:
        real = path.resolve()
        if any(real == p for p, _ in self.stack):
            names = [d for p, d in self.stack[[p for p, _ in self.stack].index(real):]] + [display]
            assert via is not None
            self.col.error(f"extends cycle: {' -> '.join(names)}", via)
            self.incomplete = True
            return
        if real in self.done:
            return
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.col.error(f"cannot read {display}: {message}", via or Location(display))
            self.incomplete = True
            return
        doc = parse_document(text, path, display, self.col)
        if doc is None:
            self.incomplete = True
            return
        if not self.stack:
            self.top = doc
        self.stack.append((real, display))
        for item in doc.extends:
            parent = self._resolve(str(item.value), path, display, item.loc)
            if parent is None:
                self.incomplete = True
            else:
                self.visit(parent[0], parent[1], via=item.loc)
        self.stack.pop()
        self.done.add(real)
        self.order.append(doc)

    def _resolve(self, ref: str, path: Path, display: str, loc: Location) -> tuple[Path, str] | None:
        if _is_name(ref):
            try:
                shipped = shipped_policy_path(ref)
            except UsageError as exc:
                self.col.error(exc.message, loc, hint=exc.hint)
                return None
            return shipped, str(shipped)
        parent = path.parent / ref
        shown = str(Path(display).parent / ref)
        if not parent.is_file():
            self.col.error(f"extends: no policy file {shown}", loc, hint="paths are relative to this file")
            return None
        return parent, shown


@dataclass(slots=True)
class _Merged:
    vars: dict[str, Item] = field(default_factory=dict)
    lists: dict[str, tuple[Location, tuple[Item, ...]]] = field(default_factory=dict)
    defaults: dict[Kind, Verdict] = field(default_factory=dict)
    mode: str = "enforce"
    ask_timeout: float = DEFAULT_ASK_TIMEOUT
    scan_max_entries: int = DEFAULT_SCAN_MAX_ENTRIES
    pass_env: tuple[str, ...] = ()
    host_map: dict[str, str] = field(default_factory=dict)
    rules: list[RawRule] = field(default_factory=list)


def _merge(files: list[RawFile], col: Collector) -> _Merged:
    merged = _Merged()
    first_seen: dict[str, RawRule] = {}
    for doc in files:
        merged.vars.update(doc.vars)
        merged.lists.update(doc.lists)
        merged.defaults.update(doc.defaults)
        if doc.mode is not None:
            merged.mode = doc.mode
        if doc.ask_timeout is not None:
            merged.ask_timeout = doc.ask_timeout
        if doc.scan_max_entries is not None:
            merged.scan_max_entries = doc.scan_max_entries
        if doc.pass_env is not None:  # a child's list replaces its parent's: stated in one place
            merged.pass_env = doc.pass_env
        merged.host_map.update({name: addr for name, (addr, _) in doc.host_map.items()})
        for rule in doc.rules:
            if rule.id in first_seen:
                col.error(f"duplicate rule id {rule.id!r}", rule.loc,
                          hint=f"first defined at {first_seen[rule.id].loc}")
            else:
                first_seen[rule.id] = rule
            merged.rules.append(rule)
    return merged


class _Expander:
    """Expands `$list` entries, `${var}` and `~`, reporting each undefined name where it is used."""

    def __init__(self, variables: dict[str, Item], lists: dict[str, tuple[Location, tuple[Item, ...]]],
                 builtins: dict[str, str], env: Mapping[str, str], col: Collector) -> None:
        self.vars = variables
        self.lists = lists
        self.builtins = builtins
        self.env = env
        self.col = col
        self.used_lists: set[str] = set()
        self._resolved: dict[str, str | None] = {}
        self._resolving: list[str] = []

    def items(self, items: tuple[Item, ...], stack: tuple[str, ...] = ()) -> list[Item]:
        out: list[Item] = []
        for item in items:
            ref = _LIST_REF.fullmatch(item.value) if isinstance(item.value, str) else None
            if ref is None:
                out.append(item)
                continue
            name = ref.group(1)
            if name in stack:
                self.col.error(f"list cycle: {' -> '.join((*stack, name))}", item.loc)
                continue
            if name not in self.lists:
                self.col.error(f"undefined list ${name}", item.loc,
                               hint=did_you_mean(name, self.lists) or "define it under 'lists:'")
                continue
            self.used_lists.add(name)
            out.extend(self.items(self.lists[name][1], (*stack, name)))
        return out

    def text(self, text: str, loc: Location, *, tilde: bool = True) -> str | None:
        if "${" in _VAR_REF.sub("", text):
            self.col.error(f"unclosed '${{' in {text!r}", loc)
            return None
        failed = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal failed
            value = self._lookup(match.group(1), loc)
            if value is None:
                failed = True
                return ""
            return value

        result = _VAR_REF.sub(substitute, text)
        if failed:
            return None
        if tilde and (result == "~" or result.startswith("~/")):
            result = self.builtins["home"] + result[1:]
        return result

    def var_value(self, name: str) -> str | None:
        return self._var(name, self.vars[name].loc)

    def _lookup(self, name: str, loc: Location) -> str | None:
        if name.startswith("env:"):
            key = name[4:]
            if key not in self.env:
                self.col.error(f"environment variable {key} (used as ${{{name}}}) is not set", loc)
                return None
            return self.env[key]
        if name in self.builtins:
            return self.builtins[name]
        if name in self.vars:
            return self._var(name, loc)
        known = [*self.builtins, *self.vars]
        self.col.error(f"undefined variable ${{{name}}}", loc,
                       hint=did_you_mean(name, known) or f"define it under 'vars:' (built in: "
                       f"{', '.join('${' + b + '}' for b in self.builtins)}, ${{env:NAME}})")
        return None

    def _var(self, name: str, loc: Location) -> str | None:
        if name in self._resolved:
            return self._resolved[name]
        if name in self._resolving:
            chain = " -> ".join((*self._resolving[self._resolving.index(name):], name))
            self.col.error(f"variable cycle: {chain}", self.vars[name].loc)
            return None
        self._resolving.append(name)
        item = self.vars[name]
        value = self.text(str(item.value), item.loc)
        self._resolving.pop()
        self._resolved[name] = value
        return value


def _compile_rule(raw: RawRule, ex: _Expander) -> Rule | None:
    col = ex.col
    errors_before = len(col.errors)
    paths: list[PathPattern] = []
    hosts: list[HostPattern] = []
    cidrs: list[IPNetwork] = []
    ports: list[PortRange] = []
    commands: list[CommandPattern] = []
    for matcher, items in raw.matchers.items():
        for item in ex.items(items):
            if matcher == "ports":
                value: str | int | None = item.value if isinstance(item.value, int) \
                    else ex.text(item.value, item.loc, tilde=False)
                if value is None:
                    continue
                try:
                    ports.append(compile_port(value))
                except HostPatternError as exc:
                    col.error(str(exc), item.loc)
                continue
            text = ex.text(str(item.value), item.loc, tilde=matcher == "paths")
            if text is None:
                continue
            try:
                if matcher == "paths":
                    paths.append(compile_path(text))
                elif matcher == "hosts":
                    hosts.append(compile_host(text))
                elif matcher == "cidrs":
                    cidrs.append(compile_cidr(text))
                else:
                    commands.append(compile_command(text))
            except (GlobError, HostPatternError, CommandPatternError) as exc:
                col.error(_glob_message(exc, matcher), item.loc, hint=_glob_hint(exc, matcher))
    except_paths: list[PathPattern] = []
    except_hosts: list[HostPattern] = []
    except_cidrs: list[IPNetwork] = []
    except_commands: list[CommandPattern] = []
    for item in ex.items(raw.excepts):
        text = ex.text(str(item.value), item.loc, tilde=raw.kind is Kind.FILE)
        if text is None:
            continue
        try:
            if raw.kind is Kind.FILE:
                except_paths.append(compile_path(text))
            elif raw.kind is Kind.NETWORK:
                if "/" in text or parse_ip(text) is not None:
                    except_cidrs.append(compile_cidr(text))
                else:
                    except_hosts.append(compile_host(text))
            else:
                except_commands.append(compile_command(text))
        except (GlobError, HostPatternError, CommandPatternError) as exc:
            col.error(_glob_message(exc, "except"), item.loc, hint=_glob_hint(exc, "paths"))
    if len(col.errors) > errors_before:
        return None
    return Rule(id=raw.id, verdict=raw.verdict, ops=raw.ops, kind=raw.kind, reason=raw.reason or "",
                audit_only=raw.audit, location=raw.loc, paths=tuple(paths), hosts=tuple(hosts),
                cidrs=tuple(cidrs), ports=tuple(ports), commands=tuple(commands),
                except_paths=tuple(except_paths), except_hosts=tuple(except_hosts),
                except_cidrs=tuple(except_cidrs), except_commands=tuple(except_commands),
                existing_only=raw.existing_only, outside_new_repos=raw.outside_new_repos, private=raw.private)


def _glob_message(exc: Exception, matcher: str) -> str:
    text = str(exc)
    if matcher in ("paths", "except") and isinstance(exc, GlobError):
        return f"bad glob: {text}"
    return text


def _glob_hint(exc: Exception, matcher: str) -> str | None:
    if isinstance(exc, GlobError) and "not absolute" in str(exc):
        return "start it with '/', '~/', '${workspace}/' or '**/' (matches at any depth)"
    return None


def _compile_test(raw: RawTest, ex: _Expander) -> PolicyTest | None:
    op_text, _, rest = raw.text.strip().partition(" ")
    rest = rest.strip()
    is_file = op_text in (Op.READ.value, Op.WRITE.value, Op.EXEC.value)
    expanded = ex.text(rest, raw.loc, tilde=is_file) if rest else rest
    if expanded is None:
        return None
    try:
        action = parse_action(f"{op_text} {expanded}")
    except UsageError as exc:
        ex.col.error(f"bad test {raw.text!r}: {exc.message}", raw.loc, hint=exc.hint)
        return None
    return PolicyTest(text=raw.text, action=action, expected=raw.expected, location=raw.loc)
