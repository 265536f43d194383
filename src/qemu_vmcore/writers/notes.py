"""The vCPU notes QMP dump-guest-memory writes, byte for byte.

Per vCPU, in QEMU's vCPU order: first every CORE/NT_PRSTATUS note, then every
"QEMU" note (QEMUCPUState), then the guest's VMCOREINFO note, exactly as
dump.c's write_elf64_notes() and target/i386/arch_dump.c produce them. The
prstatus layout follows the *first* vCPU's mode: x86_64 when it is in long
mode, i386 otherwise (and always i386 in an ELF32 file).
"""

from __future__ import annotations

from collections.abc import Sequence

from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.x86 import (
    R_CS,
    R_DS,
    R_EAX,
    R_EBP,
    R_EBX,
    R_ECX,
    R_EDI,
    R_EDX,
    R_ES,
    R_ESI,
    R_ESP,
    R_FS,
    R_GS,
    R_SS,
    X86State,
)

U32 = 0xFFFFFFFF


def x86_64_prstatus(s: X86State) -> bytes:
    """The desc of an x86_64 NT_PRSTATUS note (x86_64_elf_prstatus)."""
    r, seg = s.regs, s.segs
    return E.X86_64_PRSTATUS.pack(
        s.index + 1,  # pr_pid: QEMU writes cpu_index + 1
        r[15], r[14], r[13], r[12], r[R_EBP], r[R_EBX], r[11], r[10],
        r[9], r[8], r[R_EAX], r[R_ECX], r[R_EDX], r[R_ESI], r[R_EDI],
        0,  # orig_rax: QEMU leaves it 0
        s.rip, seg[R_CS].selector, s.rflags, r[R_ESP], seg[R_SS].selector,
        seg[R_FS].base, seg[R_GS].base,
        seg[R_DS].selector, seg[R_ES].selector, seg[R_FS].selector, seg[R_GS].selector,
    )  # fmt: skip


def i386_prstatus(s: X86State) -> bytes:
    """The desc of an i386 NT_PRSTATUS note (x86_elf_prstatus), registers truncated to 32 bits."""
    r, seg = s.regs, s.segs
    return E.I386_PRSTATUS.pack(
        s.index + 1,
        r[R_EBX] & U32, r[R_ECX] & U32, r[R_EDX] & U32, r[R_ESI] & U32,
        r[R_EDI] & U32, r[R_EBP] & U32, r[R_EAX] & U32,
        seg[R_DS].selector, 0, seg[R_ES].selector, 0,
        seg[R_FS].selector, 0, seg[R_GS].selector, 0,
        0, s.rip & U32,  # orig_eax, eip
        seg[R_CS].selector, 0,
        s.rflags & U32, r[R_ESP] & U32,
        seg[R_SS].selector, 0,
    )  # fmt: skip


def qemu_cpu_state(s: X86State) -> bytes:
    """The desc of a "QEMU" note: QEMUCPUState, version 1, with kernel_gs_base."""
    r, seg = s.regs, s.segs
    segments = []
    for sg in (seg[R_CS], seg[R_DS], seg[R_ES], seg[R_FS], seg[R_GS], seg[R_SS],
               s.ldt, s.tr, s.gdt, s.idt):  # fmt: skip
        segments += [sg.selector, sg.limit, sg.flags, 0, sg.base]
    return E.QEMU_CPU_STATE.pack(
        E.QEMUCPUSTATE_VERSION,
        E.QEMU_CPU_STATE.size,
        r[R_EAX], r[R_EBX], r[R_ECX], r[R_EDX], r[R_ESI], r[R_EDI], r[R_ESP], r[R_EBP],
        *r[8:16],
        s.rip, s.rflags,
        *segments,
        *s.cr,
        s.kernel_gs_base,
    )  # fmt: skip


def vcpu_notes(states: Sequence[X86State], *, elfclass: int) -> bytes:
    """All vCPU notes in QEMU's order: every NT_PRSTATUS, then every QEMU note."""
    if not states:
        return b""
    x86_64 = elfclass == E.ELFCLASS64 and states[0].long_mode
    prstatus = x86_64_prstatus if x86_64 else i386_prstatus
    out = [E.note_bytes(b"CORE", E.NT_PRSTATUS, prstatus(s)) for s in states]
    out += [E.note_bytes(b"QEMU", 0, qemu_cpu_state(s)) for s in states]
    return b"".join(out)
