"""Commands spelled so their argv words do not start with what the rules name (issue 13, class 7).

`run` rules used to match argv words, so a force-push or a publish spelled the way git also reads it went
through: global options before the subcommand (`git -C . push --force`), another argv[0] for the same
binary (`exec -a gitx git push`, or execv with any name), git's helper path (`/usr/lib/git-core/git-push`)
and an alias given on the command line (`git -c alias.p=push p`). Each attack pushes a fresh branch to a
real bare repository the test creates inside the workspace (so file rules allow its writes and only the
command rules can stop it): bare, the branch lands; under guard (coding-agent with ask_timeout 1, so the
publish ask expires unanswered), it does not, and the trail holds the refusal of that exec.

Codex runs every command as `bash -lc` of a ~3,100-word shell snapshot, which used to be refused whole as
"too long": honest work through it must run, and the same snapshot ending in a force-push (written out, or
through a function the snapshot defines) must be refused at bash's exec.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

GIT_PUSH_HELPER = Path("/usr/lib/git-core/git-push")


@pytest.fixture(scope="module")
def remote(world):
    """A work repository with one commit and a bare repository to push it to, both in the workspace."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo, bare = world.ws / "repo", world.ws / "remote.git"
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=world.env)
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True, env=world.env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "work"], check=True,
                   env=world.env)
    return repo, bare


def _landed(world, bare: Path, branch: str) -> bool:
    proc = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
                          env=world.env, capture_output=True, text=True)
    return proc.returncode == 0


def _attack(kind: str, bare: Path, branch: str) -> list[str]:
    refspec = f"HEAD:refs/heads/{branch}"
    if kind == "global-option":  # a deny (force-push), spelled with -C before the subcommand
        return ["git", "-C", ".", "push", "--force", str(bare), refspec]
    if kind == "exec-a":  # the shell builtin: argv[0] is gitx, the file executed is git
        return ["bash", "-c", f"exec -a gitx git push {bare} {refspec}"]
    if kind == "execv-any-name":  # no shell to read: only the exec itself tells what runs
        code = (f"import os, shutil; os.execv(shutil.which('git'), ['gitx', 'push', {str(bare)!r}, "
                f"{refspec!r}])")
        return ["python3", "-I", "-c", code]
    if kind == "helper-path":
        return [str(GIT_PUSH_HELPER), str(bare), refspec]
    if kind == "inline-alias":
        return ["git", "-c", "alias.p=push", "p", str(bare), refspec]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["global-option", "exec-a", "execv-any-name", "helper-path", "inline-alias"])
def test_a_push_spelled_another_way_is_judged_as_a_push(world, remote, kind):
    repo, bare = remote
    if kind == "helper-path" and not GIT_PUSH_HELPER.exists():
        pytest.skip(f"{GIT_PUSH_HELPER} is not installed here (git's helper path differs)")
    if kind == "exec-a" and shutil.which("bash") is None:
        pytest.skip("bash is not installed")

    bare_branch = f"bare-{kind}"
    bare_run = world.bare_run(_attack(kind, bare, bare_branch), cwd=repo)
    assert _landed(world, bare, bare_branch), f"the attack does not work even bare: {bare_run!r}"

    branch = f"guarded-{kind}"
    run = world.guard_run(_attack(kind, bare, branch), policy=world.fast_ask, cwd=repo,
                          extra_args=["--workspace", str(world.ws)])
    assert run.returncode != 0, run
    assert not _landed(world, bare, branch), f"the push reached the remote under guard: {run!r}"
    decisions = world.decisions(run.session)
    refused = [(t, v) for o, t, v in decisions if o == "run" and v in ("deny", "ask") and str(bare) in t]
    assert refused, f"no refused run of the push in the trail: {decisions}"
    if kind == "global-option":
        assert refused[0][0].startswith("git -C . push --force") and refused[0][1] == "deny", refused


def _snapshot(command: str) -> list[str]:
    """Codex's way to run a command: `bash -lc` of its ~3,100-word shell snapshot, then the command."""
    from unit.policy.snapshot import codex_snapshot  # tests/ is on the path (pyproject pythonpath)

    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    return ["bash", "-lc", codex_snapshot(command)]


def test_a_codex_shell_snapshot_runs_honest_work(world, remote):
    repo, _ = remote
    run = world.guard_run(_snapshot("python3 -c 'print(\"honest-snapshot\")'"), policy=world.fast_ask, cwd=repo,
                          extra_args=["--workspace", str(world.ws)])
    assert run.returncode == 0 and "honest-snapshot" in run.stdout, run


@pytest.mark.parametrize("command", ["git push --force {bare} HEAD:refs/heads/{branch}",
                                     "gpf_1 {bare} HEAD:refs/heads/{branch}"])
def test_a_codex_shell_snapshot_ending_in_a_force_push_is_refused(world, remote, command):
    repo, bare = remote
    tag = "alias" if command.startswith("gpf") else "plain"
    bare_run = world.bare_run(_snapshot(command.format(bare=bare, branch=f"bare-snap-{tag}")), cwd=repo)
    assert _landed(world, bare, f"bare-snap-{tag}"), f"the attack does not work even bare: {bare_run!r}"
    branch = f"guarded-snap-{tag}"
    run = world.guard_run(_snapshot(command.format(bare=bare, branch=branch)), policy=world.fast_ask, cwd=repo,
                          extra_args=["--workspace", str(world.ws)])
    assert run.returncode != 0 and not _landed(world, bare, branch), run
    refused = [(t, v) for o, t, v in world.decisions(run.session) if o == "run" and v == "deny"
               and t.startswith("bash -lc")]
    assert refused, f"the snapshot's exec is not refused in the trail: {world.decisions(run.session)}"


def test_honest_git_work_still_runs(world, remote):
    repo, _ = remote
    run = world.guard_run(["sh", "-c", "git -C . status --short && git -c user.name=x commit -q --allow-empty "
                                       "-m honest && git log --oneline -1"],
                          policy=world.fast_ask, cwd=repo, extra_args=["--workspace", str(world.ws)])
    assert run.returncode == 0 and "honest" in run.stdout, run


def test_the_trail_verifies(world, remote):
    world.check_trail()
