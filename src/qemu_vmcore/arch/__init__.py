"""What differs by guest architecture: one room per arch (``arch/x86``, ``arch/aarch64``).

A room holds the vCPU state read from QEMU's CPUArchState, the ELF class,
machine and note layouts QEMU's ``target/<arch>/arch_dump.c`` writes, the
page-table walk, and the guest kernel's virtual layout (from VMCOREINFO).
Each room offers one :class:`GuestArch` object; the engine (source.py,
extract.py) asks :func:`detect` for the room of the QEMU binary's target and
goes through that object only. The guest layer reaches a room through the
small protocols of :mod:`qemu_vmcore.guest.paging`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from qemu_vmcore.errors import NotQemuError

if TYPE_CHECKING:
    from qemu_vmcore.debugger import Debugger, Value
    from qemu_vmcore.guest.paging import KernelLayout, Mapping, PageTables, PhysicalReader
    from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo
    from qemu_vmcore.qemu.memory import GuestRange


@dataclass(frozen=True)
class DumpArch:
    """What QEMU's ``cpu_get_dump_info()`` decides for a guest's dump.

    :param name: ``x86_64``, ``i386`` or ``aarch64``: the guest arch the dump
        is of (for ``info`` and errors).
    :param elfclass: ``ELFCLASS32`` or ``ELFCLASS64``.
    :param machine: ``e_machine`` (EM_X86_64, EM_386, EM_AARCH64).
    :param byteorder: ``ELFDATA2LSB`` or ``ELFDATA2MSB``.
    :param uts_machine: ``utsname.machine`` of a kdump header, as
        makedumpfile writes it for this arch.
    :param kernel_layout_known: whether the room's ``kernel_layout`` holds
        for this dump's kernel (not for an i386 kernel, whose image is not
        where an x86_64 one's is): the kernel-text PT_LOAD needs it.
    """

    name: str
    elfclass: int
    machine: int
    byteorder: int
    uts_machine: bytes
    kernel_layout_known: bool = True


class VcpuState(Protocol):
    """One vCPU's state as a room reads it; what the engine and ``info`` use."""

    #: QEMU's ``cpu_index`` (0-based).
    index: int

    @property
    def pc(self) -> int:
        """The program counter (rip, pc)."""
        ...

    @property
    def mode(self) -> str:
        """The execution mode, in the arch's words (``long``, ``EL1h``...)."""
        ...

    @property
    def ran(self) -> bool:
        """Whether the vCPU left its reset state in a way that needs written
        RAM (paging or the MMU on, protected mode): a guest that ran."""
        ...

    def registers(self) -> dict[str, int]:
        """The few registers ``info`` shows after the mode, by name, in order."""
        ...


class GuestArch(Protocol):
    """Everything the engine asks of one guest architecture."""

    #: The room's name, e.g. ``x86`` or ``aarch64``.
    name: str

    def read_vcpus(self, dbg: Debugger, cpus: Sequence[Value]) -> list[VcpuState]:
        """Each vCPU's state, from the CPUState pointers in QEMU's order."""
        ...

    def dump_arch(self, vcpus: Sequence[VcpuState], ranges: Sequence[GuestRange]) -> DumpArch:
        """The ELF class, machine and byte order QEMU's dump would pick."""
        ...

    def vcpu_notes(self, vcpus: Sequence[VcpuState], arch: DumpArch) -> bytes:
        """Every vCPU note, in QEMU's order and layout."""
        ...

    def vcpu_page_tables(self, vcpus: Sequence[VcpuState]) -> tuple[PageTables, ...]:
        """The kernel page tables the vCPUs run on, for confirming VMCOREINFO."""
        ...

    def kernel_layout(self, info: VmcoreInfo) -> KernelLayout | None:
        """The kernel's virtual layout as ``info`` describes it; None when it
        lacks what the arch needs."""
        ...

    def guest_mappings(
        self, mem: PhysicalReader, vcpus: Sequence[VcpuState], ranges: Sequence[GuestRange]
    ) -> list[Mapping]:
        """The guest's virtual memory map, for ``--paging``."""
        ...


#: QEMU's CPU type of each target we dump (the ArchCPU struct in its debug
#: info), and the room that dumps it. A QEMU binary is built for one target,
#: so the first type found names the guest's arch.
CPU_TYPES = (("X86CPU", "x86"), ("ARMCPU", "aarch64"))


def detect(dbg: Debugger) -> GuestArch:
    """The room of the guest arch QEMU was built for, from its debug info.

    :raises NotQemuError: a QEMU target we do not dump.
    """
    for type_name, room in CPU_TYPES:
        if dbg.has_type(type_name):
            return room_named(room)
    raise NotQemuError(
        "this QEMU's target is not one qemu-vmcore dumps: its debug info has none of "
        f"{', '.join(t for t, _ in CPU_TYPES)} (x86_64, i386 and aarch64 guests are supported)"
    )


def room_named(name: str) -> GuestArch:
    """The :class:`GuestArch` of room ``name`` (imported on first use)."""
    if name == "x86":
        from qemu_vmcore.arch.x86 import ARCH
    elif name == "aarch64":
        from qemu_vmcore.arch.aarch64 import ARCH
    else:
        raise KeyError(name)
    return ARCH
