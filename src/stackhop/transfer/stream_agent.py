"""The stream method's agent: runs on a storage host, next to a volume's file or block device.

Self-contained and stdlib-only on purpose: stackhop sends this file's source
over ssh to ``python3 -c BOOTSTRAP`` (see :data:`BOOTSTRAP`), so nothing is
installed on the hosts. Locally, :mod:`stackhop.transfer.ssh_stream` imports
it for the frame format, so both ends share one definition.

stdin carries, in order: this source (its length is the bootstrap's first
argument), the parameters (8-byte big-endian length + JSON), then, for
``write`` only, the frame stream. Modes:

``probe``
    prints JSON: whether the path exists, its size, kind and :func:`file_stat`,
    the codecs this host can encode and decode.
``read``
    emits frames for the volume's chunks (:data:`CHUNK` bytes, aligned) in
    offset order: ``DATA`` (sha256 of the raw bytes, payload compressed with
    the codec asked for, or raw when a sample shows the chunk does not
    compress) or ``ZERO`` for a run of chunks that are holes (``SEEK_DATA``
    on a file) or read as all zeros (a block device, whose allocation is
    unknown), then ``END``. Reading, hashing and compressing run on a few
    threads (hashlib and the codecs release the GIL), output stays in order.
    Given ``compare`` (the destination's digests), chunks that hash the same
    there become ``SAME`` frames: digest, no data (see :func:`read_frames`).
``digests``
    prints JSON: the sha256 of each chunk asked for ("" for a hole or zeros,
    which are not read when the file says they are holes).
``write``
    reads frames, decompresses (and then checks the chunk's sha256; raw chunks
    only with ``check_raw``, as ssh's MAC already guards them), ``pwrite`` s it
    (with ``O_DIRECT`` where the file system allows: no page cache to fill; a
    ``ZERO`` run punches a hole or zeroes only where data exists), and after
    each ``fdatasync`` reads the chunks back from the disk (``O_DIRECT`` again)
    and prints ``A <offset> <length> <digest>`` lines: the chunks that are now
    durable, with the sha256 of what was read back ("" for a run that reads as
    zeros, ``x`` for one that does not). Ends with ``E <json>`` (counts, and
    the file's :func:`file_stat` after the last sync).
``send``
    ``read``, but the frames go straight to a ``write`` agent on the
    destination host, started by this agent with the ssh command line in the
    parameters (the destination is reached from this host, not through
    stackhop's). stdout carries ``NOTE`` frames (a data frame's header, sent
    on), ``ZERO`` and ``SAME`` frames, the writer's acknowledgement lines in
    ``ACKS`` frames, and ``END``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import stat
import struct
import subprocess
import sys
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, BinaryIO

CHUNK = 4 * 1024 * 1024
"""Bytes per chunk, aligned: equal to the volume content digest's unit, so a chunk's
sha256 is also its content-digest piece."""

#: Frame header: magic, kind, codec, payload length, offset, length (raw), sha256 (raw bytes).
HEADER = struct.Struct(">2sBBIQQ32s")
MAGIC = b"SH"
DATA, ZERO, END, NOTE, ACKS, SAME = 1, 2, 3, 4, 5, 6
RAW, ZLIB, ZSTD = 0, 1, 2
CODECS = {"raw": RAW, "zlib": ZLIB, "zstd": ZSTD}
NO_DIGEST = bytes(32)

#: Runs on the host: read this source from stdin, then run it as __main__.
BOOTSTRAP = (
    "import sys;n=int(sys.argv[1]);s=sys.stdin.buffer.read(n);"
    "sys.argv=sys.argv[1:];exec(compile(s,'stackhop-stream-agent','exec'),"
    "{'__name__':'__main__','AGENT_SOURCE':s})"
)

#: A chunk is sent raw when a sample of it compresses worse than this ratio (zstd)...
INCOMPRESSIBLE = 0.9
#: ... or, with zlib, worse than this one: zlib -1 keeps up with a fast link (~500 MiB/s a
#: core) only on data that compresses well, and is many times slower on what compresses little.
ZLIB_WORTH = 0.5
SAMPLE = 8192
WORKERS = 3
IN_FLIGHT = 6  # chunks read ahead per agent: bounds the agent's memory to ~50 MB
FSYNC_BYTES = 64 * 1024 * 1024
#: O_DIRECT needs offsets and lengths in whole logical blocks (512 or 4096 bytes).
ALIGN = 4096
F_SETPIPE_SZ = 1031
PIPE_BYTES = 1024 * 1024  # /proc/sys/fs/pipe-max-size by default
#: An acknowledged zero run that does not read as zeros.
NOT_ZERO = "x"
BLKZEROOUT = 0x127F
FALLOC_PUNCH = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE

_ZEROS = bytes(CHUNK)


def pack_header(
    kind: int, codec: int, payload: int, offset: int, length: int, digest: bytes
) -> bytes:
    """One frame header."""
    return HEADER.pack(MAGIC, kind, codec, payload, offset, length, digest)


def unpack_header(raw: bytes) -> tuple[int, int, int, int, int, bytes]:
    """(kind, codec, payload length, offset, length, digest) of a header; ValueError if bad."""
    magic, kind, codec, payload, offset, length, digest = HEADER.unpack(raw)
    if magic != MAGIC or not DATA <= kind <= SAME or codec not in (RAW, ZLIB, ZSTD):
        raise ValueError("not a stackhop stream frame (corrupt or out of step)")
    if kind in (ZERO, SAME) and payload:
        raise ValueError("a ZERO or SAME frame carries no payload")
    return kind, codec, payload, offset, length, digest


def peak_rss_kb() -> int:
    """This agent's peak resident memory, for the benchmark's report."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def file_stat(fd: int) -> list[int]:
    """Device, inode, size, mtime and ctime (ns): any write or metadata change alters it."""
    st = os.fstat(fd)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def is_zero(data: bytes | memoryview) -> bool:
    """All zero bytes: one memcmp against a zero buffer."""
    return data == (_ZEROS if len(data) == CHUNK else bytes(len(data)))


# -- codecs -----------------------------------------------------------------


def _zstd_module() -> Any:
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return zstandard


def codecs_here() -> list[str]:
    """The codecs this Python can both encode and decode."""
    return ["raw", "zlib"] + (["zstd"] if _zstd_module() is not None else [])


class Codec:
    """Compress and decompress chunks; one instance per thread (zstd contexts are not shared)."""

    def __init__(self, level: int = 1) -> None:
        self.level = level
        self._local = threading.local()

    def _zstd(self) -> Any:
        ctx = getattr(self._local, "zstd", None)
        if ctx is None:
            module = _zstd_module()
            ctx = (module.ZstdCompressor(level=self.level), module.ZstdDecompressor())
            self._local.zstd = ctx
        return ctx

    def compress(self, codec: int, data: bytes) -> tuple[int, bytes]:
        """(codec used, payload): RAW when the chunk does not compress well enough."""
        if codec == RAW:
            return RAW, data
        middle = len(data) // 2
        sample = data[:SAMPLE] + data[middle : middle + SAMPLE]
        # zlib on a 16 KiB sample costs well under a millisecond and tells random
        # (already compressed, encrypted) data apart, which then goes raw.
        worth = INCOMPRESSIBLE if codec == ZSTD else ZLIB_WORTH
        if len(zlib.compress(sample, 1)) > worth * len(sample):
            return RAW, data
        packed = self._zstd()[0].compress(data) if codec == ZSTD else zlib.compress(data, 1)
        if len(packed) >= len(data):
            return RAW, data
        return codec, packed

    def decompress(self, codec: int, payload: bytes, length: int) -> bytes:
        """The raw bytes of a payload."""
        if codec == RAW:
            return payload
        if codec == ZLIB:
            return zlib.decompress(payload)
        return bytes(self._zstd()[1].decompress(payload, max_output_size=length))


# -- files and devices ------------------------------------------------------


class Volume:
    """The volume's file or block device, with what allocation it can tell."""

    def __init__(self, path: str, writable: bool = False, direct: bool = False) -> None:
        self.path = path
        flags = os.O_RDWR if writable else os.O_RDONLY
        self.fd = os.open(path, flags)
        mode = os.fstat(self.fd).st_mode
        self.is_file = stat.S_ISREG(mode)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self._next_data = -1  # cached SEEK_DATA answer: no data before it
        # A second descriptor that bypasses the page cache: writing a volume through the cache
        # costs a page allocation per 4 KiB (on a VM often a host round trip), and reading back
        # through it would only show the cache. Some file systems (tmpfs) refuse O_DIRECT.
        self.direct_fd = -1
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self.direct_fd = os.open(path, flags | os.O_DIRECT)
            except OSError:
                pass
        self._buffers = threading.local()

    def _aligned(self, length: int) -> memoryview | None:
        """This thread's page-aligned buffer for ``length`` bytes, if O_DIRECT can be used."""
        if self.direct_fd < 0 or length % ALIGN or length > CHUNK:
            return None
        buffer = getattr(self._buffers, "chunk", None)
        if buffer is None:
            buffer = self._buffers.chunk = mmap.mmap(-1, CHUNK)  # mmap memory is page-aligned
        return memoryview(buffer)[:length]

    def write(self, data: bytes, offset: int) -> None:
        """Write ``data`` at ``offset``, bypassing the page cache when aligned."""
        view = self._aligned(len(data)) if offset % ALIGN == 0 else None
        if view is not None:
            view[:] = data
            if os.pwrite(self.direct_fd, view, offset) == len(data):
                return
        elif os.pwrite(self.fd, data, offset) == len(data):
            return
        raise SystemExit(f"short write at {offset} of {self.path}")

    def read_back(self, offset: int, length: int) -> bytes | memoryview:
        """``length`` bytes at ``offset`` as the disk holds them (O_DIRECT when aligned)."""
        view = self._aligned(length) if offset % ALIGN == 0 else None
        if view is not None and os.preadv(self.direct_fd, [view], offset) == length:
            return view
        return os.pread(self.fd, length, offset)

    def reads_zero(self, offset: int, length: int) -> bool:
        """Whether [offset, offset+length) reads as zeros; holes are not read."""
        end = offset + length
        while offset < end:
            if self.is_file:
                try:
                    offset = os.lseek(self.fd, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:
                        raise
                    return True
                if offset >= end:
                    return True
            step = min(CHUNK - offset % CHUNK, end - offset)
            if not is_zero(self.read_back(offset, step)):
                return False
            offset += step
        return True

    def has_data(self, offset: int, end: int) -> bool:
        """Whether [offset, end) may hold data: False only when the file says it is a hole."""
        if not self.is_file:
            return True
        if self._next_data >= end or offset <= self._next_data < end:
            return self._next_data < end
        try:
            self._next_data = os.lseek(self.fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            self._next_data = self.size  # no data after offset
        return self._next_data < end

    def zero(self, offset: int, length: int) -> None:
        """Make [offset, offset+length) read as zeros, touching only what holds data."""
        end = offset + length
        if self.is_file:
            # No cached answer here: zeroing runs on several threads of the writer.
            try:
                if os.lseek(self.fd, offset, os.SEEK_DATA) >= end:
                    return
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                return
            if _punch_hole(self.fd, offset, length):
                return
        elif _ioctl_zeroout(self.fd, offset, length):
            return
        while offset < end:
            step = min(CHUNK, end - offset)
            os.pwrite(self.fd, _ZEROS[:step], offset)
            offset += step

    def close(self) -> None:
        os.close(self.fd)
        if self.direct_fd >= 0:
            os.close(self.direct_fd)


def grow_pipe(fd: int) -> None:
    """Let a pipe hold :data:`PIPE_BYTES` (not 64 KiB): fewer wake-ups per chunk between the
    agent and ssh. Not a pipe, or not allowed: nothing changes."""
    try:
        import fcntl

        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        return int(libc.fallocate(fd, FALLOC_PUNCH, offset, length)) == 0
    except (OSError, AttributeError):
        return False


def _ioctl_zeroout(fd: int, offset: int, length: int) -> bool:
    try:
        import fcntl

        fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, length))
        return True
    except OSError:
        return False


def plan_chunks(size: int, offsets: list[int] | None) -> list[tuple[int, int]]:
    """(offset, length) of the chunks asked for (all when ``offsets`` is None), in order."""
    starts = range(0, size, CHUNK) if offsets is None else sorted(offsets)
    return [(o, min(CHUNK, size - o)) for o in starts if 0 <= o < size]


def _ordered(pool: ThreadPoolExecutor, jobs: Any, work: Callable[..., Any]) -> Any:
    """Run ``work(*job)`` on the pool, at most IN_FLIGHT at once, yielding results in order."""
    pending: deque[Future[Any]] = deque()
    for job in jobs:
        pending.append(pool.submit(work, *job))
        if len(pending) >= IN_FLIGHT:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# -- modes ------------------------------------------------------------------


def mode_probe(params: dict[str, Any], out: BinaryIO) -> None:
    path = params.get("path")
    facts: dict[str, Any] = {"codecs": codecs_here(), "python": sys.version.split()[0]}
    if path is None:  # the host's facts only
        out.write(json.dumps(facts).encode() + b"\n")
        return
    try:
        volume = Volume(path)
    except OSError as exc:
        facts.update(exists=False, error=exc.strerror)
    else:
        facts.update(exists=True, size=volume.size, file=volume.is_file, stat=file_stat(volume.fd))
        volume.close()
    out.write(json.dumps(facts).encode() + b"\n")


def read_frames(params: dict[str, Any]) -> Iterator[tuple[int, int, int, int, bytes, bytes]]:
    """The volume's frames in offset order, as ``read`` sends them: (kind, codec, offset,
    length, sha256, payload) of DATA chunks and ZERO runs.

    With ``compare`` (the destination's sha256 hex by offset, zero chunks left out), a
    chunk that already hashes the same there is a SAME frame (a run, for zeros), which
    carries its digest but no data, and is not for the destination."""
    volume = Volume(params["path"])
    size = int(params["size"])
    if volume.size < size:
        raise SystemExit(f"{volume.path} holds {volume.size} bytes, less than the volume's {size}")
    codec = CODECS[params.get("codec", "raw")]
    coder = Codec(int(params.get("level", 1)))
    chunks = plan_chunks(size, params.get("offsets"))
    compare: dict[str, str] | None = params.get("compare")

    def work(offset: int, length: int, maybe_data: bool) -> tuple[int, int, int, int, bytes, bytes]:
        there = None if compare is None else compare.get(str(offset))
        zero = ZERO if compare is None or there else SAME  # zeros there too: nothing to send
        if not maybe_data:
            return zero, RAW, offset, length, NO_DIGEST, b""
        data = os.pread(volume.fd, length, offset)
        if len(data) != length:
            raise SystemExit(f"{volume.path}: short read at {offset}")
        if is_zero(data):
            return zero, RAW, offset, length, NO_DIGEST, b""
        digest = hashlib.sha256(data).digest()
        if there == digest.hex():
            return SAME, RAW, offset, length, digest, b""
        used, payload = coder.compress(codec, data)
        return DATA, used, offset, length, digest, payload

    jobs = ((o, n, volume.has_data(o, o + n)) for o, n in chunks)
    run: list[int] = []  # [kind, start, length] of a run of ZERO (or zero SAME) chunks
    with ThreadPoolExecutor(WORKERS) as pool:
        for kind, used, offset, length, digest, payload in _ordered(pool, jobs, work):
            if digest == NO_DIGEST and run and run[0] == kind and run[1] + run[2] == offset:
                run[2] += length
                continue
            if run:
                yield run[0], RAW, run[1], run[2], NO_DIGEST, b""
                run = []
            if digest == NO_DIGEST:
                run = [kind, offset, length]
            else:
                yield kind, used, offset, length, digest, payload
        if run:
            yield run[0], RAW, run[1], run[2], NO_DIGEST, b""
    volume.close()


def _end_frame(facts: dict[str, Any]) -> bytes:
    blob = json.dumps({**facts, "maxrss_kb": peak_rss_kb()}).encode()
    return pack_header(END, RAW, len(blob), 0, 0, NO_DIGEST) + blob


def mode_read(params: dict[str, Any], out: BinaryIO) -> None:
    for kind, codec, offset, length, digest, payload in read_frames(params):
        out.write(pack_header(kind, codec, len(payload), offset, length, digest))
        if payload:
            out.write(payload)
    out.write(_end_frame({}))
    out.flush()


class _Relay(threading.Thread):
    """Copies the destination writer's output (acknowledgement lines) into ACKS frames, and
    keeps the last line of its stderr for the error message."""

    def __init__(self, source: IO[bytes], out: BinaryIO | None, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.source, self.out, self.lock = source, out, lock
        self.last = b""

    def run(self) -> None:
        for line in iter(self.source.readline, b""):
            if self.out is None:  # stderr: passed on, last line kept
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
                self.last = line.strip() or self.last
                continue
            with self.lock:
                self.out.write(pack_header(ACKS, RAW, len(line), 0, 0, NO_DIGEST) + line)
                self.out.flush()


def mode_send(params: dict[str, Any], out: BinaryIO) -> None:
    peer = params["peer"]
    source = globals().get("AGENT_SOURCE") or open(__file__, "rb").read()
    blob = json.dumps(peer["params"]).encode()
    writer = subprocess.Popen(
        peer["argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdin is not None and writer.stdout is not None and writer.stderr is not None
    grow_pipe(writer.stdin.fileno())
    lock = threading.Lock()
    acks, errors = _Relay(writer.stdout, out, lock), _Relay(writer.stderr, None, lock)
    acks.start()
    errors.start()
    sink = writer.stdin

    def stopped() -> SystemExit:
        if not sink.closed:
            try:
                sink.close()
            except BrokenPipeError:
                pass
        acks.join()
        errors.join()
        status = writer.wait()
        reason = errors.last.decode(errors="replace") or f"exit status {status}"
        # ssh's own failures (cannot connect, host key, config) exit with 255.
        return SystemExit(f"the writer on {peer['host']} stopped (status {status}): {reason}")

    try:
        sink.write(source + struct.pack(">Q", len(blob)) + blob)
        for kind, codec, offset, length, digest, payload in read_frames(params):
            header = pack_header(kind, codec, len(payload), offset, length, digest)
            # stackhop gets the header only (digest, sizes, progress), and before the writer
            # can acknowledge the chunk.
            note = pack_header(NOTE, codec, len(payload), offset, length, digest)
            with lock:
                out.write(note if kind == DATA else header)
                out.flush()
            if kind == SAME:
                continue
            sink.write(header)
            if payload:
                sink.write(payload)
        sink.write(pack_header(END, RAW, 0, 0, 0, NO_DIGEST))
        sink.close()
    except BrokenPipeError:
        raise stopped() from None
    acks.join()
    errors.join()
    if writer.wait() != 0:
        raise stopped()
    with lock:
        out.write(_end_frame({}))
        out.flush()


def mode_digests(params: dict[str, Any], out: BinaryIO) -> None:
    volume = Volume(params["path"])
    size = int(params["size"])
    chunks = plan_chunks(size, params.get("offsets"))
    read = 0

    def work(offset: int, length: int, maybe_data: bool) -> str:
        nonlocal read
        if not maybe_data:
            return ""
        data = os.pread(volume.fd, length, offset)
        read += len(data)
        return "" if is_zero(data) else hashlib.sha256(data).hexdigest()

    jobs = ((o, n, o + n <= volume.size and volume.has_data(o, o + n)) for o, n in chunks)
    with ThreadPoolExecutor(WORKERS) as pool:
        digests = list(_ordered(pool, jobs, work))
    result = {
        "offsets": [o for o, _ in chunks],
        "digests": digests,
        "read": read,
        "maxrss_kb": peak_rss_kb(),
    }
    out.write(json.dumps(result).encode() + b"\n")
    volume.close()


def _read_exact(inp: BinaryIO, count: int) -> bytes:
    data = inp.read(count)
    if data is None or len(data) != count:
        raise SystemExit("the frame stream ended early (connection closed)")
    return data


def mode_write(params: dict[str, Any], inp: BinaryIO, out: BinaryIO) -> None:
    volume = Volume(params["path"], writable=True, direct=True)
    size = int(params["size"])
    if volume.size < size:
        raise SystemExit(f"{volume.path} holds {volume.size} bytes, less than the volume's {size}")
    coder = Codec()
    fsync_bytes = int(params.get("fsync_bytes", FSYNC_BYTES))
    check_raw = bool(params.get("check_raw", False))
    written: list[tuple[int, int, bool]] = []
    unsynced = 0
    stats: dict[str, Any] = {"frames": 0, "bytes": 0}

    def apply(
        kind: int, codec: int, payload: bytes, offset: int, length: int, digest: bytes
    ) -> None:
        if offset + length > size:
            raise SystemExit(f"frame at {offset}+{length} is past the volume's end {size}")
        if kind == ZERO:
            volume.zero(offset, length)
            return
        try:
            data = coder.decompress(codec, payload, length)
        except Exception as exc:  # zlib.error, zstd.ZstdError: the payload was damaged
            raise SystemExit(f"chunk at {offset} cannot be decompressed ({exc})") from None
        # A raw payload is the source's very bytes, guarded on the wire by ssh's MAC (AEAD);
        # a decompressed one is checked against the source's sha256 here, so a damaged
        # chunk stops the stream at once. Either way every chunk is read back from the disk
        # after fdatasync and its digest acknowledged (below).
        if len(data) != length or (
            (codec != RAW or check_raw) and hashlib.sha256(data).digest() != digest
        ):
            raise SystemExit(f"chunk at {offset} does not match its sha256 after transfer")
        volume.write(data, offset)

    def read_back(offset: int, length: int, data: bool) -> str:
        if not data:
            return "" if volume.reads_zero(offset, length) else NOT_ZERO
        return hashlib.sha256(volume.read_back(offset, length)).hexdigest()

    def sync_and_ack(done: list[tuple[int, int, bool]]) -> None:
        os.fdatasync(volume.fd)
        digests = list(readers.map(lambda record: read_back(*record), done))
        lines = [f"A {o} {n} {digests[i]}\n" for i, (o, n, _) in enumerate(done)]
        out.write("".join(lines).encode())
        out.flush()

    # fdatasync and the read-back run on their own thread so that receiving and writing go
    # on meanwhile; a chunk is acknowledged only by the sync that started after its pwrite.
    syncing: Future[None] | None = None
    pending: deque[tuple[Future[None], tuple[int, int, bool]]] = deque()
    readers = ThreadPoolExecutor(WORKERS)  # reading back: the disk takes several reads at once
    with readers, ThreadPoolExecutor(2) as pool, ThreadPoolExecutor(1) as syncer:
        while True:
            kind, codec, plen, offset, length, digest = unpack_header(_read_exact(inp, HEADER.size))
            if kind == END:
                break
            if kind not in (DATA, ZERO):
                raise SystemExit(f"the writer cannot take a frame of kind {kind}")
            payload = _read_exact(inp, plen) if plen else b""
            job = pool.submit(apply, kind, codec, payload, offset, length, digest)
            pending.append((job, (offset, length, kind == DATA)))
            stats["frames"] += 1
            stats["bytes"] += length if kind == DATA else 0
            while pending and (pending[0][0].done() or len(pending) > IN_FLIGHT):
                finished, record = pending.popleft()
                finished.result()
                written.append(record)
                unsynced += record[1] if record[2] else 0
            if unsynced >= fsync_bytes and (syncing is None or syncing.done()):
                if syncing is not None:
                    syncing.result()
                batch, written = written, []
                syncing = syncer.submit(sync_and_ack, batch)
                unsynced = 0
        while pending:
            finished, record = pending.popleft()
            finished.result()
            written.append(record)
        if syncing is not None:
            syncing.result()
        sync_and_ack(written)
    stats["maxrss_kb"] = peak_rss_kb()
    stats["direct_io"] = int(volume.direct_fd >= 0)
    stats["stat"] = file_stat(volume.fd)
    out.write(b"E " + json.dumps(stats).encode() + b"\n")
    out.flush()
    volume.close()


def main(argv: list[str]) -> int:
    """``MODE``; parameters on stdin after the source (see the module docstring)."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    grow_pipe(inp.fileno())
    grow_pipe(out.fileno())
    (count,) = struct.unpack(">Q", _read_exact(inp, 8))
    params = json.loads(_read_exact(inp, count))
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "probe":
        mode_probe(params, out)
    elif mode == "read":
        mode_read(params, out)
    elif mode == "send":
        mode_send(params, out)
    elif mode == "digests":
        mode_digests(params, out)
    elif mode == "write":
        mode_write(params, inp, out)
    else:
        raise SystemExit(f"unknown agent mode {mode!r}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:
        sys.exit(32)
    except OSError as error:
        raise SystemExit(f"{error.filename or ''}: {error.strerror}") from None
