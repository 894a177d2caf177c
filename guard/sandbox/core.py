"""The compiled core (guard/_core.c), loaded in one place: the seccomp fast path, the spool's writer and
the launch's walks all come from it, and `GUARD_FAST_PATH=0` switches all of them off at once (every
answer and every walk is then Python's, the same by the differential tests)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def load_core() -> tuple[Any | None, str]:
    """The compiled module, or None and why not (Python then does everything)."""
    if os.environ.get("GUARD_FAST_PATH", "1") == "0":
        return None, "switched off by GUARD_FAST_PATH=0"
    try:
        from guard import _core  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"the compiled core is not built ({exc}); reinstall with a C compiler and Python headers"
    return _core, "compiled"


def compiled(name: str) -> Callable[..., Any] | None:
    """One function of the compiled core, or None when the core is off, not built, or older than it."""
    core, _why = load_core()
    found: Callable[..., Any] | None = getattr(core, name, None) if core is not None else None
    return found
