"""The BPF assembler and emulator, and the seccomp filter's logic run through the emulator (no kernel)."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.errors import SandboxError
from guard.sandbox import bpf
from guard.sandbox import seccomp as s

U64 = st.integers(min_value=0, max_value=2**64 - 1)
HIGH = st.integers(min_value=0, max_value=2**32 - 1)


def data(nr: int, arch: int, *args: int) -> bytes:
    full = (list(args) + [0] * 6)[:6]
    return struct.pack("=iIQ6Q", nr, arch, 0, *full)


def verdict(spec: s.SeccompSpec, name_or_nr: str | int, *args: int, arch: int | None = None) -> int:
    prog = bpf.decode(s.build_filter(spec))
    nr = spec.table.numbers[name_or_nr] if isinstance(name_or_nr, str) else name_or_nr
    return bpf.emulate(prog, data(nr, spec.table.audit_arch if arch is None else arch, *args))


EPERM = s.RET_ERRNO | errno.EPERM
SPECS = [s.SeccompSpec(arch="x86_64"), s.SeccompSpec(arch="aarch64")]


# --- assembler ---------------------------------------------------------------------------------------

def test_encodes_sock_filter_layout() -> None:
    a = bpf.Assembler()
    a.load_abs(4)
    a.jeq(0xC000003E, jt="ok", jf="bad")
    a.label("ok")
    a.ret(0x7FFF0000)
    a.label("bad")
    a.ret(0x80000000)
    blob = bpf.encode(a.assemble())
    assert blob == bytes.fromhex(
        "2000000004000000"  # ld [4]
        "150000013e0000c0"  # jeq #0xc000003e, jt 0, jf 1
        "060000000000ff7f"  # ret ALLOW
        "0600000000000080"  # ret KILL_PROCESS
    )
    assert bpf.decode(blob) == a.assemble()


def test_ja_reaches_beyond_255() -> None:
    a = bpf.Assembler()
    a.ja("far")
    for _ in range(300):
        a.ret(1)
    a.label("far")
    a.ret(2)
    prog = a.assemble()
    assert prog[0].k == 300
    assert bpf.emulate(prog, b"\0" * 64) == 2


@pytest.mark.parametrize(("build", "message"), [
    (lambda a: (a.jeq(1, jt="nowhere"), a.ret(0)), "undefined label 'nowhere'"),
    (lambda a: (a.label("x"), a.label("x"), a.ret(0)), "defined twice"),
    (lambda a: (a.label("top"), a.ret(0), a.ja("top"), a.ret(0)), "jumps backwards"),
    (lambda a: (a.jeq(1, jt="end"), *[a.ret(0) for _ in range(256)], a.label("end"), a.ret(1)),
     "jumps 256 ahead"),
    (lambda a: (a.jeq(2**32),), "does not fit in 32 bits"),
    (lambda a: (a.load_abs(0),), "can run off its end"),
    (lambda a: None, "empty program"),
    (lambda a: (a.jeq(1, jt="end"), a.ret(0), a.label("end")), "past the last instruction"),
])
def test_assembler_rejects_bad_programs(build, message: str) -> None:
    a = bpf.Assembler()
    with pytest.raises(SandboxError, match=message):
        build(a)
        a.assemble()


def test_too_long_program_is_refused() -> None:
    a = bpf.Assembler()
    for _ in range(bpf.MAX_INSNS):
        a.ret(0)
    a.ret(0)
    with pytest.raises(SandboxError, match="the kernel accepts 4096"):
        a.assemble()


def test_emulator_rejects_bad_loads_and_opcodes() -> None:
    with pytest.raises(SandboxError, match="bad offset 2"):
        bpf.emulate((bpf.Insn(bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS, 0, 0, 2), bpf.Insn(6, 0, 0, 0)), b"\0" * 64)
    with pytest.raises(SandboxError, match="bad offset 64"):
        bpf.emulate((bpf.Insn(bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS, 0, 0, 64),), b"\0" * 64)
    with pytest.raises(SandboxError, match="unsupported opcode"):
        bpf.emulate((bpf.Insn(0x07, 0, 0, 0),), b"\0" * 64)
    with pytest.raises(SandboxError, match="past the end"):
        bpf.emulate((bpf.Insn(bpf.BPF_JMP | bpf.BPF_JA, 0, 0, 5),), b"\0" * 64)
    with pytest.raises(SandboxError, match="whole number"):
        bpf.decode(b"\0" * 9)


# --- the seccomp filter, emulated -------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
def test_foreign_arch_is_killed(spec: s.SeccompSpec) -> None:
    for foreign in (s.AUDIT_ARCH_I386, s.AUDIT_ARCH_AARCH64 if spec.arch == "x86_64" else s.AUDIT_ARCH_X86_64,
                    0x40000028):
        assert verdict(spec, 0, arch=foreign) == s.RET_KILL_PROCESS


def test_x32_numbers_are_killed() -> None:
    spec = s.SeccompSpec(arch="x86_64")
    for nr in (0x40000000 | 39, 0x40000000 | 257, 0x40000000 | 512, 0x7FFFFFFF):
        assert verdict(spec, nr) == s.RET_KILL_PROCESS


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
def test_every_refused_syscall_gets_eperm(spec: s.SeccompSpec) -> None:
    present = [n for n in s.REFUSED if n in spec.table.numbers]
    assert len(present) >= 45
    for name in present:
        assert verdict(spec, name) == EPERM, name


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
def test_clone3_is_enosys_so_libc_falls_back(spec: s.SeccompSpec) -> None:
    assert verdict(spec, "clone3") == s.RET_ERRNO | errno.ENOSYS


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
@given(high=HIGH, cmd=st.sampled_from([s.TIOCSTI, s.TIOCLINUX]))
@settings(max_examples=50)
def test_terminal_injection_ioctls_refused_whatever_the_high_half(spec: s.SeccompSpec, high: int, cmd: int) -> None:
    # The kernel reads ioctl's cmd as unsigned int: 0xXXXXXXXX_00005412 is TIOCSTI.
    assert verdict(spec, "ioctl", 1, (high << 32) | cmd) == EPERM


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
def test_other_ioctls_allowed(spec: s.SeccompSpec) -> None:
    for cmd in (0x5401, 0x5413, 0x5412 + 1, 0x541B, 0x80045430, 0x5412 << 16):
        assert verdict(spec, "ioctl", 1, cmd) == s.RET_ALLOW


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
@given(high=HIGH)
@settings(max_examples=30)
def test_clone_with_namespace_flags_refused(spec: s.SeccompSpec, high: int) -> None:
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert verdict(spec, "clone", (high << 32) | flag | 17) == EPERM
        assert verdict(spec, "unshare", (high << 32) | flag) == EPERM
    assert verdict(spec, "unshare", s.CLONE_NEWTIME) == EPERM
    # fork/thread creation: CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
    assert verdict(spec, "clone", 0x3D0F00) == s.RET_ALLOW
    assert verdict(spec, "clone", 17) == s.RET_ALLOW
    assert verdict(spec, "unshare", 0x400 | 0x200) == s.RET_ALLOW  # CLONE_FILES|CLONE_FS


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
def test_personality_only_linux_or_query(spec: s.SeccompSpec) -> None:
    assert verdict(spec, "personality", 0) == s.RET_ALLOW
    assert verdict(spec, "personality", 0xFFFFFFFF) == s.RET_ALLOW
    for bad in (0x0040000, 0x0008, 0x0400000, 1):
        assert verdict(spec, "personality", bad) == EPERM


@pytest.mark.parametrize("spec", [*SPECS, s.SeccompSpec(notify=False)], ids=lambda sp: f"{sp.arch}-{sp.notify}")
@given(high=HIGH, family=st.integers(min_value=0, max_value=2**32 - 1), rest=st.lists(U64, min_size=2, max_size=2))
@settings(max_examples=300)
def test_socket_families_outside_the_network_namespace_refused(spec: s.SeccompSpec, high: int, family: int,
                                                                rest: list[int]) -> None:
    """Only unix, IPv4, IPv6 and netlink sockets (the kernel reads the family as an int: the high half is
    ignored); vsock (40) reaches the hypervisor's host around the network namespace."""
    got = verdict(spec, "socket", high << 32 | family, *rest)
    assert got == (s.RET_ALLOW if family in (1, 2, 10, 16) else s.RET_ERRNO | errno.EAFNOSUPPORT)
    assert verdict(spec, "socket", high << 32 | 40) == s.RET_ERRNO | errno.EAFNOSUPPORT


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
@given(high=HIGH, low=st.integers(min_value=0, max_value=2**32 - 1))
@settings(max_examples=200)
def test_open_notifies_exactly_the_write_intent_flags(spec: s.SeccompSpec, high: int, low: int) -> None:
    expected = s.RET_USER_NOTIF if low & s.WRITE_INTENT else s.RET_ALLOW
    for name, idx in s.FLAG_OPENS.items():
        if name in spec.table.numbers:
            args = [0] * 6
            args[idx] = (high << 32) | low
            assert verdict(spec, name, *args) == expected, name


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
def test_notified_syscalls(spec: s.SeccompSpec) -> None:
    present = [n for n in s.NOTIFIED if n in spec.table.numbers]
    assert {"execve", "execveat", "openat2", "renameat2", "linkat", "symlinkat", "mkdirat"} <= set(present)
    # Landlock has no right for attribute changes: every arch must send all of its own to the supervisor.
    assert {"fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat", "utimensat", "setxattr", "lsetxattr",
            "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat",
            "file_setattr", "ftruncate"} <= set(present)
    for name in present:
        assert verdict(spec, name) == s.RET_USER_NOTIF, name
    quiet = s.SeccompSpec(arch=spec.arch, notify=False)
    for name in present:
        assert verdict(quiet, name) == s.RET_ALLOW, name
    assert verdict(quiet, "openat", 0, 0, 0o1101) == s.RET_ALLOW


def test_legacy_attribute_syscalls_notified_on_x86_64() -> None:
    spec = s.SeccompSpec(arch="x86_64")
    for name in ("chmod", "chown", "lchown", "utime", "utimes", "futimesat"):
        assert verdict(spec, name) == s.RET_USER_NOTIF, name


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
@given(high=HIGH)
@settings(max_examples=50)
def test_chattr_ioctls_notified_on_their_low_half(spec: s.SeccompSpec, high: int) -> None:
    for cmd in (s.FS_IOC_SETFLAGS, s.FS_IOC32_SETFLAGS, s.FS_IOC_FSSETXATTR):
        assert verdict(spec, "ioctl", 3, (high << 32) | cmd) == s.RET_USER_NOTIF, hex(cmd)
        quiet = s.SeccompSpec(arch=spec.arch, notify=False)
        assert verdict(quiet, "ioctl", 3, (high << 32) | cmd) == s.RET_ALLOW, hex(cmd)
    assert verdict(spec, "ioctl", 3, 0x80086601) == s.RET_ALLOW  # FS_IOC_GETFLAGS only reads
    assert verdict(spec, "ioctl", 3, s.TIOCSTI) == EPERM


def test_full_audit_notifies_read_only_opens() -> None:
    spec = s.SeccompSpec(arch="x86_64", full_audit=True)
    assert verdict(spec, "openat", 0, 0, 0) == s.RET_USER_NOTIF
    assert verdict(spec, "open", 0, 0) == s.RET_USER_NOTIF


# sendto is notified only with a destination address (a datagram to a path-named unix socket is a decision)
ARG_DEPENDENT = {"ioctl", "clone", "unshare", "personality", "open", "openat", "sendto", "socket"}


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
@given(nr=st.integers(min_value=0, max_value=1023), args=st.lists(U64, min_size=6, max_size=6))
@settings(max_examples=300)
def test_everything_else_is_allowed_and_argument_independent(spec: s.SeccompSpec, nr: int,
                                                             args: list[int]) -> None:
    names = spec.table.names()
    name = names.get(nr)
    if name in ARG_DEPENDENT:
        return
    zero = verdict(spec, nr)
    assert verdict(spec, nr, *args) == zero  # so the kernel's per-syscall allow cache applies
    if name is None:
        assert zero == s.RET_ALLOW


def test_spec_validation() -> None:
    with pytest.raises(SandboxError, match="no syscall table for architecture 'mips'"):
        s.SeccompSpec(arch="mips")
    with pytest.raises(SandboxError, match="full_audit needs notify"):
        s.SeccompSpec(notify=False, full_audit=True)


def test_tables_agree_on_shared_numbers() -> None:
    # The unified syscall numbers (>= 424) are the same on every architecture.
    for name, nr in s.ARCHES["x86_64"].numbers.items():
        if nr >= 424 and name in s.ARCHES["aarch64"].numbers:
            assert s.ARCHES["aarch64"].numbers[name] == nr, name
    for table in s.ARCHES.values():
        assert len(set(table.numbers.values())) == len(table.numbers)


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
@settings(max_examples=60, deadline=None)
@given(addr=U64)
def test_connect_always_notified_sendto_only_with_an_address(spec: s.SeccompSpec, addr: int) -> None:
    assert verdict(spec, "connect", 3, addr, 110) == s.RET_USER_NOTIF
    # sendto's dest_addr is a 64-bit pointer: non-NULL in either half means an address the kernel uses
    assert verdict(spec, "sendto", 3, 0x1000, 1, 0, addr, 110) == (
        s.RET_USER_NOTIF if addr else s.RET_ALLOW)
    no_notify = s.SeccompSpec(notify=False, arch=spec.arch)
    assert verdict(no_notify, "connect", 3, addr, 110) == s.RET_ALLOW
    assert verdict(no_notify, "sendto", 3, 0, 1, 0, addr, 110) == s.RET_ALLOW


@pytest.mark.parametrize("spec", SPECS, ids=lambda sp: sp.arch)
def test_sendto_with_only_the_high_half_of_the_address_set_is_notified(spec: s.SeccompSpec) -> None:
    assert verdict(spec, "sendto", 3, 0, 1, 0, 1 << 32, 16) == s.RET_USER_NOTIF
    assert verdict(spec, "sendto", 3, 0, 1, 0, 0, 16) == s.RET_ALLOW
