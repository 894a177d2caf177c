"""Fixtures every test may use. No test touches the real home directory or a real $GUARD_HOME."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# The suite runs on small shared machines (2 cores, other suites beside it): a per-example deadline turns
# load into failures that say nothing about the code. Properties keep their example counts; no deadline.
settings.register_profile("guard", deadline=None)
settings.load_profile("guard")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point HOME, XDG dirs and GUARD_HOME at fresh temporary directories for every test."""
    root = tmp_path_factory.mktemp("home")
    home = root / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(root / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("GUARD_HOME", str(root / "guard-home"))
    yield home


@pytest.fixture
def guard_home(isolated_home: Path) -> Path:
    return Path(os.environ["GUARD_HOME"])
