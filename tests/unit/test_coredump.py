"""coredumpctl lookup logic, on entries as coredumpctl --json=short lists them."""

from __future__ import annotations

import json

import pytest

from qemu_vmcore.host.coredump import CoredumpError, Entry, select, storage

# As printed by systemd 252's `coredumpctl --json=short list` (one line).
LISTED = json.loads(
    '[{"time":1700000000000000,"pid":111,"uid":0,"gid":0,"sig":11,"corefile":"present",'
    '"exe":"/usr/bin/sleep","size":4096},'
    '{"time":1700000002000000,"pid":4242,"uid":0,"gid":0,"sig":6,"corefile":"present",'
    '"exe":"/usr/bin/qemu-system-x86_64","size":63130},'
    '{"time":1700000001000000,"pid":222,"uid":0,"gid":0,"sig":6,"corefile":"missing",'
    '"exe":"/usr/bin/qemu-system-x86_64","size":0},'
    '{"time":1700000003000000,"pid":333,"uid":0,"gid":0,"sig":6,"corefile":"present",'
    '"exe":"/opt/qemu/bin/qemu-system-aarch64","size":1}]'
)
ENTRIES = [Entry.from_json(r) for r in LISTED]


@pytest.mark.parametrize(
    "match, pid",
    [
        ("4242", 4242),
        ("222", 222),
        ("qemu-system-x86_64", 4242),  # the newest of that name
        ("/usr/bin/qemu-system-x86_64", 4242),
        ("", 333),  # the newest core of any QEMU
        ("sleep", 111),
    ],
)
def test_select(match, pid):
    assert select(ENTRIES, match).pid == pid


@pytest.mark.parametrize("match", ["999", "qemu", "/usr/bin/qemu", "nothing"])
def test_select_without_a_match(match):
    with pytest.raises(CoredumpError, match="knows no core"):
        select(ENTRIES, match)


def test_select_in_an_empty_list():
    with pytest.raises(CoredumpError, match="0 cores listed"):
        select([], "")


def test_missing_core_file_is_refused_before_asking_for_it():
    with pytest.raises(CoredumpError, match="pid 222 .* is missing"):
        storage(next(e for e in ENTRIES if e.pid == 222))


def test_entry_tolerates_odd_rows():
    e = Entry.from_json({"pid": "7"})
    assert (e.pid, e.time, e.exe, e.corefile) == (7, 0, "", "")
