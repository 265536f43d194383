"""qemu-vmcore: the guest's vmcore, rebuilt from the core dump of a dead QEMU."""

__version__ = "0.1.0"
