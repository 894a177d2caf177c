"""Policy + launch facts + kernel ABI -> SandboxPlan: pure data, no I/O, testable without a kernel.

The plan is the contract between what the user was told (`guard run` prints its report) and what the
child enforces (`launch` applies it and nothing else). Landlock carries the allowlist: each allow rule
contributes its literal prefix (a glob is widened to the directory it starts in, and the report says so).
Explicit denies *inside* granted trees cannot be expressed in Landlock, so the planner turns every
existing path they cover into a mount: hidden paths become an empty read-only tmpfs (directories) or an
empty read-only file (everything else); write-protected paths become read-only binds onto themselves
(an `ask` on write is left to the supervisor when it decides every write, so an approval can take
effect). The guard's own files are always hidden, whatever the policy says.

Two holes Landlock leaves are closed with mounts too. An allow rule's `except` that contains other
rules' grants (base's `tmp` rule excepts the home, which may live under /tmp) is *carved*: an empty
read-only tmpfs covers it and exactly the grants inside are put back, each bound from its original with
its own read-only/noexec flags. And Landlock's EXECUTE right judges execve of a path only, not
mmap(PROT_EXEC) (`ld.so ./bin`, dlopen), so every tree the agent may write but not execute is mounted
noexec, and trees inside it that the policy does let run are bound back from their original. Every
writable tree is also nosuid and nodev (a bind of itself where no other mount of the plan covers it):
no_new_privs already voids set-id bits at exec inside, and a device node planted in it never opens.

`listen` rules become Landlock's TCP bind allowlist (ABI >= 4), always with port 0 added: tools bind
ephemeral ports all the time (test servers, language servers), Landlock judges port 0 like any other
port, and an ephemeral port lives in the sandbox's own network namespace, unreachable from the host unless
`guard run --publish` exposes it, which it only does for ports a listen rule grants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from guard.model import Op, Verdict
from guard.sandbox import landlock as ll
from guard.sandbox.report import EnforcementReport, Protection, State
from guard.sandbox.scan import (
    SELF_PROTECTION_RULE,
    TERMINAL_PATHS,
    LaunchFacts,
    Match,
    PathFact,
    PolicyLike,
    grant_prefixes,
    is_beneath,
    is_glob,
    literal_prefix,
    names_only,
)


class MountKind(StrEnum):
    HIDE_DIR = "hide-dir"  # empty read-only tmpfs over a directory
    HIDE_FILE = "hide-file"  # empty read-only file bound over a non-directory
    READ_ONLY = "read-only"  # read-only bind of the path onto itself
    NO_EXEC = "no-exec"  # noexec bind of the path onto itself (and every mount beneath it)
    NO_SUID = "no-suid"  # nosuid, nodev bind of a writable (and executable) tree onto itself
    CARVE = "carve"  # empty read-only tmpfs over a directory, re-exposing the grants listed in `expose`
    EXEC = "exec"  # the original tree bound back (with its own flags) inside a noexec tree
    LAYER = "layer"  # an overlay: the directory as it is, writes kept in `layer` (the session's own)
    PRIVATE = "private"  # a fresh writable tmpfs of the session's own (/tmp, /var/tmp, /dev/shm), grants
    #                      of other rules inside bound back like a carve's
    WATCH = "watch"  # a read-denied name covered by a FUSE mount the guard answers (refused and recorded)


@dataclass(frozen=True, slots=True)
class Exposure:
    """One thing a carve puts back inside its empty tmpfs: a granted directory or file, bound from the
    original (taken before the tmpfs covers it), or a symlink on the way to one (`target` is its text).
    In a private tmpfs also: `mkdir`, an empty directory of the session's own (TMPDIR under /tmp), and
    `mountpoint`, the empty directory a nested carve then covers."""

    path: str
    kind: str  # dir, file, link, mkdir or mountpoint
    target: str = ""
    read_only: bool = False
    no_exec: bool = False


@dataclass(frozen=True, slots=True)
class MountOp:
    kind: MountKind
    path: str
    reason: str
    expose: tuple[Exposure, ...] = ()
    layer: str = ""  # PRIVATE: the directory holding the overlay's upper and work directories
    no_exec: bool = False  # PRIVATE only: the fresh tmpfs is mounted noexec
    is_dir: bool = False  # WATCH only: a directory (else a file)
    fallback: MountKind | None = None  # WATCH only: the mask to apply where FUSE cannot be mounted


@dataclass(frozen=True, slots=True)
class SandboxPlan:
    landlock: ll.LandlockPlan
    mounts: tuple[MountOp, ...]
    workspace: str
    protected: tuple[str, ...]
    report: EnforcementReport
    hostname: str = "guard"
    private_pts: bool = False  # a devpts instance of the sandbox's own, the session's terminals put back
    audit: bool = False  # audit mode: the launcher adds write on every top-level tree but /proc, /sys, /dev


_OP_RIGHTS = {Op.READ: ll.READ_RIGHTS, Op.WRITE: ll.WRITE_RIGHTS, Op.EXEC: ll.EXEC_RIGHTS}
_NEEDS = {MountKind.HIDE_DIR: Op.READ, MountKind.HIDE_FILE: Op.READ, MountKind.READ_ONLY: Op.WRITE,
          MountKind.NO_EXEC: Op.EXEC, MountKind.CARVE: Op.READ}
_PSEUDO = ("/proc", "/sys", "/dev")


def _mount_kind(m: Match) -> MountKind:
    if Op.READ in m.ops:
        return MountKind.HIDE_DIR if m.kind == "dir" else MountKind.HIDE_FILE
    if Op.WRITE in m.ops:
        return MountKind.READ_ONLY
    return MountKind.NO_EXEC


Prefixes = Sequence[tuple[str, frozenset[Op], str]]  # grant_prefixes(policy), computed once a plan


def _grants(prefixes: Prefixes, facts: LaunchFacts, handled: int) -> tuple[list[ll.PathGrant], list[str]]:
    merged: dict[str, tuple[int, bool, tuple[str, ...]]] = {}
    notes: list[str] = []
    missing: list[str] = []
    widened_proc: list[str] = []
    via_target: list[str] = []
    for prefix, ops, rule_id in prefixes:
        fact = facts.fact(prefix)
        if fact is None or fact.kind == "missing":
            missing.append(prefix)
            continue
        rights = 0
        for op in ops:
            rights |= _OP_RIGHTS[op]
        if fact.kind == "proc-link":
            if not is_beneath(prefix, "/proc"):
                via_target.append(prefix)  # /dev/stdout and friends: the kernel judges the file they reach
                continue
            # Per-process entries cannot be named before the processes exist; the sandbox's /proc shows
            # only its own processes, so read on /proc is the faithful translation. Never write: /proc/sys
            # is host-wide, and writes through /proc/self/fd are judged on the file they reach anyway.
            widened_proc.append(prefix)
            fact = PathFact("/proc", "dir", "/proc")
            rights &= ll.READ_RIGHTS
        is_dir = fact.kind == "dir"
        if not is_dir:
            rights &= ll.FILE_RIGHTS
        rights &= handled
        old_rights, _, old_ids = merged.get(fact.resolved, (0, is_dir, ()))
        ids = old_ids if rule_id in old_ids else (*old_ids, rule_id)
        merged[fact.resolved] = (old_rights | rights, is_dir, ids)
    if handled & ll.IOCTL_RIGHTS:
        for path in TERMINAL_PATHS:
            fact = facts.fact(path)
            if fact is not None and fact.kind != "missing":
                old_rights, _, old_ids = merged.get(fact.resolved, (0, fact.kind == "dir", ()))
                merged[fact.resolved] = (old_rights | ll.IOCTL_RIGHTS, fact.kind == "dir",
                                         (*old_ids, "guard:terminal"))
    grants = [ll.PathGrant(p, r, d, ids) for p, (r, d, ids) in sorted(merged.items()) if r]
    if widened_proc:
        notes.append(f"per-process /proc grants widened to read on the sandbox's own /proc: "
                     f"{', '.join(sorted(set(widened_proc)))}")
    if via_target:
        reach = ", ".join(sorted(set(via_target)))
        notes.append(f"judged by the file they reach, not granted as such: {reach}")
    if missing:
        notes.append(f"missing at launch, so not granted: {', '.join(sorted(set(missing)))}")
    return grants, notes


def _granted(path: str, op: Op, grants: Sequence[ll.PathGrant]) -> bool:
    rights = _OP_RIGHTS[op]
    return any(g.access & rights and (g.path == path or (g.is_dir and is_beneath(path, g.path)))
               for g in grants)


def _mounts(facts: LaunchFacts, grants: Sequence[ll.PathGrant], landlock_on: bool,
            decided_asks: bool = False) -> tuple[list[MountOp], dict[str, str]]:
    """The masks of the explicit denies and excepts; also returns {carved path: carving rule id}."""
    chosen: dict[str, tuple[MountKind, str]] = {}
    carvers: dict[str, str] = {}
    watches: dict[str, MountOp] = {}
    for m in facts.matches:
        if m.kind == "proc-link" or is_beneath(m.path, "/proc") or is_beneath(m.path, "/sys"):
            continue  # replaced by the sandbox's own /proc and /sys; Landlock's ptrace scoping guards them
        if decided_asks and m.verdict is Verdict.ASK and m.ops == frozenset({Op.WRITE}):
            continue  # the decision tier asks, and performs what a human approves (see build_plan)
        kind = _mount_kind(m)
        protected = m.rule_id == SELF_PROTECTION_RULE
        if kind is MountKind.READ_ONLY and m.kind == "dir" and (
                _names_only(m) or (m.via == "pattern" and m.path in facts.held_names)):
            continue  # the directory's name is the rule's, not its contents: the decision tier's (below)
        if _watchable(m, grants, landlock_on) and len(watches) < MAX_WATCHED:
            needed = protected or _granted(m.path, _NEEDS[kind], grants)
            watches[m.path] = MountOp(MountKind.WATCH, m.path, f"{m.rule_id} ({m.via}; reads recorded)",
                                      is_dir=m.kind == "dir", fallback=kind if needed else None)
            continue
        # outside every grant for the op, Landlock already refuses it: no mount needed
        if landlock_on and not protected and not _granted(m.path, _NEEDS[kind], grants):
            continue
        if m.via.startswith("except"):
            others = [g for g in grants if set(g.rule_ids) - {m.rule_id}]
            if any(g.path == m.path or (g.is_dir and is_beneath(m.path, g.path)) for g in others):
                continue  # another rule grants the whole of it: not a hole at all
            if m.kind == "dir" and any(is_beneath(g.path, m.path) for g in others):
                # other rules grant paths inside it: a plain mask would take them away too, so carve
                carvers[m.path] = m.rule_id
                kind = MountKind.CARVE
        reason = f"{m.rule_id} ({m.via})"
        old = chosen.get(m.path)
        if old is None or _rank(kind) > _rank(old[0]):
            chosen[m.path] = (kind, reason)
    for path in watches:
        chosen.pop(path, None)
    ops = sorted([*((p, MountOp(k, p, r)) for p, (k, r) in chosen.items()), *watches.items()],
                 key=lambda kv: (kv[0].count("/"), kv[0]))
    out: list[MountOp] = []
    hidden: list[str] = []
    for path, op in ops:
        if any(is_beneath(path, h) for h in hidden):
            continue  # already inside an empty tmpfs (or a FUSE mask)
        out.append(op)
        if op.kind is MountKind.HIDE_DIR or (op.kind is MountKind.WATCH and op.is_dir):
            hidden.append(path)
    return out, {p: r for p, r in carvers.items() if any(o.path == p for o in out)}


MAX_WATCHED = 128  # FUSE masks per session (a descriptor each); further denied names get plain masks


def _watchable(m: Match, grants: Sequence[ll.PathGrant], landlock_on: bool) -> bool:
    """A name the policy itself denies reading (not an except, not another name of a denied file, not the
    guard's own state), with no grant at or beneath it (the sandbox's setup opens granted paths before
    the guard serves the mask): covered by a FUSE mask, so each attempt to read it is recorded."""
    return (landlock_on and Op.READ in m.ops and m.verdict is Verdict.DENY and m.kind in ("dir", "file")
            and m.rule_id != SELF_PROTECTION_RULE and (m.via == "pattern" or m.via.startswith("glob "))
            and not any(is_beneath(g.path, m.path) for g in grants))


def _names_only(m: Match) -> bool:
    """A write-protect glob naming a repository's `.git` directory itself (`**/.git`), not what lies in it.
    A read-only mount would freeze the repository (every commit writes inside `.git`); the name is held by
    the decision tier instead, where renaming, removing or replacing it is notified and decided as a write
    of it, on every name a path passes through. (Other directory names, `.git/hooks`, keep their
    read-only mount: nothing in them is the agent's to write.)"""
    return m.via.startswith("glob ") and names_only(m.via.removeprefix("glob "))


def _rank(kind: MountKind) -> int:
    return {MountKind.EXEC: 0, MountKind.NO_EXEC: 1, MountKind.NO_SUID: 1, MountKind.READ_ONLY: 2,
            MountKind.HIDE_FILE: 3, MountKind.HIDE_DIR: 3, MountKind.WATCH: 3, MountKind.CARVE: 3,
            MountKind.PRIVATE: 3}[kind]


def _effective(path: str, grants: Sequence[ll.PathGrant], within: str = "/") -> int:
    """The rights Landlock allows at `path`: its own grant and every directory grant above it (only
    those at or beneath `within`, for a carve: what lies above it does not count for the policy)."""
    rights = 0
    for g in grants:
        if (g.path == path or (g.is_dir and is_beneath(path, g.path))) and is_beneath(g.path, within):
            rights |= g.access
    return rights


def _flags(rights: int) -> tuple[bool, bool]:
    """(read-only, noexec) a re-exposed tree needs to give exactly `rights` at the mount tier. noexec
    whenever the tree may not be executed: inside a private /tmp, Landlock's exec grant on the tmpfs
    reaches every tree bound back beneath it."""
    writable = bool(rights & ll.WRITE_RIGHTS)
    return not writable, not rights & ll.EXEC_RIGHTS


def _carve(path: str, rule_id: str, reason: str, grants: Sequence[ll.PathGrant], prefixes: Prefixes,
           facts: LaunchFacts) -> MountOp:
    """The carve of `path`: the other rules' grants inside it, outermost first (a deeper one only when
    it needs other flags than the exposure around it), plus the symlinks leading to them."""
    return MountOp(MountKind.CARVE, path, reason, _exposures(path, {rule_id}, grants, prefixes, facts))


def _exposures(path: str, own: set[str], grants: Sequence[ll.PathGrant], prefixes: Prefixes,
               facts: LaunchFacts, nested: Sequence[str] = ()) -> tuple[Exposure, ...]:
    """What a tmpfs over `path` puts back: the grants inside it of rules other than `own`, and the
    symlinks leading to them. Within `nested` (carves applied after this tmpfs) only their root, as a
    mount point: the nested carve puts back its own."""
    inside = sorted((g for g in grants if set(g.rule_ids) - own and g.path != path
                     and is_beneath(g.path, path) and not any(is_beneath(g.path, c) for c in nested)),
                    key=lambda g: (g.path.count("/"), g.path))
    others = [g for g in grants if set(g.rule_ids) - own]
    binds: list[Exposure] = [Exposure(c, "mountpoint") for c in nested]
    for g in inside:
        ro, nx = _flags(_effective(g.path, others, path))
        around = [e for e in binds if is_beneath(g.path, e.path)]
        if around and (around[-1].read_only, around[-1].no_exec) == (ro, nx):
            continue
        binds.append(Exposure(g.path, "dir" if g.is_dir else "file", read_only=ro, no_exec=nx))
    links: dict[str, str] = {}
    for prefix, _, rid in prefixes:
        fact = facts.fact(prefix)
        if rid in own or fact is None:
            continue
        for where, text in fact.links:
            covered = any(is_beneath(where, b.path) for b in binds)
            if where != path and is_beneath(where, path) and not covered:
                links[where] = text
    expose = [*binds, *(Exposure(p, "link", t) for p, t in links.items())]
    expose.sort(key=lambda e: (e.path.count("/"), e.path))
    return tuple(expose)


# The shared scratch places every session gets a private copy of (when the policy lets it write there):
# nothing the agent writes there outlives the session or reaches another program, and nothing another
# program keeps there (tmux, ssh-agent and X sockets, Kerberos ticket caches) is reachable.
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")
AUDIT_MODE_RULE = "guard:audit-mode"
# Never writable, even in audit mode: host-wide kernel state (/proc/sys, /sys) and devices.
AUDIT_NEVER_WRITABLE = ("/proc", "/sys", "/dev")


def _scratch_tmpfs(grants: Sequence[ll.PathGrant], mounts: Sequence[MountOp], prefixes: Prefixes,
                   facts: LaunchFacts, scratch: Sequence[str]) -> list[MountOp]:
    """A fresh tmpfs over each scratch directory the policy grants write on as a whole; the grants of
    other rules inside it (a workspace or home under /tmp) are bound back, same-rule directory grants
    inside it (TMPDIR under /tmp) are created empty."""
    kinds = {p.resolved: p.kind for p in facts.paths}
    out: list[MountOp] = []
    for path in scratch:
        if kinds.get(path) != "dir" or any(is_beneath(path, o.path) for o in out):
            continue
        own_grants = [g for g in grants if g.path == path and g.is_dir]
        rights = _effective(path, grants)
        if not own_grants or not rights & ll.WRITE_RIGHTS:
            continue
        own = {r for g in own_grants for r in g.rule_ids}
        nested = [m.path for m in mounts if m.kind is MountKind.CARVE and is_beneath(m.path, path)
                  and m.path != path]
        expose = list(_exposures(path, own, grants, prefixes, facts, nested))
        exposed = [e.path for e in expose if e.kind != "link"]
        for g in grants:
            if (g.is_dir and g.path != path and is_beneath(g.path, path) and not set(g.rule_ids) - own
                    and not any(is_beneath(g.path, e) for e in exposed)):
                expose.append(Exposure(g.path, "mkdir"))
        expose.sort(key=lambda e: (e.path.count("/"), e.path))
        out.append(MountOp(MountKind.PRIVATE, path,
                           f"{'+'.join(sorted(own))} (the session's own {path}: a fresh tmpfs)",
                           tuple(expose), no_exec=not rights & ll.EXEC_RIGHTS))
    return out


def _exec_mounts(grants: Sequence[ll.PathGrant], kinds: dict[str, str], boundaries: Sequence[str],
                 skip: Sequence[str], private: Sequence[str] = ()) -> list[MountOp]:
    """noexec on every tree the agent may write but not execute (mmap(PROT_EXEC) of a file there is
    then refused: `ld.so ./bin`, dlopen); executable grants inside one are bound back from the original.

    `boundaries` are paths re-exposed from their original (a fresh mount: what lies above does not reach
    it); `skip` are trees handled otherwise (carves set their exposures' flags themselves)."""
    def above(path: str, ops: Sequence[MountOp], kind: MountKind) -> MountOp | None:
        best = None
        for o in ops:
            if (o.kind is kind and o.path != path and is_beneath(path, o.path)
                    and (best is None or len(o.path) > len(best.path))):
                best = o
        return best

    def cut(path: str, top: str) -> bool:  # a fresh mount lies between top and path
        return any(b != top and is_beneath(b, top) and is_beneath(path, b) for b in boundaries)

    out: list[MountOp] = []
    for g in sorted(grants, key=lambda g: (g.path.count("/"), g.path)):
        if any(is_beneath(g.path, p) for p in _PSEUDO) or kinds.get(g.path) not in ("dir", "file"):
            continue
        if any(g.path != s and is_beneath(g.path, s) for s in skip) or any(is_beneath(g.path, s)
                                                                           for s in private):
            continue
        rights = _effective(g.path, grants)
        top = above(g.path, out, MountKind.NO_EXEC)
        inherited = top is not None and not cut(g.path, top.path)
        hardened = [o for o in (top, above(g.path, out, MountKind.NO_SUID)) if o is not None
                    and not cut(g.path, o.path)]
        if rights & ll.WRITE_RIGHTS and not rights & ll.EXEC_RIGHTS and not inherited:
            out.append(MountOp(MountKind.NO_EXEC, g.path,
                               f"{'+'.join(g.rule_ids)} (writable, not executable: no code runs from it)"))
        elif rights & ll.EXEC_RIGHTS and inherited and top is not None:
            out.append(MountOp(MountKind.EXEC, g.path,
                               f"{'+'.join(g.rule_ids)} (executable inside the noexec {top.path})"))
            boundaries = [*boundaries, g.path]
        elif rights & ll.WRITE_RIGHTS and kinds.get(g.path) == "dir" and not hardened:
            # a writable tree the agent may also run from: set-id bits and device nodes in it mean
            # nothing (no_new_privs already voids set-id at exec; this also holds for a node planted before)
            out.append(MountOp(MountKind.NO_SUID, g.path,
                               f"{'+'.join(g.rule_ids)} (writable: nosuid, nodev)"))
    return out


def _arrange(mounts: list[MountOp], grants: list[ll.PathGrant],
             facts: LaunchFacts) -> tuple[list[MountOp], list[ll.PathGrant]]:
    """Add the exec mounts, repeat write/exec protections on every re-exposed tree beneath them (a tree
    bound from its original does not inherit the flags of a mount above), drop what a carve covers and
    does not put back, and order it all: shallowest first, a fresh mount before the masks on it."""
    carves = [m for m in mounts if m.kind in (MountKind.CARVE, MountKind.PRIVATE)]
    kept = ("dir", "file", "mountpoint")

    def gone(path: str) -> bool:
        return any(path != c.path and is_beneath(path, c.path)
                   and not any(e.kind in kept and is_beneath(path, e.path) for e in c.expose)
                   for c in carves)

    grants = [g for g in grants if not gone(g.path)]  # only the carving rule granted them
    kinds = {p.resolved: p.kind for p in facts.paths}
    fresh = [e.path for c in carves for e in c.expose if e.kind in ("dir", "file")]
    exec_ops = _exec_mounts(grants, kinds, fresh, [c.path for c in carves if c.kind is MountKind.CARVE],
                            [c.path for c in carves if c.kind is MountKind.PRIVATE])
    fresh += [o.path for o in exec_ops if o.kind is MountKind.EXEC]
    pushed: list[MountOp] = []
    for m in mounts:
        if m.kind in (MountKind.READ_ONLY, MountKind.NO_EXEC):
            pushed.extend(MountOp(m.kind, x, f"{m.reason}, again on {x} (bound from its original)")
                          for x in fresh if x != m.path and is_beneath(x, m.path))
    # a FUSE mask inside a carve lands on the carve's placeholder for that name, and refuses like it
    mounts = [replace(o, fallback=None) if o.kind is MountKind.WATCH and gone(o.path) else o for o in mounts]
    everything = [o for o in (*mounts, *exec_ops, *pushed) if o.kind is MountKind.WATCH or not gone(o.path)]
    first = (MountKind.PRIVATE, MountKind.CARVE, MountKind.EXEC)
    everything.sort(key=lambda o: (o.path.count("/") - (o.path == "/"), o.kind not in first,
                                   o not in exec_ops, o.path))
    out: list[MountOp] = []
    for o in everything:
        if not any(x.path == o.path and x.kind is o.kind for x in out):
            out.append(o)
    return out, grants


def landlock_protections(abi: int, widened: list[str], missing_grants: list[str]) -> list[Protection]:
    if abi <= 0:
        return [Protection("files: allowlist (Landlock)", State.NOT,
                           "Landlock is absent or disabled on this kernel: only mount masks apply")]
    allow_reason = f"Landlock ABI {abi}"
    state = State.FULLY
    if widened:
        allow_reason += "; globs widened to their directory: " + ", ".join(widened)
    if missing_grants:
        allow_reason += "; " + "; ".join(missing_grants)
    out = [Protection("files: allowlist (Landlock)", state, allow_reason)]
    out.append(Protection("files: rename/link across directories (REFER)",
                          State.FULLY if abi >= 2 else State.PARTLY,
                          "Landlock ABI >= 2" if abi >= 2
                          else "ABI 1 refuses every cross-directory rename/link"))
    out.append(Protection("files: truncate", State.FULLY if abi >= 3 else State.NOT,
                          "Landlock ABI >= 3" if abi >= 3 else f"needs Landlock ABI 3, host has {abi}"))
    out.append(Protection("devices: ioctl (IOCTL_DEV)", State.FULLY if abi >= 5 else State.NOT,
                          "only terminals (/dev/tty, /dev/pts, /dev/ptmx)" if abi >= 5
                          else f"needs Landlock ABI 5, host has {abi}"))
    return out


def scope_protections(abi: int) -> list[Protection]:
    if abi >= 6:
        return [Protection("scope: signals to processes outside", State.FULLY,
                           "Landlock SCOPE_SIGNAL and the pid namespace"),
                Protection("scope: abstract unix sockets outside", State.FULLY,
                           "Landlock SCOPE_ABSTRACT_UNIX_SOCKET and the network namespace")]
    return [Protection("scope: signals to processes outside", State.PARTLY,
                       f"pid namespace only (Landlock scopes need ABI 6, host has {abi})"),
            Protection("scope: abstract unix sockets outside", State.PARTLY,
                       f"network namespace only (Landlock scopes need ABI 6, host has {abi})")]


LISTEN_PROTECTION = "network: listen ports (Landlock TCP bind)"
BIND_PORT_LIMIT = 4096  # ports listed one by one in the ruleset; beyond it the listen rules go unenforced


class _ListenPorts(Protocol):
    @property
    def ports(self) -> tuple[int, ...] | None: ...
    @property
    def any_port(self) -> bool: ...
    @property
    def reason(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _NoListenRules:
    """What a policy-like without `bind_ports` (file rules only) grants: no port."""

    ports: tuple[int, ...] | None = ()
    any_port: bool = False
    reason: str = "the policy has no listen rules"


def listen_plan(policy: object, abi: int) -> tuple[int, tuple[int, ...], Protection]:
    """(handled net rights, bind ports, report line) for the policy's `listen` rules on this ABI."""
    bind_ports = getattr(policy, "bind_ports", None)
    listen: _ListenPorts = bind_ports(limit=BIND_PORT_LIMIT) if callable(bind_ports) else _NoListenRules()
    inside = "any port can be bound inside the sandbox's own network namespace (not reachable from the " \
             "host unless published)"
    if listen.any_port:
        return 0, (), Protection(LISTEN_PROTECTION, State.FULLY, f"{listen.reason}: nothing to restrict")
    if listen.ports is None:
        return 0, (), Protection(LISTEN_PROTECTION, State.PARTLY, f"{listen.reason}; {inside}")
    if abi < 4:
        return 0, (), Protection(LISTEN_PROTECTION, State.PARTLY,
                                 f"needs Landlock ABI 4, host has {abi}; {inside}")
    ports = (0, *sorted(set(listen.ports) - {0}))
    shown = ", ".join(map(str, ports[1:9])) + (f" and {len(ports) - 9} more" if len(ports) > 9 else "")
    return ll.handled_net(abi), ports, Protection(
        LISTEN_PROTECTION, State.FULLY,
        f"Landlock ABI {abi}: {listen.reason} ({shown or 'none'}), plus port 0 for ephemeral binds")


def _cache_layers(policy: PolicyLike, facts: LaunchFacts, grants: list[ll.PathGrant],
                  mounts: Sequence[MountOp], private_root: str | None
                  ) -> tuple[list[MountOp], list[ll.PathGrant], Protection | None]:
    """The directories of `writes: private` rules (the engineer's caches: code they run later) become
    overlays whose writes land in a layer of the session's own under `private_root`; the engineer's
    files never change. Without a layer directory those grants lose their write rights (fail closed)."""
    hidden = [m.path for m in mounts if m.kind in (MountKind.HIDE_DIR, MountKind.CARVE)]
    dirs: list[tuple[str, str]] = []
    files: list[str] = []  # an overlay covers directories only: a granted file loses its write instead
    for rule in policy.file_rules():
        private = getattr(rule, "private", False)
        if not private or rule.verdict is not Verdict.ALLOW or Op.WRITE not in rule.ops:
            continue
        for pattern in rule.patterns:
            fact = facts.fact(literal_prefix(pattern if pattern.startswith("/") else "/" + pattern))
            if fact is not None and fact.kind not in ("dir", "missing"):
                files.append(fact.resolved)
            if fact is None or fact.kind != "dir":
                continue
            exposed = [e.path for m in mounts if m.kind is MountKind.CARVE for e in m.expose]
            if any(fact.resolved != h and is_beneath(fact.resolved, h) for h in hidden) and not any(
                    is_beneath(fact.resolved, e) for e in exposed):
                continue
            dirs.append((fact.resolved, rule.rule_id))
    outer: list[tuple[str, str]] = []
    for path, rid in sorted(set(dirs), key=lambda d: (d[0].count("/"), d[0])):
        if not any(is_beneath(path, o) for o, _ in outer):
            outer.append((path, rid))
    if files:
        grants = [ll.PathGrant(g.path, g.access & ~ll.WRITE_RIGHTS, g.is_dir, g.rule_ids)
                  if g.path in files else g for g in grants]
    if not outer:
        return [], grants, None
    if private_root is None:
        paths = [p for p, _ in outer]
        grants = [ll.PathGrant(g.path, g.access & ~ll.WRITE_RIGHTS, g.is_dir, g.rule_ids)
                  if any(is_beneath(g.path, p) for p in paths) else g for g in grants]
        return [], grants, Protection("files: private layers for caches", State.FULLY,
                                      "no layer directory: read-only instead: " + ", ".join(paths))
    ops = [MountOp(MountKind.LAYER, path, f"{rid} (writes: private)", layer=f"{private_root}/{i}")
           for i, (path, rid) in enumerate(outer)]
    return ops, grants, Protection(
        "files: private layers for caches", State.FULLY,
        "writes land in the session's own layer, the engineer's files never change: "
        + ", ".join(p for p, _ in outer))


def build_plan(policy: PolicyLike, facts: LaunchFacts, *, workspace: Path, protected: Sequence[Path],
               abi: int, private_root: str | None = None, scratch: Sequence[str] = SCRATCH,
               own_pts: bool = True, decided_asks: bool = False) -> SandboxPlan:
    """See the module docstring. `abi` is the host's Landlock ABI (0 = none), passed in so the
    downgrade is a pure function and unit-testable for every ABI. `private_root` is an empty directory
    of the session's own for the layers of `writes: private` rules (see _cache_layers). `scratch`: the
    directories made private to the session when the policy lets it write there (empty: share the
    host's). `own_pts`: give the sandbox a devpts instance of its own (the session's terminals put back),
    not the host's. `decided_asks`: the session's supervisor decides every write (seccomp user
    notification) and performs each write-open, rename and link itself on the name it judged, so a path
    an `ask: [write]` rule covers is *not* made read-only at the kernel tier: under a read-only bind a
    human's approval could not take effect (a new file in an existing `.vscode/` failed with EROFS after
    `guard approve`). What the human refuses stays refused by the supervisor."""
    handled = ll.handled_fs(abi)
    audit = getattr(policy, "mode", "enforce") == "audit"
    if audit:  # the host's /tmp stays shared: what the policy would refuse there is recorded, not hidden
        scratch = tuple(p for p in scratch if p not in ("/tmp", "/var/tmp"))
    prefixes = grant_prefixes(policy)
    grants, missing_grants = _grants(prefixes, facts, handled)
    mounts, carvers = _mounts(facts, grants, abi > 0, decided_asks)
    # deny wins: a grant inside a hidden directory is dead (and its path is gone inside the sandbox)
    hidden = [m.path for m in mounts if m.kind is MountKind.HIDE_DIR]
    dead = [g for g in grants if any(g.path != h and is_beneath(g.path, h) for h in hidden)]
    if dead:
        grants = [g for g in grants if g not in dead]
        missing_grants.append("inside hidden (denied) directories, so not granted: "
                              + ", ".join(g.path for g in dead))
    mounts = [_carve(m.path, carvers[m.path], m.reason, grants, prefixes, facts)
              if m.kind is MountKind.CARVE else m for m in mounts]
    # without Landlock (abi 0) no right is handled, but the scratch places are still made private: the
    # policy's tmp rule lets code run there, which is only safe in a tmpfs of the session's own
    scratch_grants = grants if abi > 0 else _grants(prefixes, facts, ll.handled_fs(99))[0]
    private = _scratch_tmpfs(scratch_grants, mounts, prefixes, facts, scratch)
    mounts = [m for m in mounts if not any(m.path == p.path for p in private)] + private
    mounts, grants = _arrange(mounts, grants, facts)
    layers, grants, private_line = _cache_layers(policy, facts, grants, mounts, private_root)
    mounts = [*layers, *mounts]  # applied first, while every path is still the host's (guard.sandbox.mounts)
    if audit:
        # Decide, record, let through: no mask but the guard's own state, everything readable and runnable
        # (writes: the launcher adds the top-level trees); the decision tier records what would be refused.
        kept = (MountKind.PRIVATE, MountKind.LAYER)
        mounts = [m for m in mounts if m.kind in kept or m.reason.startswith(SELF_PROTECTION_RULE)]
        grants = [*grants, ll.PathGrant("/", handled & (ll.READ_RIGHTS | ll.EXEC_RIGHTS), True,
                                        (AUDIT_MODE_RULE,))]
    net_handled, bind_ports, listen_line = listen_plan(policy, abi)
    landlock_plan = ll.LandlockPlan(abi=abi, handled_fs=handled, scoped=ll.scopes(abi),
                                    restrict_flags=ll.restrict_flags(abi), grants=tuple(grants),
                                    handled_net=net_handled, bind_ports=bind_ports)
    widened = sorted({p for rule in policy.file_rules() if rule.verdict is Verdict.ALLOW
                      for p in rule.patterns if any(is_glob(c) for c in p.split("/")[:-1])
                      or (is_glob(p.rsplit("/", 1)[-1]) and p.rsplit("/", 1)[-1] != "**")})

    protections = landlock_protections(abi, widened, missing_grants)
    protections += scope_protections(abi)
    protections.append(listen_line)
    if private_line is not None:
        protections.append(private_line)

    deny_notes: list[str] = []
    deny_state = State.FULLY
    open_missing = [m for m in facts.missing if m.rule_id != SELF_PROTECTION_RULE
                    and _granted(m.ancestor, Op.WRITE, grants)]
    carves = [m for m in mounts if m.kind is MountKind.CARVE]
    if carves:
        deny_notes.append("excepts holding other grants carved (empty read-only tmpfs, the grants inside "
                          "bound back): " + ", ".join(f"{m.path} ({len(m.expose)} put back)" for m in carves))
    # By design, not a host shortfall (so not PARTLY, and no warning at every launch): a denied path
    # created after launch is refused by the decision tier.
    if open_missing:
        patterns = sorted({m.pattern for m in open_missing})
        shown = ", ".join(patterns[:3]) + (f" and {len(patterns) - 3} more" if len(patterns) > 3 else "")
        deny_notes.append(f"absent at launch, so the decision tier refuses creating them: {shown}")
    hides = sum(1 for m in mounts if m.kind in (MountKind.HIDE_DIR, MountKind.HIDE_FILE))
    watched = sum(1 for m in mounts if m.kind is MountKind.WATCH)
    ro = sum(1 for m in mounts if m.kind is MountKind.READ_ONLY)
    scanned = ", ".join(facts.walked) or "-"
    summary = (f"{hides} hidden, {watched} hidden with reads recorded (FUSE), {ro} write-protected by "
               f"mounts; roots scanned: {scanned} "
               f"({facts.entries} entries); `**` globs are matched in the workspace and on granted files")
    protections.append(Protection("files: denies inside granted trees", deny_state,
                                  "; ".join([summary, *deny_notes])))
    links = [m for m in facts.matches if m.via.startswith("hard link")]
    protections.append(Protection("files: hard links planted before launch", State.FULLY,
                                  f"{len(links)} found and masked"
                                  + (f"; {facts.unfound} other name(s) of denied files lie outside every "
                                     "readable tree" if facts.unfound else "")))
    protected_missing = [m.pattern for m in facts.missing if m.rule_id == SELF_PROTECTION_RULE]
    protections.append(Protection(
        "self-protection ($GUARD_HOME, policy files)",
        State.PARTLY if protected_missing else State.FULLY,
        ("missing at launch, so not masked: " + ", ".join(protected_missing)) if protected_missing
        else "hidden by mounts whatever the policy grants"))
    noexec = [m.path for m in mounts if m.kind is MountKind.NO_EXEC and m.reason.endswith("runs from it)")]
    noexec += [e.path for m in carves for e in m.expose if e.no_exec]
    reexec = [m.path for m in mounts if m.kind is MountKind.EXEC]
    protections.append(Protection(
        "exec: code mapped from writable trees (ld.so, dlopen)",
        State.FULLY if abi > 0 else State.NOT,
        ("noexec mounts on " + (", ".join(noexec) or "-")
         + ("; executable by policy, bound back: " + ", ".join(reexec) if reexec else ""))
        if abi > 0 else "without Landlock there are no grants to derive the noexec trees from"))
    protections.append(Protection(
        "files: private scratch (/tmp, /var/tmp, /dev/shm)", State.FULLY,
        ("fresh tmpfs of the session's own: " + ", ".join(
            f"{m.path}{' (noexec)' if m.no_exec else ''}" for m in private)) if private
        else "none: the policy grants no write on a shared scratch directory", required=False))
    protections.append(Protection("audit: Landlock denials logged after exec",
                                  State.FULLY if abi >= 7 else State.NOT,
                                  "LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON" if abi >= 7
                                  else f"needs Landlock ABI 7, host has {abi}", required=False))
    if audit:
        protections.append(Protection(
            "audit mode: the kernel tier lets through", State.FULLY,
            "everything readable and runnable, writable but /proc, /sys and /dev; only the guard's own state "
            "is hidden; what the policy would refuse is recorded (audit_only) by the decision tier",
            required=False))
    pts = facts.fact("/dev/pts")
    private_pts = own_pts and pts is not None and pts.kind == "dir"
    protections.append(Protection(
        "devices: other terminals of the user", State.FULLY if private_pts else State.NOT,
        "the sandbox has a devpts instance of its own: only the session's terminal and the ptys the agent "
        "creates" if private_pts else "the host's /dev/pts is shared", required=False))
    return SandboxPlan(landlock=landlock_plan, mounts=tuple(mounts), workspace=str(workspace),
                       protected=tuple(str(p) for p in protected),
                       report=EnforcementReport(tuple(protections)), private_pts=private_pts, audit=audit)
