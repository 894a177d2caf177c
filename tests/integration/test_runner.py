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
