"""Every QEMU name a profile holds: the one declaration of what the qemu/
and arch/ layers read through the debug info.

``qemu-vmcore profile`` exports exactly these from DWARF (see
debugger/profile_make.py), and the profile backend refuses, loudly, any
name outside them. Structs are named by tag, by the typedef they were
reached through, or (anonymous ones) by the member path that leads to them
(``CPUArchState.vfp``). The declaration is made by recording what extract,
info and dmesg read on every rig case (tests/rig/record_profile_names.py
--write), and tests/e2e/test_e2e_profiles.py checks that a recording on
each rig case reads nothing outside it. A new field read by the qemu/ layer
is added here by that script (or by hand, for a path no rig case takes).
"""

from qemu_vmcore.debugger.profile_format import Names

HEADER = __doc__

DECLARED = Names(
    variables={
        "address_space_memory",
        "cpus",
        "cpus_queue",
        "current_machine",
        "ram_list",
    },
    types={
        "ARMCPU",
        "DeviceState",
        "HostMemoryBackend",
        "ICH9LPCState",
        "MachineClass",
        "MemoryRegion",
        "Object",
        "PCDIMMDevice",
        "PIIX4PMState",
        "VMCoreInfoState *",
        "VirtIOMEM",
        "X86CPU",
        "X86MachineState",
    },
    static_locals={
        ("vmcoreinfo_realize", "vmcoreinfo_state", "VMCoreInfoState *"),
    },
    constants={
        "ARM_FEATURE_AARCH64",
        "ARM_FEATURE_EL2",
        "ARM_FEATURE_EL3",
        "FPST_A32",
        "FPST_A32_F16",
        "FPST_A64",
        "FPST_A64_F16",
        "FPST_STD",
        "FPST_STD_F16",
        "float_flag_divbyzero",
        "float_flag_inexact",
        "float_flag_input_denormal",
        "float_flag_input_denormal_flushed",
        "float_flag_input_denormal_used",
        "float_flag_invalid",
        "float_flag_output_denormal",
        "float_flag_output_denormal_flushed",
        "float_flag_overflow",
        "float_flag_underflow",
    },
    members={
        "ARMISARegisters": {
            "id_aa64pfr0",
        },
        "ARMVQMap": {
            "map",
        },
        "AccelState": {
            "parent_obj",
        },
        "AddrRange": {
            "size",
            "start",
        },
        "AddressSpace": {
            "current_map",
            "root",
        },
        "ArchCPU": {
            "env",
            "isar",
            "sve_max_vq",
            "sve_vq",
        },
        "CPUArchState": {
            "CF",
            "NF",
            "VF",
            "ZF",
            "aarch64",
            "btype",
            "cp15",
            "cr",
            "daif",
            "eflags",
            "eip",
            "features",
            "gdt",
            "hflags",
            "idt",
            "kernelgsbase",
            "ldt",
            "pc",
            "pstate",
            "regs",
            "segs",
            "svcr",
            "tr",
            "v7m",
            "vfp",
            "xregs",
        },
        "CPUArchState.cp15": {
            "sctlr_el",
            "tcr_el",
            "ttbr0_el",
            "ttbr1_el",
        },
        "CPUArchState.v7m": {
            "ltpsize",
        },
        "CPUArchState.vfp": {
            "fp_status",
            "fp_status_f16",
            "fpcr",
            "fpsr",
            "pregs",
            "qc",
            "standard_fp_status",
            "standard_fp_status_f16",
            "vec_len",
            "vec_stride",
            "xregs",
            "zcr_el",
            "zregs",
        },
        "CPUState": {
            "cpu_index",
            "node",
        },
        "CPUState.node": {
            "tqe_next",
        },
        "CPUTailQ": {
            "tqh_first",
        },
        "CpuTopology": {
            "cpus",
            "max_cpus",
        },
        "DeviceState": {
            "id",
        },
        "FlatRange": {
            "addr",
            "mr",
            "offset_in_region",
        },
        "FlatView": {
            "nr",
            "nr_allocated",
            "ranges",
        },
        "HostMemoryBackend": {
            "dump",
        },
        "ICH9LPCPMRegs": {
            "acpi_memory_hotplug",
        },
        "ICH9LPCState": {
            "pm",
        },
        "MachineClass": {
            "alias",
            "name",
        },
        "MachineState": {
            "accelerator",
            "dump_guest_core",
            "parent_obj",
            "ram",
            "ram_size",
            "smp",
        },
        "MemHotplugState": {
            "dev_count",
            "devs",
        },
        "MemStatus": {
            "dimm",
        },
        "MemoryRegion": {
            "addr",
            "alias",
            "alias_offset",
            "enabled",
            "name",
            "nonvolatile",
            "owner",
            "parent_obj",
            "ram",
            "ram_block",
            "ram_device",
            "rdm",
            "readonly",
            "rom_device",
            "size",
            "subregions",
            "subregions_link",
            "terminates",
        },
        # qemu/render.py: the MemoryRegion tree, read only when a cut core
        # lost the FlatView (no recording on a whole core takes this path).
        "MemoryRegion.subregions": {
            "tqh_first",
        },
        "MemoryRegion.subregions_link": {
            "tqe_next",
        },
        "Object": {
            "class",
            "parent",
        },
        "ObjectClass": {
            "type",
        },
        "PCDIMMDevice": {
            "hostmem",
        },
        "PIIX4PMState": {
            "acpi_memory_hotplug",
        },
        "RAMBlock": {
            "flags",
            "host",
            "idstr",
            "max_length",
            "mr",
            "next",
            "used_length",
        },
        "RAMBlock.next": {
            "le_next",
        },
        "RAMList": {
            "blocks",
        },
        "RAMList.blocks": {
            "lh_first",
        },
        "SegmentCache": {
            "base",
            "flags",
            "limit",
            "selector",
        },
        "TypeImpl": {
            "name",
        },
        "VMCoreInfoState": {
            "has_vmcoreinfo",
            "vmcoreinfo",
        },
        "VirtIOMEM": {
            "bitmap",
            "bitmap_size",
            "block_size",
        },
        "X86MachineState": {
            "above_4g_mem_size",
            "acpi_dev",
            "below_4g_mem_size",
        },
        "float_status": {
            "float_exception_flags",
        },
        "fw_cfg_vmcoreinfo": {
            "guest_format",
            "paddr",
            "size",
        },
    },
)
