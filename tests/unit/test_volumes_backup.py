"""The volume backup file and the content digest helpers (pure, on local files)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from stackhop.errors import IntegrityError
from stackhop.transfer.base import Chunk, HashingDestination, copy
from stackhop.volumes.backup import (
    BackupReader,
    BackupWriter,
    ContentHasher,
    Rechunker,
    Tee,
    backup_path,
)
from stackhop.volumes.model import VERIFY_CHUNK, VolumeRef, content_digest

MIB = 1024 * 1024


def _volume(size_gib: int = 1) -> VolumeRef:
    return VolumeRef(cloud="src", id="0d2a6c1e-1111-2222-3333-444455556666", name="data",
                     size_gib=size_gib, project_id="p1", status="available",
                     volume_type="file", metadata={"a": "b"}, bootable=True)  # fmt: skip


def _flat_digest(data: bytes) -> str:
    return content_digest(
        hashlib.sha256(data[o : o + VERIFY_CHUNK]).hexdigest()
        for o in range(0, len(data), VERIFY_CHUNK)
    )


def _sparse_image(size: int) -> tuple[bytes, list[Chunk]]:
    """A volume image with data in a few places, and the chunks a sparse source would yield."""
    image = bytearray(size)
    chunks = []
    for offset, length in ((0, 100), (5 * MIB + 7, 3 * MIB), (size - 10, 10)):
        data = os.urandom(length)
        image[offset : offset + length] = data
        chunks.append(Chunk(offset, data))
    return bytes(image), chunks


def test_rechunker_cuts_any_chunks_into_aligned_pieces_with_holes() -> None:
    seen: list[tuple[int, bool, int]] = []
    r = Rechunker(lambda off, data, n: seen.append((off, data is not None, n)))
    r.write(VERIFY_CHUNK + 5, b"x" * 10)
    r.write(3 * VERIFY_CHUNK - 1, b"yy")
    r.finish(5 * VERIFY_CHUNK + 3)
    assert seen == [
        (0, False, VERIFY_CHUNK),
        (VERIFY_CHUNK, True, VERIFY_CHUNK),
        (2 * VERIFY_CHUNK, True, VERIFY_CHUNK),
        (3 * VERIFY_CHUNK, True, VERIFY_CHUNK),
        (4 * VERIFY_CHUNK, False, VERIFY_CHUNK),
        (5 * VERIFY_CHUNK, False, 3),
    ]


def test_rechunker_refuses_chunks_out_of_order() -> None:
    r = Rechunker(lambda *_: None)
    r.write(100, b"a")
    with pytest.raises(IntegrityError, match="offset order"):
        r.write(50, b"b")


def test_content_hasher_equals_the_flat_definition_for_sparse_input() -> None:
    size = 3 * VERIFY_CHUNK + 12345
    image, chunks = _sparse_image(size)
    hasher = ContentHasher()
    for chunk in chunks:
        hasher.write(chunk.offset, chunk.data)
    assert hasher.finish(size) == _flat_digest(image)


def test_backup_round_trip_stores_no_holes_and_reads_back_every_byte(tmp_path: Path) -> None:
    size = 16 * MIB
    image, chunks = _sparse_image(size)
    volume = _volume()
    writer = BackupWriter(tmp_path / "b", volume)
    writer.open(size)
    for chunk in chunks:
        writer.write(chunk)
    writer.commit()
    path = backup_path(tmp_path / "b", volume.id)
    assert path.exists() and not writer.part.exists()
    assert path.stat().st_mode & 0o777 == 0o600
    assert writer.content_digest == _flat_digest(image)
    assert path.stat().st_size < 4 * MIB + 100_000  # 3 pieces of random data, 1 of them partial

    reader = BackupReader(path)
    assert reader.content_digest == writer.content_digest
    assert reader.volume["name"] == "data" and reader.volume["metadata"] == {"a": "b"}
    got = b"".join(c.data for c in reader.chunks(VERIFY_CHUNK))
    assert got == image


def test_backup_is_written_from_the_same_copy_through_a_tee(tmp_path: Path) -> None:
    data = os.urandom(VERIFY_CHUNK + 99)

    class Bytes:
        label, declared = "bytes", None
        size: int | None = len(data)

        def chunks(self, chunk_size: int):  # type: ignore[no-untyped-def]
            for o in range(0, len(data), 1000):
                yield Chunk(o, data[o : o + 1000])

        def close(self) -> None:
            return None

    writer = BackupWriter(tmp_path, _volume())
    copy(Bytes(), Tee(HashingDestination(), writer), key="k")
    assert writer.content_digest == _flat_digest(data)
    assert b"".join(c.data for c in BackupReader(writer.path).chunks(0)) == data


def test_aborted_backup_leaves_nothing(tmp_path: Path) -> None:
    writer = BackupWriter(tmp_path, _volume())
    writer.open(MIB)
    writer.write(Chunk(0, b"a" * 10))
    writer.abort(RuntimeError("cut"))
    assert list(tmp_path.iterdir()) == []


def test_damaged_backup_is_refused(tmp_path: Path) -> None:
    writer = BackupWriter(tmp_path, _volume())
    writer.open(VERIFY_CHUNK)
    writer.write(Chunk(0, os.urandom(VERIFY_CHUNK)))
    writer.commit()
    raw = bytearray(writer.path.read_bytes())
    raw[20] ^= 0xFF  # inside the compressed frame
    writer.path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        list(BackupReader(writer.path).chunks(0))
    writer.path.write_bytes(bytes(raw[:-5]))
    with pytest.raises(IntegrityError, match="truncated"):
        BackupReader(writer.path)
