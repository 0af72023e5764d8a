"""The rbd export-diff stream: parse, re-serialise, hash per chunk (pure logic, no cluster).

The streams here are built by hand in the documented v1 layout (the
functional tests cover streams written by the real ``rbd export-diff``). The
pump (:func:`copy_diff`) is driven through its own reader/sink interface with
records in memory: what it does with them needs no cluster.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator

import pytest

from stackhop.transfer.rbd_access import RbdError, copy_diff
from stackhop.transfer.rbd_diff import (
    MAGIC,
    ChunkHasher,
    DiffFormatError,
    DiffHeader,
    DiffWriter,
    WriteExtent,
    ZeroExtent,
    read_diff,
)


def _stream(from_snap: str | None, to_snap: str, size: int, records: list[bytes]) -> bytes:
    out = MAGIC
    if from_snap:
        out += b"f" + struct.pack("<I", len(from_snap)) + from_snap.encode()
    out += b"t" + struct.pack("<I", len(to_snap)) + to_snap.encode()
    out += b"s" + struct.pack("<Q", size)
    return out + b"".join(records) + b"e"


def _w(offset: int, data: bytes) -> bytes:
    return b"w" + struct.pack("<QQ", offset, len(data)) + data


def _z(offset: int, length: int) -> bytes:
    return b"z" + struct.pack("<QQ", offset, length)


def test_round_trip_is_byte_identical() -> None:
    raw = _stream("s1", "s2", 1 << 20, [_w(7, b"abc"), _z(4096, 8192), _w(65536, b"x" * 1000)])
    header, records = read_diff(io.BytesIO(raw))
    assert header == DiffHeader("s1", "s2", 1 << 20)
    out = io.BytesIO()
    writer = DiffWriter(out)
    writer.header(header)
    for record in records:
        writer.record(record)
    writer.end()
    assert out.getvalue() == raw and writer.bytes == len(raw)


def test_large_write_is_cut_into_pieces_that_import_the_same() -> None:
    data = bytes(range(256)) * 40
    header, records = read_diff(io.BytesIO(_stream(None, "s", 1 << 20, [_w(100, data)])), 4096)
    pieces = list(records)
    assert [p.offset for p in pieces] == [100, 4196, 8292]
    assert all(isinstance(p, WriteExtent) for p in pieces)
    assert b"".join(p.data for p in pieces if isinstance(p, WriteExtent)) == data
    assert header.from_snap is None


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"rbd diff v2\n", "not an rbd diff v1"),
        (_stream(None, "s", 100, [_w(0, b"abc")])[:-3], "ended inside"),
        (_stream(None, "s", 100, [b"q"]), "unknown record"),
    ],
)
def test_damaged_streams_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(DiffFormatError, match=message):
        _, records = read_diff(io.BytesIO(raw))
        list(records)


def test_complete_hasher_matches_a_plain_read_of_the_image() -> None:
    chunk, size = 16, 56  # 4 chunks, the last one 8 bytes
    image = bytearray(size)
    image[3:8] = b"hello"
    image[40:50] = b"0123456789"  # spans chunks 2 and 3
    hasher = ChunkHasher(size=size, chunk=chunk, complete=True)
    hasher.add(WriteExtent(3, b"hello"))
    hasher.add(ZeroExtent(20, 4))
    hasher.add(WriteExtent(40, b"0123456789"))
    digests = hasher.finish()
    expected = {
        i: hashlib.sha256(bytes(image[i * chunk : (i + 1) * chunk])).hexdigest() for i in range(4)
    }
    assert digests == expected


def test_partial_hasher_reports_chunks_it_cannot_see_whole() -> None:
    hasher = ChunkHasher(size=64, chunk=16, complete=False)
    hasher.add(WriteExtent(16, b"a" * 16))  # chunk 1, whole
    hasher.add(WriteExtent(40, b"b" * 4))  # chunk 2, partly
    hasher.add(ZeroExtent(48, 16))  # chunk 3, whole zeros
    digests = hasher.finish()
    assert digests == {
        1: hashlib.sha256(b"a" * 16).hexdigest(),
        3: hashlib.sha256(bytes(16)).hexdigest(),
    }
    assert hasher.partial == {2}


def test_out_of_order_extents_are_an_error() -> None:
    hasher = ChunkHasher(size=64, chunk=16, complete=True)
    hasher.add(WriteExtent(40, b"x"))
    with pytest.raises(DiffFormatError, match="not in offset order"):
        hasher.add(WriteExtent(2, b"y"))


def test_whole_chunk_records_hash_in_place_and_overlaps_are_refused() -> None:
    hasher = ChunkHasher(size=48, chunk=16, complete=True)
    hasher.add(WriteExtent(16, b"q" * 16))
    assert hasher.finish()[1] == hashlib.sha256(b"q" * 16).hexdigest()
    again = ChunkHasher(size=48, chunk=16, complete=True)
    again.add(WriteExtent(16, b"q" * 16))
    with pytest.raises(DiffFormatError, match="overlap"):
        again.add(ZeroExtent(20, 2))


class _ListReader:
    """A DiffReader over records in memory (the pump's own interface, no cluster)."""

    def __init__(self, size: int, records: list[WriteExtent], fail_at: int | None = None) -> None:
        self.header = DiffHeader(None, "s", size)
        self._records, self._fail_at = records, fail_at
        self.cancelled = self.closed = False

    def records(self) -> Iterator[WriteExtent]:
        for n, record in enumerate(self._records):
            if n == self._fail_at:
                raise RbdError("rbd export-diff on cloud 'src' failed: the source went away")
            yield record

    def cancel(self) -> None:
        self.cancelled = True

    def close(self) -> None:
        self.closed = True


class _ListSink:
    confirms_writes = False
    reads_back = False

    def __init__(self) -> None:
        self.bytes = 0
        self.written: list[tuple[int, bytes]] = []
        self.zeroed: list[tuple[int, int]] = []
        self.finished = self.aborted = False

    def header(self, header: DiffHeader) -> None:
        self.size = header.size

    def record(self, record: WriteExtent | ZeroExtent) -> None:
        if isinstance(record, ZeroExtent):
            self.zeroed.append((record.offset, record.length))
            return
        self.written.append((record.offset, record.data))
        self.bytes += record.length

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


def test_copy_diff_passes_every_record_in_order_through_the_hooks() -> None:
    records = [WriteExtent(i * 16, bytes([i]) * 16) for i in range(20)]
    seen: list[int] = []
    sink = _ListSink()
    stats = copy_diff(
        _ListReader(320, records), sink, chunk=32, hooks=[lambda _h, r: seen.append(r.offset)]
    )
    assert seen == [r.offset for r in records] == [o for o, _ in sink.written]
    assert sink.finished and not sink.aborted and sink.zeroed == []
    assert stats.data_bytes == stats.wire_bytes == 320 and stats.touched == set(range(10))
    assert not stats.writes_confirmed  # this sink does not say it saw its writes land


def test_copy_diff_turns_pieces_of_zeros_into_zeroed_extents_when_asked() -> None:
    records = [
        WriteExtent(0, b"a" * 16),
        WriteExtent(16, bytes(16)),
        WriteExtent(32, bytes(15) + b"\1"),
        WriteExtent(48, bytes(5)),
    ]
    sink = _ListSink()
    sink.confirms_writes = True
    hooked: list[WriteExtent | ZeroExtent] = []
    hasher = ChunkHasher(size=64, chunk=16, complete=True)
    stats = copy_diff(
        _ListReader(64, records),
        sink,
        chunk=16,
        hooks=[lambda _h, r: hooked.append(r), lambda _h, r: hasher.add(r)],
        zero_data=True,
    )
    assert hooked == [records[0], ZeroExtent(16, 16), records[2], ZeroExtent(48, 5)]
    assert sink.written == [(0, b"a" * 16), (32, bytes(15) + b"\1")]
    assert sink.zeroed == [(16, 16), (48, 5)]
    assert (stats.data_bytes, stats.zero_bytes, stats.writes_confirmed) == (32, 21, True)
    # The digests are those of the bytes, zeros or not.
    plain = [b"a" * 16, bytes(16), bytes(15) + b"\1", bytes(16)]
    assert hasher.finish() == {i: hashlib.sha256(d).hexdigest() for i, d in enumerate(plain)}


def test_copy_diff_failure_on_the_read_thread_aborts_the_sink() -> None:
    reader = _ListReader(320, [WriteExtent(i * 16, b"x" * 16) for i in range(20)], fail_at=7)
    sink = _ListSink()
    with pytest.raises(RbdError, match="the source went away"):
        copy_diff(reader, sink, chunk=32)
    assert sink.aborted and not sink.finished and reader.cancelled and reader.closed
    assert len(sink.written) == 7
