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
(2 MiB: the image is placed, and KASLR moves it, in such steps). VMCOREINFO
does not say where it ends (``_end``), so :func:`__pa_symbol` is applied up
to :data:`IMAGE_MAX` past its start, as x86 applies it to its whole image
mapping; the kernel-text PT_LOAD, which consumers take as the truth for
every address in it, ends where the kernel's own tables stop mapping the
image's pages at ``vaddr - kimage_voffset`` (vmalloc, right after ``_end``,
maps other pages, and the ``__init`` hole freed at boot lies before ``.data``).
"""

from __future__ import annotations

from dataclasses import dataclass

from qemu_vmcore.arch.aarch64.paging import AArch64PageTables
from qemu_vmcore.guest.paging import Mapping, PhysicalReader
from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo

#: MIN_KIMG_ALIGN: the kernel image's alignment (arch/arm64/include/asm/boot.h).
KIMAGE_ALIGN = 2 << 20
#: Our bound on the image's size (a Debian arm64 kernel's is about 40 MiB,
#: BSS included).
IMAGE_MAX = 256 << 20
#: The steps in which the image's end is looked for: SEGMENT_ALIGN, to which
#: the linker script aligns each of the image's segments.
SEGMENT_ALIGN = 64 << 10
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
        if start + IMAGE_MAX > 1 << 64:
            return None
        page = _page_size(info)
        pgd = info.symbol("swapper_pg_dir")
        image = (start, start + IMAGE_MAX)
        layout = cls(None, info.number("PHYS_OFFSET") or 0, image, voffset, stext)
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

    def text_load(self, mem: PhysicalReader) -> Mapping | None:
        """From SYMBOL(_stext) to the image's end, as the kernel's own tables
        map it; None without the tables (the end would be a guess)."""
        pa = self.image_pa(self.stext)
        end = self.image_end(mem)
        if pa is None or end is None or end <= self.stext:
            return None
        return Mapping(paddr=pa, vaddr=self.stext, size=end - self.stext)

    def image_end(self, mem: PhysicalReader) -> int | None:
        """The end of the last SEGMENT_ALIGN step of the image the kernel's
        tables map at ``vaddr - kimage_voffset`` (IMAGE_MAX / 64 KiB
        translations at most); None without tables."""
        if self.tables is None:
            return None
        end = None
        cached = _TablePages(mem)  # the walks share their tables: read each once
        for vaddr in range(self.stext, self.image[1], SEGMENT_ALIGN):
            if self.tables.translate(cached, vaddr) == self.image_pa(vaddr):
                end = vaddr + SEGMENT_ALIGN
        return end


class _TablePages:
    """A :class:`PhysicalReader` that reads small reads' whole 4 KiB page once.

    The image-end search translates thousands of neighbouring addresses,
    whose walks read the same few tables entry by entry; this turns those
    reads into one read per table page. Bounded: at most MAX_PAGES kept.
    """

    MAX_PAGES = 1024

    def __init__(self, mem: PhysicalReader) -> None:
        self.mem = mem
        self.pages: dict[int, bytes] = {}

    def read(self, gpa: int, size: int) -> bytes:
        page, off = gpa & ~0xFFF, gpa & 0xFFF
        if off + size > 0x1000:
            return self.mem.read(gpa, size)
        data = self.pages.get(page)
        if data is None:
            if len(self.pages) >= self.MAX_PAGES:
                self.pages.clear()
            data = self.pages[page] = self.mem.read(page, 0x1000)
        return data[off : off + size]


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
