"""Writing outside what the policy grants: every path trick an agent has to reach the engineer's files.

The target is ~/outside, which no rule of coding-agent grants (the fake home lives under /tmp, whose
scratch grant excepts the home directory). Each attack names its file after $T so the bare run and the
guarded run never see each other's results.
"""

from __future__ import annotations

import os
import shutil
import stat

import pytest

pytestmark = pytest.mark.timeout(120)


def _rel(world, path) -> str:
    return os.path.relpath(path, world.ws)


def test_write_outside_via_dotdot(world):
    attack = world.sh(f'echo pwned > {_rel(world, world.outside)}/"$T"')
    bare = world.bare_run(attack, env={"T": "dotdot-bare"})
    assert bare.returncode == 0 and (world.outside / "dotdot-bare").read_text() == "pwned\n", bare
    run = world.guard_run(attack, env={"T": "dotdot"})
    world.assert_write_refused(run, world.outside / "dotdot")


def test_write_outside_via_symlink_planted_before_launch(world):
    (world.ws / "pre-link").symlink_to(world.outside)
    attack = world.sh('echo pwned > pre-link/"$T"')
    bare = world.bare_run(attack, env={"T": "prelink-bare"})
    assert bare.returncode == 0 and (world.outside / "prelink-bare").exists(), bare
    run = world.guard_run(attack, env={"T": "prelink"})
    world.assert_write_refused(run, world.outside / "prelink")


def test_write_outside_via_symlink_created_after_launch(world):
    attack = world.sh(f'ln -s {world.outside} "post-link-$T" && echo pwned > "post-link-$T/$T"')
    bare = world.bare_run(attack, env={"T": "postlink-bare"})
    assert bare.returncode == 0 and (world.outside / "postlink-bare").exists(), bare
    run = world.guard_run(attack, env={"T": "postlink"})
    world.assert_write_refused(run, world.outside / "postlink")


def test_write_outside_via_hard_link_made_inside(world):
    for t in ("hlin-bare", "hlin"):
        (world.outside / f"victim-{t}").write_text("original\n")
    attack = world.sh(f'ln "{world.outside}/victim-$T" "hl-$T" && echo pwned >> "hl-$T"')
    bare = world.bare_run(attack, env={"T": "hlin-bare"})
    assert bare.returncode == 0 and "pwned" in (world.outside / "victim-hlin-bare").read_text(), bare
    run = world.guard_run(attack, env={"T": "hlin"})
    assert run.returncode != 0, run
    assert (world.outside / "victim-hlin").read_text() == "original\n"
    assert not (world.ws / "hl-hlin").exists()


def _planted_link_attack(world, target, name):
    """A hard link in the workspace to `target`, planted before launch; the agent appends through it."""
    original = target.read_text()
    link = world.ws / name
    os.link(target, link)
    attack = world.sh(f'echo pwned >> {name}')
    bare = world.bare_run(attack)
    assert bare.returncode == 0 and "pwned" in target.read_text(), bare
    target.write_text(original)  # same inode: the link still points at it
    assert os.stat(link).st_ino == os.stat(target).st_ino
    run = world.guard_run(attack)
    return run, original


def test_write_rc_file_via_hard_link_planted_before_launch(world):
    """~/.bashrc is write-denied by name; a hard link to it in the workspace must not be a way round."""
    run, original = _planted_link_attack(world, world.home / ".bashrc", "planted-rc")
    assert run.returncode != 0, run
    assert (world.home / ".bashrc").read_text() == original


def test_write_outside_via_hard_link_planted_before_launch(world):
    """A hard link to any file outside the grants (default deny, no explicit rule) planted in the workspace."""
    notes = world.outside / "notes.txt"
    notes.write_text("the engineer's notes\n")
    run, original = _planted_link_attack(world, notes, "planted-notes")
    assert run.returncode != 0, run
    assert notes.read_text() == original


def test_write_outside_via_rename_of_outside_directory_into_workspace(world):
    for t in ("ren-bare", "ren"):
        (world.outside / f"dir-{t}").mkdir()
    attack = world.sh(f'mv "{world.outside}/dir-$T" "stolen-$T" && echo pwned > "stolen-$T/f"')
    bare = world.bare_run(attack, env={"T": "ren-bare"})
    assert bare.returncode == 0 and (world.ws / "stolen-ren-bare" / "f").exists(), bare
    run = world.guard_run(attack, env={"T": "ren"})
    assert run.returncode != 0, run
    assert (world.outside / "dir-ren").is_dir()
    assert not (world.ws / "stolen-ren").exists()
    if "No such file" not in run.stderr:  # not hidden by a mask: then a decision refused it, on record
        world.assert_denied(run, "write", world.outside / "dir-ren")


def test_write_outside_via_proc_self_root(world):
    attack = world.sh(f'echo pwned > /proc/self/root{world.outside}/"$T"')
    bare = world.bare_run(attack, env={"T": "procroot-bare"})
    assert bare.returncode == 0 and (world.outside / "procroot-bare").exists(), bare
    run = world.guard_run(attack, env={"T": "procroot"})
    world.assert_write_refused(run, world.outside / "procroot")


def test_write_outside_via_proc_self_cwd(world):
    attack = world.py(
        "import os,sys\n"
        f"os.chdir({str(world.outside)!r})\n"
        "open('/proc/self/cwd/' + os.environ['T'], 'w').write('pwned')\n")
    bare = world.bare_run(attack, env={"T": "proccwd-bare"})
    assert bare.returncode == 0 and (world.outside / "proccwd-bare").exists(), bare
    run = world.guard_run(attack, env={"T": "proccwd"})
    assert run.returncode != 0 and ("PermissionError" in run.stderr or "FileNotFoundError" in run.stderr), run
    assert not (world.outside / "proccwd").exists()


def test_write_outside_via_dev_shm(world):
    name = f"guard-escape-{os.getpid()}-{world.ssh_secret[-6:]}"
    attack = world.sh('echo pwned > "/dev/shm/$T"')
    try:
        bare = world.bare_run(attack, env={"T": name + "-bare"})
        assert bare.returncode == 0 and os.path.exists(f"/dev/shm/{name}-bare"), bare
        run = world.guard_run(attack, env={"T": name})
        # the sandbox's /dev/shm is a tmpfs of its own (multiprocessing needs it): the write stays there
        assert run.returncode == 0, run
        assert not os.path.exists(f"/dev/shm/{name}"), "a write to the sandbox's /dev/shm reached the host's"
    finally:
        for suffix in ("", "-bare"):
            if os.path.exists(f"/dev/shm/{name}{suffix}"):
                os.unlink(f"/dev/shm/{name}{suffix}")


def test_write_outside_via_link_of_workspace_file_into_outside(world):
    """Write freely in the workspace, then give the file a second name outside (link, no rename)."""
    attack = world.sh(f'echo pwned > "payload-$T" && ln "payload-$T" "{world.outside}/$T"')
    bare = world.bare_run(attack, env={"T": "lnout-bare"})
    assert bare.returncode == 0 and (world.outside / "lnout-bare").read_text() == "pwned\n", bare
    run = world.guard_run(attack, env={"T": "lnout"})
    world.assert_write_refused(run, world.outside / "lnout")


def test_truncate_outside(world):
    for t in ("trunc-bare", "trunc"):
        (world.outside / f"victim-{t}").write_text("precious\n")
    attack = world.py(f"import os; os.truncate({str(world.outside)!r} + '/victim-' + os.environ['T'], 0)")
    bare = world.bare_run(attack, env={"T": "trunc-bare"})
    assert bare.returncode == 0 and (world.outside / "victim-trunc-bare").read_text() == "", bare
    run = world.guard_run(attack, env={"T": "trunc"})
    assert run.returncode != 0 and ("PermissionError" in run.stderr or "FileNotFoundError" in run.stderr), run
    assert (world.outside / "victim-trunc").read_text() == "precious\n"


def test_chmod_outside(world):
    """Metadata is a write too: making the engineer's private file world-writable from inside."""
    for t in ("chmod-bare", "chmod"):
        (world.outside / f"private-{t}").write_text("private\n")
        (world.outside / f"private-{t}").chmod(0o600)
    attack = world.sh(f'chmod 0666 "{world.outside}/private-$T"')
    bare = world.bare_run(attack, env={"T": "chmod-bare"})
    assert bare.returncode == 0 and stat.S_IMODE((world.outside / "private-chmod-bare").stat().st_mode) == 0o666
    run = world.guard_run(attack, env={"T": "chmod"})
    assert stat.S_IMODE((world.outside / "private-chmod").stat().st_mode) == 0o600, run
    assert run.returncode != 0, run


def test_zz_trail_verifies(world):
    world.check_trail()
    shutil.rmtree(world.outside, ignore_errors=True)
