"""Binary layouts, declared with named fields: ELF (:mod:`.elf`) and the
kdump-compressed (diskdump) format (:mod:`.kdump`)."""
