"""What differs by guest architecture: one room per arch (``arch/x86``).

A room holds the vCPU state read from QEMU's CPUArchState, the ELF class,
machine and note layouts QEMU's ``target/<arch>/arch_dump.c`` writes, and
the page-table walk. The guest layer reaches a room only through the small
protocols of :mod:`qemu_vmcore.guest.paging`, which the engine (source.py,
extract.py) fills from the room of the guest's architecture.
"""
