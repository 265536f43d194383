"""Shared fixtures: the rig's cases (real QEMU cores) and a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import rig


@pytest.fixture(scope="session")
def rig_case():
    """``rig_case(name)`` returns the cached rig case, making it on first use."""
    made: dict[str, rig.Case] = {}

    def get(name: str) -> rig.Case:
        if name not in made:
            try:
                made[name] = rig.ensure_case(rig.STANDARD_CASES[name])
            except rig.RigUnavailable as e:  # e.g. KVM does not boot the guest here
                pytest.skip(f"{name}: {e}")
        return made[name]

    return get


@pytest.fixture(scope="session")
def sleep_core(tmp_path_factory):
    """``(core, pid)``: a real core of ``sleep``, a program that is not QEMU."""
    from support import synth

    made = synth.make_sleep_core(tmp_path_factory.mktemp("sleep"))
    if made is None:
        pytest.skip("no core appeared for a SIGABRT-ed sleep (core_pattern/limits)")
    return made


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(options)`` mounts a tmpfs under tmp_path (unmounted afterwards).

    Needs root; skipped otherwise.
    """
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", where], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", where], check=False)


@pytest.fixture
def keep_signals():
    """Restore the handlers that ``cli.main()`` installs when it runs in-process."""
    import signal

    from qemu_vmcore.frontends.cli import CLEANUP_SIGNALS

    old = {sig: signal.getsignal(sig) for sig in (*CLEANUP_SIGNALS, signal.SIGINT, signal.SIGPIPE)}
    yield
    for sig, handler in old.items():
        signal.signal(sig, handler)
