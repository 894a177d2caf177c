"""The kept code of dataclasses' generated methods (guard.dataclass_code): same classes, fewer compiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A child that imports guard's run path and reports what its classes do, and what the cache did.
CHILD = r"""
import dataclasses, json, sys
import guard.dataclass_code as dc
import guard.runner, guard.sandbox.scan, guard.sandbox.plan, guard.policy.engine, guard.model
from guard.model import Action, Decision, Op, Verdict
a = Action(op=Op.WRITE, target="/w/x", pid=7)
d = Decision(Verdict.DENY, "r", "why")
try:
    a.target = "/elsewhere"
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
out = {
    "repr": [repr(a), repr(d)],
    "eq": [a == Action(op=Op.WRITE, target="/w/x", pid=7), a == dataclasses.replace(a, pid=8)],
    "hash": hash(a) == hash(Action(op=Op.WRITE, target="/w/x", pid=7)),
    "frozen": frozen,
    "init_annotations": sorted(map(str, Action.__init__.__annotations__.items())),
    "fields": [f.name for f in dataclasses.fields(Action)],
    "loaded": len(dc._known) - dc._new,
    "compiled": dc._new,
}
dc.save()
print(json.dumps(out))
"""


def _child(prefix: Path, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ.update({"PYTHONPYCACHEPREFIX": str(prefix), **env})
    res = subprocess.run([sys.executable, "-c", CHILD], env=environ, capture_output=True, text=True,
                         timeout=120, check=True)
    result: dict[str, object] = json.loads(res.stdout.splitlines()[-1])
    return result


def _cache(prefix: Path) -> Path:
    found = list(prefix.rglob("dataclass-code.*.marshal"))
    assert len(found) == 1, found
    return found[0]


def test_classes_made_from_the_kept_code_are_the_classes_compiled_afresh(tmp_path: Path) -> None:
    first = _child(tmp_path)
    assert first["compiled"] and not first["loaded"]
    second = _child(tmp_path)
    assert second["loaded"] and not second["compiled"]  # nothing compiled the second time
    assert {k: v for k, v in first.items() if k not in ("loaded", "compiled")} == \
           {k: v for k, v in second.items() if k not in ("loaded", "compiled")}
    assert first["frozen"] is True and first["eq"] == [True, False] and first["hash"] is True


# Compiles each kept text as `exec(text)` does in dataclasses (a module with no __future__ import: the
# compile inherits its flags, none), and says which kept code objects differ.
COMPARE = r"""
import marshal, sys
from guard.dataclass_code import _HEADER
table = marshal.loads(open(sys.argv[1], "rb").read()[len(_HEADER):])
def same(a, b):  # code objects compare by their bytecode, constants, names, flags and positions
    return a == b and a.co_flags == b.co_flags and a.co_filename == b.co_filename
print(len(table), sum(not same(compile(t, "<string>", "exec"), c) for t, c in table.items()))
"""


def test_every_kept_code_object_is_what_exec_compiles_from_its_text(tmp_path: Path) -> None:
    _child(tmp_path)
    res = subprocess.run([sys.executable, "-c", COMPARE, str(_cache(tmp_path))], capture_output=True, text=True,
                         timeout=120, check=True)
    kept, differing = map(int, res.stdout.split())
    assert kept > 100 and differing == 0


def test_a_kept_file_others_may_write_or_from_another_interpreter_is_not_read(tmp_path: Path) -> None:
    _child(tmp_path)
    cache = _cache(tmp_path)
    cache.chmod(0o664)
    assert _child(tmp_path)["loaded"] == 0  # group-writable: compiled afresh (and kept again, 0644)
    assert cache.stat().st_mode & 0o777 == 0o644
    data = cache.read_bytes()
    cache.write_bytes(data[:21] + b"\x00\x00\x00\x00" + data[25:])  # another magic number
    assert _child(tmp_path)["loaded"] == 0


def test_nothing_is_written_when_bytecode_is_not(tmp_path: Path) -> None:
    assert _child(tmp_path, PYTHONDONTWRITEBYTECODE="1")["compiled"]
    assert not list(tmp_path.rglob("dataclass-code.*"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file another user owns")
def test_a_kept_file_owned_by_another_user_is_not_read(tmp_path: Path) -> None:
    _child(tmp_path)
    cache = _cache(tmp_path)
    os.chown(cache, 65534, 65534)
    assert _child(tmp_path)["loaded"] == 0


def test_a_write_that_fails_part_way_leaves_nothing_behind(tmp_path: Path) -> None:
    """As on a full disk: the kept file cannot be written whole (a file-size limit of 4 KiB, EFBIG as
    ENOSPC would be). The run goes on with its classes compiled afresh, and no partial or temporary file
    is left to be read by the next run."""
    # importlib itself is kept from writing .pyc files here: it leaves them cut short under the limit
    limited = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
               "sys.dont_write_bytecode = True\n")
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPYCACHEPREFIX"] = str(tmp_path)
    res = subprocess.run([sys.executable, "-c", limited + CHILD], env=environ, capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(res.stdout.splitlines()[-1])["compiled"]
    assert not list(tmp_path.rglob("*dataclass-code*"))
    assert _child(tmp_path)["compiled"]  # the next run, unlimited, compiles and keeps them
