"""The portable archive: one file carrying exported records from one cloud to another.

Layout (see ``docs/archive.md``): a tar stream compressed with zstd (default)
or bzip2, whose first member is ``manifest.json`` followed by one JSON-lines
member per kind, ``records/<kind>.jsonl``. The manifest names the format
version, the tool version, the source cloud, the creation time, the record
count per kind and the size and sha256 of every member.

Writing streams records into per-kind spool files in a private directory next
to the target and assembles the tar on :meth:`ArchiveWriter.close`, so memory
stays constant whatever the number of records; the archive appears under its
final name atomically, with mode 0600, or not at all.

Reading trusts nothing: :class:`ArchiveReader` walks the whole tar once with
its own strict parser (:mod:`stackhop.tarstream`: no extraction, nothing on disk) and
checks every member against the manifest before a single record is returned.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from stackhop import __version__
from stackhop.errors import (
    ArchiveError,
    ArchiveFormatError,
    ArchiveIntegrityError,
    ArchiveSecretError,
    NotAnArchiveError,
)
from stackhop.tarstream import (
    IO_CHUNK,
    ZSTD_MAGIC,
    Compression,
    DecompressedStream,
    TarMember,
    TarReader,
    TarWriter,
    block_compressor,
    check_zstd_frames,
    read_all,
    refuse_unsafe,
)

FORMAT_NAME = "stackhop-archive"
FORMAT_VERSION = 1
# Format version -> first stackhop release able to read it. A reader meeting a
# version newer than its own FORMAT_VERSION names the release to upgrade to.
MINIMUM_READER: dict[int, str] = {1: "0.1.0"}

MANIFEST_NAME = "manifest.json"
COMPRESSIONS: tuple[Compression, ...] = ("zstd", "bz2")

_BZ2_MAGIC = re.compile(rb"BZh[1-9]")
_KIND_RE = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*")
_KIND_MAX = 80  # keeps member names inside a plain ustar header

_SPOOL_FLUSH_CHARS = 1 << 20  # records are compressed in blocks of about this size
_COMPRESS_THREADS = max(1, min(os.cpu_count() or 1, 8))
_MANIFEST_MAX = 16 << 20


def member_name(kind: str) -> str:
    """The tar member holding the records of ``kind``."""
    return f"records/{kind}.jsonl"


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or len(kind) > _KIND_MAX or not _KIND_RE.fullmatch(kind):
        raise ArchiveError(
            f"invalid kind name {kind!r}: use lowercase letters, digits, '_', '-' and dots "
            f"(like 'nova.keypair'), at most {_KIND_MAX} characters"
        )


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class MemberDigest:
    """Size in bytes and sha256 (hex) of one archive member."""

    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` declares about an archive."""

    format_version: int
    tool_version: str
    source_cloud: str
    source_auth_url: str
    created_at: str
    compression: str
    record_counts: dict[str, int]
    members: dict[str, MemberDigest] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return list(self.record_counts)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "tool_version": self.tool_version,
            "created_at": self.created_at,
            "source": {"cloud": self.source_cloud, "auth_url": self.source_auth_url},
            "compression": self.compression,
            "kinds": {
                kind: {"member": member_name(kind), "records": count}
                for kind, count in self.record_counts.items()
            },
            "members": {
                name: {"size": d.size, "sha256": d.sha256} for name, d in self.members.items()
            },
        }

    @classmethod
    def from_json(cls, raw: bytes, path: Path) -> Manifest:
        """Parse and validate ``manifest.json``; the version check comes first."""

        def invalid(detail: str) -> ArchiveIntegrityError:
            return ArchiveIntegrityError(path=path, detail=f"manifest.json {detail}")

        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise invalid("is not valid JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise NotAnArchiveError(
                path=path, reason="its manifest.json is not a stackhop manifest"
            )
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise invalid(f"has an invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            writer = data.get("tool_version")
            needed = MINIMUM_READER.get(version) or (writer if isinstance(writer, str) else None)
            hint = (
                f"upgrade to stackhop {needed} or later to read it"
                if needed
                else "upgrade stackhop to read it"
            )
            raise ArchiveFormatError(path=path, found=version, supported=FORMAT_VERSION, hint=hint)
        try:
            source = data["source"]
            kinds = data["kinds"]
            members = data["members"]
            record_counts: dict[str, int] = {}
            for kind, entry in kinds.items():
                _check_kind(kind)
                if entry["member"] != member_name(kind):
                    raise invalid(f"names member {entry['member']!r} for kind {kind!r}")
                record_counts[kind] = _non_negative(entry["records"])
            digests = {
                name: MemberDigest(size=_non_negative(d["size"]), sha256=_sha256_hex(d["sha256"]))
                for name, d in members.items()
            }
            manifest = cls(
                format_version=version,
                tool_version=str(data["tool_version"]),
                source_cloud=str(source["cloud"]),
                source_auth_url=str(source["auth_url"]),
                created_at=str(data["created_at"]),
                compression=str(data["compression"]),
                record_counts=record_counts,
                members=digests,
            )
        except KeyError as missing:
            raise invalid(f"lacks the field {missing.args[0]!r}") from None
        except (TypeError, AttributeError, ValueError, ArchiveError) as exc:
            raise invalid(f"has a malformed entry ({exc})") from None
        expected = {member_name(kind) for kind in record_counts}
        if set(digests) != expected:
            odd = sorted(set(digests) ^ expected)[0]
            raise invalid(f"lists member {odd!r} without a matching kind")
        return manifest


def _non_negative(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


def _sha256_hex(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"{value!r} is not a sha256 hex digest")
    return value


# --------------------------------------------------------------------------- secrets

_SECRET_WORDS = frozenset({"password", "passwd", "passphrase", "secret", "secrets", "token"})
# A key whose last word is one of these describes a secret without holding it
# (Keystone's ``password_expires_at``, a ``token_type``, Barbican's ``secret_ref``).
_DESCRIPTIVE_SUFFIXES = frozenset(
    {"at", "expires", "expiry", "ttl", "type", "ref", "policy", "required", "enabled", "length"}
)
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_secret_key_cache: dict[str, bool] = {}


def is_secret_key(key: str) -> bool:
    """True when a record field named ``key`` would hold a password, token or private key."""
    cached = _secret_key_cache.get(key)
    if cached is not None:
        return cached
    words = [w for w in _WORD_SPLIT.split(_CAMEL_BOUNDARY.sub(r"\1_\2", key).lower()) if w]
    secret = any(w in _SECRET_WORDS or w == "privatekey" for w in words) or any(
        a == "private" and b == "key" for a, b in zip(words, words[1:], strict=False)
    )
    if secret and len(words) > 1 and words[-1] in _DESCRIPTIVE_SUFFIXES:
        secret = False
    if len(_secret_key_cache) > 4096:  # field names repeat; a flood of unique ones must not grow it
        _secret_key_cache.clear()
    _secret_key_cache[key] = secret
    return secret


def find_secret(value: object) -> str | None:
    """The dotted path of the first field in ``value`` that holds a secret, or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            if (
                isinstance(key, str)
                and isinstance(item, str | bytes | list | dict | tuple)
                and len(item) > 0
                and is_secret_key(key)
            ):
                return str(key)
            if isinstance(item, dict | list | tuple):
                inner = find_secret(item)
                if inner is not None:
                    return f"{key}.{inner}"
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, dict | list | tuple):
                inner = find_secret(item)
                if inner is not None:
                    return f"{index}.{inner}"
    return None


# --------------------------------------------------------------------------- writing


_Chunks = Callable[[Any, int], Any]  # the C encoder: (record, level) -> string chunks


def _line_encoder() -> tuple[_Chunks, dict[int, Any]]:
    """Compact JSON with sorted keys, ASCII only: one line per record, stable bytes.

    Returns the C encoder built once (``json.dumps`` builds one per call, a
    third of the cost of a small record) and its circular-reference markers,
    which a failed encoding leaves set and the caller must then clear.
    """
    options = json.JSONEncoder(
        ensure_ascii=True, separators=(",", ":"), sort_keys=True, allow_nan=False
    )
    markers: dict[int, Any] = {}
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return (lambda record, _level: (options.encode(record),)), markers
    encoder = make(
        markers,
        options.default,
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ":",
        ",",
        True,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    return encoder, markers


class _BlockQueue:
    """Blocks of every kind waiting for compression, oldest first, at most ``limit``.

    Compression runs on a thread pool (both codecs release the GIL) while the
    caller goes on encoding records. Writing the oldest block first keeps each
    spool's blocks in order, and the one global bound keeps memory flat
    however many kinds an archive holds.
    """

    def __init__(self, compress: Callable[[bytes], bytes], threads: int) -> None:
        self._compress = compress
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "stackhop-archive")
        self._limit = 2 * threads
        self._waiting: collections.deque[tuple[IO[bytes], concurrent.futures.Future[bytes]]]
        self._waiting = collections.deque()

    def submit(self, target: IO[bytes], data: bytes) -> None:
        self._waiting.append((target, self._pool.submit(self._compress, data)))
        while len(self._waiting) > self._limit:
            self._write_oldest()

    def _write_oldest(self) -> None:
        target, future = self._waiting.popleft()
        target.write(future.result())

    def drain(self) -> None:
        """Write every waiting block."""
        while self._waiting:
            self._write_oldest()

    def shutdown(self) -> None:
        for _, future in self._waiting:
            future.cancel()
        self._waiting.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Spool:
    """Records of one kind, encoded and hashed as they arrive, compressed in the background.

    Each block of about ``_SPOOL_FLUSH_CHARS`` is hashed here, in order, then
    queued for compression into a self-contained frame appended to a private
    file.
    """

    def __init__(self, path: Path, queue: _BlockQueue) -> None:
        self.path = path
        self._queue = queue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.file = open(fd, "wb", buffering=0)  # noqa: SIM115 - closed by the writer
        # ArchiveWriter.write appends here directly (a method call per record
        # is a tenth of the cost) and calls flush() past _SPOOL_FLUSH_CHARS.
        self.lines: list[str] = []
        self.chars = 0
        self._hash = hashlib.sha256()
        self.count = 0
        self.size = 0

    def flush(self) -> None:
        if not self.lines:
            return
        self.count += len(self.lines)
        self.lines.append("")  # every record line ends with a newline
        data = "\n".join(self.lines).encode("ascii")
        self.lines.clear()
        self.chars = 0
        self._hash.update(data)
        self.size += len(data)
        self._queue.submit(self.file, data)

    def digest(self) -> MemberDigest:
        return MemberDigest(size=self.size, sha256=self._hash.hexdigest())


class ArchiveWriter:
    """Write a portable archive; use as a context manager.

    ``write(kind, record)`` accepts records of any kinds in any order. On a
    clean exit from the ``with`` block the archive is assembled and moved into
    place atomically (mode 0600); on an exception nothing is left behind.
    Records are encoded as compact JSON with sorted keys, so equal input gives
    equal members. A record holding a secret is refused with
    :class:`ArchiveSecretError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        source_cloud: str,
        source_auth_url: str,
        compression: Compression = "zstd",
        overwrite: bool = False,
        level: int | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ArchiveError(f"unknown compression {compression!r}; use 'zstd' or 'bz2'")
        self.path = Path(path)
        self.source_cloud = source_cloud
        self.source_auth_url = source_auth_url
        self.compression: Compression = compression
        self.overwrite = overwrite
        self.level = level if level is not None else (3 if compression == "zstd" else 9)
        self.manifest: Manifest | None = None
        self._aborted = False
        self._workdir: Path | None = None
        self._compress = block_compressor(compression, self.level)
        self._queue: _BlockQueue | None = None
        self._spools: dict[str, _Spool] = {}
        self._encode, self._encode_markers = _line_encoder()

    def __enter__(self) -> ArchiveWriter:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Create the private working directory next to the target."""
        if self._workdir is not None:
            return
        if self._aborted or self.manifest is not None:
            raise ArchiveError(f"archive {self.path} is finished; use a new ArchiveWriter")
        if not self.overwrite and self.path.exists():
            raise ArchiveError(
                f"archive {self.path} already exists; choose another name or allow overwriting"
            )
        parent = self.path.parent
        self._queue = _BlockQueue(self._compress, _COMPRESS_THREADS)
        try:
            self._workdir = Path(
                tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial", dir=parent)
            )
        except OSError as exc:
            raise ArchiveError(f"cannot write archive {self.path}: {exc.strerror}") from exc

    def add_kind(self, kind: str) -> None:
        """Declare ``kind`` as exported even if it has no records (so import knows it is empty)."""
        self._spool(kind)

    def _spool(self, kind: str) -> _Spool:
        spool = self._spools.get(kind)
        if spool is None:
            _check_kind(kind)
            if self._workdir is None or self._queue is None:
                raise ArchiveError("ArchiveWriter used outside its `with` block (call open())")
            spool = _Spool(self._workdir / f"{kind}.jsonl", self._queue)
            self._spools[kind] = spool
        return spool

    def write(self, kind: str, record: dict[str, Any]) -> None:
        """Append one record of ``kind``."""
        spool = self._spools.get(kind)
        if spool is None:
            spool = self._spool(kind)  # refuses a bad kind name, or a closed writer
        if not isinstance(record, dict):
            raise ArchiveError(
                f"a {kind} record must be a JSON object, not {type(record).__name__}"
            )
        try:
            line = "".join(self._encode(record, 0))
        except (TypeError, ValueError, RecursionError) as exc:
            self._encode_markers.clear()
            raise ArchiveError(f"a {kind} record cannot be written as JSON: {exc}") from exc
        # Every key appears literally in the encoded line (ensure_ascii leaves ASCII
        # letters alone), so a line without a secret-like word needs no walk.
        low = line.lower()
        if "pass" in low or "secret" in low or "token" in low or "private" in low:
            secret = find_secret(record)
            if secret is not None:
                raise ArchiveSecretError(kind=kind, field=secret)
        spool.lines.append(line)
        spool.chars += len(line)
        if spool.chars >= _SPOOL_FLUSH_CHARS:
            spool.flush()

    def close(self) -> Manifest:
        """Assemble the archive, move it into place, remove the working files."""
        if self.manifest is not None:
            return self.manifest
        if self._workdir is None:
            self.open()
        assert self._workdir is not None
        try:
            for spool in self._spools.values():
                spool.flush()
            assert self._queue is not None
            self._queue.drain()
            for spool in self._spools.values():
                spool.file.close()
            digests = {kind: spool.digest() for kind, spool in self._spools.items()}
            created = time.time()
            kinds = sorted(digests)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                tool_version=__version__,
                source_cloud=self.source_cloud,
                source_auth_url=self.source_auth_url,
                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
                compression=self.compression,
                record_counts={kind: self._spools[kind].count for kind in kinds},
                members={member_name(kind): digests[kind] for kind in kinds},
            )
            staged = self._workdir / "archive"
            self._assemble(staged, manifest, int(created))
            self._publish(staged)
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        self.manifest = manifest
        return manifest

    def _assemble(self, staged: Path, manifest: Manifest, mtime: int) -> None:
        manifest_bytes = json.dumps(manifest.to_json(), indent=2).encode("ascii") + b"\n"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # exact mode whatever the umask
        with open(fd, "wb", buffering=IO_CHUNK) as raw:
            tar = TarWriter(raw, self._compress, mtime)
            tar.add_bytes(MANIFEST_NAME, manifest_bytes)
            for kind in manifest.record_counts:
                name = member_name(kind)
                tar.add_compressed(name, self._spools[kind].path, manifest.members[name].size)
            tar.finish()
            raw.flush()
            os.fsync(raw.fileno())

    def _publish(self, staged: Path) -> None:
        if self.overwrite:
            os.replace(staged, self.path)
        else:
            try:
                os.link(staged, self.path)  # atomic, and never clobbers a file created meanwhile
            except FileExistsError:
                raise ArchiveError(
                    f"archive {self.path} already exists; choose another name or allow overwriting"
                ) from None
            except OSError:
                # A filesystem without hard links: check, then rename (a narrow race).
                if self.path.exists():
                    raise ArchiveError(
                        f"archive {self.path} already exists; "
                        "choose another name or allow overwriting"
                    ) from None
                os.replace(staged, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def abort(self) -> None:
        """Drop everything written so far; the target path is left untouched."""
        self._aborted = True
        self._cleanup()

    def _cleanup(self) -> None:
        if self._queue is not None:
            self._queue.shutdown()
            self._queue = None
        for spool in self._spools.values():
            spool.file.close()
        self._spools = {}
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


# --------------------------------------------------------------------------- reading


class ArchiveReader:
    """Read a portable archive, verified in full before any record is returned.

    Opening the reader checks the compression stream, every member's path and
    type, and every member's size, sha256 and record count against the
    manifest. The file descriptor stays open, so replacing the file on disk
    afterwards does not change what is read; :meth:`records` re-hashes the
    member as it streams it and raises :class:`ArchiveIntegrityError` at its end
    if it no longer matches (catching a file modified in place).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ArchiveError(f"archive {self.path} does not exist") from None
        except OSError as exc:
            raise ArchiveError(f"cannot open archive {self.path}: {exc.strerror}") from None
        try:
            info = os.fstat(self._fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotAnArchiveError(path=self.path, reason="it is not a regular file")
            self.compression = self._detect(info.st_size)
            if self.compression == "zstd":
                check_zstd_frames(self._fd, info.st_size, self.path)
            self._manifest = self._verify()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file descriptor; further reads fail."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def kinds(self) -> list[str]:
        """The kinds the archive holds, in member order."""
        return self._manifest.kinds

    def count(self, kind: str) -> int:
        """The number of records of ``kind`` (0 for a kind the archive does not hold)."""
        return self._manifest.record_counts.get(kind, 0)

    def _detect(self, size: int) -> Compression:
        head = os.pread(self._fd, 4, 0)
        if head == ZSTD_MAGIC:
            return "zstd"
        if _BZ2_MAGIC.fullmatch(head):
            return "bz2"
        reason = "it is empty" if size == 0 else "it is neither zstd nor bzip2 compressed"
        raise NotAnArchiveError(path=self.path, reason=reason)

    def _open_members(self) -> tuple[DecompressedStream, Iterator[TarMember]]:
        if self._fd < 0:
            raise ArchiveError(f"archive {self.path} is closed")
        stream = DecompressedStream(self._fd, self.compression, self.path)
        return stream, TarReader(stream, self.path).members()

    def _verify(self) -> Manifest:
        stream, members = self._open_members()
        try:
            first = next(members, None)
            if first is None:
                raise NotAnArchiveError(path=self.path, reason="its tar holds no members")
            refuse_unsafe(first, self.path)
            if first.name != MANIFEST_NAME:
                raise NotAnArchiveError(
                    path=self.path,
                    reason=f"its first member is {first.name!r}, not 'manifest.json'",
                )
            if first.size > _MANIFEST_MAX:
                raise ArchiveIntegrityError(path=self.path, detail="manifest.json is too large")
            manifest = Manifest.from_json(read_all(first), self.path)
            seen: set[str] = set()
            for member in members:
                refuse_unsafe(member, self.path)
                self._check_member(manifest, member, seen)
            missing = sorted(set(manifest.members) - seen)
            if missing:
                raise ArchiveIntegrityError(
                    path=self.path,
                    detail=f"member {missing[0]!r} listed in the manifest is missing",
                )
            return manifest
        finally:
            stream.close()

    def _check_member(self, manifest: Manifest, member: TarMember, seen: set[str]) -> None:
        def damaged(detail: str) -> ArchiveIntegrityError:
            return ArchiveIntegrityError(path=self.path, detail=f"member {member.name!r} {detail}")

        if member.name == MANIFEST_NAME or member.name in seen:
            raise damaged("appears twice")
        expected = manifest.members.get(member.name)
        if expected is None or member.typeflag == b"5":
            raise damaged("is not listed in the manifest")
        if member.size != expected.size:
            raise damaged(f"is {member.size} bytes, the manifest says {expected.size}")
        digest = hashlib.sha256()
        lines = 0
        while chunk := member.read(IO_CHUNK):
            digest.update(chunk)
            lines += chunk.count(b"\n")
        if digest.hexdigest() != expected.sha256:
            raise damaged("does not match its sha256 in the manifest")
        kind = member.name[len("records/") : -len(".jsonl")]
        if lines != manifest.record_counts[kind]:
            raise damaged(
                f"holds {lines} records, the manifest says {manifest.record_counts[kind]}"
            )
        seen.add(member.name)

    def records(self, kind: str) -> Iterator[dict[str, Any]]:
        """Stream the records of ``kind`` in the order they were written."""
        if kind not in self._manifest.record_counts:
            held = ", ".join(self._manifest.kinds) or "none"
            raise ArchiveError(f"archive {self.path} holds no {kind!r} records (it holds: {held})")
        return self._stream_records(kind)

    def _stream_records(self, kind: str) -> Iterator[dict[str, Any]]:
        name = member_name(kind)
        expected = self._manifest.members[name]
        stream, members = self._open_members()
        try:
            for member in members:
                refuse_unsafe(member, self.path)
                if member.name == name:
                    yield from self._parse_lines(member, expected)
                    return
            raise ArchiveIntegrityError(path=self.path, detail=f"member {name!r} disappeared")
        finally:
            stream.close()

    def _parse_lines(self, member: TarMember, expected: MemberDigest) -> Iterator[dict[str, Any]]:
        digest = hashlib.sha256()
        size = 0
        number = 0  # records parsed so far, for error messages
        partial = b""
        while chunk := member.read(IO_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            block = partial + chunk if partial else chunk
            cut = block.rfind(b"\n") + 1
            partial = block[cut:]
            if cut:
                records = self._parse_block(block[:cut], member.name, number)
                number += len(records)
                yield from records
        if partial or size != expected.size or digest.hexdigest() != expected.sha256:
            raise ArchiveIntegrityError(
                path=self.path, detail=f"member {member.name!r} changed after it was verified"
            )

    def _parse_block(self, data: bytes, name: str, before: int) -> list[dict[str, Any]]:
        """Parse whole lines at once, as one JSON array: a third faster than line by line.

        JSON escapes newlines inside strings, so newlines separate records only;
        a block that does not parse into one object per line is re-read line by
        line to name the bad line.
        """
        lines = data.count(b"\n")
        try:
            records = json.loads("[" + data.decode("utf-8")[:-1].replace("\n", ",") + "]")
        except ValueError:
            records = None
        if (
            isinstance(records, list)
            and len(records) == lines
            and all(type(r) is dict for r in records)
        ):
            return records
        for offset, line in enumerate(data.split(b"\n")[:-1], start=before + 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise ArchiveIntegrityError(
                    path=self.path, detail=f"line {offset} of {name!r} is not a record"
                )
        raise ArchiveIntegrityError(path=self.path, detail=f"{name!r} holds malformed records")
