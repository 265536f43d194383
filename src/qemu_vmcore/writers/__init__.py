"""Writers: turn guest-physical memory, vCPU notes and options into a vmcore file."""
