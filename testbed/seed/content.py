"""Deterministic byte contents for the seeded images and volumes (standard library only).

Every byte the seed writes is a pure function of the inventory, so a test can
recompute what an image or a volume must hold and compare hashes without any
stored fixture. Two generators:

* :class:`Pattern` — a few hundred KiB of pseudo-random bytes with runs of
  zeros (images; the start of volumes made from them);
* :class:`Dense` — a whole volume of non-zero data, every MiB different, made
  by rotating one pseudo-random MiB (cheap: no per-byte generation).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

MIB = 1024 * 1024
GIB = 1024 * MIB
CHUNK = 4 * MIB


@dataclass(frozen=True)
class Pattern:
    """``size`` pseudo-random bytes from ``seed``, with ``zero_runs`` of (offset, length) zeroed."""

    seed: str
    size: int
    zero_runs: tuple[tuple[int, int], ...] = ()

    def data(self) -> bytes:
        return _pattern_bytes(self)


@functools.cache
def _pattern_bytes(p: Pattern) -> bytes:
    buf = bytearray(random.Random(p.seed).randbytes(p.size))
    for offset, length in p.zero_runs:
        end = min(offset + length, p.size)
        buf[offset:end] = bytes(end - offset)
    return bytes(buf)


@dataclass(frozen=True)
class Dense:
    """``size`` bytes of non-zero data from ``seed``: MiB ``i`` is the base MiB rotated by ``i``."""

    seed: str
    size: int

    def chunks(self, chunk_size: int = CHUNK) -> Iterator[bytes]:
        if chunk_size % MIB:
            raise ValueError("chunk_size must be a whole number of MiB")
        base = _dense_base(self.seed)
        offset = 0
        while offset < self.size:
            n = min(chunk_size, self.size - offset)
            out = bytearray()
            first = offset // MIB
            for i in range(first, first + (n + MIB - 1) // MIB):
                # 4099 is prime: successive MiBs never share an alignment, so no two MiBs match.
                k = (i * 4099) % MIB
                out += base[k:] + base[:k]
            yield bytes(out[:n])
            offset += n


@functools.cache
def _dense_base(seed: str) -> bytes:
    base = bytearray(random.Random(seed).randbytes(MIB))
    # No zero byte at all, so no chunk of a dense volume is ever skippable as sparse.
    return bytes(b or 0x5A for b in base)


def padded_chunks(head: bytes, size: int, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """``head`` followed by zeros up to ``size`` bytes, in chunks."""
    if len(head) > size:
        raise ValueError("head longer than the whole")
    zero = bytes(chunk_size)
    offset = 0
    while offset < size:
        n = min(chunk_size, size - offset)
        if offset >= len(head):
            yield zero[:n]
        else:
            piece = head[offset:offset + n]
            yield piece + bytes(n - len(piece))
        offset += n


def sha256_of(chunks: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()
