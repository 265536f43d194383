"""aarch64 guests (``-machine virt``): everything that differs by arch.

* :mod:`.cpu` reads each vCPU's CPUARMState as QEMU's dump reads it;
* :mod:`.notes` writes the vCPU notes (NT_PRSTATUS, NT_PRFPREG, NT_ARM_SVE)
  as target/arm/arch_dump.c does;
* :mod:`.paging` is the VMSAv8-64 stage-1 walk of the EL1&0 regime
  (VMCOREINFO confirmation, the kernel log, ``--paging``, which QEMU cannot
  do on arm);
* :mod:`.kernel` is the arm64 kernel's virtual layout from VMCOREINFO.

:data:`ARCH` is the room's :class:`~qemu_vmcore.arch.GuestArch`. Little-endian
AArch64 vCPUs only: AArch32 state, 32-bit ARM CPUs and big-endian kernels
are refused in one line (:class:`.cpu.UnsupportedGuest`).
"""

from __future__ import annotations

from collections.abc import Sequence

from qemu_vmcore.arch import DumpArch
from qemu_vmcore.arch.aarch64 import cpu, kernel, notes, paging
from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.guest.paging import Mapping, PhysicalReader
from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.memory import GuestRange


class AArch64:
    """The aarch64 room (:class:`~qemu_vmcore.arch.GuestArch`)."""

    name = "aarch64"

    def read_vcpus(self, dbg: Debugger, cpus: Sequence[Value]) -> list[cpu.AArch64State]:
        return [cpu.read_state(dbg, c) for c in cpus]

    def dump_arch(
        self, vcpus: Sequence[cpu.AArch64State], ranges: Sequence[GuestRange]
    ) -> DumpArch:
        """ELF64 EM_AARCH64, little-endian (cpu_get_dump_info; big-endian
        kernels were refused when the vCPUs were read)."""
        return DumpArch(
            name="aarch64",
            elfclass=E.ELFCLASS64,
            machine=E.EM_AARCH64,
            byteorder=E.ELFDATA2LSB,
            uts_machine=b"aarch64",
        )

    def vcpu_notes(self, vcpus: Sequence[cpu.AArch64State], arch: DumpArch) -> bytes:
        return notes.vcpu_notes(vcpus)

    def vcpu_page_tables(
        self, vcpus: Sequence[cpu.AArch64State]
    ) -> tuple[paging.AArch64PageTables, ...]:
        return paging.kernel_page_tables(vcpus)

    def kernel_layout(self, info: VmcoreInfo) -> kernel.AArch64KernelLayout | None:
        return kernel.AArch64KernelLayout.from_vmcoreinfo(info)

    def guest_mappings(
        self,
        mem: PhysicalReader,
        vcpus: Sequence[cpu.AArch64State],
        ranges: Sequence[GuestRange],
    ) -> list[Mapping]:
        return paging.guest_mappings(mem, vcpus, ranges)


ARCH = AArch64()
