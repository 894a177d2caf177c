"""guard.home: where state lives, and the private socket both the daemon and the proxy listen on."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from guard.home import bind_private_socket, guard_home


def test_private_socket_is_0600_listening_and_leaves_the_umask_alone(tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        listener = bind_private_socket(tmp_path / "s.sock", 4)
        try:
            assert stat.S_IMODE((tmp_path / "s.sock").lstat().st_mode) == 0o600
            assert os.umask(0o022) == 0o022  # restored after the bind
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(tmp_path / "s.sock"))
            client.close()
            assert not listener.getblocking()
        finally:
            listener.close()
    finally:
        os.umask(before)


def test_a_failed_bind_restores_the_umask(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    before = os.umask(0o022)
    try:
        with pytest.raises(OSError):
            bind_private_socket(tmp_path / "taken", 4)
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


def test_guard_home_resolution_order() -> None:
    assert guard_home({"GUARD_HOME": "/g", "XDG_STATE_HOME": "/x", "HOME": "/h"}) == Path("/g")
    assert guard_home({"XDG_STATE_HOME": "/x", "HOME": "/h"}) == Path("/x/guard")
    assert guard_home({"HOME": "/h"}) == Path("/h/.local/state/guard")
