"""Reading what the policy denies: the planted fake SSH key, AWS credentials, `.env` files and home files.

Success for the attacker is the secret's bytes on its stdout; each guarded run must show none of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def _leaks(run, secret: str) -> bool:
    return secret in run.stdout or secret in run.stderr


def test_read_ssh_key_directly(world):
    attack = world.sh(f'cat "{world.ssh_key}"; ls -a "{world.home}/.ssh"')
    bare = world.bare_run(attack)
    assert world.ssh_secret in bare.stdout, bare
    run = world.guard_run(attack)
    assert not _leaks(run, world.ssh_secret), run
    assert "id_ed25519" not in run.stdout, "the hidden directory must not even list the key"


def test_reads_of_masked_credentials_are_recorded_with_their_rule(world):
    """Issue 12: the trail shows the credential-theft attempt, for every user. Each read-denied name is a
    FUSE mask the guard answers: the read is refused (Permission denied) and recorded as a denied READ of
    that path with its rule; through a symlink too (the mask is met on the way)."""
    (world.ws / "key-alias").symlink_to(world.ssh_key)
    dotenv = world.ws / ".env"
    dotenv.write_text("DB_PASSWORD=hunter2-dotenv\n")
    attack = world.sh(f'cat "{world.ssh_key}"; cat "{world.aws}"; cat key-alias; cat .env; '
                      f'python3 -I -c "open(\'{world.aws}\').read()"; echo END')
    bare = world.bare_run(attack)
    assert world.ssh_secret in bare.stdout and world.aws_secret in bare.stdout, bare
    assert "hunter2-dotenv" in bare.stdout, bare
    try:
        run = world.guard_run(attack)
    finally:
        dotenv.unlink()
        (world.ws / "key-alias").unlink()
    assert "END" in run.stdout and not _leaks(run, world.ssh_secret) and not _leaks(run, world.aws_secret), run
    assert "hunter2-dotenv" not in run.stdout and "Permission denied" in run.stderr, run
    refused = {(r["action"]["target"], r["decision"].get("rule_id")) for r in world.records(run.session)
               if r.get("type") == "decision" and r["action"]["op"] == "read"
               and r["decision"]["verdict"] == "deny"}
    for path in (world.ssh_key, world.aws, dotenv):
        assert (str(path), "credentials") in refused, (path, refused, run)


def test_read_via_symlink_planted_before_launch(world):
    (world.ws / "key-link").symlink_to(world.ssh_key)
    attack = world.sh("cat key-link")
    assert world.ssh_secret in world.bare_run(attack).stdout
    run = world.guard_run(attack)
    assert run.returncode != 0 and not _leaks(run, world.ssh_secret), run


def test_read_via_symlink_created_after_launch(world):
    attack = world.sh(f'ln -s "{world.aws}" "aws-link-$T" && cat "aws-link-$T"')
    assert world.aws_secret in world.bare_run(attack, env={"T": "bare"}).stdout
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode != 0 and not _leaks(run, world.aws_secret), run


def test_read_via_hard_link_planted_before_launch(world):
    """Landlock and mounts judge the path; the scan must find the inode's other name and mask it."""
    (world.ws / "deep" / "er").mkdir(parents=True)
    os.link(world.ssh_key, world.ws / "deep" / "er" / "notes.txt")
    attack = world.sh("cat deep/er/notes.txt")
    assert world.ssh_secret in world.bare_run(attack).stdout
    run = world.guard_run(attack)
    assert not _leaks(run, world.ssh_secret), run


def test_read_via_hard_link_made_inside(world):
    attack = world.sh(f'ln "{world.aws}" "aws-hl-$T" && cat "aws-hl-$T"')
    assert world.aws_secret in world.bare_run(attack, env={"T": "bare"}).stdout
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode != 0 and not _leaks(run, world.aws_secret), run
    assert not (world.ws / "aws-hl-guarded").exists()


def test_read_via_bind_mount_of_its_directory(world):
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    attack = world.sh(f'mkdir -p "m-$T" && unshare -Urm sh -c \'mount --bind "{world.home}/.ssh" "m-$T" && '
                      f'cat "m-$T/id_ed25519"\'')
    bare = world.bare_run(attack, env={"T": "bare"})
    if world.ssh_secret not in bare.stdout:
        pytest.skip(f"a bind mount in a new user namespace does not work here even bare: {bare.stderr.strip()}")
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode != 0 and not _leaks(run, world.ssh_secret), run
    direct = world.guard_run(world.sh(f'mkdir -p m2 && mount --bind "{world.home}/.ssh" m2; cat m2/id_ed25519'))
    assert not _leaks(direct, world.ssh_secret), direct


def test_read_via_proc_pid_fd_of_a_process_outside(world):
    victim = subprocess.Popen(
        [sys.executable, "-c", f"import sys,time; f = open({str(world.ssh_key)!r}); print(f.fileno(), "
                               "flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env=world.env)
    world.track(victim.pid)
    try:
        fd = int(victim.stdout.readline())
        attack = world.sh(f"cat /proc/{victim.pid}/fd/{fd}")
        assert world.ssh_secret in world.bare_run(attack).stdout
        run = world.guard_run(attack)
        assert run.returncode != 0 and not _leaks(run, world.ssh_secret), run
    finally:
        victim.kill()
        victim.wait()


def test_read_dotenv_existing_at_launch(world):
    secret = "DOTENV-" + world.ssh_secret[-8:]
    (world.ws / "app").mkdir(exist_ok=True)
    (world.ws / "app" / ".env").write_text(f"API_KEY={secret}\n")
    attack = world.sh("cat app/.env")
    assert secret in world.bare_run(attack).stdout
    run = world.guard_run(attack)
    assert not _leaks(run, secret), run


def test_dotenv_created_after_launch_is_refused(world):
    """`**/.env` matched nothing at launch: only the decision tier stands between the agent and it."""
    attack = world.sh('mkdir -p "svc-$T" && echo API_KEY=x > "svc-$T/.env"')
    bare = world.bare_run(attack, env={"T": "bare"})
    assert bare.returncode == 0 and (world.ws / "svc-bare" / ".env").exists(), bare
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode != 0 and "Permission denied" in run.stderr, run
    assert not (world.ws / "svc-guarded" / ".env").exists()
    world.assert_denied(run, "write", world.ws / "svc-guarded" / ".env")


def test_read_ungranted_home_file(world):
    """The home directory is not scratch space even when it lives under /tmp (containers, CI)."""
    docs = world.home / "Documents"
    docs.mkdir(exist_ok=True)
    secret = "TAXES-" + world.aws_secret[-8:]
    (docs / "taxes.txt").write_text(secret + "\n")
    attack = world.sh(f'cat "{docs}/taxes.txt"')
    assert secret in world.bare_run(attack).stdout
    run = world.guard_run(attack)
    assert run.returncode != 0 and not _leaks(run, secret), run


def test_read_credentials_via_proc_self_root(world):
    attack = world.sh(f'cat "/proc/self/root{world.aws}"')
    assert world.aws_secret in world.bare_run(attack).stdout
    run = world.guard_run(attack)
    assert run.returncode != 0 and not _leaks(run, world.aws_secret), run


def test_read_key_renamed_into_workspace(world):
    """Moving the key directory into the workspace would make it a workspace file."""
    attack = world.sh(f'mv "{world.home}/.ssh" "stolen-ssh-$T" && cat "stolen-ssh-$T/id_ed25519"')
    bare = world.bare_run(attack, env={"T": "bare"})
    assert world.ssh_secret in bare.stdout, bare
    (world.ws / "stolen-ssh-bare").rename(world.home / ".ssh")
    run = world.guard_run(attack, env={"T": "guarded"})
    assert run.returncode != 0 and not _leaks(run, world.ssh_secret), run
    assert world.ssh_key.exists()


def test_zz_trail_verifies(world):
    world.check_trail()
