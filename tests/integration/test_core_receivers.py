"""The compiled core's own receiver threads (guard/_core.c): they wait in SECCOMP_IOCTL_NOTIF_RECV, queue
for Python what the fast path may not answer, and stop on request even while a task still lives (RECV
cannot time out: stop() interrupts them with a signal sent only while they wait there)."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard.sandbox import seccomp
from guard.sandbox import syscalls_seccomp as sc

core_mod = pytest.importorskip("guard._core", reason="the compiled core is not built (no C compiler or Python headers)")


class Child:
    """A forked task under a notifying filter: it write-opens each name it reads from `orders`, reports
    the errno (0: opened) on `results`, and exits when `orders` closes."""

    def __init__(self, directory: Path) -> None:
        self.spec = seccomp.SeccompSpec()
        parent_sock, child_sock = socket.socketpair()
        orders_r, self.orders = os.pipe()
        self.results, results_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            try:
                os.close(self.orders)
                os.close(self.results)
                sc.set_no_new_privs()
                fd = seccomp.install(self.spec)
                socket.send_fds(child_sock, [b"L"], [fd] if fd is not None else [])
                with os.fdopen(orders_r, "rb", buffering=0) as orders:
                    while name := orders.read(1):
                        try:
                            os.close(os.open(directory / f"f{name.decode()}", os.O_WRONLY | os.O_CREAT, 0o644))
                            code = 0
                        except OSError as exc:
                            code = exc.errno or 255
                        os.write(results_w, bytes([code]))
            finally:
                os._exit(0)
        os.close(orders_r)
        os.close(results_w)
        child_sock.close()
        _, fds, _, _ = socket.recv_fds(parent_sock, 1, 1)
        parent_sock.close()
        assert fds, "the child could not install its filter"
        self.listener = fds[0]

    def order(self, name: str) -> None:
        os.write(self.orders, name.encode())

    def result(self) -> int:
        return os.read(self.results, 1)[0]

    def end(self) -> None:
        os.close(self.orders)
        os.waitpid(self.pid, 0)
        os.close(self.results)
        os.close(self.listener)


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Child]:
    c = Child(tmp_path)
    try:
        yield c
    finally:
        c.end()


def new_core(c: Child) -> object:
    table = c.spec.table
    privileged = sc.effective_caps(sc.thread_caps()) != 0
    return core_mod.Core(c.listener, table.audit_arch, dict(table.numbers), False, privileged)


def next_notification(core: object) -> sc.Notif:
    for _ in range(600):  # bounded: 600 waits of 100 ms
        raw = core.next(100)  # type: ignore[attr-defined]
        assert raw is not False, "the receivers ended while the task still lives"
        if raw is not None:
            return sc.notif_from_bytes(raw)
    raise AssertionError("no notification reached Python within a minute")


def test_what_the_fast_path_may_not_answer_is_queued_for_python_in_order(child: Child) -> None:
    core = new_core(child)  # an empty table: every write-open goes to Python
    try:
        for name, answer in (("a", errno.EPERM), ("b", errno.EROFS), ("c", errno.EPERM)):
            child.order(name)
            n = next_notification(core)
            assert n.pid == child.pid
            sc.notif_send(child.listener, n.id, error=answer)
            assert child.result() == answer
    finally:
        core.stop()  # type: ignore[attr-defined]


def test_stop_ends_the_receivers_while_the_task_still_lives(child: Child) -> None:
    core = new_core(child)
    assert core.next(0) is None  # type: ignore[attr-defined]  # starts the receivers: nothing pending yet
    stopper = threading.Thread(target=core.stop)  # type: ignore[attr-defined]
    stopper.start()
    stopper.join(timeout=60)
    assert not stopper.is_alive(), "stop() did not return while the receivers waited in RECV"
    assert core.next(10) is False  # type: ignore[attr-defined]
    core.stop()  # type: ignore[attr-defined]  # idempotent
    # the task is untouched and its next notification waits for a supervisor (none now): refused when the
    # listener closes, as for any supervisor that went away
    assert os.waitpid(child.pid, os.WNOHANG) == (0, 0)


def test_the_receivers_see_the_hang_up_when_every_task_is_gone(tmp_path: Path) -> None:
    c = Child(tmp_path)
    core = new_core(c)
    assert core.next(0) is None  # type: ignore[attr-defined]
    os.close(c.orders)
    os.waitpid(c.pid, 0)
    for _ in range(600):
        got = core.next(100)  # type: ignore[attr-defined]
        if got is False:
            break
        assert got is None
    else:
        raise AssertionError("the receivers never saw the listener hang up")
    core.stop()  # type: ignore[attr-defined]
    os.close(c.results)
    os.close(c.listener)
