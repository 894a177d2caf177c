"""What the compiled fast path (guard/_core.c) may answer on its own, proved by the policy engine.

The supervisor's slow path decides every write-open in Python. Most of them, in file-heavy work, are
plain names in a directory where every plain name gets the same answer: the workspace's source tree,
a build directory, `.git/objects/xx`. This module proves that for one directory at a time and hands
the C core the decision's record already rendered, so the core can record and perform such an open
without the interpreter. One decision semantics: the core evaluates nothing of the policy; it looks up
what the engine computed here.

The proof. A rule's path pattern matches `D/x` by aligning its segments with the path's components;
the last component `x` is aligned with a segment that is either `*` or `**` (which treat every name
alike) or a *spoken* segment: a literal or a glob such as `.env`, `*.pem`, `hooks`. `spoken_segments`
collects every spoken segment of every file rule (patterns and excepts). For a name that matches none
of them, every rule matches `D/x` exactly when it matches `D/p` for a probe name `p` that matches none
either: so the engine's answer for `D/p` is the answer for every such name, with the same rule and
the same reason. The core checks each name against the same segments (its matcher is tested against
the engine's on generated names and patterns, tests/unit/sandbox/test_fastpath.py) and hands every
other name back. A directory is never entered in the table when:
- the answer is not an enforced, plain `allow` (asks and denials stay on the path that records them
  with their context; audit mode is not accelerated);
- an `applies_to: existing` rule decides the probe (its answer depends on what existed at launch);
- an `applies_to: outside-new-repos` rule decides it, unless the directory lies in a repository the
  session created (guard.session.Decider.uniform): which repository that is depends only on the nearest
  `.git` above the directory and that repository's birth time, which nothing changes; a `.git` made,
  removed or moved (in a moved tree) goes through Python, which then forgets the whole table (`forget`);
- a protected symlink points at the directory, above it or at a name inside it (`link_names`: the
  write must also be judged under the symlink's name).
Names are further limited, in the core, to printable ASCII with no quote or backslash (so the record
is byte-for-byte what Python writes), reached without a symlink (a ".." only where the directory reached
is the one the path names lexically: see docs/seccomp.md).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from guard.errors import SandboxError
from guard.model import Action, Decision, Op, Verdict
from guard.sandbox.core import load_core
from guard.sandbox.link_names import LinkMap, LinkNames

if TYPE_CHECKING:
    from guard.policy.engine import Policy
    from guard.sandbox.seccomp import SeccompSpec
    from guard.spool import SpoolWriter

log = logging.getLogger(__name__)

# A probe name matching no spoken segment is looked for among these (one always works in practice; the
# check below makes sure).
_PROBES = ("guard-probe-0", "guard-probe-1", "q7x9z", "zz9q7x3")
_SENTINEL_TARGET = "/guard\x01fast\x01target"
# How many levels of new plain directories below an entered one may be entered by the core as it makes them
# (`FastPath._entry`): each level costs one more engine decision when a directory is entered.
INHERIT_LEVELS = 4
_SENTINEL_PID = 987654321987
OPS = {Op.WRITE: 0, Op.READ: 1}


def spoken_segments(policy: Policy) -> list[str]:
    """Every segment of every file rule's patterns and excepts that does not treat all names alike,
    in an ASCII form the core's matcher reads as a superset of the engine's (see _ascii_superset)."""
    out: dict[str, None] = {}
    for rule in policy.rules:
        for pattern in (*rule.paths, *rule.except_paths):
            for seg in pattern.text.split("/"):
                if seg in ("", "*", "**"):
                    continue
                wide = _ascii_superset(seg)
                if wide is not None:
                    out[wide] = None
    return list(out)


def _ascii_superset(seg: str) -> str | None:
    """The core compares printable-ASCII names byte by byte. A literal non-ASCII character can never
    match such a name (None: the segment can be left out); a class holding one is widened to `?`."""
    out: list[str] = []
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "\\" and i + 1 < len(seg):
            if not seg[i + 1].isascii():
                return None
            out.append(seg[i:i + 2])
            i += 2
            continue
        if c == "[":
            end = seg.find("]", i + 2 if seg[i + 1:i + 2] in ("!", "^") else i + 1)
            if seg[i + 1:i + 3] in ("]", "!]", "^]"):
                end = seg.find("]", end + 1)
            if end < 0:
                return "*"  # malformed cannot compile; stay conservative
            body = seg[i:end + 1]
            out.append(body if body.isascii() else "?")
            i = end + 1
            continue
        if not c.isascii():
            return None
        out.append(c)
        i += 1
    return "".join(out)


class FastPath:
    """The table of directories the core may answer for, kept by the Python supervisor as it goes."""

    def __init__(self, core: Any, *, probe: Callable[[Action], Decision | None], segments: Sequence[str],
                 render: Callable[[dict[str, Any]], bytes],
                 record_of: Callable[[Action, Decision], dict[str, Any]],
                 link_names: LinkNames | LinkMap | None = None) -> None:
        self.core = core
        self._probe = probe
        self._render = render
        self._record_of = record_of
        self._link_names = LinkNames.of(link_names)
        self._link_targets: list[str] | None = None
        self._seen: set[tuple[int, str, int, int]] = set()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by forget(): a judgement begun before it is not entered
        encoded = [s.encode("ascii") for s in segments]
        core.set_globs(encoded)
        self._probe_name = next((p for p in _PROBES if not any(_glob_match(g, p) for g in encoded)), None)

    @classmethod
    def create(cls, listener_fd: int, spec: SeccompSpec, *, policy: Policy,
               probe: Callable[[Action], Decision | None], spool: SpoolWriter,
               record_of: Callable[[Action, Decision], dict[str, Any]],
               link_names: LinkNames | LinkMap | None = None) -> FastPath | None:
        core_mod, why = load_core()
        if core_mod is None:
            log.info("seccomp fast path off: %s", why)
            return None
        from guard.sandbox import syscalls_seccomp as sc

        table = spec.table
        privileged = sc.effective_caps(sc.thread_caps()) != 0
        core = core_mod.Core(listener_fd, table.audit_arch, dict(table.numbers), spec.full_audit, privileged)
        from guard.sandbox.agent_config import watched_names

        # names Python judges on more than the policy's rules (agent config that starts programs) stay there
        segments = list(dict.fromkeys([*spoken_segments(policy), *watched_names()]))
        fast = cls(core, probe=probe, segments=segments, render=spool.render_head,
                   record_of=record_of, link_names=link_names)
        spool.use_core(core)
        return fast

    def allowed(self) -> int:
        """Decisions the core made (each an allow, each recorded): for the session's tally."""
        counts = self.core.counts()
        return int(counts["fast_writes"]) + int(counts["fast_reads"])

    def consider(self, op: Op, directory: str, held: int, *, parent: bool = True) -> None:
        """Enter `directory` (held open as `held`, as the supervisor resolved it) for `op` if the engine
        proves one answer for every plain name in it. The core finds it by inode and takes it only while
        the kernel still names that inode `directory`.

        Its parent is considered too (`parent`), once: entered with the depth the engine proves for it, it
        lets the core enter the directory's siblings on their first write by itself (an existing directory
        below an entered one), instead of each coming here first. A local `git clone` links one object out
        of each of upstream's 256 object directories, and each of those came here, with its own proof."""
        code = OPS.get(op)
        if code is None or self._probe_name is None:
            return
        st = os.fstat(held)
        key = (code, directory, st.st_dev, st.st_ino)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            generation = self._generation
        entry = self._entry(op, directory)
        if entry is not None:
            parts, inherit = entry
            with self._lock:
                if generation == self._generation:
                    self.core.add(code, st.st_dev, st.st_ino, directory.encode("ascii"), parts, inherit)
        up = directory.rsplit("/", 1)[0]
        if parent and up and up != directory:
            try:
                # the parent as the kernel has it now; the core still takes it only while it is named `up`
                above = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=held)
            except OSError:
                return
            try:
                self.consider(op, up, above, parent=False)
            finally:
                os.close(above)

    def forget(self) -> None:
        """Forget every directory: a `.git` was made, removed or moved, so which repository a path lies
        in (what an `applies_to: outside-new-repos` rule asks) may have changed anywhere around it. Each
        directory is judged afresh at its next write through Python; a judgement under way is dropped."""
        with self._lock:
            self._generation += 1
            self._seen.clear()
            self.core.clear()

    def _links(self) -> list[str] | None:
        """The targets of the protected symlinks, once their walk is whole (it may still be going beside
        the agent's start: guard.sandbox.link_names); None when it failed: no directory is entered."""
        if self._link_targets is None:
            try:
                names = self._link_names.get()
            except SandboxError:
                return None
            self._link_targets = [t.rstrip("/") or "/" for t in names]
        return self._link_targets

    def _entry(self, op: Op, directory: str) -> tuple[tuple[bytes, bytes, bytes], int] | None:
        """The record's parts for plain names in `directory`, and how many levels of plain directories
        below it get the very same decision: the core enters a directory it makes itself (mkdir of a plain
        name), or an existing one it meets that many levels below on its first write (none of the
        directories on the way holding a `.git`), with the same parts and that many levels less. The proof
        is the module docstring's, applied to every component: for plain names p1..pk and x, every rule
        matches `D/p1/../pk/x` exactly when it matches `D/q/../q/q` for the probe name q, so the engine's
        answer there is the answer for all of them. A protected symlink pointing anywhere below the
        directory stops it (its name must be judged too); a `.git` made below is Python's, and makes the
        table forget."""
        if self._probe_name is None:
            return None
        links = self._links()
        if links is None:
            return None
        decision = uniform_decision(self._probe, op, directory, self._probe_name, links)
        if decision is None:
            return None
        sentinel = Action(op=op, target=_SENTINEL_TARGET, pid=_SENTINEL_PID)
        parts = split_record(self._render(self._record_of(sentinel, decision)))
        if parts is None:
            return None
        inherit = 0
        if not any(_under(link, directory) for link in links):
            deeper = directory.rstrip("/")
            while inherit < INHERIT_LEVELS:
                deeper = f"{deeper}/{self._probe_name}"
                if uniform_decision(self._probe, op, deeper, self._probe_name, links) != decision:
                    break
                inherit += 1
        return parts, inherit


def uniform_decision(probe: Callable[[Action], Decision | None], op: Op, directory: str, probe_name: str,
                     links: Sequence[str] = ()) -> Decision | None:
    """The one decision every plain name in `directory` gets, if the engine proves there is one and it
    is an enforced allow; None otherwise (see the module docstring for the proof and the exclusions)."""
    if not directory.startswith("/") or not _plain(directory):
        return None
    for link in links:  # a protected symlink's name must be judged too: not here
        parent = link.rsplit("/", 1)[0] or "/"
        if link == directory or _under(directory, link) or parent == directory:
            return None
    target = ("" if directory == "/" else directory) + "/" + probe_name
    decision = probe(Action(op=op, target=target))
    if decision is None or decision.verdict is not Verdict.ALLOW or decision.enforced is not Verdict.ALLOW \
            or decision.audit_only:
        return None
    return decision


def split_record(head: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The rendered record of the sentinel action, cut where the target and the pid go."""
    target_text = _SENTINEL_TARGET.replace("\x01", "\\u0001").encode("ascii")
    pid_text = str(_SENTINEL_PID).encode("ascii")
    if head.count(target_text) != 1 or head.count(pid_text) != 1:
        return None
    before, after = head.split(target_text)
    if pid_text not in after:
        return None
    middle, rest = after.split(pid_text)
    return before, middle, rest


def _plain(text: str) -> bool:
    return all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in text)


def _under(path: str, top: str) -> bool:
    return top == "/" or path.startswith(top + "/")


def _glob_match(pattern: bytes, name: str) -> bool:
    from guard import _core  # type: ignore[attr-defined]

    return bool(_core.glob_match(pattern, name.encode("ascii")))
