"""The compiled core is an optional extension: this notices when a build that could have made it did not."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

from guard.sandbox import fastpath


def test_the_core_is_built_wherever_it_can_be() -> None:
    """pip skips an optional extension that fails to build; where a compiler and this Python's headers
    exist, a missing core is a broken build, not a choice (guard would silently run 2-3x slower)."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("gcc") or shutil.which("cc")) or not headers.exists():
        pytest.skip("no C compiler or Python headers here: the core cannot be built")
    loaded, why = fastpath.load_core()
    assert loaded is not None or "GUARD_FAST_PATH" in why, why
