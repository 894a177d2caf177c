"""Compiled policies kept between launches: `guard run` need not read YAML and compile every rule each time.

Compiling the shipped policy cost ~16 ms of every launch, and importing the YAML reader another ~15 ms.
A compiled policy depends only on: its files' bytes and where each `extends` led, the workspace, HOME and
TMPDIR, the `${env:NAME}` variables its files name, where this guard's code and interpreter live, and
the code of the compiler itself. The cache key holds all of it but the files, and an entry lists its
files (each as visited, as resolved, and the SHA-256 of its bytes) and the values of the variables they
name: every one is checked again at each use, and any difference, or any entry that cannot be read as
written, is a miss that compiles from the files as before. So a cached policy is always the policy the
files say now; the cache can make a launch faster, never different.

Entries live in the guard's own state directory (0700, hidden from every sandbox), are written
atomically with mode 0600, and are read only when owned by this user and writable by nobody else: they
are pickles, which must never come from anyone but us. At most MAX_ENTRIES are kept (oldest removed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from guard.errors import GuardError
from guard.home import ensure_private_dir

if TYPE_CHECKING:
    from guard.policy.engine import Policy

FORMAT = 1
MAX_ENTRIES = 64
_ENV_REFERENCE = re.compile(rb"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_COMPILER_FILES = ("model.py", "errors.py", "text.py")  # besides every module of guard/policy


def load_policy_cached(ref: str, *, workspace: Path, env: Mapping[str, str], home: Path) -> Policy:
    """`guard.policy.load_policy(ref, workspace=, env=)`, from the cache under `home` (the guard's state
    directory) when an entry still matches everything the policy was compiled from."""
    key = _key(ref, workspace, env)
    entry_path = home / "cache" / f"policy-{key}.pickle"
    policy = _read(entry_path, env)
    if policy is not None:
        return policy
    from guard.policy.diagnostics import PolicyLoadError
    from guard.policy.loader import compile_policy

    compiled = compile_policy(ref, workspace=workspace, env=env)
    if compiled.policy is None:
        raise PolicyLoadError(compiled.errors)
    with contextlib.suppress(OSError, GuardError, pickle.PicklingError):  # unwritable: no cache, same policy
        _write(entry_path, compiled.policy, [Path(os.path.abspath(f.path)) for f in compiled.files], env)
    return compiled.policy


def _key(ref: str, workspace: Path, env: Mapping[str, str]) -> str:
    """Everything but the files a compiled policy depends on, as a digest."""
    from guard.policy.refs import is_policy_name

    package = Path(__file__).resolve().parent
    compiler = [str(p) for p in sorted((package / "policy").glob("*.py"))]
    compiler += [str(package / name) for name in _COMPILER_FILES]
    stamps = []
    for name in compiler:
        try:
            st = os.stat(name)
            stamps.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((name, -1, -1))
    material = {
        "format": FORMAT, "python": sys.version, "compiler": stamps,
        "ref": ref if is_policy_name(ref) else os.path.abspath(ref),
        "workspace": os.path.abspath(workspace), "HOME": env.get("HOME"), "TMPDIR": env.get("TMPDIR"),
        "runtime": [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, str(package))],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def _sources(visited: list[Path]) -> list[tuple[str, str, str]] | None:
    """(as visited, as resolved, SHA-256 of the bytes) of each file; None when one cannot be read."""
    out = []
    for path in visited:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        out.append((str(path), str(path.resolve()), hashlib.sha256(data).hexdigest()))
    return out


def _named_variables(visited: list[Path], env: Mapping[str, str]) -> dict[str, str | None] | None:
    names: set[str] = set()
    for path in visited:
        try:
            names.update(n.decode() for n in _ENV_REFERENCE.findall(path.read_bytes()))
        except OSError:
            return None
    return {name: env.get(name) for name in sorted(names)}


def _read(entry_path: Path, env: Mapping[str, str]) -> Policy | None:
    try:
        fd = os.open(entry_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) \
                or not stat.S_ISREG(st.st_mode):
            return None  # not written by us: never unpickled
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            entry = pickle.load(fh)  # noqa: S301 - our own file, checked above
    except Exception:
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None
    visited = [Path(v) for v, _, _ in entry.get("sources", ())]
    if not visited or _sources(visited) != entry["sources"]:
        return None  # a file changed, moved, or an `extends` now leads elsewhere
    if _named_variables(visited, env) != entry.get("variables"):
        return None
    policy: Policy = entry["policy"]
    return policy


def _write(entry_path: Path, policy: Policy, visited: list[Path], env: Mapping[str, str]) -> None:
    sources = _sources(visited)
    variables = _named_variables(visited, env)
    if sources is None or variables is None:
        return
    directory = entry_path.parent
    ensure_private_dir(directory)
    data = pickle.dumps({"format": FORMAT, "sources": sources, "variables": variables, "policy": policy},
                        protocol=pickle.HIGHEST_PROTOCOL)
    import tempfile  # here: a launch that reads the cache does not pay for it (nor for `random`)

    fd, tmp = tempfile.mkstemp(prefix=".policy-", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, entry_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _prune(directory)


def _prune(directory: Path) -> None:
    entries = []
    for child in directory.glob("policy-*.pickle"):
        with contextlib.suppress(OSError):
            entries.append((child.stat().st_mtime_ns, child))
    for _, child in sorted(entries)[:-MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            child.unlink()

