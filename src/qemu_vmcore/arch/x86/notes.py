"""The vCPU notes QMP dump-guest-memory writes, byte for byte.

Per vCPU, in QEMU's vCPU order: first every CORE/NT_PRSTATUS note, then every
"QEMU" note (QEMUCPUState), then the guest's VMCOREINFO note, exactly as
dump.c's write_elf64_notes() and target/i386/arch_dump.c produce them. The
prstatus layout follows the *first* vCPU's mode: x86_64 when it is in long
mode, i386 otherwise (and always i386 in an ELF32 file).
"""

from __future__ import annotations

from collections.abc import Sequence

from qemu_vmcore.arch.x86.cpu import (
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
from qemu_vmcore.layouts import elf as E

U32 = 0xFFFFFFFF


def x86_64_prstatus(s: X86State) -> bytes:
    """The desc of an x86_64 NT_PRSTATUS note (x86_64_elf_prstatus)."""
    r, seg = s.regs, s.segs
    return E.X86_64_PRSTATUS.pack(
        pid=s.index + 1,  # QEMU writes cpu_index + 1
        r15=r[15], r14=r[14], r13=r[13], r12=r[12], rbp=r[R_EBP], rbx=r[R_EBX],
        r11=r[11], r10=r[10], r9=r[9], r8=r[8], rax=r[R_EAX], rcx=r[R_ECX], rdx=r[R_EDX],
        rsi=r[R_ESI], rdi=r[R_EDI],
        orig_rax=0,  # QEMU leaves it 0
        rip=s.rip, cs=seg[R_CS].selector, eflags=s.rflags, rsp=r[R_ESP],
        ss=seg[R_SS].selector, fs_base=seg[R_FS].base, gs_base=seg[R_GS].base,
        ds=seg[R_DS].selector, es=seg[R_ES].selector, fs=seg[R_FS].selector,
        gs=seg[R_GS].selector,
    )  # fmt: skip


def i386_prstatus(s: X86State) -> bytes:
    """The desc of an i386 NT_PRSTATUS note (x86_elf_prstatus), registers truncated to 32 bits."""
    r, seg = s.regs, s.segs
    return E.I386_PRSTATUS.pack(
        pid=s.index + 1,
        ebx=r[R_EBX] & U32, ecx=r[R_ECX] & U32, edx=r[R_EDX] & U32, esi=r[R_ESI] & U32,
        edi=r[R_EDI] & U32, ebp=r[R_EBP] & U32, eax=r[R_EAX] & U32,
        ds=seg[R_DS].selector, es=seg[R_ES].selector, fs=seg[R_FS].selector,
        gs=seg[R_GS].selector,
        orig_eax=0, eip=s.rip & U32, cs=seg[R_CS].selector, eflags=s.rflags & U32,
        esp=r[R_ESP] & U32, ss=seg[R_SS].selector,
    )  # fmt: skip


def qemu_cpu_state(s: X86State) -> bytes:
    """The desc of a "QEMU" note: QEMUCPUState, version 1, with kernel_gs_base."""
    r, seg = s.regs, s.segs
    head = E.QEMU_CPU_STATE_HEAD.pack(
        version=E.QEMUCPUSTATE_VERSION, size=E.QEMU_CPU_STATE_SIZE,
        rax=r[R_EAX], rbx=r[R_EBX], rcx=r[R_ECX], rdx=r[R_EDX], rsi=r[R_ESI], rdi=r[R_EDI],
        rsp=r[R_ESP], rbp=r[R_EBP], r8=r[8], r9=r[9], r10=r[10], r11=r[11], r12=r[12],
        r13=r[13], r14=r[14], r15=r[15], rip=s.rip, rflags=s.rflags,
    )  # fmt: skip
    segments = (seg[R_CS], seg[R_DS], seg[R_ES], seg[R_FS], seg[R_GS], seg[R_SS],
                s.ldt, s.tr, s.gdt, s.idt)  # fmt: skip
    packed = b"".join(
        E.QEMU_CPU_SEGMENT.pack(selector=sg.selector, limit=sg.limit, flags=sg.flags, base=sg.base)
        for sg in segments
    )
    cr0, cr1, cr2, cr3, cr4 = s.cr
    tail = E.QEMU_CPU_STATE_TAIL.pack(
        cr0=cr0, cr1=cr1, cr2=cr2, cr3=cr3, cr4=cr4, kernel_gs_base=s.kernel_gs_base
    )
    return head + packed + tail


def vcpu_notes(states: Sequence[X86State], *, elfclass: int) -> bytes:
    """All vCPU notes in QEMU's order: every NT_PRSTATUS, then every QEMU note."""
    if not states:
        return b""
    x86_64 = elfclass == E.ELFCLASS64 and states[0].long_mode
    prstatus = x86_64_prstatus if x86_64 else i386_prstatus
    out = [E.note_bytes(b"CORE", E.NT_PRSTATUS, prstatus(s)) for s in states]
    out += [E.note_bytes(b"QEMU", 0, qemu_cpu_state(s)) for s in states]
    return b"".join(out)
