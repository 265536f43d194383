"""qemu-vmcore: the guest's vmcore, rebuilt from the core dump of a dead QEMU."""

__version__ = "0.1.0"
__all__ = ["guest_program"]


def __getattr__(name: str):
    # Loaded on first use: drgn's program (and what it needs) is not part of
    # every command's start-up.
    if name == "guest_program":
        from qemu_vmcore.program import guest_program

        return guest_program
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
