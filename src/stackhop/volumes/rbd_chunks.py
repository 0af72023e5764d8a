"""The rbd method's per-chunk digests in the journal: record, restore, compare.

A verified pass leaves, in the journal's chunk table under
:func:`chunk_key`, one row per non-zero :data:`VERIFY_CHUNK` of the volume
with its sha256 (a missing row reads as a hole). An incremental pass re-reads
only the chunks that changed, updates their rows, and recomputes the
volume's :func:`~stackhop.volumes.model.content_digest` from all of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from stackhop.errors import IntegrityError
from stackhop.journal import Journal
from stackhop.volumes.model import VERIFY_CHUNK, ZERO_CHUNK_SHA256


def chunk_key(source_id: str) -> str:
    """The journal chunk-table key of a source volume's verified per-chunk digests."""
    return f"volume-rbd:{source_id}"


def zero_digest_at(size: int, index: int) -> str:
    """The digest chunk ``index`` of a volume of ``size`` bytes has when it is a hole."""
    length = min(VERIFY_CHUNK, size - index * VERIFY_CHUNK)
    if length == VERIFY_CHUNK:
        return ZERO_CHUNK_SHA256
    return hashlib.sha256(bytes(length)).hexdigest()


def stored_digests(journal: Journal, source_id: str, size: int, rows: int) -> dict[int, str] | None:
    """Every chunk's digest from the journal; None when it no longer holds ``rows`` rows."""
    recorded = journal.chunks(chunk_key(source_id))
    if len(recorded) != rows:
        return None
    count = -(-size // VERIFY_CHUNK)
    digests = {i: zero_digest_at(size, i) for i in range(count)}
    for offset, row in recorded.items():
        digests[offset // VERIFY_CHUNK] = row.digest
    return digests


def record_digests(
    journal: Journal, source_id: str, digests: Mapping[int, str], size: int, *, clear: bool
) -> None:
    """Write ``digests`` (chunk index -> sha256) as rows; ``clear`` drops the old rows first."""
    key = chunk_key(source_id)
    if clear:
        journal.clear_chunks(key)
    known = {} if clear else journal.chunks(key)
    for index, value in sorted(digests.items()):
        length = min(VERIFY_CHUNK, size - index * VERIFY_CHUNK)
        if value == zero_digest_at(size, index) and index * VERIFY_CHUNK not in known:
            continue  # holes need no row: a missing row reads as zeros
        journal.record_chunk(key, index * VERIFY_CHUNK, length, value)


def row_count(journal: Journal, source_id: str) -> int:
    """How many rows the journal holds for ``source_id`` (checked by the next pass)."""
    return len(journal.chunks(chunk_key(source_id)))


def compare_digests(
    label: str, source: Mapping[int, str], dest: Mapping[int, str], volume_id: str
) -> None:
    """IntegrityError naming the first differing offsets unless both sides are equal."""
    differ = sorted(i for i in set(source) | set(dest) if source.get(i) != dest.get(i))
    if differ:
        offsets = ", ".join(str(i * VERIFY_CHUNK) for i in differ[:3])
        raise IntegrityError(
            f"{label}: destination volume {volume_id} differs from the source in "
            f"{len(differ)} chunk(s) (offsets {offsets}...); re-run without --incremental "
            "to copy it again"
        )
