"""QEMU-side knowledge: what QEMU's structures mean, read through the debugger protocol."""
