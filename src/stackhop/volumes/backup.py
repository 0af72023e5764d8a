"""The backup written from the same read that feeds the copy (``--backup-to DIR``).

A backup of one volume is one file, ``<DIR>/<source volume ID>.shvol``:

``SHVOL1\\n``
    magic and format version;
frames
    one zstd frame per stored :data:`~stackhop.volumes.model.VERIFY_CHUNK`
    (4 MiB) piece of the volume, in offset order; a piece that is a hole or
    all zeros is not stored at all;
manifest
    JSON: the volume's size, its :func:`~stackhop.volumes.model.content_digest`,
    every piece's sha256 (holes too: the digest of their zeros), where each
    stored frame sits in the file, and the source volume's facts (ID, name,
    project, type, bootable, metadata ...);
trailer
    the manifest's length (8 bytes, big-endian) and ``SHVOLEND``.

The file is written as ``.<name>.part`` (mode 0600) and renamed into place on
commit, so a file with the final name is always complete. :class:`BackupWriter`
is a transfer :class:`~stackhop.transfer.base.Destination` the copy methods tee
their chunks into (:class:`Tee`); :class:`BackupReader` reads it back as a
transfer :class:`~stackhop.transfer.base.Source`, checking every piece.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from stackhop.errors import ConfigError, IntegrityError
from stackhop.transfer.base import Chunk, Destination, Digest
from stackhop.volumes.model import VERIFY_CHUNK, VolumeRef, content_digest

MAGIC = b"SHVOL1\n"
END = b"SHVOLEND"
EXTENSION = "shvol"
FORMAT_VERSION = 1
_ZEROS = bytes(VERIFY_CHUNK)


def _zero_digest(length: int) -> str:
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
            _zero_digest(length) if data is None else hashlib.sha256(data).hexdigest()
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


def backup_path(directory: str | os.PathLike[str], volume_id: str) -> Path:
    """Where the backup of source volume ``volume_id`` goes in ``directory``."""
    return Path(directory) / f"{volume_id}.{EXTENSION}"


def _volume_facts(volume: VolumeRef) -> dict[str, Any]:
    facts = asdict(volume)
    facts["metadata"] = dict(volume.metadata)
    facts["attachments"] = list(volume.attachments)
    return facts


class BackupWriter:
    """Writes one volume's backup file from the chunks of a copy (a transfer Destination)."""

    durable_chunks = False  # all or nothing: the file appears on commit only

    def __init__(self, directory: str | os.PathLike[str], volume: VolumeRef, *, level: int = 3):
        self.volume = volume
        self.path = backup_path(directory, volume.id)
        self.part = self.path.with_name(f".{self.path.name}.part")
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._file: BinaryIO | None = None
        self._size: int | None = None
        self._digests: list[str] = []
        self._frames: list[list[int]] = []  # [volume offset, file position, length]
        self._rechunker = Rechunker(self._block)
        #: The volume's content digest, once committed.
        self.content_digest: str | None = None
        self.bytes_stored = 0

    def open(self, size: int | None) -> None:
        self._size = size if size is not None else self.volume.size_bytes
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.part.exists():
                self.part.unlink()  # a crashed run's leftover: it was never complete
            fd = os.open(self.part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the backup {self.path}: {exc.strerror}; check --backup-to"
            ) from exc
        self._file = os.fdopen(fd, "wb")
        self._file.write(MAGIC)

    def _block(self, offset: int, data: bytes | None, length: int) -> None:
        assert self._file is not None
        if data is None or is_zero(data):
            self._digests.append(_zero_digest(length))
            return
        self._digests.append(hashlib.sha256(data).hexdigest())
        frame = self._compressor.compress(data)
        self._frames.append([offset, self._file.tell(), len(frame)])
        self._file.write(frame)
        self.bytes_stored += len(frame)

    def write(self, chunk: Chunk) -> None:
        self._rechunker.write(chunk.offset, chunk.data)

    def commit(self) -> None:
        assert self._file is not None and self._size is not None
        self._rechunker.finish(self._size)
        self.content_digest = content_digest(self._digests)
        manifest = {
            "format": FORMAT_VERSION,
            "compression": "zstd",
            "size": self._size,
            "chunk_size": VERIFY_CHUNK,
            "content_digest": self.content_digest,
            "chunk_digests": self._digests,
            "frames": self._frames,
            "volume": _volume_facts(self.volume),
        }
        body = json.dumps(manifest, sort_keys=True).encode()
        self._file.write(body + struct.pack(">Q", len(body)) + END)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self.part, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a crash
        finally:
            os.close(dir_fd)

    def abort(self, reason: BaseException) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.part.unlink(missing_ok=True)

    def verify(self, digest: Digest) -> None:
        return None  # its content digest is compared with the copy's by the orchestration


class BackupReader:
    """A backup file, read back: its manifest, and its data as a transfer Source."""

    declared: Digest | None = None

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.manifest = self._read_manifest()
        self.size: int | None = int(self.manifest["size"])
        self.total = int(self.manifest["size"])
        self.volume: Mapping[str, Any] = self.manifest.get("volume") or {}
        self.label = f"backup {self.path.name}"
        self.content_digest: str = str(self.manifest["content_digest"])

    def _bad(self, why: str) -> IntegrityError:
        return IntegrityError(
            f"backup {self.path} is damaged or not a stackhop volume backup ({why}); "
            "use another copy"
        )

    def _read_manifest(self) -> dict[str, Any]:
        try:
            with self.path.open("rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise self._bad("no SHVOL1 header")
                f.seek(-(8 + len(END)), os.SEEK_END)
                tail = f.read()
                if tail[8:] != END:
                    raise self._bad("no trailer: truncated?")
                (length,) = struct.unpack(">Q", tail[:8])
                f.seek(-(8 + len(END) + length), os.SEEK_END)
                manifest: dict[str, Any] = json.loads(f.read(length))
        except OSError as exc:
            raise ConfigError(f"cannot read backup {self.path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise self._bad(f"unreadable manifest: {exc}") from exc
        if manifest.get("format") != FORMAT_VERSION:
            raise self._bad(f"format {manifest.get('format')!r}, this stackhop reads 1")
        if content_digest(manifest["chunk_digests"]) != manifest["content_digest"]:
            raise self._bad("the manifest's chunk digests do not add up to its content digest")
        return manifest

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        """Every byte of the volume in :data:`VERIFY_CHUNK` pieces (holes as zeros), checked."""
        frames = {int(o): (int(pos), int(n)) for o, pos, n in self.manifest["frames"]}
        digests: list[str] = self.manifest["chunk_digests"]
        decompressor = zstandard.ZstdDecompressor()
        with self.path.open("rb") as f:
            for index, expected in enumerate(digests):
                offset = index * VERIFY_CHUNK
                length = min(VERIFY_CHUNK, self.total - offset)
                if offset in frames:
                    pos, n = frames[offset]
                    f.seek(pos)
                    data = decompressor.decompress(f.read(n), max_output_size=VERIFY_CHUNK)
                else:
                    data = _ZEROS[:length]
                if len(data) != length or hashlib.sha256(data).hexdigest() != expected:
                    raise self._bad(f"the piece at offset {offset} does not match its digest")
                yield Chunk(offset, data)

    def close(self) -> None:
        return None
