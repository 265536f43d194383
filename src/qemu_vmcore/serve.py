"""``mount``'s engine: the vmcore :func:`qemu_vmcore.extract.prepare` decided, as a
:class:`~qemu_vmcore.writers.view.VmcoreView` to serve instead of a file to write.

The front end (frontends/mount.py) only hands the view's bytes to FUSE;
every decision (ranges, notes, VMCOREINFO, what is missing) is prepare()'s,
the same as for ``extract``, so the served file is extract's file.
"""

from __future__ import annotations

from qemu_vmcore.extract import Prepared
from qemu_vmcore.plan import DumpOptions, OptionError
from qemu_vmcore.writers.copy import Progress
from qemu_vmcore.writers.view import ElfView, VmcoreView, scan_kdump

#: The name of the one file a mount holds.
FILE_NAME = "vmcore"


def check_options(options: DumpOptions) -> None:
    """:raises OptionError: what cannot be served: the flattened kdump format,
    a stream rather than a file to seek in."""
    if options.flattened:
        raise OptionError(
            "--flattened is a stream for pipes, not a file to seek in; mount serves the "
            f"raw {options.format} file (drop --flattened, or use extract)"
        )


def open_view(prepared: Prepared, progress: Progress = lambda n: None) -> VmcoreView:
    """The view of ``prepared`` (made with ``output=None``).

    ELF costs nothing up front; a kdump format costs one pass over guest RAM,
    compressing every page to learn where each goes (``progress`` counts its
    bytes, ``prepared.total`` in all).

    :raises OptionError: the flattened kdump format, a stream rather than a file.
    """
    check_options(prepared.options)
    if prepared.kdump is not None:
        layout, method = prepared.kdump
        return scan_kdump(layout, prepared.memory, method,
                          threads=prepared.options.thread_count(), progress=progress)  # fmt: skip
    assert prepared.image is not None
    return ElfView(prepared.image, prepared.memory)
