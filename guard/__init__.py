"""guard: least-privilege sandbox, permission guard and signed audit trail for AI agents."""

from importlib import metadata as _metadata

try:  # the installed distribution's version (pyproject.toml is the one place it is written)
    __version__ = _metadata.version("guard")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
