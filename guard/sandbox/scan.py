"""The one filesystem walk of a launch: what the policy's denies refer to *right now*.

Landlock and bind mounts judge paths, not inodes, and a mount can only cover something that exists. So
before the sandbox starts we find the existing paths that explicit denies (and write-protections, and the
guard's own files) point at inside trees the policy grants:

- literal paths (`~/.ssh/**`), resolved as the kernel will resolve them;
- globs without `**` (`/tmp/krb5cc_*`), by listing the few directories they can match in;
- globs with `**` (`**/.env`), by one walk of the workspace (where projects keep their secrets) and by
  matching every other granted path (home configuration files, a grant lying inside a denied tree);
- other names of denied files (hard links planted before launch). Only a file with more than one link has
  one, on its own filesystem: when some denied file has, every tree the agent may read on that
  filesystem is searched (workspace, caches, toolchains, /tmp, system trees) until all of its names are
  accounted for. In the common case no denied file has a second name and nothing more is walked.

What is not walked, by design: `**` globs inside granted trees other than the workspace (caches,
toolchains, agent state, /tmp, system trees) are not matched at launch; creating such a name during the
session is refused by the decision tier like any other denied write (docs/sandbox.md).

The walk is bounded by a number of directory entries (`settings.scan_max_entries`), never by time, and
fails closed: past the bound the session does not start (ScanCapped), because a secret must never become
readable just because a tree is large. It reads kind and inode from the directory entries themselves (no
stat per file) and tests each name against all glob denies at once. Symlinks are never followed by the
walk; a literal deny that is a symlink is resolved, because the kernel resolves it too when the agent
opens it.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from guard.errors import SandboxError
from guard.model import Op, Verdict
from guard.policy.paths import GlobError, PathPattern, compile_path
from guard.sandbox.core import compiled

SELF_PROTECTION_RULE = "guard:self-protection"
CREDENTIAL_VARIABLE_RULE = "guard:credential-variable"  # a file a withheld credential variable names
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
    unreadable: tuple[str, ...] = ()
    entries: int = 0  # directory entries the scan visited
    unfound: int = 0  # names of denied files outside every readable tree (unreachable, so harmless)
    head_dirs: tuple[str, ...] = ()  # workspace directories holding a `HEAD` name: maybe bare repositories
    # directories whose literal write-protection holds their name only, like `**/.git` (see plan._names_only):
    # the workspace's bare repositories, whose objects and refs every push writes (guard.sandbox.git_launch)
    held_names: tuple[str, ...] = ()
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


def deny_targets(policy: PolicyLike, protected: Sequence[Path],
                 credential_files: Sequence[Path] = ()) -> list[_Target]:
    """Everything a mask or a write-protection may be needed for: deny and ask rules (not audit-only),
    the excepts of allow rules (carved out of a grant), and the guard's own files."""
    out: list[_Target] = []
    # the engine's own compiled patterns, by text (a policy built from a policy document has them)
    compiled_by_text = getattr(policy, "path_patterns", None)
    known: dict[str, PathPattern] = compiled_by_text() if callable(compiled_by_text) else {}

    def add(pattern: str, rule_id: str, ops: frozenset[Op], verdict: Verdict, carve: bool = False) -> None:
        pattern = pattern if pattern.startswith("/") else "/" + pattern
        glob = known.get(pattern) or matcher(pattern)
        out.append(_Target(pattern, rule_id, ops, verdict, glob, literal_prefix(pattern),
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
    for path in credential_files:
        add(os.path.abspath(path), CREDENTIAL_VARIABLE_RULE, everything, Verdict.DENY)
    return out


def grant_prefixes(policy: PolicyLike) -> list[tuple[str, frozenset[Op], str]]:
    """(literal prefix, ops, rule id) of every allow rule: what Landlock will open beneath.

    A write-only grant of names directly in the home whose only glob is their last component
    (`~/.claude.json.tmp.*`, the temp files an agent saves its config through) is left to the decision
    tier: the supervisor performs every create, write-open, rename and removal by name, so it needs no
    kernel grant, and Landlock could only give one as write on the whole home. A grant of names in any
    other directory (`~/notes/*`, as `guard policy learn` writes them) is a Landlock grant of that
    directory, as before."""
    policy_home: object = getattr(policy, "home", None)
    home = os.path.realpath(os.path.expanduser("~") if policy_home is None else str(policy_home))
    out: list[tuple[str, frozenset[Op], str]] = []
    for rule in policy.file_rules():
        ops = frozenset(rule.ops) & FILE_OPS
        if rule.verdict is Verdict.ALLOW and ops:
            for p in rule.patterns:
                prefix = literal_prefix(p if p.startswith("/") else "/" + p)
                if ops == {Op.WRITE} and names_beside(p) and os.path.realpath(prefix) == home:
                    continue
                out.append((prefix, ops, rule.rule_id))
    return out


def names_only(pattern: str) -> bool:
    """Whether a write-protect `pattern` names a repository's `.git` itself (`**/.git`), not what lies in
    it: the repository's files are written by every commit; the name is the decision tier's to hold."""
    return pattern.rstrip("/").rsplit("/", 1)[-1] == ".git"


def names_beside(pattern: str) -> bool:
    """Whether `pattern` names entries of one literal directory by a glob in its last component only."""
    comps = _components(pattern)
    return bool(comps) and is_glob(comps[-1]) and "**" not in comps[-1] and not any(map(is_glob, comps[:-1]))



def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def path_fact(path: str, islink: Callable[[str], bool] = os.path.islink) -> PathFact:
    """Resolve like the kernel will, except through /proc: /proc/self and /dev/stdout resolve to *this*
    process's entries, which mean nothing inside the sandbox (kind `proc-link`, left unresolved).
    `islink` may answer from what this scan already looked at (the paths share their leading parts)."""
    if _through_proc_pid(path, islink):
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


def _through_proc_pid(path: str, islink: Callable[[str], bool] = os.path.islink) -> bool:
    """Whether resolving `path` (symlink by symlink) passes through a per-process /proc entry."""
    parts, cur, hops = _components(path), "/", 0
    while parts:
        nxt = os.path.normpath(os.path.join(cur, parts.pop(0)))
        if _via_proc_pid(nxt):
            return True
        if not islink(nxt):
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


class ScanCapped(SandboxError):
    """The launch walk hit `settings.scan_max_entries`: what lies beyond it was not checked, so the
    session does not start (a secret must never become readable because a tree is large)."""


SCAN_SETTING = "settings.scan_max_entries"


class _Budget:
    """Entries the launch walk may visit (one directory entry = one). Only a count, never a clock: the
    same tree gives the same answer on a loaded machine and an idle one."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.left = max_entries

    def exhausted(self, where: str) -> ScanCapped:
        return ScanCapped(
            f"the launch scan stopped after {self.max_entries} directory entries ({SCAN_SETTING}) in "
            f"{where}: files beyond it could not be checked for denied names (such as **/.env) and hard "
            "links to denied files, so nothing was started",
            hint=f"raise {SCAN_SETTING} in a policy that extends this one (for example `extends: "
                 f"[coding-agent]` and `settings: {{scan_max_entries: {self.max_entries * 5}}}`), or use a "
                 "narrower --workspace; `scripts/bench_launch.py` measures what a scan costs here")


@dataclass(slots=True)
class _Entry:
    path: str
    name: str
    kind: str  # dir, file or other
    ino: int
    parent: str  # the name of the directory holding it


def _walk(root: str, budget: _Budget, unreadable: list[str],
          prune: Callable[[str], bool] = lambda _p: False) -> Iterator[_Entry]:
    """Yield every entry beneath root in depth-first pre-order (a directory, then all of its contents,
    then its next sibling), never following symlinks and never calling stat: kind and inode come from
    the directory entry (getdents' d_type and d_ino), so a walk costs one getdents per directory.
    `prune(path)` keeps the walk out of a directory (it is still yielded). Raises ScanCapped when the
    budget runs out; nothing is skipped silently (unreadable directories are listed)."""

    def listing(path: str) -> tuple[list[os.DirEntry[str]], str]:
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            unreadable.append(f"{path}: {exc.strerror}")
            entries = []
        entries.reverse()  # popped from the end: the directory's own order
        return entries, path.rpartition("/")[2]

    stack = [listing(root)]
    while stack:
        top, parent = stack[-1]
        if not top:
            stack.pop()
            continue
        entry = top.pop()
        budget.left -= 1
        if budget.left < 0:
            raise budget.exhausted(root)
        try:
            if entry.is_dir(follow_symlinks=False):
                yield _Entry(entry.path, entry.name, "dir", entry.inode(), parent)
                if not prune(entry.path):
                    stack.append(listing(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield _Entry(entry.path, entry.name, "file", entry.inode(), parent)
            else:
                yield _Entry(entry.path, entry.name, "other", entry.inode(), parent)
        except OSError as exc:
            unreadable.append(f"{entry.path}: {exc.strerror}")


class _Names:
    """The glob targets indexed by one literal name each must see, so a walked entry costs a dict lookup
    or two, whatever the number of glob denies.

    A path can only be the first (shallowest) match of a pattern when its last components match the
    pattern's fixed-length tail (what follows its last inner `**`, a trailing `**` set aside). The
    deepest literal component of that tail, at some distance from the end, is the index key: `.env`
    for `**/.env` (the entry's own name), `hooks` for `**/.git/hooks/*` (its parent's name). A tail
    without any literal component (`**/.env.*`) is tested with one combined regular expression."""

    def __init__(self, targets: Sequence[_Target]) -> None:
        self.by_key: dict[tuple[int, str], list[_Target]] = {}
        self.by_glob: list[tuple[PathPattern, _Target]] = []
        self.everything: list[_Target] = []
        for t in targets:
            tail = _tail(t.pattern)
            for depth, seg in enumerate(reversed(tail)):
                if not is_glob(seg):
                    self.by_key.setdefault((depth, seg), []).append(t)
                    break
            else:
                if tail:
                    self.by_glob.append((matcher("/" + tail[-1]), t))
                else:
                    self.everything.append(t)
        self.depths = sorted({d for d, _ in self.by_key})
        parts = [p.regex.pattern[1:] for p, _ in self.by_glob if p.regex is not None]
        self.any_glob = re.compile("|".join(f"(?:{p})" for p in parts), re.DOTALL) if parts else None
        # the literal start of every glob segment (`.env.` of `.env.*`): str.startswith first, in C
        starts = [_literal_start(p.text[1:]) for p, _ in self.by_glob]
        self.glob_starts: tuple[str, ...] | None = tuple(starts) if starts and all(starts) else None

        self.by_name = {name: ts for (d, name), ts in self.by_key.items() if d == 0}
        self.by_parent = {name: ts for (d, name), ts in self.by_key.items() if d == 1}
        self.deeper = any(d > 1 for d in self.depths) or bool(self.everything)

    def may_match(self, name: str, parent: str) -> bool:
        """The cheap test every walked entry pays: could any pattern's first match end here?"""
        if name in self.by_name or parent in self.by_parent or self.deeper:
            return True
        if self.any_glob is None or (self.glob_starts is not None and not name.startswith(self.glob_starts)):
            return False
        return self.any_glob.fullmatch(name) is not None

    def candidates(self, path: str, name: str, parent: str) -> list[_Target]:
        out: list[_Target] = list(self.everything)
        for depth in self.depths:
            if depth == 0:
                key = name
            elif depth == 1:
                key = parent
            else:
                parts = path.split("/")
                key = parts[-1 - depth] if len(parts) > depth + 1 else ""
            hit = self.by_key.get((depth, key))
            if hit:
                out.extend(hit)
        if self.any_glob is not None and self.any_glob.fullmatch(name) is not None:
            out.extend(t for p, t in self.by_glob if p.matches("/" + name))
        return out


def _glob_walk(root: str, names: _Names, budget: _Budget, unreadable: list[str],
               prune: set[str], on_match: Callable[[str, str, str, str], bool],
               head_dirs: list[str] | None = None) -> None:
    """The workspace walk, kept tight because it visits every entry: `_walk`'s order and rules, but each
    entry costs a dict lookup or two (`_Names.may_match`) unless it may match a glob deny, in which case
    `on_match(path, name, parent, kind)` decides; a matched directory is not descended into (its match
    covers it), nor is one in `prune`. Directories that hold a `HEAD` name are noted in `head_dirs` (bare
    repositories are found there, guard.sandbox.git_launch) at no extra system call.

    The compiled core walks the same way, entry for entry, with the cheap test in C (a differential
    test holds them together): a node_modules-sized workspace of 120,000 entries costs about half."""
    compiled = _compiled_glob_walk(names)
    if compiled is not None:
        def candidate(path: str, name: str, parent: str, kind: str) -> bool:
            return names.may_match(name, parent) and on_match(path, name, parent, kind)

        starts = names.glob_starts if names.any_glob is not None else ()
        used, capped = compiled(root, list(names.by_name), list(names.by_parent), list(starts or ()),
                                list(prune), max(budget.left, 0), candidate, unreadable, head_dirs)
        budget.left -= used
        if capped:
            raise budget.exhausted(root)
        return
    _glob_walk_here(root, names, budget, unreadable, prune.__contains__, on_match, head_dirs)


def _compiled_glob_walk(names: _Names) -> Callable[..., tuple[int, bool]] | None:
    """The core's walk, when it is built and the cheap test can be made in C: by names and prefixes (a
    glob deny whose name has no literal start, or one that looks deeper than the parent, is Python's)."""
    if names.deeper or (names.any_glob is not None and names.glob_starts is None):
        return None
    return compiled("glob_walk")


def _glob_walk_here(root: str, names: _Names, budget: _Budget, unreadable: list[str],
                    prune: Callable[[str], bool], on_match: Callable[[str, str, str, str], bool],
                    head_dirs: list[str] | None = None) -> None:
    """_glob_walk in Python (no compiled core, or a test the core cannot make)."""

    def listing(path: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            unreadable.append(f"{path}: {exc.strerror}")
            return []
        if head_dirs is not None and any(e.name == "HEAD" for e in entries):
            head_dirs.append(path)
        entries.reverse()
        return entries

    may_match = names.may_match
    stack = [(listing(root), root.rpartition("/")[2])]
    while stack:
        entries, parent = stack[-1]
        if not entries:
            stack.pop()
            continue
        entry = entries.pop()
        budget.left -= 1
        if budget.left < 0:
            raise budget.exhausted(root)
        name = entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if may_match(name, parent):
                kind = "dir" if is_dir else "file" if entry.is_file(follow_symlinks=False) else "other"
                if on_match(entry.path, name, parent, kind):
                    continue
            if is_dir and not prune(entry.path):
                stack.append((listing(entry.path), name))
        except OSError as exc:
            unreadable.append(f"{entry.path}: {exc.strerror}")


def _literal_start(segment: str) -> str:
    """The characters of a glob segment before its first glob character (or escape)."""
    out = []
    for ch in segment:
        if ch in "*?[\\":
            break
        out.append(ch)
    return "".join(out)


def _tail(pattern: str) -> list[str]:
    comps = _components(pattern)
    if comps and comps[-1] == "**":
        comps = comps[:-1]
    if "**" in comps:
        comps = comps[len(comps) - comps[::-1].index("**"):]
    return comps


def _bounded(pattern: str) -> bool:
    """A glob without `**`: its matches lie at one depth, found by listing a few directories."""
    return "**" not in _components(pattern)


def _expand(pattern: str, budget: _Budget, unreadable: list[str],
            listed: dict[str, list[str] | None] | None = None) -> list[str]:
    """Existing paths matching a `**`-free glob, level by level from its literal prefix (like glob(3),
    without following a symlinked last component). `listed` keeps each directory's sorted names for the
    other globs of the same scan (five of the default policy's list /tmp, which on a workstation holds
    hundreds of entries); None for one that could not be listed."""
    comps = _components(pattern)
    paths = ["/"]
    listed = {} if listed is None else listed
    for i, comp in enumerate(comps):
        nxt: list[str] = []
        last = i == len(comps) - 1
        seg = None if not is_glob(comp) else matcher("/" + comp)
        for base in paths:
            if seg is None:
                cand = os.path.join(base, comp)
                if os.path.lexists(cand) and (last or os.path.isdir(cand)):
                    nxt.append(cand)
                continue
            if base not in listed:
                try:
                    with os.scandir(base) as it:
                        listed[base] = sorted(e.name for e in it)
                except OSError as exc:
                    listed[base] = None
                    if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                        unreadable.append(f"{base}: {exc.strerror}")
                    continue
                budget.left -= len(listed[base] or ())
                if budget.left < 0:
                    raise budget.exhausted(base)
            names = listed[base]
            if names is None:
                continue
            for name in names:
                if not seg.matches("/" + name):
                    continue
                cand = os.path.join(base, name)
                if last or os.path.isdir(cand):
                    nxt.append(cand)
        paths = nxt
    return paths


def scan_launch_facts(policy: PolicyLike, *, workspace: Path, protected: Sequence[Path],
                      home: Path | None = None, max_entries: int = 200_000,
                      credential_files: Sequence[Path] = (), unhunted: Sequence[Path] = ()) -> LaunchFacts:
    """Walk what the policy's denies refer to at launch; see the module docstring. Raises ScanCapped
    when the walk needs more than `max_entries` directory entries. `credential_files` are hidden like
    credentials: the files that withheld credential variables name (KRB5CCNAME, KUBECONFIG, ...).
    `unhunted` are directories inside hidden trees whose files hold no secret and need no alias hunt
    (other sessions' private layers inside the guard's state: the agents' own cache writes)."""
    ws = os.path.realpath(workspace)
    del home  # the roots come from the policy's grants
    targets = deny_targets(policy, protected, credential_files)
    skip_hunt = {os.path.realpath(p) for p in unhunted}
    grants = grant_prefixes(policy)
    budget = _Budget(max_entries)
    unreadable: list[str] = []

    facts: dict[str, PathFact] = {}
    islink = functools.lru_cache(maxsize=None)(os.path.islink)  # one look per name for this scan
    for path in [g[0] for g in grants] + [t.prefix for t in targets] + list(TERMINAL_PATHS) + [ws]:
        if path not in facts:
            facts[path] = path_fact(path, islink)

    matches: dict[str, Match] = {}
    missing: list[MissingDeny] = []
    # (dev, ino) of every denied file with another name somewhere -> (its match, names known so far)
    denied_inodes: dict[tuple[int, int], tuple[Match, set[str], int]] = {}

    def record(m: Match) -> None:
        old = matches.get(m.path)
        if old is None or _strength(m) > _strength(old):
            matches[m.path] = m

    def remember_inode(path: str, owner: Match, st: os.stat_result | None = None) -> None:
        """Only a file with more than one link can have another name to find."""
        hunted = Op.READ in owner.ops or owner.rule_id == SELF_PROTECTION_RULE
        if owner.via.startswith("except") or not hunted:
            return  # an except is "not granted by that rule", not a deny of its own; see protect()
        if st is None:
            try:
                st = os.lstat(path)
            except OSError as exc:
                unreadable.append(f"{path}: {exc.strerror}")
                return
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            known = denied_inodes.setdefault((st.st_dev, st.st_ino), (owner, set(), st.st_nlink))
            known[1].add(path)

    def protect(m: Match, walk_dir: bool) -> None:
        """Record a match and remember the inodes it denies (walking a denied directory)."""
        record(m)
        if Op.READ not in m.ops and m.rule_id != SELF_PROTECTION_RULE:
            # Other names are hunted for what must not be read (and for the guard's own files). Write-
            # protected trees (toolchains: hundreds of thousands of files) would cost seconds at every
            # launch, so a hard link to a toolchain file is left to the decision tier, which refuses
            # write-opens of any file with more than one link.
            return
        if m.kind == "dir" and walk_dir:
            for e in _walk(m.path, budget, unreadable, prune=skip_hunt.__contains__):
                if e.kind == "file":
                    remember_inode(e.path, m)
        elif m.kind == "file":
            remember_inode(m.path, m)

    def via(t: _Target) -> str:
        return f"{'except' if t.carve else 'glob'} {t.pattern}"

    # 1. literal targets: resolve, record, and remember the inodes they protect
    for t in targets:
        if not t.subtree:
            continue
        fact = facts[t.prefix]
        if fact.kind == "missing":
            missing.append(MissingDeny(t.pattern, t.rule_id, t.ops, _nearest_existing(t.prefix)))
            continue
        kind = "except" if t.carve else "protected" if t.rule_id == SELF_PROTECTION_RULE else "pattern"
        protect(Match(fact.resolved, fact.kind, t.rule_id, t.ops, t.verdict, kind), walk_dir=not t.carve)

    # 2. globs without `**` (`/tmp/krb5cc_*`): their matches lie at one depth, found by listing
    globs = [t for t in targets if not t.subtree]
    listed: dict[str, list[str] | None] = {}
    for t in globs:
        if not _bounded(t.pattern):
            continue
        for path in _expand(t.pattern, budget, unreadable, listed):
            target = path_fact(path, islink)  # a matched symlink hides what it points at
            if target.kind not in ("missing", "proc-link"):
                protect(Match(target.resolved, target.kind, t.rule_id, t.ops, t.verdict, via(t)),
                        walk_dir=True)

    # 3. globs with `**` (`**/.env`): one walk of the workspace, where projects keep their secrets.
    # Granted files elsewhere (home configuration) are matched one by one; a granted tree that lies wholly
    # inside a glob deny (a grant of `x/.git/hooks/**` against `**/.git/hooks/**`) costs one match.
    deep = [t for t in globs if not _bounded(t.pattern)]
    roots = [ws] if os.path.isdir(ws) else []
    for prefix, _, _ in grants:
        fact = facts[prefix]
        if fact.kind not in ("dir", "file") or any(is_beneath(prefix, r) for r in roots):
            continue
        for t in deep:
            if t.glob.matches(prefix) or t.glob.matches(fact.resolved):
                protect(Match(fact.resolved, fact.kind, t.rule_id, t.ops, t.verdict, via(t)), walk_dir=True)
                break
    hidden_dirs = {m.path for m in matches.values()
                   if m.kind == "dir" and Op.READ in m.ops and not m.via.startswith("except")}
    head_dirs: list[str] = []
    for root in roots:
        relevant = [t for t in deep if is_beneath(root, t.prefix) or is_beneath(t.prefix, root)]
        names = _Names(relevant)
        covered = False
        for t in relevant:  # the root itself may already lie inside a match (a grant below `x/**/.git/**`)
            if t.glob.matches(root):
                protect(Match(root, "dir", t.rule_id, t.ops, t.verdict, via(t)), walk_dir=True)
                covered = True
                break
        if covered:
            continue

        def on_match(path: str, name: str, parent: str, kind: str, names: _Names = names) -> bool:
            for t in names.candidates(path, name, parent):
                if t.glob.matches(path):
                    target = path_fact(path, islink)  # a matched symlink hides what it points at
                    if target.kind == "missing":
                        return False
                    protect(Match(target.resolved, target.kind, t.rule_id, t.ops, t.verdict, via(t)),
                            walk_dir=kind == "dir")
                    # a protected `.git` name covers only itself: what lies in it is matched on its own
                    return not (kind == "dir" and Op.READ not in t.ops and names_only(t.pattern))
            return False

        _glob_walk(root, names, budget, unreadable, hidden_dirs, on_match, head_dirs)

    # 4. other names of denied files. Only a denied file with more than one link has one, and it lies on
    # the same filesystem; in the common case there is none and nothing more is walked. Otherwise every
    # tree the agent may read on that filesystem is searched (granted files, the workspace, the other
    # granted trees), until every name is accounted for.
    aliases = _Aliases(denied_inodes)
    if aliases.wanted:
        hidden_dirs = {m.path for m in matches.values()
                       if m.kind == "dir" and Op.READ in m.ops and not m.via.startswith("except")}
        carved = [m.path for m in matches.values() if m.via.startswith("except") and m.kind == "dir"]
        for prefix, ops, _ in grants:
            fact = facts[prefix]
            if Op.READ in ops and fact.kind == "file":
                aliases.check(fact.resolved, record, hidden_dirs)
        # every readable tree is a root of its own, and each walk stays out of the others beneath it, so
        # a tree inside an except of a wider grant (a cache under a home carved out of /tmp) is walked too
        readable = {facts[p].resolved for p, ops, _ in grants
                    if Op.READ in ops and facts[p].kind == "dir"
                    and not any(is_beneath(facts[p].resolved, x) for x in _PSEUDO_ROOTS)
                    and not any(is_beneath(facts[p].resolved, h) for h in hidden_dirs)}
        # the workspace first: where a planted name is likeliest, so the hunt usually ends there
        tree_roots = [*([ws] if os.path.isdir(ws) else []), *sorted(readable - {ws})]
        skip = hidden_dirs | set(carved) | set(tree_roots)
        for root in tree_roots:
            if not aliases.wanted:
                break
            try:
                dev = os.stat(root).st_dev
            except OSError:
                continue
            if dev not in aliases.devices:
                continue  # a hard link never crosses filesystems
            for e in _walk(root, budget, unreadable, prune=skip.__contains__):
                if e.kind == "file" and e.ino in aliases.inos:
                    aliases.check(e.path, record, hidden_dirs)
                    if not aliases.wanted:
                        break
        roots = [*roots, *(r for r in tree_roots if r != ws)]

    ordered = tuple(sorted(matches.values(), key=lambda m: m.path))
    return LaunchFacts(paths=tuple(facts.values()), matches=ordered,
                       missing=tuple(missing), walked=tuple(roots), unreadable=tuple(unreadable),
                       entries=max_entries - budget.left, unfound=aliases.unfound(),
                       head_dirs=tuple(head_dirs))


class _Aliases:
    """The denied files that have more names than the scan has seen, and the hunt for the others."""

    def __init__(self, denied: dict[tuple[int, int], tuple[Match, set[str], int]]) -> None:
        self.denied = {k: v for k, v in denied.items() if len(v[1]) < v[2]}
        self.found: dict[tuple[int, int], set[str]] = {k: set(v[1]) for k, v in self.denied.items()}
        self.inos = {ino for _, ino in self.denied}
        self.devices = {dev for dev, _ in self.denied}

    @property
    def wanted(self) -> bool:
        return any(len(self.found[k]) < v[2] for k, v in self.denied.items())

    def check(self, path: str, record: Callable[[Match], None], hidden: set[str]) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            return  # gone since the walk: nothing left to alias
        key = (st.st_dev, st.st_ino)
        entry = self.denied.get(key)
        if entry is None or path in self.found[key] or any(is_beneath(path, h) for h in hidden):
            return
        self.found[key].add(path)
        orig = entry[0]
        record(Match(path, "file", orig.rule_id, orig.ops, orig.verdict, f"hard link to {orig.path}"))

    def unfound(self) -> int:
        """Names of denied files that lie outside every readable tree (harmless: unreachable)."""
        return sum(v[2] - len(self.found[k]) for k, v in self.denied.items())


def _strength(m: Match) -> int:
    """Which of two matches on one path wins: hiding beats write-protecting beats no-exec."""
    if Op.READ in m.ops:
        return 3
    if Op.WRITE in m.ops:
        return 2
    return 1
