"""A tiny classic-BPF assembler with labels, and an emulator for the same instruction subset.

Seccomp filters are classic BPF: 8-byte instructions whose conditional jumps carry 8-bit forward
offsets. Writing offsets by hand is where filters go wrong, so filters here are written with named
labels and the assembler computes (and range-checks) every offset. The emulator runs a program over a
`seccomp_data` buffer so the filter's logic can be tested exhaustively without a kernel; the kernel
tests then confirm that the emulator and the kernel agree.

Only the instructions a seccomp filter needs are offered: 32-bit absolute loads, ALU AND with a
constant, jumps comparing the accumulator with a constant, unconditional jumps, and return.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from guard.errors import SandboxError

# Instruction classes and fields (linux/filter.h, linux/bpf_common.h).
BPF_LD, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x04, 0x05, 0x06
BPF_W, BPF_ABS, BPF_K = 0x00, 0x20, 0x00
BPF_AND = 0x50
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40

MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses longer programs
_U32 = 0xFFFFFFFF
_INSN = struct.Struct("=HBBI")


@dataclass(frozen=True, slots=True)
class Insn:
    """One encoded instruction: `struct sock_filter`."""

    code: int
    jt: int
    jf: int
    k: int

    def encode(self) -> bytes:
        return _INSN.pack(self.code, self.jt, self.jf, self.k)


@dataclass(frozen=True, slots=True)
class _Pending:
    """An instruction whose jump targets are still label names (None: fall through)."""

    code: int
    k: int | str  # a label name only for BPF_JA
    jt: str | None
    jf: str | None
    line: int


class Assembler:
    """Collects instructions and labels, then resolves every jump in `assemble()`.

    Labels may only be jumped to forwards (classic BPF has no backward jumps, which is what makes
    every filter terminate). A conditional jump reaches at most 255 instructions ahead; use `ja`
    (32-bit offset) to go further.
    """

    def __init__(self) -> None:
        self._insns: list[_Pending] = []
        self._labels: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._insns)

    def label(self, name: str) -> None:
        if name in self._labels:
            raise SandboxError(f"bpf: label {name!r} defined twice (second at instruction {len(self)})")
        self._labels[name] = len(self._insns)

    def _emit(self, code: int, k: int | str, jt: str | None = None, jf: str | None = None) -> None:
        if isinstance(k, int) and not 0 <= k <= _U32:
            raise SandboxError(f"bpf: constant {k:#x} at instruction {len(self)} does not fit in 32 bits")
        self._insns.append(_Pending(code, k, jt, jf, len(self._insns)))

    def load_abs(self, offset: int) -> None:
        """A <- 32-bit word at `offset` of the input (seccomp_data)."""
        self._emit(BPF_LD | BPF_W | BPF_ABS, offset)

    def and_(self, mask: int) -> None:
        self._emit(BPF_ALU | BPF_AND | BPF_K, mask)

    def jeq(self, k: int, jt: str | None = None, jf: str | None = None) -> None:
        self._emit(BPF_JMP | BPF_JEQ | BPF_K, k, jt, jf)

    def jgt(self, k: int, jt: str | None = None, jf: str | None = None) -> None:
        self._emit(BPF_JMP | BPF_JGT | BPF_K, k, jt, jf)

    def jge(self, k: int, jt: str | None = None, jf: str | None = None) -> None:
        self._emit(BPF_JMP | BPF_JGE | BPF_K, k, jt, jf)

    def jset(self, mask: int, jt: str | None = None, jf: str | None = None) -> None:
        self._emit(BPF_JMP | BPF_JSET | BPF_K, mask, jt, jf)

    def ja(self, target: str) -> None:
        self._emit(BPF_JMP | BPF_JA, target)

    def ret(self, value: int) -> None:
        self._emit(BPF_RET | BPF_K, value)

    def _offset(self, insn: _Pending, name: str, limit: int) -> int:
        if name not in self._labels:
            raise SandboxError(f"bpf: instruction {insn.line} jumps to undefined label {name!r}")
        target = self._labels[name]
        off = target - insn.line - 1
        if off < 0:
            raise SandboxError(f"bpf: instruction {insn.line} jumps backwards to {name!r}",
                               hint="classic BPF only jumps forwards; reorder the blocks")
        if target >= len(self._insns):
            raise SandboxError(f"bpf: label {name!r} is past the last instruction")
        if off > limit:
            raise SandboxError(f"bpf: instruction {insn.line} jumps {off} ahead to {name!r} (max {limit})",
                               hint="jump to a nearby `ja` trampoline instead")
        return off

    def assemble(self) -> tuple[Insn, ...]:
        if not self._insns:
            raise SandboxError("bpf: empty program")
        if len(self._insns) > MAX_INSNS:
            raise SandboxError(f"bpf: {len(self._insns)} instructions, the kernel accepts {MAX_INSNS}")
        last = self._insns[-1]
        if last.code != BPF_RET | BPF_K:
            raise SandboxError(f"bpf: program can run off its end (instruction {last.line} is not a return)")
        out: list[Insn] = []
        for insn in self._insns:
            if insn.code == BPF_JMP | BPF_JA:
                assert isinstance(insn.k, str)
                out.append(Insn(insn.code, 0, 0, self._offset(insn, insn.k, _U32)))
                continue
            assert isinstance(insn.k, int)
            jt = self._offset(insn, insn.jt, 255) if insn.jt is not None else 0
            jf = self._offset(insn, insn.jf, 255) if insn.jf is not None else 0
            out.append(Insn(insn.code, jt, jf, insn.k))
        return tuple(out)


def encode(program: tuple[Insn, ...]) -> bytes:
    """The bytes of a `struct sock_filter[]`, ready for a `struct sock_fprog`."""
    return b"".join(insn.encode() for insn in program)


def decode(blob: bytes) -> tuple[Insn, ...]:
    if len(blob) % _INSN.size:
        raise SandboxError(f"bpf: {len(blob)} bytes is not a whole number of {_INSN.size}-byte instructions")
    return tuple(Insn(*_INSN.unpack_from(blob, off)) for off in range(0, len(blob), _INSN.size))


def emulate(program: tuple[Insn, ...], data: bytes) -> int:
    """Run `program` over `data` as the kernel would and return the filter's 32-bit verdict.

    Raises SandboxError for anything the kernel's checker would have refused at load time (unknown
    opcode, misaligned or out-of-range load, jump past the end), naming the instruction.
    """
    acc = 0
    pc = 0
    while True:
        if not 0 <= pc < len(program):
            raise SandboxError(f"bpf: control reached instruction {pc}, past the end")
        insn = program[pc]
        cls = insn.code & 0x07
        if insn.code == BPF_LD | BPF_W | BPF_ABS:
            if insn.k % 4 or insn.k + 4 > len(data):
                raise SandboxError(f"bpf: instruction {pc} loads bad offset {insn.k}")
            acc = int.from_bytes(data[insn.k:insn.k + 4], "little")
        elif insn.code == BPF_ALU | BPF_AND | BPF_K:
            acc &= insn.k
        elif insn.code == BPF_RET | BPF_K:
            return insn.k
        elif insn.code == BPF_JMP | BPF_JA:
            pc += insn.k
        elif cls == BPF_JMP:
            op = insn.code & 0xF0
            if op == BPF_JEQ:
                taken = acc == insn.k
            elif op == BPF_JGT:
                taken = acc > insn.k
            elif op == BPF_JGE:
                taken = acc >= insn.k
            elif op == BPF_JSET:
                taken = bool(acc & insn.k)
            else:
                raise SandboxError(f"bpf: instruction {pc} has unknown jump opcode {insn.code:#x}")
            pc += insn.jt if taken else insn.jf
        else:
            raise SandboxError(f"bpf: instruction {pc} has unsupported opcode {insn.code:#x}")
        pc += 1
