"""The byte-mover contract: hashing, verification, journal chunks, bounded read-ahead."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackhop.errors import IntegrityError
from stackhop.journal import CHUNK_CONFIRMED, Journal
from stackhop.transfer import Chunk, Digest, chunk_filters, copy
from stackhop.transfer.base import READ_AHEAD
from stackhop.transfer.glance import _Aborted, _QueueReader

DATA = bytes(range(256)) * 1000  # 256,000 bytes


class MemorySource:
    def __init__(self, data: bytes, *, declared: Digest | None = None, size: int | None = None,
                 fail_at: int | None = None) -> None:
        self.data = data
        self.label = "memory"
        self.size = len(data) if size is None else size
        self.declared = declared
        self.fail_at = fail_at
        self.produced = 0
        self.closed = False

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        for offset in range(0, len(self.data), chunk_size):
            if self.fail_at is not None and offset >= self.fail_at:
                raise ConnectionResetError("source broke")
            self.produced += 1
            yield Chunk(offset, self.data[offset:offset + chunk_size])

    def close(self) -> None:
        self.closed = True


class MemoryDestination:
    def __init__(self, *, durable: bool = True, delay: float = 0.0) -> None:
        self.durable_chunks = durable
        self.buffer = bytearray()
        self.committed = False
        self.aborted: BaseException | None = None
        self.delay = delay
        self.written = 0

    def open(self, size: int | None) -> None:
        self.buffer = bytearray(size or 0)

    def write(self, chunk: Chunk) -> None:
        time.sleep(self.delay)
        self.buffer[chunk.offset:chunk.end] = chunk.data
        self.written += 1

    def commit(self) -> None:
        self.committed = True

    def abort(self, reason: BaseException) -> None:
        self.aborted = reason

    def verify(self, digest: Digest) -> None:
        if hashlib.new(digest.algorithm, bytes(self.buffer)).hexdigest() != digest.value:
            raise IntegrityError("destination differs")


def sha512(data: bytes) -> Digest:
    return Digest("sha512", hashlib.sha512(data).hexdigest())


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(str(tmp_path / "j.sqlite")) as j:
        yield j


def test_copy_hashes_chunks_and_whole_and_confirms_durable_chunks(journal: Journal) -> None:
    source = MemorySource(DATA, declared=sha512(DATA))
    destination = MemoryDestination()
    seen: list[tuple[int, int | None]] = []
    result = copy(source, destination, key="obj", journal=journal, chunk_size=100_000,
                  progress=lambda done, total: seen.append((done, total)))
    assert bytes(destination.buffer) == DATA and destination.committed
    assert result.bytes == len(DATA) and result.chunks == 3
    assert result.sha256 == hashlib.sha256(DATA).hexdigest()
    assert result.digests["sha512"] == sha512(DATA).value
    chunks = journal.chunks("obj")
    assert sorted(chunks) == [0, 100_000, 200_000]
    assert all(c.state == CHUNK_CONFIRMED for c in chunks.values())
    assert chunks[100_000].digest == hashlib.sha256(DATA[100_000:200_000]).hexdigest()
    assert seen[-1] == (len(DATA), len(DATA)) and source.closed


def test_a_stream_destination_keeps_no_chunk_rows_once_verified(journal: Journal) -> None:
    copy(MemorySource(DATA, declared=sha512(DATA)), MemoryDestination(durable=False),
         key="obj", journal=journal, chunk_size=64_000)
    assert journal.chunks("obj") == {}


def test_data_not_matching_the_declared_hash_aborts_before_commit(journal: Journal) -> None:
    destination = MemoryDestination(durable=False)
    wrong = Digest("sha512", "0" * 128)
    with pytest.raises(IntegrityError, match="hashes to sha512"):
        copy(MemorySource(DATA, declared=wrong), destination, key="obj", journal=journal)
    assert not destination.committed and isinstance(destination.aborted, IntegrityError)


def test_a_flipped_byte_from_the_test_hook_is_caught() -> None:
    def flip(chunk: Chunk) -> Chunk:
        return Chunk(chunk.offset, bytes([chunk.data[0] ^ 1]) + chunk.data[1:])

    chunk_filters.append(flip)
    try:
        destination = MemoryDestination()
        with pytest.raises(IntegrityError):
            copy(MemorySource(DATA, declared=sha512(DATA)), destination, key="obj")
        assert not destination.committed
    finally:
        chunk_filters.clear()


def test_a_short_read_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="read 256000 bytes but the source declares"):
        copy(MemorySource(DATA, size=len(DATA) + 1), MemoryDestination(), key="obj")


def test_the_destination_verifies_after_commit() -> None:
    class Lossy(MemoryDestination):
        def commit(self) -> None:
            self.buffer[0] ^= 1
            super().commit()

    with pytest.raises(IntegrityError, match="destination differs"):
        copy(MemorySource(DATA, declared=sha512(DATA)), Lossy(), key="obj")


def test_a_source_error_aborts_the_destination_and_is_raised() -> None:
    destination = MemoryDestination()
    source = MemorySource(DATA, fail_at=100_000)
    with pytest.raises(ConnectionResetError):
        copy(source, destination, key="obj", chunk_size=50_000)
    assert isinstance(destination.aborted, ConnectionResetError) and source.closed


def test_read_ahead_is_bounded_by_a_slow_destination() -> None:
    source = MemorySource(DATA * 4)
    destination = MemoryDestination(delay=0.01)
    most_ahead = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal most_ahead
        while not done.is_set():
            most_ahead = max(most_ahead, source.produced - destination.written)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        copy(source, destination, key="obj", chunk_size=10_000)
    finally:
        done.set()
        watcher.join()
    # the queue, the chunk the reader holds, the one being written
    assert most_ahead <= READ_AHEAD + 2


def test_upload_body_reads_across_chunks_and_aborts_with_the_reason() -> None:
    body = _QueueReader(10)
    body.slots.put(b"abcdef")
    assert body.read(4) == b"abcd"
    assert body.read(4) == b"ef"
    body.slots.put(b"ghij")
    body.slots.put(None)
    assert body.read() == b"ghij" and body.read(3) == b""
    broken = _QueueReader(5)
    broken.slots.put(IntegrityError("bad hash"))
    with pytest.raises(_Aborted, match="bad hash"):
        broken.read(5)
