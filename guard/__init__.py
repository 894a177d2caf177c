"""guard: least-privilege sandbox, permission guard and signed audit trail for AI agents."""

from __future__ import annotations

import os
import sys

from guard import dataclass_code as _dataclass_code

_dataclass_code.install()  # before any module of guard defines a dataclass

_DIST = "guard"


def _find_version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written).

    Read from the first `guard-*.dist-info/METADATA` on sys.path, as importlib.metadata would find it,
    without importing importlib.metadata: that import (email, zipfile, csv...) cost a quarter of
    `guard run`'s start-up, and every `guard run` says its version to the daemon. Falls back to
    importlib.metadata for any layout this lookup does not know (eggs, zips).
    """
    prefix = _DIST + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not (name.startswith(prefix) and name.endswith(".dist-info")):
                continue
            try:
                with open(os.path.join(entry or ".", name, "METADATA"), encoding="utf-8") as fh:
                    for line in fh:
                        if line.startswith("Version:"):
                            return line.split(":", 1)[1].strip()
                        if not line.strip():
                            break  # the headers end at the first blank line
            except OSError:
                continue
    from importlib import metadata

    try:
        return metadata.version(_DIST)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _find_version()
