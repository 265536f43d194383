"""The arm64 kernel's virtual layout, as its VMCOREINFO describes it.

arm64's ``arch_crash_save_vmcoreinfo`` adds, to the generic SYMBOL(_stext),
SYMBOL(swapper_pg_dir) and PAGESIZE:

* ``NUMBER(VA_BITS)`` and ``NUMBER(TCR_EL1_T1SZ)``: the kernel's VA size;
* ``NUMBER(kimage_voffset)``: kernel-image virtual minus physical address,
  so ``__pa_symbol(x) = x - kimage_voffset``;
* ``NUMBER(PHYS_OFFSET)``: the physical address of the start of RAM as the
  linear map sees it (makedumpfile's kdump ``phys_base`` on arm64);
* ``KERNELOFFSET``: the KASLR displacement.

The image starts at ``_text``, ``_stext`` rounded down to MIN_KIMG_ALIGN
(2 MiB: the image is placed, and KASLR moves it, in such steps), and ends
with ``swapper_pg_dir``, the last page the linker script puts before
``_end``. Addresses outside are not the image's: vmalloc and modules sit
right around it, so nothing past its end is translated by the image rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from qemu_vmcore.arch.aarch64.paging import AArch64PageTables
from qemu_vmcore.guest.paging import Mapping
from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo

#: MIN_KIMG_ALIGN: the kernel image's alignment (arch/arm64/include/asm/boot.h).
KIMAGE_ALIGN = 2 << 20
#: Our bound on the image's size when swapper_pg_dir does not bound it.
IMAGE_MAX = 256 << 20
PAGE_SIZES = (4096, 16384, 65536)


@dataclass(frozen=True)
class AArch64KernelLayout:
    """:class:`~qemu_vmcore.guest.paging.KernelLayout` of an arm64 kernel.

    :param image: the kernel image's virtual ``(start, end)`` (end exclusive).
    :param voffset: NUMBER(kimage_voffset).
    """

    tables: AArch64PageTables | None
    phys_base: int
    image: tuple[int, int]
    voffset: int
    stext: int

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> AArch64KernelLayout | None:
        """None when the note lacks _stext or kimage_voffset (not an arm64 note)."""
        stext, voffset = info.symbol("_stext"), info.number("kimage_voffset")
        if stext is None or voffset is None or not 0 <= voffset < 1 << 64:
            return None
        start = stext & ~(KIMAGE_ALIGN - 1)
        page = _page_size(info)
        pgd = info.symbol("swapper_pg_dir")
        end = pgd + page if pgd is not None and start < pgd < start + IMAGE_MAX else start
        end = end if end > stext else start + IMAGE_MAX
        layout = cls(None, info.number("PHYS_OFFSET") or 0, (start, end), voffset, stext)
        pgd_pa = layout.image_pa(pgd) if pgd is not None else None
        va_bits = _va_bits(info)
        if pgd_pa is None or va_bits is None:
            return layout
        tables = AArch64PageTables.kernel(pgd_pa, va_bits, page)
        return cls(tables, layout.phys_base, layout.image, voffset, stext)

    def image_pa(self, vaddr: int) -> int | None:
        start, end = self.image
        if not start <= vaddr < end:
            return None
        return (vaddr - self.voffset) % (1 << 64)

    def text_load(self) -> Mapping | None:
        """From SYMBOL(_stext) to the end of the image (swapper_pg_dir)."""
        pa = self.image_pa(self.stext)
        if pa is None:
            return None
        return Mapping(paddr=pa, vaddr=self.stext, size=self.image[1] - self.stext)


def _page_size(info: VmcoreInfo) -> int:
    page = info.fields.get("PAGESIZE")
    size = int(page) if page is not None and page.isdigit() else 4096
    return size if size in PAGE_SIZES else 4096


def _va_bits(info: VmcoreInfo) -> int | None:
    """The kernel half's VA size: 64 - TCR_EL1.T1SZ where the note has it
    (a 52-bit kernel on 48-bit hardware runs with 48), else NUMBER(VA_BITS)."""
    t1sz = info.number("TCR_EL1_T1SZ")
    bits = 64 - t1sz if t1sz is not None else info.number("VA_BITS")
    return bits if bits is not None and 25 <= bits <= 52 else None
