"""End to end: the map rendered from the MemoryRegion tree equals QEMU's FlatView.

qemu/render.py renders ``address_space_memory.root`` by QEMU's rules, for
cut cores whose FlatView lies past the cut. Here, on every rig case, where
both can be read, the rendering is held against the FlatView QEMU itself
rendered: every range (RAM or not) and the guest RAM map built from them.
"""

from __future__ import annotations

import pytest
from support import rig
from support.runs import run_cli

from qemu_vmcore.qemu import memory, render
from qemu_vmcore.source import open_qemu_core

pytestmark = pytest.mark.rig


def _normalised(ranges: list[memory.FlatRange]) -> list[tuple[int, int, int, int]]:
    """(start, end, mr, offset_in_region), neighbours of one region joined.

    flatview_simplify() joins neighbours whose flags also match (readonly,
    romd_mode, dirty logging), which render.py does not track; joining all
    contiguous pieces of one region on both sides compares the same thing.
    """
    out: list[tuple[int, int, int, int]] = []
    for fr in ranges:
        mr = int(fr.mr)
        if out:
            s, e, m, off = out[-1]
            if e == fr.start and m == mr and off + (e - s) == fr.offset_in_region:
                out[-1] = (s, fr.start + fr.size, m, off)
                continue
        out.append((fr.start, fr.start + fr.size, mr, fr.offset_in_region))
    return out


@pytest.mark.parametrize("name", rig.DWARF_CASES)
def test_rendered_tree_equals_the_flatview(rig_case, name):
    case = rig_case(name)
    with open_qemu_core(case.core, strict=False) as qc:
        flat = memory.flatview_ranges(qc.dbg)
        rendered = render.rendered_ranges(qc.dbg)
        assert _normalised(rendered) == _normalised(flat)
        rebuilt = memory.join_sections(memory.ram_sections(qc.dbg, rendered))
        assert rebuilt == qc.ranges
        assert qc.map_source.kind == memory.FLATVIEW  # a whole core: QEMU's own


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    made = {}

    def get(case: rig.Case):
        if case.qemu_binary not in made:
            out = tmp_path_factory.mktemp("p") / "qemu.json"
            run_cli("profile", case.qemu_binary, "-o", out, check=True)
            made[case.qemu_binary] = out
        return made[case.qemu_binary]

    return get


@pytest.mark.parametrize("name", ["q72-pc-512", "q10-q35-4608", "a72-virt-512", "a10-virt-4g"])
def test_rendering_reads_only_what_a_profile_holds(rig_case, profiles, name):
    """Through a profile (whose backend refuses any name it lacks) the tree
    renders the same: the names render.py reads are declared."""
    case = rig_case(name)
    with open_qemu_core(case.core, profile=profiles(case)) as qc:
        rendered = render.rendered_ranges(qc.dbg)
        assert _normalised(rendered) == _normalised(memory.flatview_ranges(qc.dbg))
