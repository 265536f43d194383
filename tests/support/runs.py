"""Running the CLI as a user does, and judging what it printed; real compressed
and cut copies of rig cores."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from support import rig


def run_cli(*args: object, check: bool = False, env: dict | None = None, cwd: Path | None = None):
    """Run ``python -m qemu_vmcore ARGS`` and return the CompletedProcess."""
    cmd = [sys.executable, "-m", "qemu_vmcore", *map(os.fspath, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def assert_one_line_error(proc, *needles: str) -> None:
    """A failed run printed exactly one ``error:`` line (no traceback) naming ``needles``."""
    assert proc.returncode not in (0, None), proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


#: format -> (suffix, compress command reading argv[-2], writing argv[-1])
TOOLS = {
    "zstd": (".zst", ["zstd", "-q", "-T2", "-f"], "-o"),
    "lz4": (".lz4", ["lz4", "-q", "-f"], None),
    "xz": (".xz", ["xz", "-0", "-T2", "-c"], ">"),
}


def compressed_core(case: rig.Case, fmt: str) -> Path:
    """The case's core compressed with the real tool; cached beside it."""
    suffix, cmd, out_flag = TOOLS[fmt]
    dest = case.dir / f"core{suffix}"
    stamp = dest.with_name(dest.name + ".stamp")
    key = f"{case.core.stat().st_size} {case.core.stat().st_mtime_ns}"
    if dest.exists() and stamp.exists() and stamp.read_text() == key:
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    if out_flag == ">":
        with open(tmp, "wb") as f:
            subprocess.run([*cmd, case.core], stdout=f, check=True)
    elif out_flag:
        subprocess.run([*cmd, case.core, out_flag, tmp], check=True)
    else:
        subprocess.run([*cmd, case.core, tmp], check=True)
    tmp.rename(dest)
    stamp.write_text(key)
    return dest


def sparse_copy(src: Path, dst: Path, size: int) -> None:
    """Copy the first ``size`` bytes of ``src`` to ``dst``, keeping holes (a cut core)."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.truncate(size)
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            if data >= size:
                break
            hole = min(os.lseek(fi.fileno(), data, os.SEEK_HOLE), size)
            os.copy_file_range(fi.fileno(), fo.fileno(), hole - data, data, data)
            pos = hole


def bytes_being_written(pid: int, out_dir: Path) -> int:
    """How much the process ``pid`` has written to files it holds open in ``out_dir``.

    The output is an unnamed (O_TMPFILE) file until it is complete, so it is
    not in ``out_dir``'s listing; the process's descriptors still show it
    (``/proc/PID/fd/N -> OUT_DIR/#INODE (deleted)``).
    """
    written = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith(f"{out_dir}/"):
                    written = max(written, os.stat(fd).st_size)
    return written


def data_runs_fd(fd: int, size: int) -> list[tuple[int, int]]:
    """``(offset, end)`` of the data (non-hole) runs of the first ``size`` bytes
    of ``fd``, as SEEK_DATA/SEEK_HOLE (and so ``cp --sparse``) see them."""
    runs, pos = [], 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after pos
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        runs.append((start, end))
        pos = end
    return runs


def data_runs(path: os.PathLike[str] | str) -> list[tuple[int, int]]:
    """:func:`data_runs_fd` of a whole file."""
    with open(path, "rb") as f:
        return data_runs_fd(f.fileno(), os.fstat(f.fileno()).st_size)
