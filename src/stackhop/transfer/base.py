"""The byte-mover contract: a source of chunks, a destination, hashing and verification between.

Every transfer of bytes in stackhop (a Glance image to another Glance, an
image into an archive, later an RBD image or a block device over ssh) is a
:class:`Source` and a :class:`Destination` handed to :func:`copy`, which

- reads the source chunk by chunk (a sparse source yields only its allocated
  extents: a chunk carries its offset);
- hashes every chunk (sha256, recorded in the journal's chunk table) and the
  whole stream (sha256, plus the algorithm the source declares, such as
  Glance's ``os_hash_algo``);
- writes each chunk to the destination, reading ahead on a thread through a
  bounded queue, so memory stays at a few chunks whatever the size;
- checks the whole-stream digest against what the source declared *before*
  the destination commits, so a destination that can hold back its last
  bytes (Glance does) never makes a bad copy visible;
- then lets the destination verify its own view of the data.

A mismatch raises :class:`~stackhop.errors.IntegrityError` naming the object;
the destination is aborted. ``copy`` never retries: the caller (the engine)
does, and a streaming destination starts over.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from stackhop.errors import IntegrityError
from stackhop.journal import CHUNK_CONFIRMED, CHUNK_PENDING, Journal

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
"""Bytes per chunk: large enough for throughput, small enough for bounded memory."""

READ_AHEAD = 3
"""Chunks the reader thread may hold before the writer takes them (bounds memory)."""


@dataclass(frozen=True)
class Chunk:
    """``data`` at byte ``offset`` of the object."""

    offset: int
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


@dataclass(frozen=True)
class Digest:
    """A declared digest of a whole object: algorithm name (hashlib's) and hex value."""

    algorithm: str
    value: str


class Source(Protocol):
    """Where bytes come from."""

    #: The object's name in messages (``image 3f2a... (alpha-base)``).
    label: str
    #: Total bytes if known.
    size: int | None
    #: What the source says the whole object hashes to, if it says.
    declared: Digest | None

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        """The object's allocated data in offset order, at most ``chunk_size`` bytes a chunk."""
        ...

    def close(self) -> None:
        """Release the connection or file (also called after an error)."""
        ...


class Destination(Protocol):
    """Where bytes go."""

    #: True when ``write`` returning means the chunk is durable (a block device,
    #: an RBD image): confirmed chunks need not be sent again on resume. False
    #: for a stream that is all-or-nothing (a Glance upload).
    durable_chunks: bool

    def open(self, size: int | None) -> None:
        """Prepare to receive ``size`` bytes."""
        ...

    def write(self, chunk: Chunk) -> None:
        """Take one chunk (may block: that is the back-pressure that bounds memory)."""
        ...

    def commit(self) -> None:
        """Everything was written and the stream's digest matched: make it final."""
        ...

    def abort(self, reason: BaseException) -> None:
        """Give up: leave no partial data that could pass for a copy."""
        ...

    def verify(self, digest: Digest) -> None:
        """After commit, check the destination's own view of the data; IntegrityError if off."""
        ...


ChunkFilter = Callable[[Chunk], Chunk]

#: Test hook: functions applied to every chunk between reading and hashing, to
#: simulate corruption on the wire (a flipped byte) in functional tests. Empty in
#: production; nothing in stackhop adds to it.
chunk_filters: list[ChunkFilter] = []

ProgressCallback = Callable[[int, int | None], None]


@dataclass
class TransferResult:
    """What one transfer moved and what it hashed to."""

    bytes: int = 0
    chunks: int = 0
    sha256: str = ""
    digests: dict[str, str] = field(default_factory=dict)


_DONE = object()


def _read_ahead(source: Source, chunk_size: int, stop: threading.Event) -> Iterator[Chunk]:
    """The source's chunks, read on a thread through a bounded queue."""
    slots: queue.Queue[object] = queue.Queue(maxsize=READ_AHEAD)

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for chunk in source.chunks(chunk_size):
                if not put(chunk):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consuming thread, which raises it
            put(exc)

    thread = threading.Thread(target=reader, name=f"read {source.label}", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Chunk)
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


def copy(
    source: Source,
    destination: Destination,
    *,
    key: str,
    journal: Journal | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
) -> TransferResult:
    """Move every byte of ``source`` into ``destination``, hashed and verified.

    ``key`` names the object in the journal's chunk table. Raises
    IntegrityError (destination aborted) when the bytes read do not match
    the source's declared digest, or the destination's view differs after
    commit. Any other failure also aborts the destination and is re-raised.
    """
    declared = source.declared
    whole = hashlib.sha256()
    extra = hashlib.new(declared.algorithm) if declared and declared.algorithm != "sha256" else None
    result = TransferResult()
    stop = threading.Event()
    if journal is not None:
        journal.clear_chunks(key)  # a stream starts over; stale chunk rows would mislead
    destination.open(source.size)
    try:
        for chunk in _read_ahead(source, chunk_size, stop):
            for tamper in chunk_filters:
                chunk = tamper(chunk)
            chunk_digest = hashlib.sha256(chunk.data).hexdigest()
            whole.update(chunk.data)
            if extra is not None:
                extra.update(chunk.data)
            destination.write(chunk)
            if journal is not None:
                state = CHUNK_CONFIRMED if destination.durable_chunks else CHUNK_PENDING
                journal.record_chunk(key, chunk.offset, len(chunk.data), chunk_digest, state)
            result.bytes += len(chunk.data)
            result.chunks += 1
            if progress is not None:
                progress(result.bytes, source.size)
        result.sha256 = whole.hexdigest()
        result.digests = {"sha256": result.sha256}
        if extra is not None and declared is not None:
            result.digests[declared.algorithm] = extra.hexdigest()
        if source.size is not None and result.bytes != source.size:
            raise IntegrityError(
                f"{source.label}: read {result.bytes} bytes but the source declares "
                f"{source.size}; the source changed or the read was cut short, re-run to retry"
            )
        if declared is not None and result.digests[declared.algorithm] != declared.value:
            raise IntegrityError(
                f"{source.label}: the data read hashes to {declared.algorithm} "
                f"{result.digests[declared.algorithm][:16]}..., not {declared.value[:16]}... as "
                "the source declares; nothing was kept on the destination, re-run to retry "
                "(if it persists, the source copy is damaged)"
            )
    except BaseException as exc:
        stop.set()
        destination.abort(exc)
        source.close()
        raise
    source.close()
    destination.commit()
    if declared is not None:
        destination.verify(declared)
    if journal is not None and not destination.durable_chunks:
        # The stream is final and verified as a whole: per-chunk rows add nothing now.
        journal.clear_chunks(key)
    return result


class HashingDestination:
    """A destination that keeps nothing: reading through it verifies a source's data."""

    durable_chunks = True

    def open(self, size: int | None) -> None:
        return None

    def write(self, chunk: Chunk) -> None:
        return None

    def commit(self) -> None:
        return None

    def abort(self, reason: BaseException) -> None:
        return None

    def verify(self, digest: Digest) -> None:
        return None
