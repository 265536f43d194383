"""qemu.render: QEMU's render_memory_region() over synthetic MemoryRegion trees.

The trees are fakes of the debugger's Value protocol. Each rendering is held
against a point-wise oracle (which region does an address reach, searching
as QEMU's rules say: aliases followed, subregions in list order before the
container itself), and corrupt trees (cycles, depth, sizes) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.qemu import render

U64 = 1 << 64


@dataclass(eq=False)
class Region:
    name: str
    addr: int = 0
    size: int = 0
    enabled: int = 1
    terminates: int = 0
    alias: Region | None = None
    alias_offset: int = 0
    subs: list[Region] = field(default_factory=list)
    next: Region | None = None  # set by link()

    @property
    def ptr(self) -> int:
        return 0x1000 + id(self) % (1 << 40) * 16


class Fake:
    """A Value: ``obj`` is a Region (a pointer to one), an int, or a list head."""

    def __init__(self, dbg: FakeDbg, obj: object, what: str = "") -> None:
        self.dbg, self.obj, self.what = dbg, obj, what

    def __int__(self) -> int:
        if isinstance(self.obj, Region):
            return self.obj.ptr
        if self.obj is None:
            return 0
        assert isinstance(self.obj, int), self.obj
        return int(self.obj)

    def address(self) -> int:
        assert self.what == "size"
        key = len(self.dbg.int128)
        self.dbg.int128[key] = self.obj
        return key

    def member(self, name: str) -> Fake:
        o = self.obj
        if self.what == "head":
            assert name == "tqh_first"
            return Fake(self.dbg, o.subs[0] if o.subs else None)
        if self.what == "link":
            assert name == "tqe_next"
            return Fake(self.dbg, o.next)
        assert isinstance(o, Region)
        if name == "subregions":
            return Fake(self.dbg, o, "head")
        if name == "subregions_link":
            return Fake(self.dbg, o, "link")
        if name == "name":
            return Fake(self.dbg, 0)
        return Fake(self.dbg, getattr(o, name), name)


class FakeDbg:
    def __init__(self, root: Region) -> None:
        self.root = root
        self.int128: dict[int, int] = {}

    def has_variable(self, name: str) -> bool:
        return name == "address_space_memory"

    def variable(self, name: str) -> Fake:
        as_ = Region("as")
        fake = Fake(self, as_)
        fake.member = lambda n: Fake(self, self.root if n == "root" else None)  # type: ignore[method-assign]
        return fake

    def read(self, key: int, size: int) -> bytes:
        return self.int128[key].to_bytes(16, "little", signed=True)


def link(r: Region, seen: set[int] | None = None) -> Region:
    """Set each region's next sibling (once per region: a cyclic tree ends)."""
    seen = set() if seen is None else seen
    if id(r) in seen:
        return r
    seen.add(id(r))
    for a, b in zip(r.subs, r.subs[1:], strict=False):
        a.next = b
    for s in r.subs:
        link(s, seen)
    return r


def rendered(root: Region) -> list[tuple[int, int, str, int]]:
    dbg = FakeDbg(link(root))
    out = render.rendered_ranges(dbg)  # type: ignore[arg-type]
    return [(f.start, f.start + f.size, f.mr.obj.name, f.offset_in_region) for f in out]


def oracle(mr: Region, base: int, x: int, clip: tuple[int, int]):
    """The region (and offset in it) that address ``x`` reaches, or None."""
    if not mr.enabled:
        return None
    base += mr.addr
    start, end = max(base, clip[0]), min(base + mr.size, clip[1])
    if not start <= x < end:
        return None
    if mr.alias is not None:
        return oracle(mr.alias, base - mr.alias.addr - mr.alias_offset, x, (start, end))
    for sub in mr.subs:
        hit = oracle(sub, base, x, (start, end))
        if hit:
            return hit
    return (mr.name, x - base) if mr.terminates else None


def test_a_pc_like_map():
    """pc_memory_init()'s shape: RAM aliased below and above a hole, VGA over it."""
    ram = Region("pc.ram", size=0x10000, terminates=1)
    low = Region("ram-below-4g", size=0xC000, alias=ram)
    high = Region("ram-above-4g", addr=0x20000, size=0x8000, alias=ram, alias_offset=0x8000)
    vga = Region("vga", addr=0xA000, size=0x2000, terminates=1)
    off = Region("disabled", addr=0, size=0x1000, enabled=0, terminates=1)
    root = Region("system", size=U64, subs=[off, vga, low, high])
    assert rendered(root) == [
        (0, 0xA000, "pc.ram", 0),
        (0xA000, 0xC000, "vga", 0),
        (0x20000, 0x28000, "pc.ram", 0x8000),
    ]


def test_priority_order_and_container_fill():
    """An earlier subregion (higher priority) wins; the container fills the gaps."""
    a = Region("a", addr=0x1000, size=0x2000, terminates=1)
    b = Region("b", addr=0x2000, size=0x2000, terminates=1)
    root = Region("c", size=0x5000, terminates=1, subs=[a, b])
    assert rendered(root) == [
        (0, 0x1000, "c", 0),
        (0x1000, 0x3000, "a", 0),
        (0x3000, 0x4000, "b", 0x1000),
        (0x4000, 0x5000, "c", 0x4000),
    ]


def _tree(draw, depth: int, pool: list[Region]) -> Region:
    n = len(pool)
    r = Region(
        f"r{n}",
        addr=draw(st.integers(0, 12)) * 0x1000,
        size=draw(st.integers(0, 12)) * 0x1000,
        enabled=draw(st.sampled_from([1, 1, 1, 0])),
        terminates=draw(st.booleans()),
    )
    pool.append(r)
    if depth and draw(st.integers(0, 3)) == 0 and len(pool) > 1:
        r.alias = draw(st.sampled_from(pool[:-1]))
        r.alias_offset = draw(st.integers(0, 4)) * 0x1000
    elif depth:
        r.subs = [_tree(draw, depth - 1, pool) for _ in range(draw(st.integers(0, 3)))]
    return r


@st.composite
def trees(draw):
    pool: list[Region] = []
    root = _tree(draw, 3, pool)
    root.addr = 0
    return root


@settings(max_examples=300, deadline=None)
@given(trees())
def test_same_as_the_point_oracle(root):
    # An alias may point at a region that also sits in the tree (as QEMU's
    # pc.ram does): rendering must follow it without treating it as a cycle.
    try:
        got = rendered(root)
    except QemuStateError as e:
        assert "contains itself" in e.message
        return
    points = sorted({p for s, e, *_ in got for p in (s, e - 1)} | set(range(0, 0x20000, 0x800)))
    for x in points:
        hit = next(((name, off + x - s) for s, e, name, off in got if s <= x < e), None)
        assert hit == oracle(root, 0, x, (0, U64)), hex(x)
    assert all(a[1] <= b[0] for a, b in zip(got, got[1:], strict=False))  # sorted, disjoint


def test_a_cycle_is_refused():
    a = Region("a", size=0x1000)
    b = Region("b", size=0x1000, subs=[a])
    a.subs = [b]
    root = Region("root", size=U64, subs=[b])
    with pytest.raises(QemuStateError, match="contains itself"):
        rendered(root)


def test_an_alias_cycle_is_refused():
    a = Region("a", size=0x1000)
    b = Region("b", size=0x1000, alias=a)
    a.alias = b
    with pytest.raises(QemuStateError, match="contains itself"):
        rendered(Region("root", size=U64, subs=[b]))


def test_depth_and_node_count_are_bounded(monkeypatch):
    deep = Region("leaf", size=0x1000, terminates=1)
    for i in range(render.MAX_DEPTH + 2):
        deep = Region(f"c{i}", size=0x1000, subs=[deep])
    with pytest.raises(QemuStateError, match="deeper than"):
        rendered(deep)
    monkeypatch.setattr(render, "MAX_REGIONS", 50)
    wide = Region("root", size=U64, subs=[Region(f"s{i}", size=0) for i in range(60)])
    # The list of one container, or the nodes in all: either bound stops it.
    with pytest.raises(QemuStateError, match="over 50|longer than 50"):
        rendered(wide)


def test_an_implausible_size_is_refused():
    root = Region("root", size=U64 + 1)
    with pytest.raises(QemuStateError, match="implausible"):
        rendered(root)
