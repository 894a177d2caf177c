"""`guard demo` is the README's first command: it must contain every attack and verify its own trail."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_demo_blocks_every_attack_and_verifies_the_trail(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "guard", "demo"], env=env, capture_output=True, text=True,
                          timeout=180, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    if "user namespaces" in out and proc.returncode == 125:
        pytest.skip(f"this host cannot build the sandbox: {out[-400:]}")
    assert proc.returncode == 0, out
    assert "ESCAPED" not in out
    assert "FAILED" not in out
    for step in ("read the SSH key", "append to ~/.profile", "install a git hook", "plant a secret file",
                 "escalate with sudo", "kill the guard", "send data to https://evil.example"):
        line = next(line for line in out.splitlines() if step in line)
        assert line.rstrip().endswith("BLOCKED"), line
    assert "VALID:" in out
    # the scratch world is removed afterwards: nothing of it is left in TMPDIR
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("guard-demo-")]
