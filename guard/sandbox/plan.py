"""Policy + launch facts + kernel ABI -> SandboxPlan: pure data, no I/O, testable without a kernel.

The plan is the contract between what the user was told (`guard run` prints its report) and what the
child enforces (`launch` applies it and nothing else). Landlock carries the allowlist: each allow rule
contributes its literal prefix (a glob is widened to the directory it starts in, and the report says so).
Explicit denies *inside* granted trees cannot be expressed in Landlock, so the planner turns every
existing path they cover into a mount: hidden paths become an empty read-only tmpfs (directories) or an
empty read-only file (everything else); write-protected paths become read-only binds onto themselves.
The guard's own files are always hidden, whatever the policy says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

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
)


class MountKind(StrEnum):
    HIDE_DIR = "hide-dir"  # empty read-only tmpfs over a directory
    HIDE_FILE = "hide-file"  # empty read-only file bound over a non-directory
    READ_ONLY = "read-only"  # read-only bind of the path onto itself
    NO_EXEC = "no-exec"  # noexec bind of the path onto itself


@dataclass(frozen=True, slots=True)
class MountOp:
    kind: MountKind
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class SandboxPlan:
    landlock: ll.LandlockPlan
    mounts: tuple[MountOp, ...]
    workspace: str
    protected: tuple[str, ...]
    report: EnforcementReport
    hostname: str = "guard"


_OP_RIGHTS = {Op.READ: ll.READ_RIGHTS, Op.WRITE: ll.WRITE_RIGHTS, Op.EXEC: ll.EXEC_RIGHTS}
_NEEDS = {MountKind.HIDE_DIR: Op.READ, MountKind.HIDE_FILE: Op.READ, MountKind.READ_ONLY: Op.WRITE,
          MountKind.NO_EXEC: Op.EXEC}


def _mount_kind(m: Match) -> MountKind:
    if Op.READ in m.ops:
        return MountKind.HIDE_DIR if m.kind == "dir" else MountKind.HIDE_FILE
    if Op.WRITE in m.ops:
        return MountKind.READ_ONLY
    return MountKind.NO_EXEC


def _grants(policy: PolicyLike, facts: LaunchFacts, handled: int) -> tuple[list[ll.PathGrant], list[str]]:
    merged: dict[str, tuple[int, bool, tuple[str, ...]]] = {}
    notes: list[str] = []
    missing: list[str] = []
    widened_proc: list[str] = []
    via_target: list[str] = []
    for prefix, ops, rule_id in grant_prefixes(policy):
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


def _mounts(facts: LaunchFacts, grants: Sequence[ll.PathGrant],
            landlock_on: bool) -> tuple[list[MountOp], list[str]]:
    chosen: dict[str, tuple[MountKind, str]] = {}
    overlaps: list[str] = []
    for m in facts.matches:
        if m.kind == "proc-link" or is_beneath(m.path, "/proc") or is_beneath(m.path, "/sys"):
            continue  # replaced by the sandbox's own /proc and /sys; Landlock's ptrace scoping guards them
        kind = _mount_kind(m)
        protected = m.rule_id == SELF_PROTECTION_RULE
        # outside every grant for the op, Landlock already refuses it: no mount needed
        if landlock_on and not protected and not _granted(m.path, _NEEDS[kind], grants):
            continue
        if m.via.startswith("except") and any(is_beneath(g.path, m.path) for g in grants):
            # an except only narrows its own rule; another rule grants something inside it, so a mask
            # would take that grant away too. Left to the decision tier, and said so.
            overlaps.append(f"{m.path} (except of {m.rule_id})")
            continue
        reason = f"{m.rule_id} ({m.via})"
        old = chosen.get(m.path)
        if old is None or _rank(kind) > _rank(old[0]):
            chosen[m.path] = (kind, reason)
    ops = sorted(chosen.items(), key=lambda kv: (kv[0].count("/"), kv[0]))
    out: list[MountOp] = []
    hidden: list[str] = []
    for path, (kind, reason) in ops:
        if any(is_beneath(path, h) for h in hidden):
            continue  # already inside an empty tmpfs
        out.append(MountOp(kind, path, reason))
        if kind is MountKind.HIDE_DIR:
            hidden.append(path)
    return out, overlaps


def _rank(kind: MountKind) -> int:
    return {MountKind.NO_EXEC: 1, MountKind.READ_ONLY: 2, MountKind.HIDE_FILE: 3, MountKind.HIDE_DIR: 3}[kind]


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


def build_plan(policy: PolicyLike, facts: LaunchFacts, *, workspace: Path, protected: Sequence[Path],
               abi: int) -> SandboxPlan:
    """See the module docstring. `abi` is the host's Landlock ABI (0 = none), passed in so the
    downgrade is a pure function and unit-testable for every ABI."""
    handled = ll.handled_fs(abi)
    grants, missing_grants = _grants(policy, facts, handled)
    mounts, overlaps = _mounts(facts, grants, abi > 0)
    # deny wins: a grant inside a hidden directory is dead (and its path is gone inside the sandbox)
    hidden = [m.path for m in mounts if m.kind is MountKind.HIDE_DIR]
    dead = [g for g in grants if any(g.path != h and is_beneath(g.path, h) for h in hidden)]
    if dead:
        grants = [g for g in grants if g not in dead]
        missing_grants.append("inside hidden (denied) directories, so not granted: "
                              + ", ".join(g.path for g in dead))
    landlock_plan = ll.LandlockPlan(abi=abi, handled_fs=handled, scoped=ll.scopes(abi),
                                    restrict_flags=ll.restrict_flags(abi), grants=tuple(grants))
    widened = sorted({p for rule in policy.file_rules() if rule.verdict is Verdict.ALLOW
                      for p in rule.patterns if any(is_glob(c) for c in p.split("/")[:-1])
                      or (is_glob(p.rsplit("/", 1)[-1]) and p.rsplit("/", 1)[-1] != "**")})

    protections = landlock_protections(abi, widened, missing_grants)
    protections += scope_protections(abi)

    deny_notes: list[str] = []
    deny_state = State.FULLY
    if facts.capped:
        deny_state = State.PARTLY
        deny_notes.extend(facts.capped)
    open_missing = [m for m in facts.missing if m.rule_id != SELF_PROTECTION_RULE
                    and _granted(m.ancestor, Op.WRITE, grants)]
    if overlaps:  # Landlock cannot carve an except out of a grant, and a mask would hide the other grant
        deny_state = State.PARTLY
        deny_notes.append("excepts overlapping other grants, not masked: " + ", ".join(overlaps))
    # By design, not a host shortfall (so not PARTLY, and no warning at every launch): a denied path
    # created after launch is refused by the decision tier.
    if open_missing:
        deny_notes.append("absent at launch, so the decision tier refuses creating them: "
                          + ", ".join(sorted({m.pattern for m in open_missing})))
    hides = sum(1 for m in mounts if m.kind in (MountKind.HIDE_DIR, MountKind.HIDE_FILE))
    ro = sum(1 for m in mounts if m.kind is MountKind.READ_ONLY)
    scanned = ", ".join(facts.walked) or "-"
    summary = f"{hides} hidden, {ro} write-protected by mounts; roots scanned: {scanned}"
    protections.append(Protection("files: denies inside granted trees", deny_state,
                                  "; ".join([summary, *deny_notes])))
    links = [m for m in facts.matches if m.via.startswith("hard link")]
    protections.append(Protection("files: hard links planted before launch",
                                  State.PARTLY if facts.capped else State.FULLY,
                                  f"{len(links)} found and masked"
                                  + ("; scan capped" if facts.capped else "")))
    protected_missing = [m.pattern for m in facts.missing if m.rule_id == SELF_PROTECTION_RULE]
    protections.append(Protection(
        "self-protection ($GUARD_HOME, policy files)",
        State.PARTLY if protected_missing else State.FULLY,
        ("missing at launch, so not masked: " + ", ".join(protected_missing)) if protected_missing
        else "hidden by mounts whatever the policy grants"))
    protections.append(Protection("audit: Landlock denials logged after exec",
                                  State.FULLY if abi >= 7 else State.NOT,
                                  "LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON" if abi >= 7
                                  else f"needs Landlock ABI 7, host has {abi}", required=False))
    return SandboxPlan(landlock=landlock_plan, mounts=tuple(mounts), workspace=str(workspace),
                       protected=tuple(str(p) for p in protected),
                       report=EnforcementReport(tuple(protections)))
