"""Where guard keeps its state: `$GUARD_HOME`, its key, log and socket paths.

`GUARD_HOME` defaults to `$XDG_STATE_HOME/guard`, else `~/.local/state/guard`. Every directory guard
creates here is 0700 and every secret file 0600; a sandbox never sees any of it.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

from guard.errors import GuardError


def guard_home(env: Mapping[str, str] | None = None) -> Path:
    """Resolve `$GUARD_HOME` without touching the disk."""
    env = os.environ if env is None else env
    if env.get("GUARD_HOME"):
        return Path(env["GUARD_HOME"]).expanduser().absolute()
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]).expanduser().absolute() / "guard"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home).absolute() / ".local" / "state" / "guard"


def log_dir(home: Path) -> Path:
    return home / "log"


def keys_dir(home: Path) -> Path:
    return home / "keys"


def socket_path(home: Path) -> Path:
    return home / "daemon.sock"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) as 0700 and refuse one that others can enter or that we do not own."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise GuardError(f"{path} is not a directory", hint="remove it or point GUARD_HOME elsewhere")
    if st.st_uid != os.geteuid():
        raise GuardError(f"{path} is owned by uid {st.st_uid}, not by us ({os.geteuid()})",
                         hint="point GUARD_HOME at a directory you own")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def bind_private_socket(path: Path, backlog: int) -> socket.socket:
    """A listening, non-blocking unix socket at `path`, 0600 from birth: created under a 0177 umask, so
    there is no moment in which another user could connect before the chmod."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    except BaseException:
        listener.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    listener.listen(backlog)
    listener.setblocking(False)
    return listener
