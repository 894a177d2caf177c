"""The code of the methods `@dataclass` writes, kept between runs as Python keeps its own bytecode.

Why: before 3.13, every `@dataclass` compiles its `__init__`, `__repr__`, `__eq__`, `__hash__`,
`__setattr__`... from source text when its module is imported, one `exec` each: 324 functions for the
58 classes `guard run` imports, about 37 ms of its ~120 ms of imports on two shared cores, paid at every
launch. The text of a class's methods is the same at every run, and compiling one text gives the same
code object every time on one interpreter. So the code objects are kept in a marshal file beside guard's
own `.pyc` files (the directory importlib writes them to, `PYTHONPYCACHEPREFIX` included), under the
interpreter's bytecode magic number, and looked up by their text; a text not in it is compiled as before.

Nothing else changes: `dataclasses` still runs its own code with its own namespaces; only the step that
turns a text into code is served from the file when it can be. The file is trusted exactly as much as
the `.pyc` files in the same directory (Python runs those without asking), and is read only when it is
owned by this user or root and writable by no one else. `PYTHONDONTWRITEBYTECODE` is honoured.
"""

from __future__ import annotations

import atexit
import dataclasses
import marshal
import os
import stat
import sys
from importlib.util import MAGIC_NUMBER, cache_from_source
from types import CodeType
from typing import Any

_HEADER = b"guard-dataclass-code\n" + MAGIC_NUMBER
_MAX_ENTRIES = 4096  # more than every text guard has; an older tree's texts are dropped past it

_known: dict[str, CodeType] = {}
_used: set[str] = set()
_new = 0
_builtin_exec = exec


def cache_path() -> str | None:
    """Where the code is kept: beside guard's own bytecode; None when there is no such place."""
    try:
        return os.path.join(os.path.dirname(cache_from_source(__file__)),
                            f"dataclass-code.{sys.implementation.cache_tag}.marshal")
    except (NotImplementedError, ValueError):  # no cache tag: bytecode is not cached either
        return None


def _exec(source: Any, globals_: Any = None, locals_: Any = None, /, **kwargs: Any) -> None:
    """`exec` as dataclasses calls it, with the compile step served from the kept code."""
    global _new
    if isinstance(source, str):
        code = _known.get(source)
        if code is None:
            # dataclasses' own module has no __future__ import: neither does the code it compiles
            code = compile(source, "<string>", "exec", dont_inherit=True)
            _known[source] = code
            _new += 1
        _used.add(source)
        source = code
    _builtin_exec(source, globals_, locals_, **kwargs)


def install() -> None:
    """Serve dataclasses' compiles from the kept code (read once, here). Idempotent."""
    if getattr(dataclasses, "exec", None) is _exec:
        return
    path = cache_path()
    if path is not None:
        _known.update(_load(path))
    dataclasses.exec = _exec  # type: ignore[attr-defined]  # the module's global shadows the builtin
    atexit.register(save)  # guard run leaves by os._exit: it saves when its imports are done


def save() -> None:
    """Keep the code compiled in this process that the file does not have yet (atomically, 0644)."""
    global _new
    path = cache_path()
    if not _new or path is None or sys.flags.dont_write_bytecode:
        return
    import tempfile  # only when there is something to keep: its imports cost a launch ~3 ms

    entries = _known if len(_known) <= _MAX_ENTRIES else {t: _known[t] for t in _used}
    try:
        data = _HEADER + marshal.dumps(dict(entries))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".dataclass-code.", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, ValueError):  # a read-only install: compiled at each run, as before
        return
    _new = 0


def _load(path: str) -> dict[str, CodeType]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid())
                or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            return {}
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read()
    except OSError:
        return {}
    finally:
        os.close(fd)
    if not data.startswith(_HEADER):
        return {}
    try:
        table = marshal.loads(data[len(_HEADER):])  # noqa: S302 - trusted as the .pyc files beside it
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if isinstance(k, str) and isinstance(v, CodeType)}
