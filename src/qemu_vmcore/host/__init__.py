"""The core file, read as the host address space of the QEMU process that wrote it.

The process core (:mod:`.core`), its lookup through coredumpctl
(:mod:`.coredump`), decompression of .xz/.zst/.lz4 cores (:mod:`.compressed`)
and the facts read from QEMU's executable file (:mod:`.executable`).
"""
