"""The ``rbd export-diff`` stream (format v1): records, parse, re-serialise, per-chunk hashing.

The stream, as ``rbd export-diff`` writes it and ``rbd import-diff`` reads it::

    "rbd diff v1\\n"
    'f' le32 len, name          from-snapshot (incremental diffs only)
    't' le32 len, name          to-snapshot (import-diff creates it)
    's' le64 size               image size
    'w' le64 offset, le64 len, data
    'z' le64 offset, le64 len   a zeroed / discarded extent
    'e'                         end

The records (:class:`WriteExtent`, :class:`ZeroExtent`) are also what the
librbd path (:mod:`stackhop.transfer.rbd_lib`) produces and consumes, so
hashing, the backup tee and the writers see one shape whatever reads or
writes the cluster. :func:`read_diff` parses a stream and :class:`DiffWriter`
writes one again. A large ``w`` record is cut into pieces of at most
:data:`MAX_PIECE` bytes (several ``w`` records are equivalent for
import-diff), so memory stays at a few MiB whatever the object size.

:class:`ChunkHasher` turns records in offset order (which ``export-diff``
guarantees) into the per-:data:`~stackhop.volumes.model.VERIFY_CHUNK`
digests of :func:`~stackhop.volumes.model.content_digest`.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from stackhop.errors import IntegrityError

MAGIC = b"rbd diff v1\n"
MAX_PIECE = 4 * 1024 * 1024
"""The largest ``w`` payload held in memory at once."""

_LE32 = struct.Struct("<I")
_LE64 = struct.Struct("<Q")
_EXTENT = struct.Struct("<QQ")


class DiffFormatError(IntegrityError):
    """The export-diff stream is cut short or not in the format stackhop reads."""


@dataclass(frozen=True)
class DiffHeader:
    """The head of a diff: the snapshots it goes between and the image size."""

    from_snap: str | None
    to_snap: str | None
    size: int


@dataclass(frozen=True)
class WriteExtent:
    """``data`` at ``offset`` (a ``w`` record, or a piece of one)."""

    offset: int
    data: bytes

    @property
    def length(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ZeroExtent:
    """``length`` zero bytes at ``offset`` (a ``z`` record)."""

    offset: int
    length: int


Record = WriteExtent | ZeroExtent


def _read_exact(stream: IO[bytes], n: int, what: str) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise DiffFormatError(
            f"rbd export-diff stream ended inside {what}; the export was cut short, re-run"
        )
    return data


def read_diff(stream: IO[bytes], max_piece: int = MAX_PIECE) -> tuple[DiffHeader, Iterator[Record]]:
    """Parse a v1 diff: its header (read at once) and an iterator over its extents in order."""
    magic = stream.read(len(MAGIC))
    if magic != MAGIC:
        raise DiffFormatError(
            f"not an rbd diff v1 stream (starts {magic[:16]!r}); stackhop runs export-diff "
            "with the default --export-format 1, check the rbd tools on that host"
        )
    from_snap: str | None = None
    to_snap: str | None = None
    while True:
        tag = _read_exact(stream, 1, "a record tag")
        if tag in (b"f", b"t"):
            (n,) = _LE32.unpack(_read_exact(stream, 4, "a snapshot name length"))
            name = _read_exact(stream, n, "a snapshot name").decode()
            if tag == b"f":
                from_snap = name
            else:
                to_snap = name
        elif tag == b"s":
            (size,) = _LE64.unpack(_read_exact(stream, 8, "the image size"))
            break
        else:
            raise DiffFormatError(f"rbd diff: unexpected record {tag!r} before the image size")
    return DiffHeader(from_snap, to_snap, size), _extents(stream, max_piece)


def _extents(stream: IO[bytes], max_piece: int) -> Iterator[Record]:
    while True:
        tag = _read_exact(stream, 1, "a record tag")
        if tag == b"e":
            return
        if tag not in (b"w", b"z"):
            raise DiffFormatError(f"rbd diff: unknown record {tag!r}")
        offset, length = _EXTENT.unpack(_read_exact(stream, 16, "an extent"))
        if tag == b"z":
            yield ZeroExtent(offset, length)
            continue
        done = 0
        while done < length:
            n = min(max_piece, length - done)
            yield WriteExtent(offset + done, _read_exact(stream, n, "extent data"))
            done += n


class DiffWriter:
    """Writes a v1 diff to ``stream``: :meth:`header`, extents, then :meth:`end`."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        #: Bytes written so far (what crossed to the destination).
        self.bytes = 0

    def _put(self, data: bytes) -> None:
        self.stream.write(data)
        self.bytes += len(data)

    def header(self, header: DiffHeader) -> None:
        self._put(MAGIC)
        for tag, name in ((b"f", header.from_snap), (b"t", header.to_snap)):
            if name is not None:
                encoded = name.encode()
                self._put(tag + _LE32.pack(len(encoded)) + encoded)
        self._put(b"s" + _LE64.pack(header.size))

    def record(self, record: Record) -> None:
        if isinstance(record, WriteExtent):
            self._put(b"w" + _EXTENT.pack(record.offset, record.length))
            self._put(record.data)
        else:
            self._put(b"z" + _EXTENT.pack(record.offset, record.length))

    def end(self) -> None:
        self._put(b"e")


@functools.lru_cache(maxsize=8)
def zero_digest(length: int) -> str:
    """The sha256 of ``length`` zero bytes (a hole), computed once per length."""
    return hashlib.sha256(bytes(length)).hexdigest()


@dataclass
class ChunkHasher:
    """Per-chunk sha256 digests of an image from diff records in offset order.

    ``complete=True`` (a diff from nothing): bytes no record covers are holes,
    and every chunk up to ``size`` gets a digest. ``complete=False`` (a diff
    between snapshots): only chunks the records touch are hashed, and a
    touched chunk that the records do not cover entirely lands in
    :attr:`partial` (its digest is unknown); a ``--whole-object`` diff with
    objects of at least the chunk size covers every touched chunk.
    """

    size: int
    chunk: int
    complete: bool
    digests: dict[int, str] = field(default_factory=dict)
    partial: set[int] = field(default_factory=set)
    _index: int = -1
    _buffer: bytearray | None = None
    _covered: int = 0
    _written: bool = False
    _direct: bool = False
    _next: int = 0

    def _length(self, index: int) -> int:
        return min(self.chunk, self.size - index * self.chunk)

    def _open(self, index: int) -> None:
        if index < self._index:
            raise DiffFormatError(
                "rbd diff: extents are not in offset order; re-run (if it persists, the rbd "
                "tools are not ones stackhop knows)"
            )
        if index == self._index:
            return
        self._close()
        if self.complete:
            for hole in range(self._next, index):
                self.digests[hole] = zero_digest(self._length(hole))
        self._index = index
        self._buffer = None
        self._covered = 0
        self._written = False
        self._direct = False

    def _close(self) -> None:
        if self._index < 0:
            return
        length = self._length(self._index)
        if self._direct:
            pass  # hashed when it arrived
        elif not self.complete and self._covered < length:
            self.partial.add(self._index)
        elif self._buffer is not None and self._written:
            self.digests[self._index] = hashlib.sha256(self._buffer).hexdigest()
        else:
            self.digests[self._index] = zero_digest(length)
        self._next = self._index + 1
        self._index = -1

    def add(self, record: Record) -> None:
        """Take one record (any size; it may span chunks)."""
        offset = record.offset
        end = offset + record.length
        if end > self.size:
            raise DiffFormatError(f"rbd diff: extent {offset}+{record.length} beyond the image")
        while offset < end:
            index = offset // self.chunk
            self._open(index)
            start = offset - index * self.chunk
            n = min(end, (index + 1) * self.chunk) - offset
            if self._direct:
                raise DiffFormatError(f"rbd diff: extents overlap at offset {offset}")
            if isinstance(record, WriteExtent) and n == self._length(index) and not self._covered:
                # A whole chunk in one record (the usual 4 MiB object): hash it in place.
                view = memoryview(record.data)[offset - record.offset : offset - record.offset + n]
                self.digests[index] = hashlib.sha256(view).hexdigest()
                self._direct = True
            elif isinstance(record, WriteExtent):
                if self._buffer is None:
                    self._buffer = bytearray(self._length(index))
                piece = record.data[offset - record.offset : offset - record.offset + n]
                self._buffer[start : start + n] = piece
                self._written = True
            elif self._buffer is not None:
                self._buffer[start : start + n] = bytes(n)
            self._covered += n
            offset += n

    def finish(self) -> dict[int, str]:
        """Close the last chunk (and, when complete, the holes after it); return the digests."""
        self._close()
        if self.complete:
            count = -(-self.size // self.chunk)
            for hole in range(self._next, count):
                self.digests[hole] = zero_digest(self._length(hole))
            self._next = count
        return self.digests


@dataclass
class ChunkDigests:
    """Per-chunk digests read back from an image (see :meth:`RbdAccess.chunk_digests`).

    ``partial``: chunks a diff touched but did not cover entirely, whose digest is unknown
    (only the ``rbd`` tools' whole-object diffs with objects smaller than a chunk leave any).
    """

    digests: dict[int, str] = field(default_factory=dict)
    partial: set[int] = field(default_factory=set)
