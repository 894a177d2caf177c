"""A real, small tmpfs for write-error tests: the kernel itself answers ENOSPC when it is full."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """Mount a tmpfs of `size` on `where` (root only; skips with the reason otherwise), unmount after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill the disk needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path, leave: int) -> Path:
    """Take all but about `leave` bytes of the filesystem holding `where` with one file; -> that file."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    filler = where / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler
