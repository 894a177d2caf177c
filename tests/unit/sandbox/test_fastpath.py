"""The compiled fast path decides nothing of its own: differential tests against the engine.

1. The core's segment matcher against the engine's (guard.policy.paths) on generated globs and names:
   equal on ASCII globs, a superset after `_ascii_superset`.
2. The table against the policy: for generated directories and names, whenever `uniform_decision`
   enters a directory and the core's matcher finds the name spoken of by no rule, the engine's own
   decision for that path is the very decision the core would record (verdict, rule, reason).
3. The record the core writes is byte for byte the one Python writes.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from guard.model import Action, Decision, Op, Verdict
from guard.policy import load_policy
from guard.policy.paths import GlobError, _segment_regex
from guard.sandbox import fastpath
from guard.session import decision_record
from guard.spool import SpoolWriter

core = pytest.importorskip("guard._core", reason="the compiled core is not built (no C compiler or Python headers)")

NAME_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters='/"\\')
names = st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))
GLOB_ATOMS = st.sampled_from(["*", "?", "a", "b", ".", "-", "x", "[ab]", "[!a]", "[^b]", "[a-c]", "[]a]",
                              "[!]]", "\\*", "\\[", "[a-]", "[-a]", "[\\\\]", "é", "[é]", "[!é]", ".git",
                              "env", "*.pem", "A", "9"])
globs = st.lists(GLOB_ATOMS, min_size=1, max_size=5).map("".join)


def engine_matches(seg: str, name: str) -> bool | None:
    try:
        regex = re.compile(_segment_regex(seg, seg), re.DOTALL)
    except (GlobError, re.error):
        return None
    return regex.fullmatch(name) is not None


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seg=globs, name=names)
def test_the_core_matcher_is_the_engines_on_ascii_and_a_superset_otherwise(seg: str, name: str) -> None:
    assume("**" not in seg)  # a whole-segment `**` spans segments; anywhere else compile_path refuses it
    expected = engine_matches(seg, name)
    assume(expected is not None)
    wide = fastpath._ascii_superset(seg)
    if wide is None:  # a literal non-ASCII character: it cannot match a printable-ASCII name
        assert not expected
        return
    got = core.glob_match(wide.encode("ascii"), name.encode("ascii"))
    if seg.isascii():
        assert got == expected, (seg, name)
    elif expected:
        assert got, (seg, wide, name)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("home")
    ws = home / "src" / "proj"
    ws.mkdir(parents=True)
    return home, ws


def interesting_dirs(home: Path, ws: Path) -> list[str]:
    rel_ws = ["", "src", "src/pkg", ".git", ".git/hooks", ".git/objects/ab", ".git/info", ".github/workflows",
              ".vscode", "node_modules/x", ".claude", "build/out", ".venv/bin", "sub/.git", "a/.env.d"]
    rel_home = ["", ".ssh", ".aws", ".config", ".config/gh", ".cache/pip", ".cache", ".npm", ".cargo/registry",
                ".claude", ".local/bin", ".local/share/uv/tools/ruff/bin", "Downloads", "src"]
    out = [str(ws / r) if r else str(ws) for r in rel_ws]
    out += [str(home / r) if r else str(home) for r in rel_home]
    out += ["/", "/tmp", "/tmp/x", "/etc", "/usr/lib", "/dev", "/dev/shm", "/proc/self", "/var/tmp"]
    return out


SPOKEN_NAMES = [".env", ".env.local", "config", "pre-commit", "settings.json", "id_rsa", "credentials", ".npmrc",
                "key.pem", ".bashrc", "HEAD", "hooks", "index.lock", ".gitmodules", "CLAUDE.md", "x.py", "Makefile"]


def engine(policy_name: str, home: Path, ws: Path) -> tuple[list[str], list[bytes], Callable[[Action], Decision | None]]:
    """The policy's spoken segments (as text and as the core's bytes) and the probe the session gives the
    fast path: the engine's decision, None when an `applies_to` rule made it."""
    try:
        policy = load_policy(policy_name, workspace=ws, home=home, env={})
    except Exception as exc:  # a shipped policy that does not exist here is not this test's business
        pytest.skip(f"policy {policy_name} does not load: {exc}")
    segments = fastpath.spoken_segments(policy)
    existing = policy.existing_only_rules | policy.outside_new_repos_rules

    def probe(action: Action) -> Decision | None:
        decision = policy.decide(action)
        return None if decision.rule_id in existing else decision

    return segments, [s.encode("ascii") for s in segments], probe


@pytest.mark.parametrize("policy_name", ["coding-agent", "review-readonly"])
def test_every_name_the_core_would_take_gets_the_entered_decision(world: tuple[Path, Path],
                                                                   policy_name: str) -> None:
    home, ws = world
    _segments, encoded, probe = engine(policy_name, home, ws)

    probe_name = next(p for p in fastpath._PROBES if not any(core.glob_match(g, p.encode()) for g in encoded))
    entered = 0

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(directory=st.sampled_from(interesting_dirs(home, ws)), op=st.sampled_from([Op.WRITE, Op.READ]),
           name=st.one_of(names, st.sampled_from(SPOKEN_NAMES)))
    def check(directory: str, op: Op, name: str) -> None:
        nonlocal entered
        decision = fastpath.uniform_decision(probe, op, directory, probe_name)
        if decision is None:
            return
        if any(core.glob_match(g, name.encode("ascii")) for g in encoded):
            return  # the core hands this name back to Python
        entered += 1
        target = ("" if directory == "/" else directory) + "/" + name
        assert probe(Action(op=op, target=target)) == decision, target
        assert decision.enforced is Verdict.ALLOW

    check()
    assert entered > 0, "no generated name reached the fast path: the test proved nothing"


def test_the_cores_record_is_pythons_byte_for_byte(tmp_path: Path) -> None:
    decision = Decision(Verdict.ALLOW, "workspace", "inside the workspace")
    head = SpoolWriter.render_head(decision_record(
        Action(op=Op.WRITE, target=fastpath._SENTINEL_TARGET, pid=fastpath._SENTINEL_PID), decision))
    parts = fastpath.split_record(head)
    assert parts is not None
    target, pid = "/home/u/src/proj/d000/f00001.txt", 4242
    spool_fd = (tmp_path / "s").open("ab")
    c = core.Core(-1, 0, {"openat": 257}, False, False)
    c.attach_spool(spool_fd.fileno(), 0)
    n = c.append(parts[0] + target.encode() + parts[1] + str(pid).encode() + parts[2])
    spool_fd.close()
    python = SpoolWriter.render_head(decision_record(Action(op=Op.WRITE, target=target, pid=pid), decision))
    assert n == 1
    assert (tmp_path / "s").read_bytes() == python + b',"n":1}\n'



def test_a_repository_the_session_made_is_entered_and_the_engineers_is_not(tmp_path: Path) -> None:
    """CI workflows are protected by an `applies_to: outside-new-repos` rule: in a clone the session made,
    they are the agent's own (check() allows them), so the fast path may answer there with the very
    decision check() makes; in the engineer's repository they stay an ask and are never entered."""
    from guard.sandbox.new_repos import birth_time_ns
    from guard.session import Decider

    home = tmp_path / "home"
    ws = home / "src" / "proj"
    (ws / ".git").mkdir(parents=True)
    (ws / ".github" / "workflows").mkdir(parents=True)
    if birth_time_ns(str(ws)) is None:
        pytest.skip("this file system keeps no birth times: nothing is new, the rule keeps asking")
    policy = load_policy("coding-agent", workspace=ws, home=home)
    decider = Decider(policy, None, "0123456789", None, warn=lambda _line: None,  # type: ignore[arg-type]
                      workspace=str(ws))
    clone_workflows = ws / "clone" / ".github" / "workflows"
    for _ in range(10_000):  # born after the session started (the inode clock may be coarse)
        clone_workflows.mkdir(parents=True)
        (ws / "clone" / ".git").mkdir()
        if birth_time_ns(str(ws / "clone")) > decider._started_ns:
            break
        shutil.rmtree(ws / "clone")
    new = Action(Op.WRITE, str(clone_workflows / "guard-probe-0"))
    entered = decider.uniform(new)
    assert entered is not None and entered.verdict is Verdict.ALLOW, entered
    assert entered == decider.check(new)
    old = Action(Op.WRITE, str(ws / ".github" / "workflows" / "guard-probe-0"))
    assert decider.check(old).verdict is Verdict.ASK
    assert decider.uniform(old) is None


def test_forget_empties_the_table_and_drops_a_judgement_under_way(tmp_path: Path) -> None:
    """A `.git` made, removed or moved changes which repository paths lie in: forget() empties the core's
    table, and a directory whose judgement began before it is not entered after it."""
    import os

    allow = Decision(Verdict.ALLOW, "workspace", "inside the workspace")
    during: list[fastpath.FastPath] = []

    def probe(action: Action) -> Decision:
        if during:
            during.pop().forget()  # a `.git` changed while this directory was being judged
        return allow

    c = core.Core(-1, 0, {"openat": 257}, False, False)
    fast = fastpath.FastPath(c, probe=probe, segments=[], render=SpoolWriter.render_head,
                             record_of=decision_record)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    fd1, fd2 = os.open(one, os.O_PATH), os.open(two, os.O_PATH)
    try:
        fast.consider(Op.WRITE, str(one), fd1, parent=False)
        assert c.counts()["dirs"] == 1
        fast.forget()
        assert c.counts()["dirs"] == 0
        during.append(fast)
        fast.consider(Op.WRITE, str(two), fd2, parent=False)
        assert c.counts()["dirs"] == 0, "a judgement made before forget() was entered after it"
        fast.consider(Op.WRITE, str(one), fd1, parent=False)  # judged afresh after forget()
        assert c.counts()["dirs"] == 1
    finally:
        os.close(fd1)
        os.close(fd2)


def test_the_parent_of_a_directory_entered_is_considered_too_and_only_where_the_engine_proves_it(
        tmp_path: Path) -> None:
    """consider() also judges the directory's parent (one level, once), so the core can enter its siblings
    itself; the parent is entered only where the engine proves its own answer, never over the policy."""
    import os

    allow = Decision(Verdict.ALLOW, "workspace", "inside the workspace")
    ask = Decision(Verdict.ASK, "top", "the top needs a human")
    top = tmp_path / "top"
    (top / "objects" / "ab").mkdir(parents=True)
    asked: list[str] = []

    def probe(action: Action) -> Decision:
        directory = action.target.rsplit("/", 1)[0]
        asked.append(directory)
        return ask if directory == str(top) else allow

    c = core.Core(-1, 0, {"openat": 257}, False, False)
    fast = fastpath.FastPath(c, probe=probe, segments=[], render=SpoolWriter.render_head,
                             record_of=decision_record)
    ab = os.open(top / "objects" / "ab", os.O_PATH)
    objects = os.open(top / "objects", os.O_PATH)
    try:
        fast.consider(Op.WRITE, str(top / "objects" / "ab"), ab)
        assert c.counts()["dirs"] == 2, "the parent (objects) was not entered"
        assert str(top / "objects") in asked and str(top) not in asked, asked  # one level up, no further
        fast.consider(Op.WRITE, str(top / "objects"), objects)  # already judged: nothing more
        assert c.counts()["dirs"] == 2
        asked.clear()
        inner = os.open(top / "objects", os.O_PATH)
        fast.forget()
        fast.consider(Op.WRITE, str(top / "objects"), inner)  # its parent is the asking top: not entered
        os.close(inner)
        assert str(top) in asked and c.counts()["dirs"] == 1, (asked, c.counts())
    finally:
        os.close(ab)
        os.close(objects)


DEPTHS = """version: 1
name: depths
extends: [coding-agent]
rules:
  - id: two-deep
    deny: [write]
    paths: ["${workspace}/src/*/*"]
  - id: four-deep
    ask: [write]
    paths: ["${workspace}/build/*/*/*/*"]
  - id: home-top
    allow: [write]
    paths: ["~/*"]
"""


@pytest.mark.parametrize("policy_name", ["coding-agent", "review-readonly", "depths"])
def test_directories_the_core_makes_below_an_entered_one_get_the_engines_decision(
        world: tuple[Path, Path], policy_name: str, tmp_path: Path) -> None:
    """`_entry` says how many levels of new plain directories keep the entered decision; the core enters
    directories it makes down to that depth. For generated chains of plain directory names and a final
    name the core would take, the engine's own decision at every depth within it is the entered one
    (`depths` has rules whose answer changes with depth alone)."""
    home, ws = world
    if policy_name == "depths":
        (tmp_path / "depths.yaml").write_text(DEPTHS)
        policy_name = str(tmp_path / "depths.yaml")
    segments, encoded, probe = engine(policy_name, home, ws)

    c = core.Core(-1, 0, {"openat": 257}, False, False)
    fast = fastpath.FastPath(c, probe=probe, segments=segments, render=SpoolWriter.render_head,
                             record_of=decision_record)
    plain = names.filter(lambda n: not any(core.glob_match(g, n.encode("ascii")) for g in encoded))
    deep = 0

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(directory=st.sampled_from([*interesting_dirs(home, ws), str(ws / "build")]),
           op=st.sampled_from([Op.WRITE, Op.READ]), chain=st.lists(plain, min_size=1, max_size=fastpath.INHERIT_LEVELS), name=plain)
    def check(directory: str, op: Op, chain: list[str], name: str) -> None:
        nonlocal deep
        entry = fast._entry(op, directory)
        if entry is None:
            return
        decision = fastpath.uniform_decision(probe, op, directory, fast._probe_name)
        _parts, inherit = entry
        for depth in range(1, min(inherit, len(chain)) + 1):
            deep += 1
            target = "/".join([directory.rstrip("/"), *chain[:depth], name])
            assert probe(Action(op=op, target=target)) == decision, target

    check()
    assert deep > 0, "no generated chain was inside an inheritable directory: the test proved nothing"
