"""The compiled-policy cache (guard.policy_cache): a cached policy is always what the files say now.

Each test compiles a real policy from real files, then changes one input the policy depends on (a file's
bytes, where an `extends` leads, a variable the files name) and checks the cache hands back what a fresh
compile gives; and that an entry not written by us is never unpickled.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from guard.model import Action, Op
from guard.policy import load_policy
from guard.policy.engine import Policy
from guard.policy_cache import load_policy_cached

TOP = """\
version: 1
name: top
extends: [./parent.yaml]
rules:
  - id: tmp-write
    allow: [write]
    paths: ["${{env:GUARD_TEST_DIR}}/**"]
{extra}"""
PARENT = """\
version: 1
name: parent
rules:
  - id: ws
    allow: [read, write]
    paths: ["${{workspace}}/**"]
{extra}"""


def write(root: Path, top_extra: str = "", parent_extra: str = "") -> Path:
    (root / "parent.yaml").write_text(PARENT.format(extra=parent_extra))
    top = root / "top.yaml"
    top.write_text(TOP.format(extra=top_extra))
    return top


def state(policy: Policy) -> dict[str, object]:
    """Everything a Policy holds but its caches, for comparing two of them."""
    return {slot: repr(getattr(policy, slot)) for slot in Policy.__slots__ if slot != "_decide_cached"}


@pytest.fixture()
def world(tmp_path: Path) -> tuple[Path, Path, dict[str, str], Path]:
    policies, ws, gh = tmp_path / "policies", tmp_path / "ws", tmp_path / "gh"
    for d in (policies, ws):
        d.mkdir()
    gh.mkdir(mode=0o700)
    env = {"HOME": str(tmp_path / "home"), "TMPDIR": "/tmp", "GUARD_TEST_DIR": "/srv/a"}
    return policies, ws, env, gh


def entries(gh: Path) -> list[Path]:
    return sorted((gh / "cache").glob("policy-*.pickle"))


def decides(policy: Policy, path: str) -> str:
    return policy.decide(Action(Op.WRITE, path)).verdict.value


def test_a_policy_survives_pickling_whole(world: tuple[Path, Path, dict[str, str], Path]) -> None:
    policies, ws, env, _ = world
    top = write(policies)
    fresh = load_policy(str(top), workspace=ws, env=env)
    again = pickle.loads(pickle.dumps(fresh))
    assert state(again) == state(fresh)
    assert decides(again, "/srv/a/x") == decides(fresh, "/srv/a/x") == "allow"


def test_second_load_is_a_hit_and_equal(world: tuple[Path, Path, dict[str, str], Path]) -> None:
    policies, ws, env, gh = world
    top = write(policies)
    first = load_policy_cached(str(top), workspace=ws, env=env, home=gh)
    [entry] = entries(gh)
    assert entry.stat().st_mode & 0o777 == 0o600
    before = entry.stat().st_mtime_ns
    second = load_policy_cached(str(top), workspace=ws, env=env, home=gh)
    assert entry.stat().st_mtime_ns == before  # read, not rewritten
    assert state(second) == state(first) == state(load_policy(str(top), workspace=ws, env=env))


def test_a_changed_parent_file_is_compiled_again(world: tuple[Path, Path, dict[str, str], Path]) -> None:
    policies, ws, env, gh = world
    top = write(policies)
    assert decides(load_policy_cached(str(top), workspace=ws, env=env, home=gh), "/srv/b/x") == "deny"
    write(policies, parent_extra='  - id: b\n    allow: [write]\n    paths: ["/srv/b/**"]\n')
    assert decides(load_policy_cached(str(top), workspace=ws, env=env, home=gh), "/srv/b/x") == "allow"


def test_an_extends_that_now_leads_elsewhere_is_compiled_again(
        world: tuple[Path, Path, dict[str, str], Path]) -> None:
    policies, ws, env, gh = world
    real_a, real_b = policies / "a", policies / "b"
    for d in (real_a, real_b):
        d.mkdir()
        write(d)
    write(real_b, parent_extra='  - id: b\n    allow: [write]\n    paths: ["/srv/b/**"]\n')
    (policies / "parent.yaml").symlink_to(real_a / "parent.yaml")
    (policies / "top.yaml").write_text((real_a / "top.yaml").read_text())
    top = policies / "top.yaml"
    assert decides(load_policy_cached(str(top), workspace=ws, env=env, home=gh), "/srv/b/x") == "deny"
    (policies / "parent.yaml").unlink()
    (policies / "parent.yaml").symlink_to(real_b / "parent.yaml")  # same top bytes, another parent
    assert decides(load_policy_cached(str(top), workspace=ws, env=env, home=gh), "/srv/b/x") == "allow"


def test_a_changed_named_variable_is_compiled_again(world: tuple[Path, Path, dict[str, str], Path]) -> None:
    policies, ws, env, gh = world
    top = write(policies)
    assert decides(load_policy_cached(str(top), workspace=ws, env=env, home=gh), "/srv/a/x") == "allow"
    moved = {**env, "GUARD_TEST_DIR": "/srv/z"}
    policy = load_policy_cached(str(top), workspace=ws, env=moved, home=gh)
    assert decides(policy, "/srv/a/x") == "deny"
    assert decides(policy, "/srv/z/x") == "allow"


def test_another_workspace_is_another_entry(world: tuple[Path, Path, dict[str, str], Path]) -> None:
    policies, ws, env, gh = world
    top = write(policies)
    other = ws.parent / "other"
    other.mkdir()
    load_policy_cached(str(top), workspace=ws, env=env, home=gh)
    policy = load_policy_cached(str(top), workspace=other, env=env, home=gh)
    assert decides(policy, f"{other}/f") == "allow"
    assert decides(policy, f"{ws}/f") == "deny"
    assert len(entries(gh)) == 2


def test_an_entry_others_can_write_is_never_unpickled(world: tuple[Path, Path, dict[str, str], Path]) -> None:
    policies, ws, env, gh = world
    top = write(policies)
    load_policy_cached(str(top), workspace=ws, env=env, home=gh)
    [entry] = entries(gh)
    marker = gh / "unpickled"
    entry.write_bytes(pickle.dumps(_Planted(str(marker))))
    os.chmod(entry, 0o666)
    policy = load_policy_cached(str(top), workspace=ws, env=env, home=gh)
    assert not marker.exists()
    assert decides(policy, "/srv/a/x") == "allow"


def test_a_corrupt_entry_is_a_miss(world: tuple[Path, Path, dict[str, str], Path]) -> None:
    policies, ws, env, gh = world
    top = write(policies)
    load_policy_cached(str(top), workspace=ws, env=env, home=gh)
    [entry] = entries(gh)
    entry.write_bytes(b"\x80\x05not a pickle")
    assert decides(load_policy_cached(str(top), workspace=ws, env=env, home=gh), "/srv/a/x") == "allow"
    assert pickle.loads(entry.read_bytes())["format"] == 1


class _Planted:
    """What an attacker's pickle would do: run code when loaded (here: create a file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))
