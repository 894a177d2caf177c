"""The one filesystem walk of a launch: what the policy's denies refer to *right now*.

Landlock and bind mounts judge paths, not inodes, and a mount can only cover something that exists. So
before the sandbox starts we find the existing paths that explicit denies (and write-protections, and the
guard's own files) point at inside trees the policy grants: literal paths, glob matches such as
`**/.env`, and files elsewhere in a granted tree that are hard links to any of them. Denies whose path does
not exist yet are listed with their nearest existing ancestor: only the decision tier can guard those.

The walk is bounded (entries and time); a capped walk is reported, never silently treated as complete.
Symlinks are never followed by the walk; a literal deny that is a symlink is resolved, because the kernel
resolves it too when the agent opens it.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from guard.errors import SandboxError
from guard.model import Op, Verdict
from guard.policy.paths import GlobError, PathPattern, compile_path

SELF_PROTECTION_RULE = "guard:self-protection"
FILE_OPS = frozenset({Op.READ, Op.WRITE, Op.EXEC})
# device paths the plan may grant IOCTL_DEV on (terminals): their existence is a launch fact too
TERMINAL_PATHS = ("/dev/tty", "/dev/pts", "/dev/ptmx")
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")
_GLOB_CHARS = frozenset("*?[")


class FileRuleLike(Protocol):
    """The slice of `guard.policy.FileRule` the sandbox needs (docs/contracts.md)."""

    @property
    def rule_id(self) -> str: ...
    @property
    def verdict(self) -> Verdict: ...
    @property
    def ops(self) -> frozenset[Op]: ...
    @property
    def patterns(self) -> tuple[str, ...]: ...
    @property
    def excepts(self) -> tuple[str, ...]: ...
    @property
    def audit_only(self) -> bool: ...


class PolicyLike(Protocol):
    def file_rules(self) -> tuple[FileRuleLike, ...]: ...

    @property
    def sources(self) -> tuple[Path, ...]: ...


# --- globs --------------------------------------------------------------------------------------------
def _components(pattern: str) -> list[str]:
    return [c for c in pattern.split("/") if c]


def is_glob(component: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in component)


def literal_prefix(pattern: str) -> str:
    """The longest leading run of components without glob characters ('/' when the first one is a glob)."""
    out: list[str] = []
    for comp in _components(pattern):
        if is_glob(comp):
            break
        out.append(comp)
    return "/" + "/".join(out)


def is_subtree_pattern(pattern: str) -> bool:
    """True for `literal` and `literal/**`: the pattern names one path and (maybe) all beneath it."""
    comps = _components(pattern)
    if comps and comps[-1] == "**":
        comps = comps[:-1]
    return not any(is_glob(c) for c in comps)


def matcher(pattern: str) -> PathPattern:
    """The policy engine's own compiled glob, so the scan and the decisions can never disagree on what
    a pattern covers (`*`/`?`/`[...]` inside a segment, `**` any depth, `dir/**` includes `dir`)."""
    try:
        return compile_path(pattern)
    except GlobError as exc:
        raise SandboxError(f"bad path pattern {pattern!r}: {exc}") from None


def is_beneath(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


# --- facts --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PathFact:
    """What exists at `path` at launch: kind is dir, file, other (device, fifo, socket) or missing;
    `resolved` is the path with every symlink resolved (what the kernel will judge); `links` are the
    symlinks met on the way, as (where the link is, what it says), so a mount that covers one of them
    can put it back."""

    path: str
    kind: str
    resolved: str
    links: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    """An existing path that a deny-like rule covers; `via` says how it was found."""

    path: str
    kind: str
    rule_id: str
    ops: frozenset[Op]
    verdict: Verdict
    via: str


@dataclass(frozen=True, slots=True)
class MissingDeny:
    pattern: str
    rule_id: str
    ops: frozenset[Op]
    ancestor: str  # nearest existing ancestor: whoever can create entries there can create the path


@dataclass(frozen=True, slots=True)
class LaunchFacts:
    paths: tuple[PathFact, ...]
    matches: tuple[Match, ...]
    missing: tuple[MissingDeny, ...] = ()
    walked: tuple[str, ...] = ()
    capped: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    _index: dict[str, PathFact] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({p.path: p for p in self.paths})

    def fact(self, path: str) -> PathFact | None:
        return self._index.get(path)


@dataclass(frozen=True, slots=True)
class _Target:
    pattern: str
    rule_id: str
    ops: frozenset[Op]
    verdict: Verdict
    glob: PathPattern
    prefix: str
    subtree: bool
    carve: bool = False  # an allow rule's except: a hole in that grant, not a deny of its own

    @property
    def anchor(self) -> str | None:
        """The name the first matching path must end in (the last non-`**` component, when literal).

        In a pre-order walk the first path to match a pattern is the shallowest, and it ends in this
        name; everything beneath it is then covered without matching again. None: test every path."""
        comps = [c for c in _components(self.pattern) if c != "**"]
        return comps[-1] if comps and not is_glob(comps[-1]) else None


def deny_targets(policy: PolicyLike, protected: Sequence[Path]) -> list[_Target]:
    """Everything a mask or a write-protection may be needed for: deny and ask rules (not audit-only),
    the excepts of allow rules (carved out of a grant), and the guard's own files."""
    out: list[_Target] = []

    def add(pattern: str, rule_id: str, ops: frozenset[Op], verdict: Verdict, carve: bool = False) -> None:
        pattern = pattern if pattern.startswith("/") else "/" + pattern
        out.append(_Target(pattern, rule_id, ops, verdict, matcher(pattern), literal_prefix(pattern),
                           is_subtree_pattern(pattern), carve))

    for rule in policy.file_rules():
        ops = frozenset(rule.ops) & FILE_OPS
        if not ops or rule.audit_only:
            continue
        if rule.verdict in (Verdict.DENY, Verdict.ASK):
            for pattern in rule.patterns:
                add(pattern, rule.rule_id, ops, rule.verdict)
        else:
            for pattern in rule.excepts:
                add(pattern, rule.rule_id, ops, Verdict.DENY, carve=True)
    everything = frozenset(FILE_OPS)
    for path in protected:
        add(os.path.abspath(path), SELF_PROTECTION_RULE, everything, Verdict.DENY)
    return out


def grant_prefixes(policy: PolicyLike) -> list[tuple[str, frozenset[Op], str]]:
    """(literal prefix, ops, rule id) of every allow rule: what Landlock will open beneath."""
    out: list[tuple[str, frozenset[Op], str]] = []
    for rule in policy.file_rules():
        ops = frozenset(rule.ops) & FILE_OPS
        if rule.verdict is Verdict.ALLOW and ops:
            out.extend((literal_prefix(p if p.startswith("/") else "/" + p), ops, rule.rule_id)
                       for p in rule.patterns)
    return out


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def path_fact(path: str) -> PathFact:
    """Resolve like the kernel will, except through /proc: /proc/self and /dev/stdout resolve to *this*
    process's entries, which mean nothing inside the sandbox (kind `proc-link`, left unresolved)."""
    if _through_proc_pid(path):
        return PathFact(path, "proc-link", path)
    resolved = os.path.realpath(path)
    links = _symlinks_on_the_way(path) if resolved != os.path.normpath(path) else ()
    try:
        st = os.stat(resolved)
    except OSError:
        return PathFact(path, "missing", resolved, links)
    return PathFact(path, _kind(st.st_mode), resolved, links)


def _symlinks_on_the_way(path: str) -> tuple[tuple[str, str], ...]:
    """Every symlink resolving `path` passes through, located by its real (resolved) parent."""
    parts, cur = _components(path), "/"
    out: list[tuple[str, str]] = []
    while parts and len(out) <= 40:
        comp = parts.pop(0)
        if comp == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, comp) if comp != "." else cur
        try:
            target = os.readlink(nxt)
        except OSError:  # not a link (or gone): a real component
            cur = nxt
            continue
        out.append((nxt, target))
        parts = _components(target) + parts
        cur = "/" if target.startswith("/") else cur
    return tuple(out)


def _via_proc_pid(path: str) -> bool:
    """True for /proc/self/..., /proc/thread-self/... and /proc/<pid>/...: per-process entries."""
    comps = _components(path)
    if len(comps) < 2 or comps[0] != "proc":
        return False
    return comps[1] in ("self", "thread-self") or comps[1].isdigit()


def _through_proc_pid(path: str) -> bool:
    """Whether resolving `path` (symlink by symlink) passes through a per-process /proc entry."""
    parts, cur, hops = _components(path), "/", 0
    while parts:
        nxt = os.path.normpath(os.path.join(cur, parts.pop(0)))
        if _via_proc_pid(nxt):
            return True
        if not os.path.islink(nxt):
            cur = nxt
            continue
        hops += 1
        if hops > 40:
            return False
        try:
            target = os.readlink(nxt)
        except OSError:
            return False
        parts = _components(target) + parts
        cur = "/" if target.startswith("/") else cur
    return False


def _nearest_existing(path: str) -> str:
    cur = path
    while cur != "/" and not os.path.lexists(cur):
        cur = os.path.dirname(cur)
    return cur


class _Budget:
    def __init__(self, max_entries: int, seconds: float, clock: Callable[[], float]) -> None:
        self.left = max_entries
        self.deadline = clock() + seconds
        self.clock = clock
        self.capped: list[str] = []
        self.max_entries, self.seconds = max_entries, seconds

    def spend(self, root: str) -> bool:
        self.left -= 1
        if self.left < 0 or (self.left % 512 == 0 and self.clock() > self.deadline):
            why = f"{self.max_entries} entries" if self.left < 0 else f"{self.seconds:g} s"
            self.capped.append(f"scan of {root} stopped after {why}: files beyond it were not checked")
            return False
        return True


def _walk(root: str, budget: _Budget, unreadable: list[str]) -> Iterator[tuple[str, str]]:
    """Yield (path, kind) beneath root in depth-first pre-order (a directory, then all of its contents,
    then its next sibling), never following symlinks. Kind is dir, file (regular) or other, from the
    directory entry itself: no stat per file, so a walk costs one getdents per directory. Stops (and
    records why) when the budget runs out."""

    def listing(path: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                return list(it)
        except OSError as exc:
            unreadable.append(f"{path}: {exc.strerror}")
            return []

    stack = [listing(root)]
    while stack:
        if not stack[-1]:
            stack.pop()
            continue
        entry = stack[-1].pop()
        if not budget.spend(root):
            return
        try:
            if entry.is_dir(follow_symlinks=False):
                yield entry.path, "dir"
                stack.append(listing(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield entry.path, "file"
            else:
                yield entry.path, "other"
        except OSError as exc:
            unreadable.append(f"{entry.path}: {exc.strerror}")


def _walk_roots(grants: list[tuple[str, frozenset[Op], str]], workspace: str, home: str) -> list[str]:
    """The trees walked for glob denies and planted hard links: the workspace, where projects keep their
    `.env` files and where something outside the sandbox may have planted a link before launch.

    Walking every granted tree (toolchains, caches, /tmp) costs seconds on a real workstation at every
    launch; elsewhere, literal denies are still masked, and writes matching a glob deny are refused by
    the decision tier whenever they happen. docs/sandbox.md says what that leaves open."""
    del grants, home
    return [workspace] if os.path.isdir(workspace) else []


def scan_launch_facts(policy: PolicyLike, *, workspace: Path, protected: Sequence[Path],
                      home: Path | None = None, max_entries: int = 200_000, seconds: float = 3.0,
                      clock: Callable[[], float] = time.monotonic) -> LaunchFacts:
    """Walk what the policy's denies refer to at launch; see the module docstring."""
    ws = os.path.realpath(workspace)
    home_dir = os.path.realpath(home if home is not None else Path.home())
    targets = deny_targets(policy, protected)
    grants = grant_prefixes(policy)
    budget = _Budget(max_entries, seconds, clock)
    unreadable: list[str] = []

    facts: dict[str, PathFact] = {}
    for path in [g[0] for g in grants] + [t.prefix for t in targets] + list(TERMINAL_PATHS) + [ws]:
        if path not in facts:
            facts[path] = path_fact(path)

    matches: dict[str, Match] = {}
    missing: list[MissingDeny] = []
    denied_inodes: dict[tuple[int, int], Match] = {}

    def record(m: Match) -> None:
        old = matches.get(m.path)
        if old is None or _strength(m) > _strength(old):
            matches[m.path] = m

    def remember_inode(path: str, owner: Match) -> None:
        """Only a file with more than one link can have another name to find."""
        try:
            st = os.lstat(path)
        except OSError as exc:
            unreadable.append(f"{path}: {exc.strerror}")
            return
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            denied_inodes.setdefault((st.st_dev, st.st_ino), owner)

    # literal targets: resolve, record, and remember the inodes they protect
    for t in targets:
        if not t.subtree:
            continue
        fact = facts[t.prefix]
        if fact.kind == "missing":
            missing.append(MissingDeny(t.pattern, t.rule_id, t.ops, _nearest_existing(t.prefix)))
            continue
        via = "except" if t.carve else "protected" if t.rule_id == SELF_PROTECTION_RULE else "pattern"
        m = Match(fact.resolved, fact.kind, t.rule_id, t.ops, t.verdict, via)
        record(m)
        if t.carve or Op.READ not in t.ops:
            # Other names are hunted for secrets (read denies) only. An except is just "not granted by
            # that rule"; write-protected trees (toolchains: hundreds of thousands of files) would cost
            # seconds at every launch, so a hard link planted in the workspace to a toolchain file is
            # not found (docs/sandbox.md lists this).
            continue
        if fact.kind == "dir":
            for path, kind in _walk(fact.resolved, budget, unreadable):
                if kind == "file":
                    remember_inode(path, m)
        elif fact.kind == "file":
            remember_inode(fact.resolved, m)

    # one walk of the granted trees: glob matches by name, and the regular files an alias could hide in
    globs = [t for t in targets if not t.subtree]
    roots = _walk_roots(grants, ws, home_dir)
    # a granted tree that is not walked may still lie wholly inside a glob deny (a grant of
    # `x/.git/hooks/**` against a deny of `**/.git/hooks/**`): that costs one match per grant, no walk
    for prefix, _, _ in grants:
        if any(is_beneath(prefix, r) for r in roots) or facts[prefix].kind != "dir":
            continue
        for t in globs:
            if t.glob.matches(prefix):
                record(Match(facts[prefix].resolved, "dir", t.rule_id, t.ops, t.verdict,
                             f"{'except' if t.carve else 'glob'} {t.pattern}"))
                break
    candidates: list[str] = []
    for root in roots:
        relevant = [t for t in globs if is_beneath(root, t.prefix) or is_beneath(t.prefix, root)]
        by_anchor: dict[str, list[_Target]] = {}
        unanchored: list[_Target] = []
        for t in relevant:
            anchor = t.anchor
            if anchor is None:
                unanchored.append(t)
            else:
                by_anchor.setdefault(anchor, []).append(t)
        inside: list[tuple[str, Match]] = []  # matched directories we are walking beneath
        for t in relevant:  # the root itself may already lie inside a match (a grant below `x/**/.git/**`)
            if t.glob.matches(root):
                m = Match(root, "dir", t.rule_id, t.ops, t.verdict,
                          f"{'except' if t.carve else 'glob'} {t.pattern}")
                record(m)
                inside.append((root, m))
                break
        for path, kind in _walk(root, budget, unreadable):
            while inside and not is_beneath(path, inside[-1][0]):
                inside.pop()
            owner = inside[-1][1] if inside else None
            if owner is None:
                name = path.rpartition("/")[2]
                for t in (*by_anchor.get(name, ()), *unanchored):
                    if t.glob.matches(path):
                        target = path_fact(path)  # a matched symlink hides what it points at
                        if target.kind == "missing":
                            break
                        owner = Match(target.resolved, target.kind, t.rule_id, t.ops, t.verdict,
                                      f"{'except' if t.carve else 'glob'} {t.pattern}")
                        record(owner)
                        if kind == "dir":
                            inside.append((path, owner))
                        break
            if kind != "file":
                continue
            if owner is not None:
                remember_inode(path, owner)
            else:
                candidates.append(path)

    # aliases: only when some denied file has another name somewhere (st_nlink > 1) is a stat per
    # candidate worth paying; in the common case this loop does not run at all
    if denied_inodes:
        denied_dirs = [m.path for m in matches.values() if m.kind == "dir"]
        for path in candidates:
            if not budget.spend("hard-link check"):
                break
            try:
                st = os.lstat(path)
            except OSError:
                continue  # gone since the walk: nothing left to alias
            orig = denied_inodes.get((st.st_dev, st.st_ino))
            if orig is not None and path not in matches and not any(is_beneath(path, d) for d in denied_dirs):
                record(Match(path, "file", orig.rule_id, orig.ops, orig.verdict, f"hard link to {orig.path}"))

    ordered = tuple(sorted(matches.values(), key=lambda m: m.path))
    return LaunchFacts(paths=tuple(facts.values()), matches=ordered,
                       missing=tuple(missing), walked=tuple(roots), capped=tuple(budget.capped),
                       unreadable=tuple(unreadable))


def _strength(m: Match) -> int:
    """Which of two matches on one path wins: hiding beats write-protecting beats no-exec."""
    if Op.READ in m.ops:
        return 3
    if Op.WRITE in m.ops:
        return 2
    return 1
