"""The backup written from the same read that feeds the copy (``--backup-to``).

A backup of one volume is a POSIX tar stream (pax format) that standard
tools read: under a folder named by the source volume's ID,

``README.txt``
    how to restore it with ``tar``, ``zstd`` and coreutils alone;
``chunks/<offset>.zst``
    one zstd frame per stored :data:`~stackhop.volumes.model.VERIFY_CHUNK`
    (4 MiB) piece of the volume, in offset order, named by its byte offset
    (16 digits); a piece that is a hole or all zeros is not stored;
``SHA256SUMS``
    ``sha256sum -c`` input: the digest of every stored piece, decompressed;
``size``
    the volume's size in bytes;
``manifest.json``
    the volume's size, its :func:`~stackhop.volumes.model.content_digest`,
    every piece's sha256 (holes too: the digest of their zeros), the stored
    offsets and the source volume's facts (ID, name, project, type, bootable,
    metadata ...). It is the last member: a stream without it is incomplete.

Where the stream goes (a directory's file or a command) is
:mod:`~stackhop.volumes.backup_target`'s business. :class:`BackupWriter` is a
transfer :class:`~stackhop.transfer.base.Destination` the copy methods tee
their chunks into (:class:`Tee`); :mod:`~stackhop.volumes.backup_reader` reads
a backup back, checking every piece.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import zstandard

from stackhop.errors import IntegrityError
from stackhop.transfer.base import Chunk, Destination, Digest
from stackhop.volumes.backup_target import (
    CommandSink,
    FileSink,
    SinkResult,
    backup_name,
    open_sink,
)
from stackhop.volumes.model import VERIFY_CHUNK, VolumeRef, content_digest

FORMAT_VERSION = 2
_ZEROS = bytes(VERIFY_CHUNK)


@functools.lru_cache(maxsize=64)
def zero_digest(length: int) -> str:
    """The sha256 of ``length`` zero bytes (cached: a sparse 2 TiB volume asks 500,000 times)."""
    return hashlib.sha256(_ZEROS[:length]).hexdigest()


def is_zero(data: bytes | memoryview) -> bool:
    """Whether ``data`` holds only zero bytes (a memcmp against a zero buffer)."""
    return bytes(data) == _ZEROS[: len(data)] if len(data) <= VERIFY_CHUNK else not any(data)


BlockCallback = Callable[[int, bytes | None, int], None]
"""``(offset, data or None for a hole, length)`` of each aligned piece, in order."""


class Rechunker:
    """Cuts chunks arriving at any offsets (gaps are holes) into aligned VERIFY_CHUNK pieces."""

    def __init__(self, on_block: BlockCallback) -> None:
        self.on_block = on_block
        self._start = 0  # offset of the piece being filled
        self._buf = bytearray()
        self._filled = False  # whether the current piece got any data

    def _flush(self, length: int) -> None:
        if not self._filled:
            self.on_block(self._start, None, length)
        else:
            self._buf.extend(_ZEROS[: length - len(self._buf)])
            self.on_block(self._start, bytes(self._buf), length)
        self._start += length
        self._buf = bytearray()
        self._filled = False

    def _advance_to(self, offset: int) -> None:
        """Pad with holes up to ``offset``, emitting every piece that ends before it."""
        while offset >= self._start + VERIFY_CHUNK:
            self._flush(VERIFY_CHUNK)
        gap = offset - self._start - len(self._buf)
        if gap > 0:
            self._buf.extend(_ZEROS[:gap])

    def write(self, offset: int, data: bytes) -> None:
        """Take ``data`` at ``offset`` (never before what was already written)."""
        if offset < self._start + len(self._buf):
            raise IntegrityError(
                f"chunk at offset {offset} arrived after offset {self._start + len(self._buf)}; "
                "chunks must come in offset order"
            )
        view = memoryview(data)
        while view:
            self._advance_to(offset)
            room = VERIFY_CHUNK - len(self._buf)
            piece = view[:room]
            self._buf.extend(piece)
            self._filled = True
            offset += len(piece)
            view = view[len(piece) :]
            if len(self._buf) == VERIFY_CHUNK:
                self._flush(VERIFY_CHUNK)

    def finish(self, size: int) -> None:
        """Emit everything up to ``size`` bytes (trailing holes included)."""
        if size < self._start + len(self._buf):
            raise IntegrityError(f"got data past the declared size of {size} bytes")
        self._advance_to(size)
        if size > self._start:
            self._flush(size - self._start)


class ContentHasher:
    """Computes :func:`content_digest` of a volume from its chunks, in one pass."""

    def __init__(self) -> None:
        self.digests: list[str] = []
        self._rechunker = Rechunker(self._block)

    def _block(self, offset: int, data: bytes | None, length: int) -> None:
        self.digests.append(
            zero_digest(length) if data is None else hashlib.sha256(data).hexdigest()
        )

    def write(self, offset: int, data: bytes) -> None:
        self._rechunker.write(offset, data)

    def finish(self, size: int) -> str:
        """The content digest of the ``size``-byte volume written so far."""
        self._rechunker.finish(size)
        return content_digest(self.digests)


class Tee:
    """A transfer destination that hands every chunk to several destinations.

    The first one decides ``durable_chunks``; all are opened, written,
    committed and aborted together (an abort reaches every one of them).
    """

    def __init__(self, *destinations: Destination) -> None:
        if not destinations:
            raise ValueError("Tee needs at least one destination")
        self.destinations = destinations
        self.durable_chunks = destinations[0].durable_chunks

    def open(self, size: int | None) -> None:
        for d in self.destinations:
            d.open(size)

    def write(self, chunk: Chunk) -> None:
        for d in self.destinations:
            d.write(chunk)

    def commit(self) -> None:
        for d in self.destinations:
            d.commit()

    def abort(self, reason: BaseException) -> None:
        for d in self.destinations:
            d.abort(reason)

    def verify(self, digest: Digest) -> None:
        for d in self.destinations:
            d.verify(digest)


#: The text every backup carries first: how to restore it without stackhop.
RESTORE_README = """\
stackhop volume backup, format {format}: volume {volume_id} ({size} bytes).

chunks/<offset>.zst  one zstd frame per stored piece; <offset> is its byte
                     offset in the volume (pieces of zeros are not stored)
SHA256SUMS           sha256 of every stored piece, decompressed
size                 the volume's size in bytes
manifest.json        everything above plus the volume's facts (written last:
                     a backup without it is incomplete)

Restore with standard tools only (GNU tar, zstd, coreutils):

  tar -xf BACKUP.tar && cd {volume_id}
  zstd -d -q --rm chunks/*.zst && sha256sum -c --quiet SHA256SUMS
  truncate -s "$(cat size)" volume.raw
  for f in chunks/*; do
    dd if="$f" of=volume.raw bs=4M oflag=seek_bytes seek="$((10#${{f#chunks/}}))" \\
       conv=notrunc,sparse status=none
  done

An incremental backup (VOLUME.passN.tar, folder VOLUME.passN) holds the bytes
that changed since the pass before it, each chunk exactly the changed extent
(zeros included). Apply the chain in pass order over the full backup's
volume.raw: the same loop, with the chunks of VOLUME.passN, and conv=notrunc
without sparse (zeros must be written).
"""


def _volume_facts(volume: VolumeRef) -> dict[str, Any]:
    facts = asdict(volume)
    facts["metadata"] = dict(volume.metadata)
    facts["attachments"] = list(volume.attachments)
    return facts


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(mtime)
    info.uname = info.gname = "stackhop"
    return info


class _Outlet:
    """What the tar stream writes into: the sink, until an abort closes it."""

    def __init__(self, sink: FileSink | CommandSink) -> None:
        self.sink = sink
        self.closed = False

    def write(self, data: bytes) -> int:
        return len(data) if self.closed else self.sink.write(data)


class BackupWriter:
    """Writes one volume's backup from the chunks of a copy (a transfer Destination).

    The backup is a tar stream (see :data:`RESTORE_README`) into the sink of
    ``target`` (:mod:`~stackhop.volumes.backup_target`): a directory's file, or
    a command's stdin. Pieces are compressed one at a time, so memory stays at
    one piece whatever the volume's size.
    """

    durable_chunks = False  # all or nothing: a backup counts only once committed

    #: Whether only the changed extents are stored (:class:`IncrementalBackupWriter`).
    changes_only = False

    def __init__(self, target: str, volume: VolumeRef, *, level: int = 3) -> None:
        self.target = target
        self.volume = volume
        self.location = target
        self.name = backup_name(volume.id)
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._sink: FileSink | CommandSink | None = None
        self._out: _Outlet | None = None
        self._tar: tarfile.TarFile | None = None
        self._size: int | None = None
        self._digests: list[str] = []
        self._stored: list[int] = []
        self._sums: list[str] = []
        self._rechunker = Rechunker(self._block)
        self._started = time.time()
        #: The volume's content digest, once committed.
        self.content_digest: str | None = None
        #: What the sink received, once committed.
        self.result: SinkResult | None = None
        self.bytes_stored = 0

    @property
    def root(self) -> str:
        """The folder of every member (the volume's ID)."""
        return self.volume.id

    def _add(self, name: str, data: bytes) -> None:
        assert self._tar is not None
        info = _member(f"{self.root}/{name}", len(data), self._started)
        self._tar.addfile(info, io.BytesIO(data))

    def open(self, size: int | None) -> None:
        self._size = size if size is not None else self.volume.size_bytes
        self._sink = open_sink(self.target, self.name, self.volume.id)
        self.location = self._sink.location
        self._out = _Outlet(self._sink)
        self._tar = tarfile.open(fileobj=self._out, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]
        readme = RESTORE_README.format(
            format=FORMAT_VERSION, volume_id=self.volume.id, size=self._size
        )
        self._add("README.txt", readme.encode())

    def _block(self, offset: int, data: bytes | None, length: int) -> None:
        if data is None or is_zero(data):
            self._digests.append(zero_digest(length))
            return
        digest = hashlib.sha256(data).hexdigest()
        self._digests.append(digest)
        frame = self._compressor.compress(data)
        self._add(f"chunks/{offset:016d}.zst", frame)
        self._stored.append(offset)
        self._sums.append(f"{digest}  chunks/{offset:016d}\n")
        self.bytes_stored += len(frame)

    def write(self, chunk: Chunk) -> None:
        self._rechunker.write(chunk.offset, chunk.data)

    def commit(self) -> None:
        assert self._tar is not None and self._sink is not None and self._size is not None
        self._rechunker.finish(self._size)
        self.content_digest = content_digest(self._digests)
        manifest = {
            "format": FORMAT_VERSION,
            "kind": "full",
            "compression": "zstd",
            "size": self._size,
            "chunk_size": VERIFY_CHUNK,
            "content_digest": self.content_digest,
            "chunk_digests": self._digests,
            "stored": self._stored,
            "volume": _volume_facts(self.volume),
            "created_at": self._started,
        }
        self._seal(manifest)

    def _seal(self, manifest: dict[str, Any]) -> None:
        """The closing members, the tar's end, and the sink's commit."""
        assert self._tar is not None and self._sink is not None
        self._add("SHA256SUMS", "".join(self._sums).encode())
        self._add("size", f"{self._size}\n".encode())
        self._add("manifest.json", json.dumps(manifest, sort_keys=True, indent=1).encode())
        self._tar.close()
        self._tar = None
        self.result = self._sink.commit()
        self.location = self.result.location

    def abort(self, reason: BaseException) -> None:
        if self._out is not None:
            self._out.closed = True  # the tar's end-of-archive and buffer never reach the sink
        self._tar = None
        if self._sink is not None:
            self._sink.abort()

    def discard(self) -> None:
        """Remove a committed backup whose content turned out wrong (a file; a command's stays)."""
        if self._sink is not None:
            self._sink.discard()

    def verify(self, digest: Digest) -> None:
        return None  # its content digest is compared with the copy's by the orchestration


class IncrementalBackupWriter(BackupWriter):
    """The backup of an incremental pass: only the extents that changed, chained to its base.

    Each extent the method tees (never across a piece boundary) is stored
    exactly, zeros included, as ``chunks/<offset>.zst``; the manifest names the
    content digest of the volume it applies to (``base_content_digest``: the
    previous pass's) and the one it makes (``content_digest``). The method's
    :meth:`commit` only ends the data: the orchestration seals the backup with
    :meth:`finish` once the pass is verified, since only then is that digest known.
    """

    changes_only = True

    def __init__(
        self, target: str, volume: VolumeRef, *, base_digest: str, pass_number: int, level: int = 3
    ) -> None:
        super().__init__(target, volume, level=level)
        self.base_digest = base_digest
        self.pass_number = pass_number
        self.name = backup_name(volume.id, pass_number)
        self._extents: list[list[Any]] = []  # [offset, length, sha256]
        self._end = 0
        self._complete = False

    @property
    def root(self) -> str:
        return f"{self.volume.id}.pass{self.pass_number}"

    def write(self, chunk: Chunk) -> None:
        if chunk.offset < self._end:
            raise IntegrityError(
                f"extent at offset {chunk.offset} arrived after offset {self._end}; "
                "extents must come in offset order"
            )
        view, offset = memoryview(chunk.data), chunk.offset
        while view:
            room = VERIFY_CHUNK - offset % VERIFY_CHUNK
            piece = bytes(view[:room])
            digest = hashlib.sha256(piece).hexdigest()
            frame = self._compressor.compress(piece)
            self._add(f"chunks/{offset:016d}.zst", frame)
            self._extents.append([offset, len(piece), digest])
            self._sums.append(f"{digest}  chunks/{offset:016d}\n")
            self.bytes_stored += len(frame)
            offset += len(piece)
            view = view[len(piece) :]
        self._end = offset

    def commit(self) -> None:
        self._complete = True  # sealed by finish(), once the pass is verified

    def finish(self, verified_digest: str) -> None:
        """Seal the backup with the content digest the verified pass left on the destination."""
        if not self._complete:
            raise IntegrityError(f"the incremental backup {self.name} was never completed")
        self.content_digest = verified_digest
        self._seal(
            {
                "format": FORMAT_VERSION,
                "kind": "incremental",
                "compression": "zstd",
                "size": self._size,
                "chunk_size": VERIFY_CHUNK,
                "pass": self.pass_number,
                "base_content_digest": self.base_digest,
                "content_digest": verified_digest,
                "extents": self._extents,
                "volume": _volume_facts(self.volume),
                "created_at": self._started,
            }
        )
