"""aarch64 guests: everything that differs by arch, as :mod:`qemu_vmcore.arch.x86` has it
for x86 -- among them :mod:`.paging`, the VMSAv8-64 stage-1 walk of the EL1&0 regime
(VMCOREINFO confirmation, the kernel log, ``--paging``, which QEMU cannot do on arm).
"""
