"""The supervisor reads a task's path and argv from its memory: with the compiled core in one
process_vm_readv (guard._core.read_task), without it by pread of /proc/<pid>/mem, page by page. Both
must give the same bytes, stop at the same page and fail the same way, on a real task whose memory is
laid out to end where a decision could be fooled: strings that cross a page, that run into an unmapped
page, argv arrays with a pointer to nowhere. Where the two mechanisms differ (a page the task itself cannot
read), the core answers as the kernel's own copy from the task does: EFAULT."""

from __future__ import annotations

import ast
import ctypes
import errno
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from guard.sandbox import supervisor as sv

PAGE = mmap.PAGESIZE
PROT_NONE = 0  # not in the mmap module
CORE_READER = sv._read_task

pytestmark = pytest.mark.skipif(CORE_READER is None, reason="the compiled core is not built")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.open.argtypes = [ctypes.c_void_p, ctypes.c_int]


def _map(pages: int) -> int:
    base = _libc.mmap(None, pages * PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert base and base != ctypes.c_void_p(-1).value
    return int(base)


def _layout() -> dict[str, int]:
    """In the child: four pages, the third unmapped and the fourth PROT_NONE; strings and argv arrays
    placed against the holes. -> the addresses the parent reads at."""
    base = _map(4)

    def put(addr: int, data: bytes) -> int:
        ctypes.memmove(addr, data, len(data))
        return addr

    at: dict[str, int] = {"base": base}
    at["short"] = put(base + 100, b"/w/short.txt\0")
    at["across"] = put(base + PAGE - 5, b"/w/across-the-page\0")  # its NUL on the second page
    at["long"] = put(base + 2 * PAGE - 40, b"x" * 33)  # no NUL before the hole ...
    at["to_hole"] = put(base + 2 * PAGE - 7, b"/w/no-n")  # ... and this one runs into it too
    at["argv"] = put(base + 300, struct.pack("<3Q", at["short"], at["across"], 0))
    at["argv_bad"] = put(base + 400, struct.pack("<3Q", at["short"], base + 2 * PAGE + 8, 0))
    at["argv_hole"] = put(base + 2 * PAGE - 48, struct.pack("<Q", at["short"]))
    put(base + 2 * PAGE - 40, b"x" * 33)  # argv_hole's next pointers are "xxxx...", then the hole
    at["none_page"] = put(base + 3 * PAGE, b"/w/protected\0")
    at["argv_long"] = put(base + 1000, struct.pack("<101Q", *([at["short"]] * 100), 0))
    cut = _map(2)  # a slot the end of the mapping cuts in two
    at["argv_split"] = put(cut + PAGE - 12, struct.pack("<Q", at["short"]) + b"\0\0\0\0")
    assert _libc.munmap(cut + PAGE, PAGE) == 0
    many = _map(3)  # more pointers than ARGV_MAX_ARGS, then another: truncated
    at["argv_many"] = put(many, struct.pack(f"<{sv.ARGV_MAX_ARGS + 2}Q", *([at["short"]] * (sv.ARGV_MAX_ARGS + 1)), 0))
    exact = _map(3)  # exactly ARGV_MAX_ARGS, then the end: not truncated
    at["argv_exact"] = put(exact, struct.pack(f"<{sv.ARGV_MAX_ARGS + 1}Q", *([at["short"]] * sv.ARGV_MAX_ARGS), 0))
    at["argv_to_hole"] = put(base + 200, struct.pack("<2Q", at["to_hole"], 0))  # a word running into the hole
    big = _map(40)  # strings past ARGV_MAX_BYTES: truncated by the budget
    put(big, b"y" * (70 * 1024) + b"\0")
    at["argv_budget"] = put(big + 70 * 1024 + 8, struct.pack("<4Q", big, big, big, 0))
    assert _libc.munmap(base + 2 * PAGE, PAGE) == 0
    assert _libc.mprotect(base + 3 * PAGE, PAGE, PROT_NONE) == 0
    return at


@pytest.fixture
def task() -> Iterator[tuple[int, dict[str, int]]]:
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task: lay out its memory, say where, wait to be told to go
        try:
            os.close(r)
            os.close(go_w)
            os.write(w, repr(_layout()).encode())
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(w)
    os.close(go_r)
    try:
        at = ast.literal_eval(os.read(r, 65536).decode())
        yield pid, at
    finally:
        os.close(go_w)
        os.close(r)
        os.waitpid(pid, 0)


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except sv._Reply as reply:
        return ("reply", reply.err)
    except sv._Gone:
        return ("gone", None)


def _both(monkeypatch: pytest.MonkeyPatch, pid: int, call: Callable[[Any], Any]) -> tuple[Any, Any]:
    """(with the core's reader, with /proc/<pid>/mem)"""
    out = []
    for reader in (CORE_READER, None):
        monkeypatch.setattr(sv, "_read_task", reader)
        with ExitStack() as stack:
            out.append(_outcome(lambda: call(sv._Task(pid, stack))))
    return out[0], out[1]


CASES: dict[str, Callable[[Any, dict[str, int]], Any]] = {
    "read within a page": lambda t, at: t.read(at["short"], 12),
    "read across a page": lambda t, at: t.read(at["across"], 40),
    "read up to the hole": lambda t, at: t.read(at["to_hole"], 100),
    "read from the hole": lambda t, at: t.read(at["base"] + 2 * PAGE + 16, 8),
    "read at address 0": lambda t, at: t.read(0, 8),
    "path": lambda t, at: t.read_path(at["short"]),
    "path across a page": lambda t, at: t.read_path(at["across"]),
    "path into the hole": lambda t, at: t.read_path(at["to_hole"]),
    "path with no NUL before the hole": lambda t, at: t.read_path(at["long"]),
    "string cut at its limit": lambda t, at: t.read_str(at["across"], 7),
    "string ending exactly at its limit": lambda t, at: t.read_str(at["short"], 12),
    "string with a limit past two pages": lambda t, at: t.read_str(at["base"] + 8, 3 * PAGE),
    "argv": lambda t, at: t.read_argv(at["argv"]),
    "argv with a pointer into the hole": lambda t, at: t.read_argv(at["argv_bad"]),
    "argv running into the hole": lambda t, at: t.read_argv(at["argv_hole"]),
    "argv of 100": lambda t, at: t.read_argv(at["argv_long"]),
    "argv whose slot the hole cuts": lambda t, at: t.read_argv(at["argv_split"]),
    "argv past its count": lambda t, at: t.read_argv(at["argv_many"]),
    "argv of exactly its count": lambda t, at: t.read_argv(at["argv_exact"]),
    "argv with a word running into the hole": lambda t, at: t.read_argv(at["argv_to_hole"]),
    "argv past its bytes": lambda t, at: t.read_argv(at["argv_budget"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_core_reads_what_proc_pid_mem_reads(monkeypatch, task, case):
    pid, at = task
    core, proc = _both(monkeypatch, pid, lambda t: CASES[case](t, at))
    assert core == proc, (case, core, proc)


def test_the_layout_is_the_one_the_cases_mean(task):
    """So that the comparison above compares something."""
    pid, at = task
    with ExitStack() as stack:
        t = sv._Task(pid, stack)
        assert t.read_path(at["across"]) == "/w/across-the-page"
        assert t.read(at["to_hole"], 100) == b"/w/no-n"
        assert _outcome(lambda: t.read_path(at["to_hole"])) == ("reply", errno.EFAULT)
        assert _outcome(lambda: t.read_path(at["long"])) == ("reply", errno.EFAULT)
        assert t.read_str(at["across"], 7) == (b"/w/acro", False)
        assert t.read_str(at["short"], 12) == (b"/w/short.txt", False)
        assert t.read_argv(at["argv"]) == (("/w/short.txt", "/w/across-the-page"), False)
        assert _outcome(lambda: t.read_argv(at["argv_bad"])) == ("reply", errno.EFAULT)
        assert _outcome(lambda: t.read_argv(at["argv_hole"])) == ("reply", errno.EFAULT)
        assert _outcome(lambda: t.read_argv(at["argv_split"])) == ("reply", errno.EFAULT)
        assert t.read_argv(at["argv_long"]) == (("/w/short.txt",) * 100, False)
        assert t.read_argv(at["argv_many"]) == (("/w/short.txt",) * sv.ARGV_MAX_ARGS, True)
        assert t.read_argv(at["argv_exact"]) == (("/w/short.txt",) * sv.ARGV_MAX_ARGS, False)
        assert _outcome(lambda: t.read_argv(at["argv_to_hole"])) == ("reply", errno.EFAULT)
        budget = t.read_argv(at["argv_budget"])
        assert budget[1] and len(budget[0]) == 2 and len(budget[0][1]) < 70 * 1024, [len(a) for a in budget[0]]


def test_a_page_the_task_cannot_read_is_efault_as_for_the_kernel(monkeypatch, task):
    """/proc/<pid>/mem reads a PROT_NONE page (it forces access); the task's own system call faults on
    it, and so does the core's read."""
    pid, at = task
    with ExitStack() as stack:
        assert _outcome(lambda: sv._Task(pid, stack).read_path(at["none_page"])) == ("reply", errno.EFAULT)
    monkeypatch.setattr(sv, "_read_task", None)
    with ExitStack() as stack:
        assert _outcome(lambda: sv._Task(pid, stack).read_path(at["none_page"])) == ("ok", "/w/protected")
    page = _map(1)  # the kernel's own copy from the task: a path in such a page is EFAULT to open(2)
    ctypes.memmove(page, b"/etc/hostname\0", 14)
    assert _libc.mprotect(page, PAGE, PROT_NONE) == 0
    assert _libc.open(page, os.O_RDONLY) == -1 and ctypes.get_errno() == errno.EFAULT
    _libc.munmap(page, PAGE)


def test_a_task_that_is_gone_is_gone_for_both(monkeypatch):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    core, proc = _both(monkeypatch, pid, lambda t: t.read_path(4096))
    assert core == proc == ("gone", None)


_UFFDIO_API = 0xC018AA3F  # _IOWR(0xAA, 0x3F, struct uffdio_api)
_UFFDIO_REGISTER = 0xC020AA00  # _IOWR(0xAA, 0x00, struct uffdio_register)
_NR_USERFAULTFD = 323  # x86_64


def _stalling_page(report: int, go: int) -> None:
    """In the child: a page whose first touch waits on a userfaultfd nobody serves; say where it is, say
    when a reader is stuck on it, then wait (at most 20 s) to be told to let go; say which happened."""
    import fcntl
    import select

    uffd = _libc.syscall(_NR_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK)
    if uffd < 0:
        os.write(report, b"none\n")
        return
    fcntl.ioctl(uffd, _UFFDIO_API, bytearray(struct.pack("<3Q", 0xAA, 0, 0)))
    page = _map(1)
    fcntl.ioctl(uffd, _UFFDIO_REGISTER, bytearray(struct.pack("<4Q", page, PAGE, 1, 0)))  # MODE_MISSING
    os.write(report, f"{page}\n".encode())
    stuck = select.select([uffd], [], [], 20)[0]
    os.write(report, b"stuck\n" if stuck else b"never\n")
    told = select.select([go], [], [], 20)[0]
    os.write(report, b"released\n" if told else b"timed-out\n")
    os.close(uffd)  # the reader's fault then completes (a zero page)


@pytest.mark.skipif(os.geteuid() != 0, reason="a userfaultfd that stalls kernel reads needs root "
                                                "(vm.unprivileged_userfaultfd)")
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the userfaultfd syscall number is x86_64's")
def test_a_read_that_stalls_on_the_tasks_page_does_not_stall_guard(monkeypatch):
    """A task can make a page of its own slow to read (a userfaultfd; a hung network mount does it too).
    The supervisor thread reading it waits; every other thread of guard run (the recorder, the watchdog
    that would kill the sandbox, the proxy) must go on meanwhile: the reader lets the interpreter's lock
    go. Here the main thread must answer the task while a worker is stuck in the read."""
    import threading

    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report_r)
            os.close(go_w)
            _stalling_page(report_w, go_r)
        finally:
            os._exit(0)
    os.close(report_w)
    os.close(go_r)
    lines = os.fdopen(report_r, "rb")
    try:
        first = lines.readline().strip()
        if first == b"none":
            pytest.skip("userfaultfd is not available here")
        page = int(first)
        got: list[object] = []

        def reader() -> None:
            with ExitStack() as stack:
                got.append(_outcome(lambda: sv._Task(pid, stack).read(page, 16)))

        worker = threading.Thread(target=reader, daemon=True)
        worker.start()
        assert lines.readline().strip() == b"stuck"  # the worker is inside the read, waiting on the page
        os.write(go_w, b"x")  # Python on another thread: impossible if the stuck read held the lock
        assert lines.readline().strip() == b"released"
        worker.join(timeout=30)
        assert not worker.is_alive() and got == [("ok", bytes(16))], got
    finally:
        os.close(go_w)
        lines.close()
        os.waitpid(pid, 0)
