"""Kernel surfaces that bypass the rules above: a second syscall table, io_uring, keyrings, tracing a
process outside, reading its memory, and fresh namespaces to regain capabilities.

Each raw-syscall attack prints `OK <result>` or `ERR <errno name>`; the bare run must print OK.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from support.attacks import SYSCALL

pytestmark = pytest.mark.timeout(120)



def test_int80_32bit_syscall_kills_the_process(world):
    """The i386 table via `int 0x80`: none of the native-number rules would apply to it."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = world.ws / "int80.c"
    src.write_text(
        'static const char msg[] = "INT80-WROTE\\n";\n'
        "int main(void) {\n"
        "  long r;\n"
        '  __asm__ volatile ("int $0x80" : "=a"(r) : "a"(4L), "b"(1L), "c"(msg), "d"(sizeof msg - 1) : "memory");\n'
        "  return r < 0;\n"
        "}\n")
    cc = subprocess.run(["gcc", "-O0", "-no-pie", "-o", str(world.ws / "int80"), str(src)],
                        capture_output=True, text=True)
    if cc.returncode != 0:
        pytest.skip(f"cannot build the int 0x80 probe: {cc.stderr.strip()}")
    bare = world.bare_run(["./int80"])
    if "INT80-WROTE" not in bare.stdout:
        pytest.skip(f"this kernel has no IA-32 emulation (int 0x80 fails bare: rc {bare.returncode})")
    run = world.guard_run(["./int80"])
    assert "INT80-WROTE" not in run.stdout, run
    assert run.returncode == 128 + 31, run  # SIGSYS: the whole process is killed


def test_io_uring_setup_refused(world):
    attack = world.py(SYSCALL + "params = ctypes.create_string_buffer(120)\ncall(425, 8, params)\n")
    bare = world.bare_run(attack)
    if "OK" not in bare.stdout:
        pytest.skip(f"io_uring is disabled on this host even bare: {bare.stdout.strip()}")
    run = world.guard_run(attack)
    assert run.stdout.strip() == "ERR EPERM", run


def test_keyctl_refused(world):
    """The user keyring can hold the engineer's tokens (kerberos, sssd, ecryptfs)."""
    attack = world.py(SYSCALL + "call(250, 0, -4, 1)\n")  # KEYCTL_GET_KEYRING_ID of the user keyring
    bare = world.bare_run(attack)
    if "OK" not in bare.stdout:
        pytest.skip(f"keyrings are not usable here even bare: {bare.stdout.strip()}")
    run = world.guard_run(attack)
    assert run.stdout.strip() == "ERR EPERM", run


@pytest.fixture
def victim(world):
    """A process outside the sandbox holding a secret in memory; prints its address."""
    code = ("import ctypes, sys, time\n"
            f"buf = ctypes.create_string_buffer({('VICTIM-' + world.ssh_secret).encode()!r})\n"
            "print(ctypes.addressof(buf), len(buf.value), flush=True)\n"
            "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=world.env)
    world.track(proc.pid)
    addr, size = (int(x) for x in proc.stdout.readline().split())
    yield proc.pid, addr, size
    proc.kill()
    proc.wait()


def _tracer(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("TracerPid:")).split()[1])


def test_ptrace_attach_to_process_outside(world, victim):
    pid, _, _ = victim
    attack = world.py(SYSCALL + f"r = call(101, 16, {pid}, 0, 0)\n"
                      f"if r == 0:\n    os.waitpid({pid}, 0)\n    call(101, 17, {pid}, 0, 0)\n")
    bare = world.bare_run(attack)
    assert bare.stdout.startswith("OK 0"), bare
    run = world.guard_run(attack)
    assert run.stdout.strip() == "ERR EPERM", run
    assert _tracer(pid) == 0


def test_process_vm_readv_of_process_outside(world, victim):
    pid, addr, size = victim
    attack = world.py(
        SYSCALL +
        "class iov(ctypes.Structure):\n"
        "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
        f"buf = ctypes.create_string_buffer({size})\n"
        f"local, remote = iov(ctypes.addressof(buf), {size}), iov({addr}, {size})\n"
        f"if call(310, {pid}, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0:\n"
        "    print(buf.value.decode())\n")
    bare = world.bare_run(attack)
    assert world.ssh_secret in bare.stdout, bare
    run = world.guard_run(attack)
    assert run.stdout.strip() == "ERR EPERM" and world.ssh_secret not in run.stdout, run


def test_new_user_namespace_refused(world):
    """A nested user namespace hands back a full capability set (mount, net admin) inside it."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    attack = world.sh("unshare -Ur sh -c 'grep CapEff /proc/self/status'")
    bare = world.bare_run(attack)
    if "CapEff" not in bare.stdout:
        pytest.skip(f"user namespaces are not available even bare: {bare.stderr.strip()}")
    run = world.guard_run(attack)
    assert run.returncode != 0 and "CapEff" not in run.stdout, run
    assert "Operation not permitted" in run.stderr, run


def test_zz_trail_verifies(world):
    world.check_trail()
