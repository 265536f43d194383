"""The x86_64 kernel's virtual layout, as its VMCOREINFO describes it.

The kernel image is mapped at ``__START_KERNEL_map`` (0xffffffff80000000)
for ``KERNEL_IMAGE_SIZE`` bytes, ``phys_base`` bytes into guest-physical
memory (``__pa_symbol``); the kernel's own page tables are
``init_top_pgt``, 5-level when ``pgtable_l5_enabled``.
"""

from __future__ import annotations

from dataclasses import dataclass

from qemu_vmcore.arch.x86.paging import X86PageTables
from qemu_vmcore.guest.paging import Mapping, PhysicalReader
from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo

START_KERNEL_MAP = 0xFFFFFFFF80000000
#: x86_64's largest KERNEL_IMAGE_SIZE (with KASLR); modules start above it.
KERNEL_IMAGE_MAX = 1 << 30
U64_END = 1 << 64


@dataclass(frozen=True)
class X86KernelLayout:
    """:class:`~qemu_vmcore.guest.paging.KernelLayout` of an x86_64 kernel.

    :param image_size: bytes mapped from START_KERNEL_MAP (KERNEL_IMAGE_SIZE).
    :param stext: SYMBOL(_stext), or None when the note lacks it.
    """

    tables: X86PageTables | None
    phys_base: int
    image_size: int
    stext: int | None

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> X86KernelLayout:
        phys_base = info.number("phys_base") or 0
        size = info.number("KERNEL_IMAGE_SIZE") or KERNEL_IMAGE_MAX
        # The note is guest data: clamp what no kernel can have.
        size = size if 0 < size <= KERNEL_IMAGE_MAX else KERNEL_IMAGE_MAX
        layout = cls(None, phys_base, size, info.symbol("_stext"))
        pgt = info.symbol("init_top_pgt")
        pgt_pa = layout.image_pa(pgt) if pgt is not None else None
        if pgt_pa is None:
            return layout
        la57 = bool(info.number("pgtable_l5_enabled"))
        return cls(X86PageTables.ia32e(pgt_pa, la57), phys_base, size, layout.stext)

    def image_pa(self, vaddr: int) -> int | None:
        if not START_KERNEL_MAP <= vaddr < START_KERNEL_MAP + self.image_size:
            return None
        return vaddr - START_KERNEL_MAP + self.phys_base

    def text_load(self, mem: PhysicalReader) -> Mapping | None:
        """From SYMBOL(_stext) to the end of the image mapping."""
        if self.stext is None:
            return None
        pa = self.image_pa(self.stext)
        if pa is None or pa < 0:
            return None
        return Mapping(
            paddr=pa, vaddr=self.stext, size=START_KERNEL_MAP + self.image_size - self.stext
        )
