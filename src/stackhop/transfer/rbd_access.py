"""One interface to an RBD pool, whether librbd runs in-process or the ``rbd`` tools run.

A cluster is reached either with Debian's ``rados``/``rbd`` bindings in this
process (:mod:`stackhop.transfer.rbd_lib`: no process start, one cluster
connection per cluster, reads and writes that release the GIL) or with the
``rbd`` command line locally or on an ssh host (:mod:`stackhop.transfer.rbd`:
the fallback when the bindings are missing, and the only way across an ssh
hop). Both implement :class:`RbdAccess`; a diff leaves one as a
:class:`DiffReader` and enters the other as a :class:`DiffSink`, in the
records of :mod:`stackhop.transfer.rbd_diff`, so any pair of the two can be
combined and :func:`copy_diff` sees every byte (hashing, the backup tee).

:func:`copy_diff` reads on a thread into a bounded queue, so parsing or
reading the source overlaps hashing and writing the destination; memory
stays at :data:`READ_AHEAD` pieces of at most
:data:`~stackhop.transfer.rbd_diff.MAX_PIECE` bytes.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import tenacity

from stackhop.errors import CloudUnreachableError, StackhopError
from stackhop.transfer.rbd_diff import (
    ChunkDigests,
    ChunkHasher,
    DiffHeader,
    Record,
    WriteExtent,
    ZeroExtent,
)

READ_AHEAD = 4
"""Records (pieces of at most 4 MiB) read ahead of the writer: with librbd's reads and writes
in flight besides, 8 only added 25 MB of peak memory, no speed (measured on the testbed)."""

T = TypeVar("T")

WATCH_EXPIRY = 45.0
"""Seconds a removal waits for an image's watchers to go. A process killed while it had the
image open (a copy killed -9) leaves its watch registered until the OSDs time it out
(``osd_client_watch_timeout``, 30 s by default), and until then Ceph refuses to remove the
image (EBUSY, "image still has watchers"); a re-run right after the kill meets exactly that."""

WATCH_POLL = 3.0
"""Seconds between two removal attempts while the image has watchers."""


class RbdError(StackhopError):
    """An RBD operation failed (exit code of a cloud that cannot be reached)."""

    exit_code = CloudUnreachableError.exit_code


def once_unwatched(remove: Callable[[], object], busy: Callable[[Exception], bool]) -> None:
    """Run ``remove``; while it fails because the image still has watchers (``busy``), try
    again every :data:`WATCH_POLL` s for up to :data:`WATCH_EXPIRY` s, then raise its error
    (a client that still has the image open: it must close it first)."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, Exception) and busy(exc)),
        stop=tenacity.stop_after_delay(WATCH_EXPIRY),
        wait=tenacity.wait_fixed(WATCH_POLL),
        reraise=True,
    )
    retrying(remove)


class DiffReader(Protocol):
    """A diff leaving a cluster: its header, then its records in offset order."""

    header: DiffHeader

    def records(self) -> Iterator[Record]:
        """The records; runs on the read-ahead thread of :func:`copy_diff`."""
        ...

    def cancel(self) -> None:
        """Make :meth:`records` stop soon (called from another thread after a failure)."""
        ...

    def close(self) -> None:
        """Release the reader once :meth:`records` is done; raise if the producer failed
        (unless cancelled)."""
        ...


class DiffSink(Protocol):
    """A diff entering a cluster's image, as ``rbd import-diff`` applies it."""

    #: True when, once :meth:`finish` has returned, every record handed to :meth:`record`
    #: is known to have been acknowledged by the cluster as durably written at its offset
    #: (librbd in this process, each completion checked); False when another program
    #: applies the diff and its exit status is all stackhop learns.
    confirms_writes: bool

    #: True when, once :meth:`finish` has returned, every extent written was read back
    #: from the cluster and compared equal (:class:`~stackhop.transfer.rbd_lib_io.LibDiffSink`
    #: asked to ``read_back``); False when nothing was read back.
    reads_back: bool

    @property
    def bytes(self) -> int:
        """Bytes handed to the cluster so far (the serialised stream for the CLI)."""
        ...

    def header(self, header: DiffHeader) -> None:
        """Check the base snapshot, size the image."""
        ...

    def record(self, record: Record) -> None: ...

    def finish(self) -> None:
        """Make everything durable and create the diff's end snapshot on the image."""
        ...

    def abort(self) -> None:
        """Stop after a failure (the image may be half-written; the caller replaces it)."""
        ...


class RbdAccess(Protocol):
    """An RBD pool of one cluster, however it is reached."""

    @property
    def cloud(self) -> str:
        """The cloud's name, as in the storage map."""
        ...

    @property
    def pool(self) -> str: ...

    @property
    def where(self) -> str:
        """``cloud 'x' (pool p ...)`` for messages."""
        ...

    def spec(self, image: str, snap: str | None = None) -> str: ...

    def size(self, image: str) -> int | None:
        """The image's size in bytes, None when it does not exist."""
        ...

    def snapshots(self, image: str) -> list[str]:
        """Names of the image's snapshots ([] when the image does not exist)."""
        ...

    def create_snapshot(self, image: str, snap: str) -> None: ...

    def remove_snapshot(self, image: str, snap: str) -> None:
        """Remove ``image@snap``; a missing image or snapshot is fine."""
        ...

    def create_image(self, image: str, size: int) -> None: ...

    def remove_image(self, image: str) -> None:
        """Remove ``image`` and its snapshots; a missing image is fine."""
        ...

    def export_diff(self, image: str, snap: str, from_snap: str | None = None) -> DiffReader:
        """The diff of ``image@snap`` since ``from_snap`` (since nothing when None)."""
        ...

    def import_diff(
        self, image: str, retire: str | None = None, *, fresh: bool = False,
        read_back: bool = False,
    ) -> DiffSink:
        """A sink applying a diff to ``image`` (which exists); ``retire``: a snapshot of
        ``image`` to remove when the diff's end snapshot is created; ``fresh``: the image
        was just created and never written, so zeroed extents need not be written;
        ``read_back``: read every extent back as it is written, where the sink can
        (:attr:`DiffSink.reads_back` says whether it did)."""
        ...

    def chunk_digests(
        self, image: str, snap: str, chunk: int, from_snap: str | None = None
    ) -> ChunkDigests:
        """sha256 per ``chunk`` of ``image@snap``: every chunk (holes unread), or with
        ``from_snap`` only the chunks changed since it."""
        ...


def read_ahead(
    items: Iterable[T], *, depth: int, name: str, stop: threading.Event
) -> Generator[T, None, None]:
    """``items`` produced on a thread through a queue of ``depth``; errors re-raised here.

    Closing the returned generator (or setting ``stop``) ends the producer at its next item.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consuming thread, which raises it
            put(exc)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():
            # Unblock a producer waiting on a full queue, then let it see ``stop``.
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


@dataclass
class DiffStats:
    """What went through one :func:`copy_diff`."""

    header: DiffHeader | None = None
    #: Data bytes of ``w`` records (what changed, uncompressed).
    data_bytes: int = 0
    #: Bytes of ``z`` records (zeroed extents, never sent as data).
    zero_bytes: int = 0
    #: Bytes handed to the destination (the re-serialised stream for the CLI).
    wire_bytes: int = 0
    #: Chunk indexes any record touched.
    touched: set[int] = field(default_factory=set)
    #: Whether the sink saw every write acknowledged (:attr:`DiffSink.confirms_writes`).
    writes_confirmed: bool = False
    #: Whether the sink read every write back equal (:attr:`DiffSink.reads_back`).
    read_back: bool = False


@functools.lru_cache(maxsize=4)
def _zeros(length: int) -> bytes:
    return bytes(length)


def as_zero_extent(record: Record) -> Record:
    """``record`` itself, or a :class:`ZeroExtent` when it is a write of zeros only.

    A volume's allocated space often holds zeros (a file system's free blocks, a zeroed
    disk): such a piece need not be hashed (its digest is known), nor written to an image
    that reads as zeros there already. The test is one ``memcmp`` against zeros, which
    stops at the first non-zero byte of real data (11 ms per GiB of zeros here).
    """
    if isinstance(record, WriteExtent) and record.data == _zeros(record.length):
        return ZeroExtent(record.offset, record.length)
    return record


RecordHook = Callable[[DiffHeader, Record], None]


def copy_diff(
    reader: DiffReader,
    sink: DiffSink,
    *,
    chunk: int,
    hooks: Sequence[RecordHook] = (),
    on_progress: Callable[[int], None] | None = None,
    zero_data: bool = False,
) -> DiffStats:
    """Apply ``reader``'s diff through ``sink``, handing every record to ``hooks`` first.

    The reader runs on its own thread, ahead by at most :data:`READ_AHEAD` records. On
    any failure both ends are stopped and the first error is raised. ``zero_data``: a
    write of zeros only travels as a zeroed extent (:func:`as_zero_extent`).
    """
    stats = DiffStats(header=reader.header)
    stop = threading.Event()
    try:
        sink.header(reader.header)
        records = read_ahead(reader.records(), depth=READ_AHEAD, name="rbd diff read", stop=stop)
        try:
            for record in records:
                if zero_data:
                    record = as_zero_extent(record)
                for hook in hooks:
                    hook(reader.header, record)
                sink.record(record)
                if isinstance(record, WriteExtent):
                    stats.data_bytes += record.length
                else:
                    stats.zero_bytes += record.length
                first = record.offset // chunk
                last = (record.offset + max(record.length, 1) - 1) // chunk
                stats.touched.update(range(first, last + 1))
                if on_progress is not None:
                    on_progress(record.offset + record.length)
        except BaseException:
            reader.cancel()
            raise
        finally:
            records.close()  # joins the read-ahead thread
        reader.close()
        sink.finish()
    except BaseException:
        reader.cancel()
        try:
            reader.close()
        except StackhopError:
            pass  # the error being raised says more
        sink.abort()
        raise
    stats.wire_bytes = sink.bytes
    stats.writes_confirmed = sink.confirms_writes
    stats.read_back = sink.reads_back
    return stats


def hash_diff(reader: DiffReader, *, chunk: int) -> ChunkDigests:
    """Per-chunk digests of ``reader``'s diff (every chunk for a diff from nothing),
    read ahead on a thread while this one hashes."""
    hasher = ChunkHasher(
        size=reader.header.size, chunk=chunk, complete=reader.header.from_snap is None
    )
    stop = threading.Event()
    records = read_ahead(reader.records(), depth=READ_AHEAD, name="rbd hash read", stop=stop)
    try:
        for record in records:
            hasher.add(record)
    except BaseException:
        reader.cancel()
        raise
    finally:
        records.close()
        reader.close()
    hasher.finish()
    return ChunkDigests(hasher.digests, hasher.partial)


def chunk_spans(chunks: Iterable[int], *, chunk: int, size: int) -> list[tuple[int, int]]:
    """The byte ranges ``[start, end)`` of ``chunks`` (indexes), adjacent ones merged."""
    spans: list[tuple[int, int]] = []
    for index in sorted(set(chunks)):
        start, end = index * chunk, min(size, (index + 1) * chunk)
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _clip(record: Record, start: int, end: int) -> Record:
    if isinstance(record, ZeroExtent):
        return ZeroExtent(start, end - start)
    if start == record.offset and end == record.offset + record.length:
        return record
    return WriteExtent(start, record.data[start - record.offset : end - record.offset])


def only_spans(records: Iterable[Record], spans: Sequence[tuple[int, int]]) -> Iterator[Record]:
    """``records`` (a diff from nothing, in offset order) cut to ``spans``, holes as zeros.

    What a diff applied to an image that already holds most of the content needs: every
    byte of every span written (the source's data where the diff has it, zeros where the
    source is a hole, since the destination may hold data there), nothing outside them.
    The pieces come in offset order and never overlap.
    """
    i = 0
    cursor = spans[0][0] if spans else 0
    for record in records:
        start, end = record.offset, record.offset + record.length
        while i < len(spans) and spans[i][1] <= start:
            if cursor < spans[i][1]:
                yield ZeroExtent(cursor, spans[i][1] - cursor)
            i += 1
            cursor = spans[i][0] if i < len(spans) else cursor
        while i < len(spans) and spans[i][0] < end:
            span_end = spans[i][1]
            if cursor < start:
                yield ZeroExtent(cursor, start - cursor)
            piece_end = min(end, span_end)
            yield _clip(record, max(start, cursor), piece_end)
            cursor = piece_end
            if cursor < span_end:
                break
            i += 1
            cursor = spans[i][0] if i < len(spans) else cursor
        if i >= len(spans):
            return
    for j in range(i, len(spans)):
        begin = cursor if j == i else spans[j][0]
        if begin < spans[j][1]:
            yield ZeroExtent(begin, spans[j][1] - begin)


@dataclass
class SpanReader:
    """A :class:`DiffReader` that yields only ``spans`` of another (:func:`only_spans`).

    ``tap``: called with every record of the whole diff, in order, before it is cut (a
    backup of the whole volume); without one, reading stops after the last span.
    """

    reader: DiffReader
    spans: Sequence[tuple[int, int]]
    tap: Callable[[Record], None] | None = None
    header: DiffHeader = field(init=False)

    def __post_init__(self) -> None:
        self.header = self.reader.header

    def _tapped(self) -> Iterator[Record]:
        for record in self.reader.records():
            if self.tap is not None:
                self.tap(record)
            yield record

    def records(self) -> Iterator[Record]:
        whole = self._tapped()
        yield from only_spans(whole, self.spans)
        if self.tap is not None:
            for _ in whole:
                pass  # the rest goes to the tap only
        else:
            # Nothing after the last span is needed: stop reading (close() does not raise).
            self.reader.cancel()

    def cancel(self) -> None:
        self.reader.cancel()

    def close(self) -> None:
        self.reader.close()
