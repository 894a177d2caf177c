"""guard run refuses set-ups that would make the sandbox meaningless, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def guard_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "guard", "run", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("where", ["home", "root", "above-home"])
def test_a_workspace_containing_the_home_directory_is_refused(isolated_home: Path, where: str) -> None:
    cwd = {"home": isolated_home, "root": Path("/"), "above-home": isolated_home.parent}[where]
    marker = isolated_home / "ran"
    res = guard_run(cwd, "--", "/bin/sh", "-c", f"touch {marker}")
    assert res.returncode == 125, res.stderr
    assert "refusing workspace" in res.stderr and "home directory" in res.stderr
    assert not marker.exists()
    # refused before any daemon was started
    assert not (Path(os.environ["GUARD_HOME"]) / "daemon.sock").exists()


def test_a_project_inside_the_home_directory_is_accepted(isolated_home: Path) -> None:
    project = isolated_home / "src" / "project"
    project.mkdir(parents=True)
    res = guard_run(project, "--json-summary", "--", "/bin/sh", "-c", "echo ok > out.txt")
    try:
        assert res.returncode == 0, res.stderr
        assert (project / "out.txt").read_text() == "ok\n"
    finally:
        subprocess.run([sys.executable, "-m", "guard", "daemon", "stop"], capture_output=True, timeout=30)


def test_a_finished_session_is_sealed_at_once(isolated_home: Path) -> None:
    """An auditor running verify right after a session must not see its records as unsealed."""
    project = isolated_home / "project"
    project.mkdir()
    env = dict(os.environ)
    try:
        res = guard_run(project, "--", "/bin/sh", "-c", "echo hi > a.txt; cat /etc/hostname >/dev/null")
        assert res.returncode == 0, res.stderr
        verify = subprocess.run([sys.executable, "-m", "guard", "audit", "verify", "--json"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        subprocess.run([sys.executable, "-m", "guard", "daemon", "stop"], capture_output=True, timeout=30)


# A daemon that cannot record (killed, stopped, restarted) is covered, with actions counted against the
# trail, by tests/integration/test_faults.py.


def test_agent_socket_variables_are_withheld(isolated_home: Path) -> None:
    project = isolated_home / "project"
    project.mkdir()
    env = {**os.environ, "SSH_AUTH_SOCK": "/tmp/ssh-XXXX/agent.1", "DOCKER_HOST": "unix:///run/docker.sock",
           "GPG_AGENT_INFO": "/run/user/1/gnupg/S.gpg-agent", "KEEP_ME": "yes"}
    try:
        res = subprocess.run([sys.executable, "-m", "guard", "run", "--", "/usr/bin/env"], cwd=project, env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        names = {line.partition("=")[0] for line in res.stdout.splitlines()}
        assert "KEEP_ME" in names and "HTTPS_PROXY" in names and "GUARD_SANDBOX" in names
        assert not names & {"SSH_AUTH_SOCK", "DOCKER_HOST", "GPG_AGENT_INFO", "GUARD_HOME"}
    finally:
        subprocess.run([sys.executable, "-m", "guard", "daemon", "stop"], capture_output=True, timeout=30)


def test_new_repositories_are_the_agents_and_existing_ones_stay_protected(isolated_home: Path,
                                                                          tmp_path: Path) -> None:
    """git init / clone / commit must work (honest work); a hook file is refused even in a new repository;
    the config of a repository that existed at launch is not changed without a human."""
    (isolated_home / ".gitconfig").write_text("[user]\n\tname = T\n\temail = t@t.invalid\n")
    project = isolated_home / "project"
    (project / "existing").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=project / "existing", check=True)
    before = (project / "existing" / ".git" / "config").read_text()
    policy = tmp_path / "fast-ask.yaml"
    policy.write_text("version: 1\nname: fast-ask\nextends: [coding-agent]\nsettings: {ask_timeout: 1}\n")
    script = (
        "git init -q new && cd new && echo hi > a && git add a && git commit -qm one && git config user.name X"
        " && echo init-ok; cd .. && git clone -q new clone && echo clone-ok;"
        " (printf '#!/bin/sh\\n' > new/.git/hooks/pre-commit) 2>/dev/null || echo hook-refused;"
        " (mv new/.git/hooks/pre-push.sample new/.git/hooks/pre-push) 2>/dev/null || echo rename-refused;"
        " cd existing && (git config core.fsmonitor evil 2>/dev/null || echo existing-refused)")
    try:
        res = guard_run(project, "-p", str(policy), "--", "/bin/sh", "-c", script)
        assert res.returncode == 0, res.stderr
        for word in ("init-ok", "clone-ok", "hook-refused", "rename-refused", "existing-refused"):
            assert word in res.stdout, (word, res.stdout, res.stderr)
        assert (project / "new" / ".git" / "hooks").is_dir()
        assert not (project / "new" / ".git" / "hooks" / "pre-commit").exists()
        assert (project / "existing" / ".git" / "config").read_text() == before
    finally:
        subprocess.run([sys.executable, "-m", "guard", "daemon", "stop"], capture_output=True, timeout=30)
