"""Fixtures for the integration tests that drive `guard run` against a daemon of their own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import running_daemon


@pytest.fixture
def guard_daemon(guard_home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A warm `guard daemon run` on the test's own GUARD_HOME, stopped (then killed) by pid in teardown."""
    with running_daemon(guard_home) as proc:
        yield proc
