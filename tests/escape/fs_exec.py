"""Executing code from where the policy grants no exec: the agent's own state folder (read/write only).

Every route ends with a copy of `id` running, so success is `uid=` on stdout. The workspace is executable
by policy, and so is the session's private /tmp (a fresh tmpfs of its own: what runs there was written by
the session itself, vanishes with it and is seen by no other program, exactly like a build in the
workspace). The place an agent may write but never run from is its state folder (`~/.claude`: sessions,
caches): a copied binary there must not run by any route.
"""

from __future__ import annotations

import glob
import shutil

import pytest

pytestmark = pytest.mark.timeout(120)


def _ran(run) -> bool:
    return "uid=" in run.stdout


def _scratch(world):
    """~/.claude/scratch: granted read/write by agent-state, never exec."""
    path = world.home / ".claude" / "scratch"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_exec_copied_binary_from_non_exec_path(world):
    attack = world.sh(f'cp /usr/bin/id "{_scratch(world)}/id-$T" && "{_scratch(world)}/id-$T"')
    assert _ran(world.bare_run(attack, env={"T": "bare"}))
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode == 126 and not _ran(run), run
    world.assert_denied(run, "exec", _scratch(world) / "id-guarded")


def test_exec_after_chmod(world):
    attack = world.sh(f'cat /usr/bin/id > "{_scratch(world)}/raw-$T" && chmod +x "{_scratch(world)}/raw-$T" && '
                      f'"{_scratch(world)}/raw-$T"')
    assert _ran(world.bare_run(attack, env={"T": "bare"}))
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode == 126 and not _ran(run), run
    world.assert_denied(run, "exec", _scratch(world) / "raw-guarded")


def test_exec_through_the_dynamic_loader(world):
    """`ld.so ./bin` maps the binary itself: no execve of the file ever happens."""
    loader = "/lib64/ld-linux-x86-64.so.2"
    if not glob.glob(loader):
        pytest.skip(f"{loader} is not on this host")
    attack = world.sh(f'cp /usr/bin/id "{_scratch(world)}/ld-$T" && {loader} "{_scratch(world)}/ld-$T"')
    assert _ran(world.bare_run(attack, env={"T": "bare"}))
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode != 0 and not _ran(run), run


def test_exec_through_a_script_interpreter(world):
    """A script in the (executable) workspace whose interpreter is a copied binary (echo) in scratch."""
    attack = world.sh(f'cp /bin/echo "{_scratch(world)}/interp-$T" && '
                      f'printf "#!{_scratch(world)}/interp-$T RAN-FROM-SCRATCH\\n" > "script-$T" && '
                      f'chmod +x "script-$T" && ./"script-$T"')
    assert "RAN-FROM-SCRATCH" in world.bare_run(attack, env={"T": "bare"}).stdout
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode == 126 and "RAN-FROM-SCRATCH" not in run.stdout, run


def test_exec_from_memfd(world):
    """Anonymous memory has no path for Landlock to judge: memfd_create, copy the binary, fexecve."""
    attack = world.py(
        "import os\n"
        "fd = os.memfd_create('x', 0)\n"
        "os.write(fd, open('/usr/bin/id', 'rb').read())\n"
        "os.execve(fd, ['id'], {})\n")
    assert _ran(world.bare_run(attack))
    run = world.guard_run(attack)
    assert run.returncode != 0 and not _ran(run), run
    # refused by the supervisor itself (the file has no path to judge), and that refusal is in the trail
    refusals = [r["decision"] for r in world.records(run.session)
                if r.get("type") == "decision" and r["decision"]["verdict"] == "deny"]
    assert any(d["rule_id"] == "guard-supervisor" and "no path" in d["reason"] for d in refusals), refusals


def test_dlopen_copied_library_from_non_exec_path(world):
    """Loading a shared object maps its code executable: the same as exec for an attacker."""
    libs = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/libz.so.1*")) or sorted(glob.glob("/lib*/libz.so.1*"))
    if not libs:
        pytest.skip("no libz shared object to copy")
    attack = world.py(
        "import ctypes, os, shutil\n"
        f"dst = {str(_scratch(world))!r} + '/libz-' + os.environ['T'] + '.so'\n"
        f"shutil.copy({libs[0]!r}, dst)\n"
        "print('LOADED', ctypes.CDLL(dst).zlibVersion)\n")
    assert "LOADED" in world.bare_run(attack, env={"T": "bare"}).stdout
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode != 0 and "LOADED" not in run.stdout, run


def test_zz_trail_verifies(world):
    world.check_trail()
    shutil.rmtree(_scratch(world), ignore_errors=True)
