"""Named C structs on the stdlib ``struct`` module, as pyelftools declares them.

pyelftools writes ``Struct('Elf_Phdr', Elf_word('p_type'), ...)`` on top of
construct; that is slow per record, and a core has up to millions of page
descriptors. A :class:`Layout` is a ``struct.Struct`` with a name per field
and a ``NamedTuple`` record type: fields are read and written by name, never
by position, while packing stays one ``struct`` call.

Fields are listed in file order; the record type may list them in another
(Elf32_Phdr puts p_flags after p_memsz, Elf64_Phdr after p_type: both unpack
into the same :class:`~qemu_vmcore.layouts.elf.Phdr`). Padding is a field
with no name (``(None, "4x")``): ``struct`` with an explicit byte order
never pads by itself, which is what a file format wants.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any, Generic, Literal, TypeVar

R = TypeVar("R", bound=tuple)  # a NamedTuple class

#: One field: (name, struct format), or (None, "<n>x") for padding.
Field = tuple[str | None, str]

ByteOrder = Literal["<", ">"]


class Layout(Generic[R]):
    """A C struct in a file: named fields, one byte order, fixed size.

    :param name: the C name, for messages and repr (``"Elf64_Phdr"``).
    :param record: the NamedTuple class records unpack into; its fields
        are exactly the named fields, in any order, with defaults so that
        :meth:`pack` can be given only the fields that are not zero.
    :param byteorder: ``"<"`` (little-endian) or ``">"`` (big-endian).
    :param fields: the fields in file order.
    """

    def __init__(
        self, name: str, record: type[R], byteorder: ByteOrder, fields: Sequence[Field]
    ) -> None:
        names = tuple(n for n, _ in fields if n is not None)
        record_fields: tuple[str, ...] = record._fields  # type: ignore[attr-defined]
        if sorted(names) != sorted(record_fields):
            raise ValueError(f"{name}: fields {names} do not match {record.__name__}")
        self.name = name
        self.record = record
        self.byteorder = byteorder
        self.names = names
        self.struct = struct.Struct(byteorder + "".join(fmt for _, fmt in fields))
        #: Size in bytes, as C's sizeof.
        self.size = self.struct.size
        # When the file order is the record's, records go to and from
        # struct as plain tuples (the common, fast case).
        self._same_order = names == record_fields

    def __repr__(self) -> str:
        return f"<Layout {self.name} {self.struct.format!r} ({self.size} bytes)>"

    def _make(self, values: tuple[Any, ...]) -> R:
        if self._same_order:
            return self.record._make(values)  # type: ignore[attr-defined,no-any-return]
        return self.record(**dict(zip(self.names, values, strict=True)))

    def unpack_from(self, buf: bytes | bytearray | memoryview, offset: int = 0) -> R:
        """The record at byte ``offset`` of ``buf`` (struct.error if it is cut short)."""
        return self._make(self.struct.unpack_from(buf, offset))

    def unpack(self, buf: bytes | bytearray | memoryview) -> R:
        """The record that is all of ``buf`` (exactly :attr:`size` bytes)."""
        return self._make(self.struct.unpack(buf))

    def iter_unpack(self, buf: bytes | bytearray | memoryview) -> Iterator[R]:
        """Records end to end in ``buf``, whose length is a multiple of :attr:`size`."""
        return map(self._make, self.struct.iter_unpack(buf))

    def pack(self, record: R | None = None, /, **fields: Any) -> bytes:
        """The bytes of ``record``, or of a record built from ``fields``.

        With both, ``fields`` replace those of ``record``. Fields not given
        take the record type's defaults (zero).
        """
        if record is None:
            record = self.record(**fields)
        elif fields:
            record = record._replace(**fields)  # type: ignore[attr-defined]
        if self._same_order:
            return self.struct.pack(*record)
        return self.struct.pack(*(getattr(record, n) for n in self.names))
