"""Per-architecture knowledge of the guest (page tables), below the guest layer.

Each architecture has its own room (``arch/x86``); the guest layer reaches
it only through the small protocols of :mod:`qemu_vmcore.guest.paging`,
which the engine (source.py, extract.py) fills from the room of the
guest's architecture.
"""
