"""Applying a diff cut to the differing chunks turns any destination into the source.

Pure functions on records: no cluster needed.
"""

from __future__ import annotations

import random

import pytest

from stackhop.transfer.rbd_access import chunk_spans, only_spans
from stackhop.transfer.rbd_diff import Record, WriteExtent, ZeroExtent

CHUNK = 16
SIZE = 16 * 12 + 5  # a short last chunk


def _diff_from_nothing(image: bytes, rng: random.Random) -> list[Record]:
    """Records of ``image`` as a diff from nothing: data runs of random length, holes
    (all-zero runs) mostly left out, sometimes sent as zero extents."""
    records: list[Record] = []
    offset = 0
    while offset < len(image):
        n = min(rng.randint(1, 40), len(image) - offset)
        piece = image[offset : offset + n]
        if any(piece):
            records.append(WriteExtent(offset, piece))
        elif rng.random() < 0.3:
            records.append(ZeroExtent(offset, n))
        offset += n
    return records


def _apply(image: bytearray, records: list[Record]) -> None:
    last = -1
    for record in records:
        assert record.offset >= last, "pieces must come in offset order without overlap"
        if isinstance(record, WriteExtent):
            image[record.offset : record.offset + record.length] = record.data
        else:
            image[record.offset : record.offset + record.length] = bytes(record.length)
        last = record.offset + record.length


def _random_image(rng: random.Random) -> bytes:
    data = bytearray(SIZE)
    for _ in range(rng.randint(0, 6)):
        start = rng.randrange(SIZE)
        end = min(SIZE, start + rng.randint(1, 50))
        data[start:end] = bytes(rng.randint(1, 255) for _ in range(end - start))
    return bytes(data)


@pytest.mark.parametrize("seed", range(300))
def test_cut_diff_makes_the_destination_equal_and_touches_only_differing_chunks(
    seed: int,
) -> None:
    rng = random.Random(seed)
    source, destination = _random_image(rng), bytearray(_random_image(rng))
    count = -(-SIZE // CHUNK)
    differ = [
        i for i in range(count)
        if source[i * CHUNK : (i + 1) * CHUNK] != destination[i * CHUNK : (i + 1) * CHUNK]
    ]
    spans = chunk_spans(differ, chunk=CHUNK, size=SIZE)
    pieces = list(only_spans(_diff_from_nothing(source, rng), spans))
    _apply(destination, pieces)
    assert bytes(destination) == source
    written = {
        i for p in pieces for i in range(p.offset // CHUNK, (p.offset + p.length - 1) // CHUNK + 1)
    }
    assert written == set(differ)


def test_spans_merge_adjacent_chunks_and_stop_at_the_size() -> None:
    assert chunk_spans([3, 1, 2, 7], chunk=10, size=75) == [(10, 40), (70, 75)]
    assert list(only_spans([WriteExtent(0, b"ab")], [])) == []
