"""x86 guests: page tables (:mod:`qemu_vmcore.arch.x86.paging`)."""
