"""librbd I/O for :mod:`stackhop.transfer.rbd_lib`: diffs read and applied, chunks hashed.

A diff is read the way ``rbd export-diff`` reads it (``diff_iterate`` with
the parent included, then the changed extents), in windows of
:data:`DIFF_WINDOW` bytes so the extent list stays small whatever the image
size, with up to :data:`READS_IN_FLIGHT` asynchronous reads outstanding; it
is applied the way ``rbd import-diff`` applies it (base snapshot checked,
image resized, ``aio_write`` with at most :data:`WRITES_IN_FLIGHT` pieces in
flight, zeroed extents written as zeroes unless the image is fresh, end
snapshot created), and every write's completion is checked and counted, so
the sink knows that all of it was acknowledged (:attr:`LibDiffSink.confirms_writes`).
Asked to (``read_back``), it also reads every extent back once its write is acknowledged,
while the next ones are written, and compares it byte for byte with what it wrote
(:attr:`LibDiffSink.reads_back`): the verification of a re-read, without a second pass over
the image nor a second hash.
"""

from __future__ import annotations

import bisect
import hashlib
import queue
import threading
from collections import deque
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from stackhop.transfer.rbd_access import RbdError
from stackhop.transfer.rbd_diff import (
    MAX_PIECE,
    ChunkDigests,
    DiffHeader,
    Record,
    WriteExtent,
    ZeroExtent,
    zero_digest,
)

if TYPE_CHECKING:
    from stackhop.transfer.rbd_lib import LibRbdCluster

try:  # Debian's python3-rados / python3-rbd; absent from PyPI, so optional.
    import rados as _rados
    import rbd as _rbd
except ImportError:
    _rados_mod: ModuleType | None = None
    _rbd_mod: ModuleType | None = None
else:
    _rados_mod, _rbd_mod = _rados, _rbd

DIFF_WINDOW = 1 << 34
"""Bytes of image whose changed extents are listed at once (16 GiB: at most 4096 extents)."""

READS_IN_FLIGHT = 2
"""Asynchronous reads of at most 4 MiB outstanding at once."""

WRITES_IN_FLIGHT = 4
"""Pieces (at most 4 MiB each) written asynchronously at once by a :class:`LibDiffSink`."""

READS_BACK_IN_FLIGHT = 2
"""Reads of pieces written and acknowledged outstanding at once in a reading-back
:class:`LibDiffSink`. A piece keeps its write slot until it was read back: giving the
read-backs slots of their own (6 pieces held instead of 4) took a 1 GiB pass's peak RSS
from ~205 to 255 MB here, for no measurable speed."""


class _WrittenSpans:
    """The byte ranges a sink wrote or zeroed, adjacent ones merged (a diff comes in offset
    order, so a dense copy is one range): what this sink may have changed in the image."""

    def __init__(self) -> None:
        self.spans: list[list[int]] = []

    def add(self, offset: int, length: int) -> None:
        if self.spans and self.spans[-1][1] == offset:
            self.spans[-1][1] = offset + length
        else:
            self.spans.append([offset, offset + length])

    def cover(self, offset: int, length: int) -> bool:
        """Whether [offset, offset+length) overlaps a range written. The ranges are
        disjoint and sorted, so only the last one starting before the end can."""
        index = bisect.bisect_left(self.spans, [offset + length]) - 1
        return index >= 0 and self.spans[index][1] > offset


def available() -> bool:
    """Whether the librbd bindings import in this Python."""
    return _rbd_mod is not None


def bindings() -> tuple[Any, Any]:
    """The ``rados`` and ``rbd`` modules; RbdError when they do not import."""
    if _rados_mod is None or _rbd_mod is None:
        raise RbdError("the rados/rbd Python bindings are not importable here")
    return _rados_mod, _rbd_mod


def _changed_extents(
    handle: Any, size: int, from_snap: str | None, *, whole_object: bool = False
) -> Iterator[tuple[int, int, bool]]:
    """``(offset, length, exists)`` of what changed since ``from_snap``, window by window."""
    for start in range(0, size, DIFF_WINDOW):
        found: list[tuple[int, int, bool]] = []

        def collect(offset: int, length: int, exists: int, into: list[Any] = found) -> int:
            into.append((offset, length, bool(exists)))
            return 0

        handle.diff_iterate(
            start,
            min(DIFF_WINDOW, size - start),
            from_snap,
            collect,
            include_parent=True,
            whole_object=whole_object,
        )
        yield from sorted(found)


def _touched_chunks(handle: Any, size: int, chunk: int, from_snap: str | None) -> Iterator[int]:
    """Indexes of the chunks with data (since ``from_snap``: with any change), in order."""
    last = -1
    for offset, length, exists in _changed_extents(handle, size, from_snap):
        if from_snap is None and not exists:
            continue
        for index in range(max(offset // chunk, last + 1), (offset + length - 1) // chunk + 1):
            last = index
            yield index


def read_pieces(handle: Any, pieces: Iterator[tuple[int, int]]) -> Iterator[tuple[int, bytes]]:
    """``(offset, data)`` of each ``(offset, length)`` piece, in order, with up to
    :data:`READS_IN_FLIGHT` asynchronous reads outstanding (the OSDs work in parallel)."""
    _, rbd = bindings()
    pending: deque[tuple[int, Any, list[Any]]] = deque()

    def issue() -> bool:
        piece = next(pieces, None)
        if piece is None:
            return False
        offset, length = piece
        holder: list[Any] = []
        completion = handle.aio_read(
            offset, length, lambda _c, data, into=holder: into.append(data)
        )
        pending.append((offset, completion, holder))
        return True

    try:
        more = True
        while True:
            while more and len(pending) < READS_IN_FLIGHT:
                more = issue()
            if not pending:
                return
            offset, completion, holder = pending.popleft()
            completion.wait_for_complete_and_cb()
            code = completion.get_return_value()
            if code < 0 or not holder or holder[0] is None:
                raise rbd.IOError(f"read at offset {offset} returned {code}")
            yield offset, holder[0]
    finally:
        # librbd must not write into buffers of reads nobody waits for any more.
        for _, completion, _ in pending:
            completion.wait_for_complete_and_cb()


def hash_chunks(handle: Any, chunk: int, from_snap: str | None) -> ChunkDigests:
    size = int(handle.size())
    count = -(-size // chunk)
    result = ChunkDigests()
    if from_snap is None:
        result.digests = {i: zero_digest(min(chunk, size - i * chunk)) for i in range(count)}
    pieces = (
        (index * chunk, min(chunk, size - index * chunk))
        for index in _touched_chunks(handle, size, chunk, from_snap)
    )
    for offset, data in read_pieces(handle, pieces):
        result.digests[offset // chunk] = hashlib.sha256(data).hexdigest()
    return result


class LibDiffReader:
    """The diff of ``image@snap`` since ``from_snap``, read with librbd."""

    def __init__(
        self, cluster: LibRbdCluster, image: str, snap: str, from_snap: str | None
    ) -> None:
        _, rbd = bindings()
        self.cluster = cluster
        self._ioctx = cluster.ioctx()
        try:
            self._image = cluster.open_image(self._ioctx, image, snap, read_only=True)
        except rbd.Error as exc:
            self._ioctx.close()
            raise cluster.failed(f"export-diff {cluster.spec(image, snap)}", exc) from exc
        self.header = DiffHeader(from_snap, snap, int(self._image.size()))
        self._label = cluster.spec(image, snap)
        self._stop = threading.Event()
        self._closed = False

    def records(self) -> Iterator[Record]:
        _, rbd = bindings()
        zeroed: deque[ZeroExtent] = deque()

        def pieces() -> Iterator[tuple[int, int]]:
            for offset, length, exists in _changed_extents(
                self._image, self.header.size, self.header.from_snap
            ):
                if not exists:
                    # Handed out in offset order between the data pieces.
                    zeroed.append(ZeroExtent(offset, length))
                    continue
                for start in range(offset, offset + length, MAX_PIECE):
                    if self._stop.is_set():
                        return
                    yield start, min(MAX_PIECE, offset + length - start)

        try:
            for offset, data in read_pieces(self._image, pieces()):
                while zeroed and zeroed[0].offset < offset:
                    yield zeroed.popleft()
                yield WriteExtent(offset, data)
            yield from zeroed
        except rbd.Error as exc:
            raise self.cluster.failed(f"export-diff {self._label}", exc) from exc

    def cancel(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._image.close()
            self._ioctx.close()


class LibDiffSink:
    """Applies a diff to ``image`` with librbd, as ``rbd import-diff`` does.

    ``fresh``: the image was just created and never written, so it reads as zeros
    wherever nothing is written, and zeroed extents are skipped.

    ``read_back``: each extent, once librbd acknowledged its write, is read back from the
    cluster (librbd's cache is off: the OSDs answer) by a thread of this sink while later
    ones are written, and compared with the very bytes written (a zeroed one with zeros);
    :meth:`finish` then also checks that nothing else changed the image: on a fresh one,
    every object holding data is one this sink wrote into (the rest still reads as zeros);
    under an incremental diff, every extent changed since its base snapshot is one this
    sink wrote or zeroed (the rest is the base, which the previous pass verified).
    """

    #: Every write's completion is seen here: finish() returns only once all of them
    #: succeeded and their bytes add up to what was handed over.
    confirms_writes = True

    def __init__(
        self,
        cluster: LibRbdCluster,
        image: str,
        retire: str | None = None,
        *,
        fresh: bool = False,
        read_back: bool = False,
    ) -> None:
        _, rbd = bindings()
        self.cluster = cluster
        self.bytes = 0
        #: True once finish() has checked every extent read back equal (see the class doc).
        self.reads_back = False
        self._read_back = read_back
        self._fresh = fresh
        self._zeroed = 0
        self._acknowledged = 0
        self._compared = 0
        self._written_spans = _WrittenSpans()
        self._name = image
        self._retire = retire
        self._label = cluster.spec(image)
        self._ioctx = cluster.ioctx()
        try:
            self._image = cluster.open_image(self._ioctx, image, read_only=False)
        except rbd.Error as exc:
            self._ioctx.close()
            raise cluster.failed(f"import-diff {self._label}", exc) from exc
        self._to_snap: str | None = None
        self._from_snap: str | None = None
        self._retire_error: RbdError | None = None
        self._slots = threading.Semaphore(WRITES_IN_FLIGHT)
        # Keeps each piece alive until librbd has written it (and it was read back), with
        # its offset and length (None for zeroes); the first error wins.
        self._in_flight: dict[int, tuple[bytes | None, int, int]] = {}
        self._lock = threading.Lock()
        self._error: str | None = None
        self._closed = False
        self._to_compare: queue.SimpleQueue[tuple[int, bytes | None, int] | None] = (
            queue.SimpleQueue()
        )
        self._comparer: threading.Thread | None = None
        if read_back:
            self._comparer = threading.Thread(
                target=self._compare_loop, name="rbd read back", daemon=True
            )
            self._comparer.start()

    def header(self, header: DiffHeader) -> None:
        _, rbd = bindings()
        snaps = {s["name"] for s in self._image.list_snaps()}
        if header.from_snap is not None and header.from_snap not in snaps:
            raise RbdError(
                f"rbd import-diff on {self.cluster.where}: {self._label} has no snapshot "
                f"{header.from_snap!r} to apply the diff to; re-run without --incremental"
            )
        if header.to_snap in snaps:
            raise RbdError(
                f"rbd import-diff on {self.cluster.where}: snapshot {header.to_snap!r} already "
                f"exists on {self._label}; run `stackhop volumes cleanup` and re-run"
            )
        self._to_snap = header.to_snap
        self._from_snap = header.from_snap
        try:
            if int(self._image.size()) != header.size:
                self._image.resize(header.size)
        except rbd.Error as exc:
            raise self.cluster.failed(f"resize {self._label}", exc) from exc

    def _check(self) -> None:
        if self._error is not None:
            raise RbdError(f"rbd import-diff on {self.cluster.where} failed: {self._error}")

    def _failed(self, message: str) -> None:
        with self._lock:
            if self._error is None:
                self._error = message

    def _written(self, completion: Any) -> None:
        # On librbd's callback thread: record the outcome, count the bytes, then free the
        # slot or hand the piece to the comparer (which frees it once read back).
        code = completion.get_return_value()
        with self._lock:
            data, offset, length = self._in_flight.pop(id(completion), (None, 0, 0))
            if code >= 0:
                self._acknowledged += length
        if code < 0:
            self._failed(f"write of {self._label} returned {code}")
        elif self._read_back:
            self._to_compare.put((offset, data, length))
            return
        self._slots.release()

    def _compare_loop(self) -> None:
        """Read each acknowledged piece back and compare it with what was written, with up
        to :data:`READS_BACK_IN_FLIGHT` reads outstanding (the OSDs answer them in
        parallel); ends at the ``None`` that :meth:`_stop_comparer` queues."""
        pending: deque[tuple[int, bytes, Any, list[Any]]] = deque()
        taking = True
        while taking or pending:
            while taking and len(pending) < READS_BACK_IN_FLIGHT:
                try:
                    item = self._to_compare.get(block=not pending)
                except queue.Empty:
                    break
                if item is None:
                    taking = False
                    break
                offset, data, length = item
                if data is None:
                    self._compare_zeroes(offset, length)
                    continue
                holder: list[Any] = []
                try:
                    completion = self._image.aio_read(
                        offset, length, lambda _c, got, into=holder: into.append(got)
                    )
                except Exception as exc:  # rbd.Error: reported by finish()
                    self._failed(f"read back of {self._label} at {offset} failed: {exc}")
                    self._slots.release()
                    continue
                pending.append((offset, data, completion, holder))
            if pending:
                offset, data, completion, holder = pending.popleft()
                completion.wait_for_complete_and_cb()
                code = completion.get_return_value()
                self._compared_piece(offset, data, holder[0] if code >= 0 and holder else None)

    def _compare_zeroes(self, offset: int, length: int) -> None:
        """A zeroed extent must read back as zeros (piece by piece: it may be large)."""
        try:
            for start in range(offset, offset + length, MAX_PIECE):
                size = min(MAX_PIECE, offset + length - start)
                if self._image.read(start, size) != bytes(size):
                    self._failed(f"{self._label} does not read back as zeros at offset {start}")
                    return
            with self._lock:
                self._compared += length
        except Exception as exc:  # rbd.Error: reported by finish()
            self._failed(f"read back of {self._label} at {offset} failed: {exc}")
        finally:
            self._slots.release()

    def _compared_piece(self, offset: int, data: bytes, got: bytes | None) -> None:
        if got is None:
            self._failed(f"read back of {self._label} at offset {offset} failed")
        elif got != data:
            self._failed(
                f"{self._label} reads back other bytes at offset {offset} than were written"
            )
        else:
            with self._lock:
                self._compared += len(data)
        self._slots.release()

    def _stop_comparer(self) -> None:
        if self._comparer is not None:
            self._to_compare.put(None)
            self._comparer.join()
            self._comparer = None

    def record(self, record: Record) -> None:
        _, rbd = bindings()
        self._check()
        if isinstance(record, ZeroExtent) and self._fresh:
            return  # a fresh image reads as zeros already
        try:
            self._slots.acquire()
            with self._lock:
                if isinstance(record, ZeroExtent):
                    completion = self._image.aio_write_zeroes(
                        record.offset, record.length, self._written
                    )
                    self._in_flight[id(completion)] = (None, record.offset, record.length)
                    self._zeroed += record.length
                    self._written_spans.add(record.offset, record.length)
                else:
                    completion = self._image.aio_write(record.data, record.offset, self._written)
                    self._in_flight[id(completion)] = (record.data, record.offset, record.length)
                    self.bytes += record.length
                    self._written_spans.add(record.offset, record.length)
        except rbd.Error as exc:
            self._slots.release()
            raise self.cluster.failed(f"import-diff {self._label}", exc) from exc

    def _drain(self) -> None:
        """Wait until every piece is written (and read back): all slots free."""
        for _ in range(WRITES_IN_FLIGHT):
            self._slots.acquire()
        for _ in range(WRITES_IN_FLIGHT):
            self._slots.release()

    def finish(self) -> None:
        _, rbd = bindings()
        try:
            self._drain()
            self._check()
            if self._acknowledged != self.bytes + self._zeroed:
                raise RbdError(
                    f"rbd import-diff on {self.cluster.where}: librbd acknowledged "
                    f"{self._acknowledged} of the {self.bytes + self._zeroed} bytes written to "
                    f"{self._label}; re-run"
                )
            self._image.flush()
            if self._read_back:
                self._check_read_back()
            if self._to_snap is not None:
                self._snapshot(self._to_snap)
        except rbd.Error as exc:
            raise self.cluster.failed(f"import-diff {self._label}", exc) from exc
        finally:
            self._close()

    def _check_read_back(self) -> None:
        """Everything written compared equal, and nothing else changed: on a fresh image
        no object holds data this sink did not write; on an image the diff applies to, no
        change since its base snapshot lies outside what this sink wrote or zeroed."""
        if self._compared != self.bytes + self._zeroed:
            raise RbdError(
                f"rbd import-diff on {self.cluster.where}: {self._compared} of the "
                f"{self.bytes + self._zeroed} bytes written to {self._label} were read back; "
                "re-run"
            )
        base = self._from_snap
        if self._fresh or base is not None:
            size = int(self._image.size())
            for offset, length, exists in _changed_extents(
                self._image, size, base, whole_object=self._fresh
            ):
                if (exists or base is not None) and not self._written_spans.cover(
                    offset, length
                ):
                    what = "holds data" if self._fresh else "changed"
                    since = "it was created empty" if self._fresh else f"since {base}"
                    raise RbdError(
                        f"{self._label} {what} at offset {offset} where this copy wrote "
                        f"nothing ({since}): something else writes it; stop that, then re-run"
                    )
        self.reads_back = True

    def _snapshot(self, snap: str) -> None:
        """Create ``snap``, removing the snapshot to retire at the same time: each is a
        monitor commit, and issued together they share one."""
        if self._retire is None:
            self._image.create_snap(snap)
            return
        retire = self._retire
        remover = threading.Thread(
            target=self._remove_retired, args=(retire,), name="rbd retire", daemon=True
        )
        remover.start()
        try:
            self._image.create_snap(snap)
        finally:
            remover.join()
        if self._retire_error is not None:
            raise self._retire_error

    def _remove_retired(self, snap: str) -> None:
        try:
            self.cluster.remove_snapshot(self._name, snap)
        except RbdError as exc:  # raised by finish() on the caller's thread
            self._retire_error = exc

    def abort(self) -> None:
        if not self._closed:
            self._drain()
            self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._stop_comparer()
            self._image.close()
            self._ioctx.close()
