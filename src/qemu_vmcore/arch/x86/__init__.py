"""x86 guests (x86_64 and i386): everything that differs by arch.

* :mod:`.cpu` reads each vCPU's CPUX86State and picks the dump's ELF class
  and machine as QEMU does;
* :mod:`.notes` writes the vCPU notes (NT_PRSTATUS, QEMUCPUState) as
  target/i386/arch_dump.c does;
* :mod:`.paging` walks the guest's page tables (VMCOREINFO confirmation,
  the kernel log, ``--paging``);
* :mod:`.kernel` is the x86_64 kernel's virtual layout from VMCOREINFO.

:data:`ARCH` is the room's :class:`~qemu_vmcore.arch.GuestArch`.
"""

from __future__ import annotations

from collections.abc import Sequence

from qemu_vmcore.arch import DumpArch
from qemu_vmcore.arch.x86 import cpu, kernel, notes, paging
from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.guest.paging import Mapping, PhysicalReader
from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.memory import GuestRange


class X86:
    """The x86 room (:class:`~qemu_vmcore.arch.GuestArch`)."""

    name = "x86"

    def read_vcpus(self, dbg: Debugger, cpus: Sequence[Value]) -> list[cpu.X86State]:
        return [cpu.read_state(dbg, c) for c in cpus]

    def dump_arch(self, vcpus: Sequence[cpu.X86State], ranges: Sequence[GuestRange]) -> DumpArch:
        elfclass, machine = cpu.dump_arch(vcpus[0].long_mode if vcpus else None, list(ranges))
        x86_64 = machine == E.EM_X86_64
        return DumpArch(
            name="x86_64" if x86_64 else "i386",
            elfclass=elfclass,
            machine=machine,
            byteorder=E.ELFDATA2LSB,
            uts_machine=b"x86_64" if x86_64 else b"i686",
            kernel_layout_known=x86_64,
        )

    def vcpu_notes(self, vcpus: Sequence[cpu.X86State], arch: DumpArch) -> bytes:
        return notes.vcpu_notes(vcpus, elfclass=arch.elfclass)

    def vcpu_page_tables(self, vcpus: Sequence[cpu.X86State]) -> tuple[paging.X86PageTables, ...]:
        return paging.kernel_page_tables(vcpus)

    def kernel_layout(self, info: VmcoreInfo) -> kernel.X86KernelLayout:
        return kernel.X86KernelLayout.from_vmcoreinfo(info)

    def guest_mappings(
        self, mem: PhysicalReader, vcpus: Sequence[cpu.X86State], ranges: Sequence[GuestRange]
    ) -> list[Mapping]:
        return paging.guest_mappings(mem, vcpus, ranges)


ARCH = X86()
