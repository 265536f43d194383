"""``qemu-vmcore mount``: a served vmcore (:mod:`qemu_vmcore.serve`) as
``MOUNTPOINT/vmcore``, through FUSE.

Thin on purpose: every byte, and where the data is, comes from the engine's
:class:`~qemu_vmcore.writers.view.VmcoreView`; this module checks that a
mount can work, hands FUSE's requests to the view and turns its errors into
errnos. It never prints: the CLI gives it the callbacks that do.

The binding is mfusepy (ctypes over libfuse's high-level API, libfuse 3
here: no compiler, no C extension to build, maintained). libfuse 3 is
preferred even where libfuse 2 is installed too, for its ``lseek``
callback: SEEK_DATA/SEEK_HOLE answer from the view, so ``cp --sparse``
of the file stays sparse. The file system is read-only, single-threaded
(reads are served in order; the GIL would serialise them anyway) and
mounted with ``auto_unmount`` and watched by a process of our own
(:func:`_watchdog`), so that even if this process is killed with SIGKILL
no dead mount is left.

libfuse itself handles SIGINT, SIGTERM and SIGHUP while the file system
is mounted: it leaves its loop and unmounts, and :func:`serve` returns, as
it does when someone unmounts the directory (``fusermount3 -u``, ``umount``).
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import os
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from qemu_vmcore.errors import OutputError, VmcoreError
from qemu_vmcore.serve import FILE_NAME
from qemu_vmcore.writers.view import VmcoreView

#: Test hooks, to run the checks as on a machine without FUSE: the device
#: to look for (default /dev/fuse), and the fusermount program
#: (default fusermount3, on PATH or in /usr/bin).
DEVICE_ENV = "QEMU_VMCORE_FUSE_DEVICE"
FUSERMOUNT_ENV = "QEMU_VMCORE_FUSERMOUNT"
_INSTALL_HINT = "Debian/Ubuntu: apt install fuse3; Fedora: dnf install fuse3"


def check_fuse() -> None:
    """Refuse, before any slow work, where FUSE cannot mount.

    :raises VmcoreError: no FUSE device, no fusermount3, no libfuse 3.
    """
    device = os.environ.get(DEVICE_ENV) or "/dev/fuse"
    try:
        st = os.stat(device)
    except OSError as e:
        raise VmcoreError(
            f"{device}: {e.strerror}: this machine has no FUSE (a container without "
            "/dev/fuse, or the fuse module not loaded)",
            hint="modprobe fuse; in a container, pass the device (docker run --device "
            "/dev/fuse --cap-add SYS_ADMIN); or use extract",
        ) from None
    if not stat.S_ISCHR(st.st_mode):
        raise VmcoreError(f"{device}: not a character device, so not FUSE's")
    prog = os.environ.get(FUSERMOUNT_ENV) or "fusermount3"
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/bin"])
    if shutil.which(prog, path=search) is None:
        raise VmcoreError(
            f"{prog} not found: libfuse mounts and unmounts through it (and its watchdog "
            "unmounts the vmcore should qemu-vmcore be killed)",
            hint=_INSTALL_HINT,
        )
    _binding()


def check_mountpoint(path: Path) -> None:
    """:raises OutputError: ``path`` is missing, not a directory, not empty,
    already a mount, or (for a user) not writable."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise OutputError(
            f"{path}: no such directory to mount on", hint=f"mkdir {path}", path=path
        ) from None
    except OSError as e:
        raise OutputError(f"{path}: {e.strerror}", path=path) from None
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: not a directory to mount on", path=path)
    if os.path.ismount(path):
        raise OutputError(
            f"{path}: already a mount point", hint=f"umount {path}, or name another", path=path
        )
    try:
        with os.scandir(path) as entries:
            crowded = next(entries, None) is not None
    except OSError as e:
        raise OutputError(f"{path}: {e.strerror}", path=path) from None
    if crowded:
        raise OutputError(
            f"{path}: not empty; a mount would hide what is there",
            hint="name an empty directory",
            path=path,
        )
    if os.geteuid() != 0 and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: directory not writable, so not mountable by you", path=path)


def _binding():
    """mfusepy, on libfuse 3 (loaded on first use only).

    :raises VmcoreError: libfuse is not installed.
    """
    if "FUSE_LIBRARY_PATH" not in os.environ:
        found = ctypes.util.find_library("fuse3")
        if found:
            os.environ["FUSE_LIBRARY_PATH"] = found
    try:
        import mfusepy
    except (OSError, AttributeError) as e:  # no libfuse, or one it cannot use
        raise VmcoreError(f"cannot load libfuse: {e}", hint=_INSTALL_HINT) from None
    except ImportError as e:
        raise VmcoreError(
            f"mount needs the Python module mfusepy: {e}",
            hint="reinstall qemu-vmcore with its dependencies",
        ) from None
    return mfusepy


def _operations(view: VmcoreView, meta: os.stat_result, ready: Callable[[], None],
                warn: Callable[[str], None]):  # fmt: skip
    mfusepy = _binding()
    name = "/" + FILE_NAME
    times = {"st_atime": meta.st_mtime_ns, "st_mtime": meta.st_mtime_ns,
             "st_ctime": meta.st_mtime_ns}  # fmt: skip
    owner = {"st_uid": os.getuid(), "st_gid": os.getgid()}

    def fail(e: BaseException, what: str) -> mfusepy.FuseOSError:
        warn(f"{what}: {getattr(e, 'message', None) or e}")
        return mfusepy.FuseOSError(errno.EIO)

    class Operations(mfusepy.Operations):
        use_ns = True

        def init(self, path: str) -> None:
            ready()

        def getattr(self, path: str, fh: int | None = None) -> dict:
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o500, "st_nlink": 2, **owner, **times}
            if path != name:
                raise mfusepy.FuseOSError(errno.ENOENT)
            try:
                blocks = -(-view.allocated() // 512)
            except (VmcoreError, OSError) as e:
                raise fail(e, "cannot find the vmcore's data runs") from None
            return {"st_mode": stat.S_IFREG | 0o400, "st_nlink": 1, "st_size": view.size,
                    "st_blocks": blocks, **owner, **times}  # fmt: skip

        def readdir(self, path: str, fh: int) -> list[str]:
            if path != "/":
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            return [".", "..", FILE_NAME]

        def open(self, path: str, flags: int) -> int:
            if path != name:
                raise mfusepy.FuseOSError(errno.ENOENT)
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise mfusepy.FuseOSError(errno.EROFS)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            try:
                return view.read(offset, size)
            except (VmcoreError, OSError) as e:
                raise fail(e, f"reading the vmcore at {offset:#x}") from None

        def lseek(self, path: str, offset: int, whence: int, fh: int) -> int:
            try:
                if whence == os.SEEK_DATA:
                    return view.seek_data(offset)
                if whence == os.SEEK_HOLE:
                    return view.seek_hole(offset)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    raise mfusepy.FuseOSError(errno.ENXIO) from None
                raise fail(e, f"seeking in the vmcore at {offset:#x}") from None
            except VmcoreError as e:
                raise fail(e, f"seeking in the vmcore at {offset:#x}") from None
            raise mfusepy.FuseOSError(errno.EINVAL)

        def statfs(self, path: str) -> dict:
            blocks = -(-view.size // 4096)
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_files": 1,
                    "f_namemax": 255}  # fmt: skip

    class Fuse(mfusepy.FUSE):
        """mfusepy's FUSE, plus the libfuse 3 lseek callback it declares but does not pass on."""

        def lseek(self, path, offset, whence, fip):
            fh = fip.contents.fh if fip else 0
            return self.operations.lseek(
                None if path is None else path.decode(self.encoding, self.errors), offset,
                whence, fh,
            )  # fmt: skip

    return Operations(), Fuse


#: libfuse leaves its loop on these and unmounts, once it installed its
#: handlers, which it does only over the default disposition.
_FUSE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _fuse_signals() -> Iterator[None]:
    old = {sig: signal.getsignal(sig) for sig in _FUSE_SIGNALS}
    for sig, handler in old.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Callable[[], str]]:
    """Point descriptor 2 at a memfd while FUSE mounts; yields ``restore()``,
    which points it back and returns what libfuse and fusermount3 said.

    fusermount3's watchdog inherits the descriptor libfuse has when it
    mounts: kept on the memfd, its words at unmount ("... not mounted",
    when libfuse unmounted first) never reach the terminal. Before the
    mount is up, what they said is the reason it failed.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    memfd = os.memfd_create("qemu-vmcore-fuse-stderr", os.MFD_CLOEXEC)
    os.dup2(memfd, 2, inheritable=True)
    restored = False

    def restore() -> str:
        nonlocal restored
        if not restored:
            restored = True
            os.dup2(saved, 2, inheritable=True)
        text = os.pread(memfd, 4096, 0).decode(errors="replace")
        return " ".join(text.split())

    try:
        yield restore
    finally:
        restore()
        os.close(saved)
        os.close(memfd)


@contextlib.contextmanager
def _watchdog(mountpoint: Path) -> Iterator[None]:
    """A process that unmounts ``mountpoint`` once this one is gone, however.

    libfuse's own (``auto_unmount``) misses now and then: fusermount3 3.14
    unmounts only if opening the mount point fails with ENOTCONN, and when
    the killed server's socket closes before its /dev/fuse descriptor, the
    open in flight fails with ECONNABORTED instead (1 kill in 5 here). This
    one waits for the end of a pipe only this process holds, then runs
    ``fusermount3 -u -z`` if the mount is still there; after a clean end
    it finds none. It is in a session of its own, so Ctrl-C spares it.
    """
    import subprocess

    prog = os.environ.get(FUSERMOUNT_ENV) or "fusermount3"
    r, w = os.pipe()
    script = 'read _; grep -qs " fuse.qemu-vmcore " /proc/self/mounts && exec "$1" -u -z -q "$0"'
    try:
        subprocess.Popen(["sh", "-c", script, os.fspath(mountpoint.absolute()), prog], stdin=r,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
    except OSError:
        os.close(w)
        w = -1  # no second watchdog: libfuse's still stands
    finally:
        os.close(r)
    try:
        yield
    finally:
        if w >= 0:
            os.close(w)


def serve(
    view: VmcoreView,
    mountpoint: Path,
    *,
    source: Path,
    ready: Callable[[], None] = lambda: None,
    warn: Callable[[str], None] = lambda line: None,
) -> None:
    """Serve ``view`` as ``mountpoint``/vmcore until it is unmounted or
    SIGINT, SIGTERM or SIGHUP arrive; the mount is gone when this returns.

    :param source: the core, whose times the file shows.
    :param ready: called once the file system is mounted and answers.
    :param warn: called with a line for each request that failed (EIO).
    :raises VmcoreError: the mount could not be made.
    """
    check_mountpoint(mountpoint)
    meta = os.stat(source)
    up = [False]
    with _watchdog(mountpoint), _stderr_captured() as restore:

        def on_ready() -> None:
            up[0] = True
            restore()
            ready()

        operations, fuse = _operations(view, meta, on_ready, warn)
        try:
            with _fuse_signals():
                fuse(operations, os.fspath(mountpoint), foreground=True, nothreads=True,
                     ro=True, auto_unmount=True, kernel_cache=True, default_permissions=True,
                     fsname="qemu-vmcore", subtype="qemu-vmcore")  # fmt: skip
        except RuntimeError as e:
            # libfuse ends its loop with an error code on SIGINT/SIGTERM/SIGHUP
            # too: after the mount was up, that is the end asked for.
            if not up[0] or _still_mounted(mountpoint):
                said = restore()
                raise VmcoreError(
                    f"cannot mount {mountpoint}: libfuse failed ({e})"
                    + (f": {said}" if said else "")
                ) from None
        if not up[0]:
            said = restore()
            raise VmcoreError(f"cannot mount {mountpoint}" + (f": {said}" if said else ""))


def _still_mounted(mountpoint: Path) -> bool:
    try:
        return os.path.ismount(mountpoint)
    except OSError:
        return False
