"""RBD images: the ``rbd`` tools run locally or over ssh, and the export-diff stream passed through.

stackhop does not link librbd (Debian's ``python3-rbd`` is not importable
from the project's venv, and there is no usable build on PyPI): it runs the
``rbd`` command line of the cluster's own release, next to the cluster
(locally, or on a host reached by ssh when the storage map gives
``ssh_host``). Bytes move as the ``rbd export-diff`` stream (format v1)::

    "rbd diff v1\\n"
    'f' le32 len, name          from-snapshot (incremental diffs only)
    't' le32 len, name          to-snapshot (import-diff creates it)
    's' le64 size               image size
    'w' le64 offset, le64 len, data
    'z' le64 offset, le64 len   a zeroed / discarded extent
    'e'                         end

:func:`read_diff` parses it into records and :class:`DiffWriter` writes it
again, so the bytes of ``export-diff`` on the source cross stackhop on their
way to ``import-diff`` on the destination: each record is hashed, counted,
teed to a backup, and re-serialised. A large ``w`` record is cut into pieces
of at most :data:`MAX_PIECE` bytes (several ``w`` records are equivalent for
import-diff), so memory stays at a few MiB whatever the object size.

:class:`ChunkHasher` turns records in offset order (which ``export-diff``
guarantees) into the per-:data:`~stackhop.volumes.model.VERIFY_CHUNK`
digests of :func:`~stackhop.volumes.model.content_digest`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from stackhop.errors import CloudUnreachableError, ConfigError, IntegrityError, StackhopError
from stackhop.transfer.ssh import SshHost, describe_failure

MAGIC = b"rbd diff v1\n"
MAX_PIECE = 4 * 1024 * 1024
"""The largest ``w`` payload held in memory at once."""

_LE32 = struct.Struct("<I")
_LE64 = struct.Struct("<Q")
_EXTENT = struct.Struct("<QQ")


class RbdError(StackhopError):
    """An ``rbd`` command failed (exit code of a cloud that cannot be reached)."""

    exit_code = CloudUnreachableError.exit_code


class DiffFormatError(IntegrityError):
    """The export-diff stream is cut short or not in the format stackhop reads."""


@dataclass(frozen=True)
class DiffHeader:
    """The head of a diff: the snapshots it goes between and the image size."""

    from_snap: str | None
    to_snap: str | None
    size: int


@dataclass(frozen=True)
class WriteExtent:
    """``data`` at ``offset`` (a ``w`` record, or a piece of one)."""

    offset: int
    data: bytes

    @property
    def length(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ZeroExtent:
    """``length`` zero bytes at ``offset`` (a ``z`` record)."""

    offset: int
    length: int


Record = WriteExtent | ZeroExtent


def _read_exact(stream: IO[bytes], n: int, what: str) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise DiffFormatError(
            f"rbd export-diff stream ended inside {what}; the export was cut short, re-run"
        )
    return data


def read_diff(stream: IO[bytes], max_piece: int = MAX_PIECE) -> tuple[DiffHeader, Iterator[Record]]:
    """Parse a v1 diff: its header (read at once) and an iterator over its extents in order."""
    magic = stream.read(len(MAGIC))
    if magic != MAGIC:
        raise DiffFormatError(
            f"not an rbd diff v1 stream (starts {magic[:16]!r}); stackhop runs export-diff "
            "with the default --export-format 1, check the rbd tools on that host"
        )
    from_snap: str | None = None
    to_snap: str | None = None
    while True:
        tag = _read_exact(stream, 1, "a record tag")
        if tag in (b"f", b"t"):
            (n,) = _LE32.unpack(_read_exact(stream, 4, "a snapshot name length"))
            name = _read_exact(stream, n, "a snapshot name").decode()
            if tag == b"f":
                from_snap = name
            else:
                to_snap = name
        elif tag == b"s":
            (size,) = _LE64.unpack(_read_exact(stream, 8, "the image size"))
            break
        else:
            raise DiffFormatError(f"rbd diff: unexpected record {tag!r} before the image size")
    return DiffHeader(from_snap, to_snap, size), _extents(stream, max_piece)


def _extents(stream: IO[bytes], max_piece: int) -> Iterator[Record]:
    while True:
        tag = _read_exact(stream, 1, "a record tag")
        if tag == b"e":
            return
        if tag not in (b"w", b"z"):
            raise DiffFormatError(f"rbd diff: unknown record {tag!r}")
        offset, length = _EXTENT.unpack(_read_exact(stream, 16, "an extent"))
        if tag == b"z":
            yield ZeroExtent(offset, length)
            continue
        done = 0
        while done < length:
            n = min(max_piece, length - done)
            yield WriteExtent(offset + done, _read_exact(stream, n, "extent data"))
            done += n


class DiffWriter:
    """Writes a v1 diff to ``stream``: :meth:`header`, extents, then :meth:`end`."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        #: Bytes written so far (what crossed to the destination).
        self.bytes = 0

    def _put(self, data: bytes) -> None:
        self.stream.write(data)
        self.bytes += len(data)

    def header(self, header: DiffHeader) -> None:
        self._put(MAGIC)
        for tag, name in ((b"f", header.from_snap), (b"t", header.to_snap)):
            if name is not None:
                encoded = name.encode()
                self._put(tag + _LE32.pack(len(encoded)) + encoded)
        self._put(b"s" + _LE64.pack(header.size))

    def record(self, record: Record) -> None:
        if isinstance(record, WriteExtent):
            self._put(b"w" + _EXTENT.pack(record.offset, record.length))
            self._put(record.data)
        else:
            self._put(b"z" + _EXTENT.pack(record.offset, record.length))

    def end(self) -> None:
        self._put(b"e")


@functools.lru_cache(maxsize=8)
def zero_digest(length: int) -> str:
    """The sha256 of ``length`` zero bytes (a hole), computed once per length."""
    return hashlib.sha256(bytes(length)).hexdigest()


@dataclass
class ChunkHasher:
    """Per-chunk sha256 digests of an image from diff records in offset order.

    ``complete=True`` (a diff from nothing): bytes no record covers are holes,
    and every chunk up to ``size`` gets a digest. ``complete=False`` (a diff
    between snapshots): only chunks the records touch are hashed, and a
    touched chunk that the records do not cover entirely lands in
    :attr:`partial` (its digest is unknown); a ``--whole-object`` diff with
    objects of at least the chunk size covers every touched chunk.
    """

    size: int
    chunk: int
    complete: bool
    digests: dict[int, str] = field(default_factory=dict)
    partial: set[int] = field(default_factory=set)
    _index: int = -1
    _buffer: bytearray | None = None
    _covered: int = 0
    _written: bool = False
    _direct: bool = False
    _next: int = 0

    def _length(self, index: int) -> int:
        return min(self.chunk, self.size - index * self.chunk)

    def _open(self, index: int) -> None:
        if index < self._index:
            raise DiffFormatError(
                "rbd diff: extents are not in offset order; re-run (if it persists, the rbd "
                "tools are not ones stackhop knows)"
            )
        if index == self._index:
            return
        self._close()
        if self.complete:
            for hole in range(self._next, index):
                self.digests[hole] = zero_digest(self._length(hole))
        self._index = index
        self._buffer = None
        self._covered = 0
        self._written = False
        self._direct = False

    def _close(self) -> None:
        if self._index < 0:
            return
        length = self._length(self._index)
        if self._direct:
            pass  # hashed when it arrived
        elif not self.complete and self._covered < length:
            self.partial.add(self._index)
        elif self._buffer is not None and self._written:
            self.digests[self._index] = hashlib.sha256(self._buffer).hexdigest()
        else:
            self.digests[self._index] = zero_digest(length)
        self._next = self._index + 1
        self._index = -1

    def add(self, record: Record) -> None:
        """Take one record (any size; it may span chunks)."""
        offset = record.offset
        end = offset + record.length
        if end > self.size:
            raise DiffFormatError(f"rbd diff: extent {offset}+{record.length} beyond the image")
        while offset < end:
            index = offset // self.chunk
            self._open(index)
            start = offset - index * self.chunk
            n = min(end, (index + 1) * self.chunk) - offset
            if self._direct:
                raise DiffFormatError(f"rbd diff: extents overlap at offset {offset}")
            if isinstance(record, WriteExtent) and n == self._length(index) and not self._covered:
                # A whole chunk in one record (the usual 4 MiB object): hash it in place.
                view = memoryview(record.data)[offset - record.offset : offset - record.offset + n]
                self.digests[index] = hashlib.sha256(view).hexdigest()
                self._direct = True
            elif isinstance(record, WriteExtent):
                if self._buffer is None:
                    self._buffer = bytearray(self._length(index))
                piece = record.data[offset - record.offset : offset - record.offset + n]
                self._buffer[start : start + n] = piece
                self._written = True
            elif self._buffer is not None:
                self._buffer[start : start + n] = bytes(n)
            self._covered += n
            offset += n

    def finish(self) -> dict[int, str]:
        """Close the last chunk (and, when complete, the holes after it); return the digests."""
        self._close()
        if self.complete:
            count = -(-self.size // self.chunk)
            for hole in range(self._next, count):
                self.digests[hole] = zero_digest(self._length(hole))
            self._next = count
        return self.digests


@dataclass(frozen=True)
class RbdCluster:
    """One Ceph cluster's pool, reached with the ``rbd`` CLI locally or on an ssh host."""

    #: Cloud name, for messages.
    cloud: str
    pool: str
    ceph_conf: str | None = None
    keyring: str | None = None
    user: str | None = None
    ssh: SshHost | None = None

    @property
    def where(self) -> str:
        via = f", via ssh {self.ssh.name}" if self.ssh else ""
        return f"cloud {self.cloud!r} (pool {self.pool}{via})"

    def command(self, args: Sequence[str]) -> list[str]:
        """The argv running ``rbd ARGS`` against this cluster, wrapped in ssh when remote."""
        rbd = ["rbd"]
        if self.ceph_conf:
            rbd += ["-c", self.ceph_conf]
        if self.keyring:
            rbd += ["--keyring", self.keyring]
        if self.user:
            rbd += ["--id", self.user]
        rbd += list(args)
        return self.ssh.argv(rbd) if self.ssh else rbd

    def spec(self, image: str, snap: str | None = None) -> str:
        return f"{self.pool}/{image}" + (f"@{snap}" if snap else "")

    def run(self, args: Sequence[str], *, missing_ok: bool = False, timeout: float = 600) -> str:
        """Run ``rbd ARGS``; its stdout. ``missing_ok``: a missing image or snapshot returns ''."""
        try:
            done = subprocess.run(
                self.command(args), capture_output=True, timeout=timeout, check=False
            )
        except FileNotFoundError as exc:
            raise ConfigError(
                f"the rbd tool is not installed here; install ceph-common or set ssh_host for "
                f"{self.where} in the storage map"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise RbdError(
                f"rbd {shlex.join(args)} on {self.where} did not finish in {timeout:.0f} s; "
                "check the cluster's health and re-run"
            ) from exc
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")
            if missing_ok and "(2) No such file or directory" in stderr:
                return ""
            raise RbdError(self.failure(args, done.returncode, done.stderr))
        return done.stdout.decode()

    def failure(self, args: Sequence[str], returncode: int, stderr: bytes) -> str:
        """One line saying why ``rbd ARGS`` failed."""
        if self.ssh and returncode == 255:
            return describe_failure(self.ssh.name, ["rbd", *args], returncode, stderr)
        lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {returncode}"
        return f"rbd {args[0]} on {self.where} failed: {last}"

    def popen(self, args: Sequence[str], *, stdin: Any = None, stdout: Any = None) -> RbdProcess:
        """Start ``rbd ARGS`` with its stderr kept aside for the error message."""
        errors = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(self.command(args), stdin=stdin, stdout=stdout, stderr=errors)
        except FileNotFoundError as exc:
            errors.close()
            raise ConfigError(
                f"the rbd tool is not installed here; install ceph-common or set ssh_host for "
                f"{self.where} in the storage map"
            ) from exc
        return RbdProcess(self, list(args), proc, errors)

    # -- images and snapshots --------------------------------------------------

    def info(self, image: str) -> dict[str, Any] | None:
        """``rbd info`` of ``image`` as a dict, or None when it does not exist."""
        out = self.run(["info", "--format", "json", self.spec(image)], missing_ok=True)
        return json.loads(out) if out else None

    def snapshots(self, image: str) -> list[str]:
        """Names of ``image``'s snapshots ([] when the image does not exist)."""
        out = self.run(["snap", "ls", "--format", "json", self.spec(image)], missing_ok=True)
        return [str(s["name"]) for s in json.loads(out)] if out else []

    def create_snapshot(self, image: str, snap: str) -> None:
        self.run(["snap", "create", "--no-progress", self.spec(image, snap)])

    def remove_snapshot(self, image: str, snap: str) -> None:
        """Remove ``image@snap``; a missing image or snapshot is fine."""
        self.run(["snap", "rm", "--no-progress", self.spec(image, snap)], missing_ok=True)

    def create_image(self, image: str, size: int) -> None:
        self.run(["create", "--size", f"{size}B", self.spec(image)])

    def remove_image(self, image: str) -> None:
        """Remove ``image`` and its snapshots; a missing image is fine."""
        self.run(["snap", "purge", "--no-progress", self.spec(image)], missing_ok=True)
        self.run(["rm", "--no-progress", self.spec(image)], missing_ok=True)

    def export_diff(
        self, image: str, snap: str, from_snap: str | None = None, whole_object: bool = False
    ) -> RbdProcess:
        """``rbd export-diff`` of ``image@snap`` (since ``from_snap``) to a pipe."""
        args = ["export-diff", "--no-progress", "--snap", snap]
        if from_snap:
            args += ["--from-snap", from_snap]
        if whole_object:
            args.append("--whole-object")
        return self.popen([*args, self.spec(image), "-"], stdout=subprocess.PIPE)

    def import_diff(self, image: str) -> RbdProcess:
        """``rbd import-diff - image`` reading from a pipe."""
        return self.popen(
            ["import-diff", "--no-progress", "-", self.spec(image)], stdin=subprocess.PIPE
        )

    def chunk_digests(
        self,
        image: str,
        snap: str,
        chunk: int,
        from_snap: str | None = None,
    ) -> ChunkHasher:
        """Hash ``image@snap`` per chunk, reading only allocated extents (or, with
        ``from_snap``, only the whole objects changed since it)."""
        proc = self.export_diff(image, snap, from_snap, whole_object=from_snap is not None)
        assert proc.proc.stdout is not None
        try:
            header, records = read_diff(proc.proc.stdout)
            hasher = ChunkHasher(size=header.size, chunk=chunk, complete=from_snap is None)
            for record in records:
                hasher.add(record)
            hasher.finish()
        except BaseException:
            proc.kill()
            raise
        proc.wait()
        return hasher


@dataclass
class RbdProcess:
    """A running ``rbd`` command and where its stderr goes."""

    cluster: RbdCluster
    args: list[str]
    proc: subprocess.Popen[bytes]
    errors: IO[bytes]

    def _stderr(self) -> bytes:
        self.errors.seek(0)
        return self.errors.read()

    def wait(self, timeout: float = 600) -> None:
        """Wait for the command; RbdError with its last stderr line if it failed."""
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise RbdError(
                f"rbd {self.args[0]} on {self.cluster.where} did not finish; re-run"
            ) from exc
        try:
            if returncode != 0:
                raise RbdError(self.cluster.failure(self.args, returncode, self._stderr()))
        finally:
            self.errors.close()

    def kill(self) -> None:
        """Stop the command (our own child, by its handle) after a failure elsewhere."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        self.errors.close()

    def failed_message(self) -> str | None:
        """Why the command failed, if it already ended with an error."""
        code = self.proc.poll()
        if code is None or code == 0:
            return None
        return self.cluster.failure(self.args, code, self._stderr())


@dataclass
class DiffStats:
    """What went through one :func:`pipe_diff`."""

    header: DiffHeader | None = None
    #: Data bytes of ``w`` records (what changed, uncompressed).
    data_bytes: int = 0
    #: Bytes of ``z`` records (zeroed extents, never sent as data).
    zero_bytes: int = 0
    #: Bytes of the re-serialised stream written to import-diff.
    wire_bytes: int = 0
    #: Chunk indexes any record touched.
    touched: set[int] = field(default_factory=set)


RecordHook = Callable[[DiffHeader, Record], None]


def pipe_diff(
    source: RbdProcess,
    destination: RbdProcess,
    *,
    chunk: int,
    hooks: Sequence[RecordHook] = (),
    on_progress: Callable[[int], None] | None = None,
) -> DiffStats:
    """Pass the export-diff stream of ``source`` into the import-diff of ``destination``.

    Every record is handed to ``hooks`` (hashing, backup) before it is
    written. Both processes are waited for; any failure kills both and raises
    one error naming the side that failed.
    """
    stats = DiffStats()
    assert source.proc.stdout is not None and destination.proc.stdin is not None
    writer = DiffWriter(destination.proc.stdin)
    try:
        header, records = read_diff(source.proc.stdout)
        stats.header = header
        writer.header(header)
        for record in records:
            for hook in hooks:
                hook(header, record)
            writer.record(record)
            if isinstance(record, WriteExtent):
                stats.data_bytes += record.length
            else:
                stats.zero_bytes += record.length
            first = record.offset // chunk
            last = (record.offset + max(record.length, 1) - 1) // chunk
            stats.touched.update(range(first, last + 1))
            if on_progress is not None:
                on_progress(record.offset + record.length)
        writer.end()
        destination.proc.stdin.close()
    except BrokenPipeError as exc:
        source.kill()
        try:
            destination.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        message = destination.failed_message() or "rbd import-diff stopped reading"
        destination.kill()
        raise RbdError(message) from exc
    except BaseException:
        source.kill()
        destination.kill()
        raise
    stats.wire_bytes = writer.bytes
    try:
        source.wait()
    except BaseException:
        destination.kill()
        raise
    destination.wait()
    return stats
