"""The seccomp filter in a real kernel: each attack runs in a forked child, first bare (to show it would
work) and then under the filter. Results come back over a pipe; deaths are read from the wait status."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import termios
import tty
from collections.abc import Callable
from pathlib import Path

import pytest

from guard.errors import SandboxError
from guard.sandbox import seccomp
from guard.sandbox import syscalls_seccomp as sc

pytestmark = pytest.mark.skipif(sc.machine() != "x86_64", reason="attack code and numbers are x86_64")

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
QUIET = seccomp.SeccompSpec(notify=False)


def raw(nr: int, *args: int) -> int:
    """A raw syscall; returns the result or -errno."""
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if ret == -1 else int(ret)


def in_child(fn: Callable[[], object], *, spec: seccomp.SeccompSpec | None = QUIET,
             setup: Callable[[], None] | None = None) -> tuple[int, object]:
    """Run `fn` in a forked child, filtered by `spec` (None: bare). Returns (wait status, fn's result)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            if setup:
                setup()
            if spec is not None:
                sc.set_no_new_privs()
                fd = seccomp.install(spec)
                if fd is not None:
                    os.close(fd)
            out = json.dumps({"ok": fn()})
        except BaseException as exc:
            out = json.dumps({"error": repr(exc)})
            code = 3
        os.write(w, out.encode())
        os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    body = json.loads(b"".join(chunks)) if chunks else {}
    if "error" in body:
        raise AssertionError(f"child failed: {body['error']}")
    return status, body.get("ok")


def machine_code(code: bytes) -> Callable[[], int]:
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    fn = ctypes.CFUNCTYPE(ctypes.c_long)(addr)
    fn._keep = buf  # type: ignore[attr-defined]
    return fn


def x32_getpid() -> int:
    # mov eax, 0x40000000|39 ; syscall ; ret
    return int(machine_code(bytes.fromhex("b827000040") + b"\x0f\x05\xc3")())


def int80_getpid() -> int:
    # mov eax, 20 (i386 getpid) ; int 0x80 ; ret
    return int(machine_code(bytes.fromhex("b814000000") + b"\xcd\x80\xc3")())


def killed_by_sigsys(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_x32_syscall_kills_the_process() -> None:
    status, bare = in_child(x32_getpid, spec=None)
    assert os.WIFEXITED(status) and isinstance(bare, int)  # bare: the kernel answers (ENOSYS without x32)
    status, _ = in_child(x32_getpid)
    assert killed_by_sigsys(status)


def test_int80_32bit_syscall_kills_the_process() -> None:
    status, bare = in_child(int80_getpid, spec=None)
    if not os.WIFEXITED(status):
        pytest.skip("this kernel does not run 32-bit syscalls at all (ia32 emulation off)")
    assert isinstance(bare, int) and bare > 0  # a real pid: the 32-bit table is live here
    status, _ = in_child(int80_getpid)
    assert killed_by_sigsys(status)


def expect_refused(call: Callable[[], int], err: int = errno.EPERM,
                   setup: Callable[[], None] | None = None) -> int:
    """Filtered: exactly -err. Returns the bare result, for the caller to show the call works bare."""
    status, filtered = in_child(call, setup=setup)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert filtered == -err
    status, bare = in_child(call, spec=None, setup=setup)
    assert os.WIFEXITED(status)
    assert isinstance(bare, int)
    return bare


def test_io_uring_setup_refused() -> None:
    params = ctypes.create_string_buffer(120)
    bare = expect_refused(lambda: raw(425, 4, ctypes.addressof(params)))
    assert bare >= 0 or bare == -errno.ENOMEM  # bare: a ring fd


@pytest.fixture
def victim() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_ptrace_attach_refused(victim: int) -> None:
    def attach() -> int:
        ret = raw(101, 16, victim, 0, 0)  # PTRACE_ATTACH
        if ret == 0:
            os.waitpid(victim, 0)
            raw(101, 17, victim, 0, 0)  # PTRACE_DETACH
        return ret

    assert expect_refused(attach) == 0


def test_process_vm_readv_refused(victim: int) -> None:
    def peek() -> int:
        buf = ctypes.create_string_buffer(8)
        local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
        addr = int(Path(f"/proc/{victim}/maps").read_text().split("-", 1)[0], 16)
        remote = (ctypes.c_void_p * 2)(addr, 8)
        return raw(310, victim, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)

    assert expect_refused(peek) == 8


def test_bpf_refused() -> None:
    # BPF_MAP_CREATE with a zeroed attr: bare, the kernel looks at it and says EINVAL.
    attr = ctypes.create_string_buffer(64)
    assert expect_refused(lambda: raw(321, 0, ctypes.addressof(attr), 64)) == -errno.EINVAL


def test_keyctl_and_add_key_refused() -> None:
    assert expect_refused(lambda: raw(250, 0, 0xFFFFFFFD, 1)) != -errno.EPERM  # KEYCTL_GET_KEYRING_ID
    desc = ctypes.create_string_buffer(b"guard-test")
    expect_refused(lambda: raw(248, ctypes.addressof(ctypes.create_string_buffer(b"user")),
                               ctypes.addressof(desc), 0, 0, 0xFFFFFFFD))


def test_unshare_user_namespace_refused_but_plain_unshare_works() -> None:
    assert expect_refused(lambda: raw(272, 0x10000000)) == 0  # CLONE_NEWUSER works bare
    _status, ok = in_child(lambda: raw(272, 0x400))  # CLONE_FILES is no namespace
    assert ok == 0


def test_clone_with_namespace_flag_refused_clone3_enosys() -> None:
    assert expect_refused(_clone_newnet) == 0
    _status, got = in_child(lambda: raw(435, 0, 0))
    assert got == -errno.ENOSYS


def _clone_newnet() -> int:
    # A raw clone whose child exits at once; returns 0 for "created" so the parent can compare. With
    # CLONE_NEWUSER the bare call works for an unprivileged user too, so the control holds as nobody.
    ret = raw(56, 0x10000000 | 0x40000000 | signal.SIGCHLD, 0, 0, 0, 0)
    if ret == 0:
        os._exit(0)
    if ret > 0:
        os.waitpid(ret, 0)
        return 0
    return ret


def test_threads_and_fork_still_work() -> None:
    def work() -> list[int]:
        import threading

        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(1))
        t.start()
        t.join()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        return [*seen, os.WEXITSTATUS(status)]

    _status, got = in_child(work)
    assert got == [1, 7]


def test_mount_refused(tmp_path: Path) -> None:
    def private_mount_ns() -> None:
        assert raw(272, 0x00020000) == 0  # CLONE_NEWNS, so a bare mount stays in this child
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)

    target = tmp_path / "m"
    target.mkdir()
    fstype, src = ctypes.create_string_buffer(b"tmpfs"), ctypes.create_string_buffer(b"none")
    path = ctypes.create_string_buffer(str(target).encode())

    def do_mount() -> int:
        return raw(165, ctypes.addressof(src), ctypes.addressof(path), ctypes.addressof(fstype), 0, 0)

    if os.geteuid() != 0:
        pytest.skip("bare mount needs root to show the call works")
    assert expect_refused(do_mount, setup=private_mount_ns) == 0


def test_sockets_of_families_the_network_namespace_does_not_confine_refused() -> None:
    """vsock is not confined by a network namespace: from a sandbox it reaches the hypervisor's host (a
    VM's, WSL2's) around the proxy. Only unix, IPv4, IPv6 and netlink sockets are made."""
    kinds = {"AF_UNIX": socket.SOCK_STREAM, "AF_INET": socket.SOCK_STREAM, "AF_INET6": socket.SOCK_STREAM,
             "AF_NETLINK": socket.SOCK_DGRAM, "AF_VSOCK": socket.SOCK_STREAM, "AF_ALG": socket.SOCK_SEQPACKET,
             "AF_PACKET": socket.SOCK_DGRAM}

    def families() -> object:
        out = {}
        for name, kind in kinds.items():
            family = getattr(socket, name, None)
            if family is None:
                continue
            try:
                socket.socket(family, kind).close()
                out[name] = 0
            except OSError as exc:
                out[name] = exc.errno
        return out

    _status, bare = in_child(families, spec=None)
    _status, got = in_child(families)
    assert {k: got[k] for k in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK")} == dict.fromkeys(
        ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"), 0)
    for name in ("AF_VSOCK", "AF_ALG", "AF_PACKET"):
        if name in got:
            assert got[name] == errno.EAFNOSUPPORT, (name, bare, got)
    if bare.get("AF_VSOCK") != 0:
        pytest.skip(f"vsock sockets cannot be made here even bare ({bare.get('AF_VSOCK')}): the refusal "
                    "above is the filter's, but the escape it closes cannot be shown")


def test_personality_change_refused() -> None:
    assert expect_refused(lambda: raw(135, 0x0040000)) == 0  # ADDR_NO_RANDOMIZE; bare: old persona 0
    _status, got = in_child(lambda: [raw(135, 0xFFFFFFFF), raw(135, 0)])
    assert got == [0, 0]


def _tiocsti(cmd: int) -> Callable[[], object]:
    def inject() -> object:
        _master, slave = os.openpty()
        # our controlling terminal, as an agent's is: TIOCSTI on any other tty needs CAP_SYS_ADMIN, so
        # without this the bare control would only work as root
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        tty.setraw(slave)
        ch = ctypes.create_string_buffer(b"Z")
        ret = raw(16, slave, cmd, ctypes.addressof(ch))
        queued = fcntl.ioctl(slave, termios.FIONREAD, b"\0\0\0\0")
        return [ret, int.from_bytes(queued, "little")]
    return inject


@pytest.mark.parametrize("cmd", [0x5412, 0x1_0000_5412, 0xFFFF_FFFF_0000_5412])
def test_tiocsti_on_a_pty_refused(cmd: int) -> None:
    _status, bare = in_child(_tiocsti(cmd), spec=None)
    if bare[0] == -errno.EIO:
        pytest.skip("TIOCSTI is disabled on this host (dev.tty.legacy_tiocsti=0)")
    assert bare == [0, 1]  # bare: the byte lands in the terminal's input queue
    _status, filtered = in_child(_tiocsti(cmd))
    assert filtered == [-errno.EPERM, 0]


def test_tioclinux_refused() -> None:
    def call() -> int:
        _master, slave = os.openpty()
        arg = ctypes.c_char(b"\x0b")
        return raw(16, slave, 0x541C, ctypes.addressof(arg))

    assert expect_refused(call) != -errno.EPERM


@pytest.mark.parametrize("argv", [
    ["/bin/sh", "-c", "echo hello | tr a-z A-Z"],
    [sys.executable, "-c", "import json, threading, subprocess; print(json.dumps({'ok': 1}))"],
    ["git", "--version"],
])
def test_ordinary_programs_still_work(argv: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"

    def run() -> int:
        with open(out, "w") as fh:
            return subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode

    _status, rc = in_child(run)
    assert rc == 0, out.read_text()
    assert out.read_text().strip()


def test_install_requires_no_new_privs() -> None:
    def attempt() -> str:
        try:
            seccomp.install(QUIET)
        except SandboxError as exc:
            return exc.message
        return "installed"

    _status, got = in_child(attempt, spec=None)
    assert got == "seccomp: no_new_privs is not set on this process"


def test_install_returns_listener_only_when_notifying() -> None:
    def probe(spec: seccomp.SeccompSpec) -> Callable[[], object]:
        def go() -> object:
            sc.set_no_new_privs()
            fd = seccomp.install(spec)
            if fd is None:
                return None
            return [fd >= 0, os.readlink(f"/proc/self/fd/{fd}")]
        return go

    assert in_child(probe(QUIET), spec=None)[1] is None
    ok, link = in_child(probe(seccomp.SeccompSpec()), spec=None)[1]
    assert ok and "seccomp notify" in link


def test_install_refuses_foreign_spec() -> None:
    with pytest.raises(SandboxError, match="spec is for aarch64"):
        seccomp.install(seccomp.SeccompSpec(arch="aarch64"))
