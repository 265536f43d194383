"""x86 guests (x86_64 and i386): everything that differs by arch.

* :mod:`.cpu` reads each vCPU's CPUX86State and picks the dump's ELF class
  and machine as QEMU does;
* :mod:`.notes` writes the vCPU notes (NT_PRSTATUS, QEMUCPUState) as
  target/i386/arch_dump.c does;
* :mod:`.paging` walks the guest's page tables (VMCOREINFO confirmation,
  the kernel log, ``--paging``).
"""
