"""Reading a volume backup back (the format is in :mod:`~stackhop.volumes.backup`).

Two ways in, one set of checks:

- :class:`BackupReader` opens a backup *file* with random access: its
  manifest first, then every piece in offset order, each checked against its
  digest before it is handed on (a transfer
  :class:`~stackhop.transfer.base.Source`, for ``restore-backup``).
- :func:`scan_backup` reads a backup as a *stream*, a file or a pipe (a tape
  read back with ``dd if=/dev/nst0 | stackhop volumes backup verify -``):
  for ``backup verify`` and ``backup extract``.

A member is accepted only when it is a regular file with one of the names
the format has, under one folder, and not larger than its kind allows: a
backup is never unpacked onto the file system by name, so links, devices,
``..`` and absolute paths have nowhere to go, and are refused as damage.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zstandard

from stackhop.errors import ConfigError, IntegrityError, UsageError
from stackhop.transfer.base import Chunk, Digest
from stackhop.volumes.backup import FORMAT_VERSION, zero_digest
from stackhop.volumes.model import VERIFY_CHUNK, content_digest

_CHUNK_NAME = re.compile(r"chunks/(\d{16})\.zst")
_TEXT_MEMBERS = {"README.txt": 1 << 16, "SHA256SUMS": 1 << 26, "size": 64}
_MANIFEST = "manifest.json"
_MANIFEST_LIMIT = 1 << 28  # 256 MiB: the digests of a 2 TiB volume take about 40 MiB
#: A zstd frame of one piece is never much larger than the piece.
_FRAME_LIMIT = VERIFY_CHUNK + VERIFY_CHUNK // 64 + 4096
_ZEROS = bytes(VERIFY_CHUNK)


class _Bad(Exception):
    """Damage found; turned into the one-line IntegrityError by the caller."""


class IncrementalBackupError(UsageError):
    """An incremental backup where a full one is needed."""


def _damaged(label: str, why: str) -> IntegrityError:
    return IntegrityError(
        f"backup {label} is damaged, incomplete or not a stackhop volume backup ({why}); "
        "use another copy"
    )


@dataclass(frozen=True)
class _Member:
    """A member the format knows: ``chunk`` with its offset, or one of the named files."""

    role: str  # "chunk", "manifest", or a name of _TEXT_MEMBERS
    offset: int = 0


def _classify(member: tarfile.TarInfo, root: str | None) -> tuple[str, _Member]:
    """The member's folder and role; raises :class:`_Bad` for anything else."""
    if not member.isreg():
        raise _Bad(f"member {member.name!r} is not a regular file")
    folder, sep, rest = member.name.partition("/")
    if not sep or not folder or folder in {".", ".."} or (root is not None and folder != root):
        raise _Bad(f"unexpected member {member.name!r}")
    chunk = _CHUNK_NAME.fullmatch(rest)
    if chunk:
        if member.size > _FRAME_LIMIT:
            raise _Bad(f"member {member.name!r} declares {member.size} bytes")
        return folder, _Member("chunk", int(chunk.group(1)))
    if rest == _MANIFEST:
        limit = _MANIFEST_LIMIT
    elif rest in _TEXT_MEMBERS:
        limit = _TEXT_MEMBERS[rest]
    else:
        raise _Bad(f"unexpected member {member.name!r}")
    if member.size > limit:
        raise _Bad(f"member {member.name!r} declares {member.size} bytes")
    return folder, _Member("manifest" if rest == _MANIFEST else rest)


def _check_extents(manifest: Mapping[str, Any], size: int) -> dict[int, tuple[int, str]]:
    """An incremental manifest's extents: offset -> (length, sha256), in order, in bounds."""
    extents: dict[int, tuple[int, str]] = {}
    end = 0
    for offset, length, digest in manifest["extents"]:
        offset, length = int(offset), int(length)
        room = VERIFY_CHUNK - offset % VERIFY_CHUNK
        if offset < end or not 0 < length <= room or offset + length > size:
            raise _Bad(f"the manifest's extent at offset {offset} is out of place")
        extents[offset] = (length, str(digest))
        end = offset + length
    for key in ("base_content_digest", "content_digest"):
        if not isinstance(manifest.get(key), str):
            raise _Bad(f"the manifest has no {key}")
    return extents


def _check_manifest(raw: bytes) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(raw)
        size = int(manifest["size"])
        if manifest.get("format") != FORMAT_VERSION:
            raise _Bad(f"format {manifest.get('format')!r}; this stackhop reads {FORMAT_VERSION}")
        if manifest.get("chunk_size") != VERIFY_CHUNK:
            raise _Bad("the manifest's piece size is not this stackhop's")
        if manifest.get("kind", "full") == "incremental":
            _check_extents(manifest, size)
            return manifest
        digests = manifest["chunk_digests"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _Bad(f"unreadable manifest: {exc}") from exc
    if manifest.get("kind", "full") != "full":
        raise _Bad(f"unknown kind {manifest.get('kind')!r}")
    if len(digests) != -(-size // VERIFY_CHUNK):
        raise _Bad("the manifest's pieces do not cover the volume's size")
    if content_digest(digests) != manifest.get("content_digest"):
        raise _Bad("the manifest's piece digests do not add up to its content digest")
    return manifest


def _piece_length(manifest: Mapping[str, Any], offset: int) -> int:
    return min(VERIFY_CHUNK, int(manifest["size"]) - offset)


def _decompress(frame: bytes, length: int) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(frame, max_output_size=length)
    except zstandard.ZstdError as exc:
        raise _Bad(f"a piece does not decompress: {exc}") from exc


def _refuse_old_format(head: bytes, label: str) -> None:
    if head.startswith(b"SHVOL1\n"):
        raise IntegrityError(
            f"backup {label} is in stackhop's first backup format (.shvol), which this "
            "stackhop does not read; restore it with the stackhop that wrote it"
        )


class BackupReader:
    """A backup file, read back: its manifest, and its data as a transfer Source."""

    declared: Digest | None = None

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.label = f"backup {self.path.name}"
        self._frames: dict[int, tuple[int, int]] = {}  # volume offset -> (file position, size)
        try:
            with self.path.open("rb") as f:
                _refuse_old_format(f.read(8), str(self.path))
            self.manifest = self._scan()
        except OSError as exc:
            raise ConfigError(f"cannot read backup {self.path}: {exc.strerror}") from exc
        except (_Bad, tarfile.TarError, EOFError) as exc:
            raise _damaged(str(self.path), str(exc)) from exc
        self.size: int | None = int(self.manifest["size"])
        self.total = int(self.manifest["size"])
        self.volume: Mapping[str, Any] = self.manifest.get("volume") or {}
        self.volume_id = str(self.volume.get("id") or self._root)
        self.content_digest: str = str(self.manifest["content_digest"])

    def _scan(self) -> dict[str, Any]:
        manifest: dict[str, Any] | None = None
        root: str | None = None
        with tarfile.open(self.path, "r:") as tar:
            for member in tar:
                root, role = _classify(member, root)
                if role.role == "chunk":
                    self._frames[role.offset] = (member.offset_data, member.size)
                elif role.role == "manifest":
                    handle = tar.extractfile(member)
                    assert handle is not None
                    manifest = _check_manifest(handle.read())
        if manifest is None:
            raise _Bad("no manifest.json: the backup stream was cut short")
        if manifest.get("kind") == "incremental":
            raise IncrementalBackupError(
                f"backup {self.path} is an incremental backup (pass {manifest.get('pass')}); "
                "restore the chain with `stackhop volumes backup extract FULL INCREMENTAL... "
                "-o RAW`, or restore-backup the full backup"
            )
        stored = {int(o) for o in manifest.get("stored", [])}
        if stored != set(self._frames):
            raise _Bad("its pieces are not the ones its manifest lists")
        self._root = root or ""
        return manifest

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        """Every byte of the volume in :data:`VERIFY_CHUNK` pieces (holes as zeros), checked."""
        digests: list[str] = self.manifest["chunk_digests"]
        with self.path.open("rb") as f:
            for index, expected in enumerate(digests):
                offset = index * VERIFY_CHUNK
                length = _piece_length(self.manifest, offset)
                if offset in self._frames:
                    position, size = self._frames[offset]
                    f.seek(position)
                    try:
                        data = _decompress(f.read(size), length)
                    except _Bad as exc:
                        raise _damaged(str(self.path), str(exc)) from exc
                else:
                    data = _ZEROS[:length]
                if len(data) != length or hashlib.sha256(data).hexdigest() != expected:
                    raise _damaged(
                        str(self.path), f"the piece at offset {offset} does not match its digest"
                    )
                yield Chunk(offset, data)

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class BackupSummary:
    """What :func:`scan_backup` found in a complete, consistent backup."""

    volume_id: str
    name: str
    size: int
    content_digest: str
    pieces: int
    stored_pieces: int
    stored_bytes: int
    kind: str = "full"
    #: An incremental backup's: the content digest of the volume it applies to.
    base_content_digest: str | None = None
    pass_number: int | None = None


PieceWriter = Callable[[int, bytes], None]
"""``(offset, data)`` of each stored piece, in stream order, before it is known good."""


def _open_stream(source: str) -> tuple[IO[bytes], str]:
    if source == "-":
        return sys.stdin.buffer, "on stdin"
    try:
        return open(source, "rb"), source  # noqa: SIM115 - closed by scan_backup
    except OSError as exc:
        raise ConfigError(f"cannot read backup {source}: {exc.strerror}") from exc


def scan_backup(source: str, on_piece: PieceWriter | None = None) -> BackupSummary:
    """Read the backup ``source`` (a path, or ``-`` for stdin) as a stream, checking everything.

    Every stored piece is decompressed and hashed; at the end (the manifest
    comes last) the digests must be the manifest's, the pieces it lists all
    present, and the pieces it does not list zeros. ``on_piece`` receives each
    stored piece as it goes by (``backup extract`` writes them out); a caller
    that wrote anything must discard it when this raises.
    """
    stream, label = _open_stream(source)
    seen: dict[int, str] = {}
    lengths: dict[int, int] = {}
    manifest: dict[str, Any] | None = None
    stored_bytes = 0
    try:
        head = stream.peek(8)[:8] if hasattr(stream, "peek") else b""
        _refuse_old_format(head, label)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            root: str | None = None
            for member in tar:
                root, role = _classify(member, root)
                handle = tar.extractfile(member)
                assert handle is not None
                if role.role == "chunk":
                    if manifest is not None:
                        raise _Bad("a piece after the manifest")
                    data = _decompress(handle.read(), VERIFY_CHUNK)
                    seen[role.offset] = hashlib.sha256(data).hexdigest()
                    lengths[role.offset] = len(data)
                    stored_bytes += member.size
                    if on_piece is not None:
                        on_piece(role.offset, data)
                elif role.role == "manifest":
                    manifest = _check_manifest(handle.read())
                else:
                    handle.read()
        if manifest is None:
            raise _Bad("no manifest.json: the backup stream was cut short")
        incremental = manifest.get("kind") == "incremental"
        if incremental:
            extents = _check_extents(manifest, int(manifest["size"]))
            if set(seen) != set(extents):
                raise _Bad("its extents are not the ones its manifest lists")
            for offset, (length, digest) in extents.items():
                if seen[offset] != digest or lengths[offset] != length:
                    raise _Bad(f"the extent at offset {offset} does not match its digest")
            pieces = len(extents)
        else:
            digests: list[str] = manifest["chunk_digests"]
            if set(seen) != {int(o) for o in manifest.get("stored", [])}:
                raise _Bad("its pieces are not the ones its manifest lists")
            for index, expected in enumerate(digests):
                offset = index * VERIFY_CHUNK
                got = seen.get(offset, zero_digest(_piece_length(manifest, offset)))
                if got != expected:
                    raise _Bad(f"the piece at offset {offset} does not match its digest")
            pieces = len(digests)
    except (_Bad, tarfile.TarError, EOFError) as exc:
        raise _damaged(label, str(exc)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read backup {label}: {exc.strerror}") from exc
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    volume = manifest.get("volume") or {}
    return BackupSummary(
        volume_id=str(volume.get("id") or root or ""),
        name=str(volume.get("name") or ""),
        size=int(manifest["size"]),
        content_digest=str(manifest["content_digest"]),
        pieces=pieces,
        stored_pieces=len(seen),
        stored_bytes=stored_bytes,
        kind="incremental" if incremental else "full",
        base_content_digest=manifest.get("base_content_digest"),
        pass_number=manifest.get("pass"),
    )


def file_digest(path: str | os.PathLike[str], size: int) -> str:
    """The content digest of the first ``size`` bytes of a raw image file."""
    digests = []
    with open(path, "rb") as f:
        for offset in range(0, size, VERIFY_CHUNK):
            piece = f.read(min(VERIFY_CHUNK, size - offset))
            digests.append(hashlib.sha256(piece).hexdigest())
    return content_digest(digests)


def verify_chain(sources: Sequence[str]) -> list[BackupSummary]:
    """Scan every backup of a chain (full first, then incrementals in pass order), linked."""
    summaries = [scan_backup(source) for source in sources]
    _check_links(sources, summaries)
    return summaries


def _check_links(sources: Sequence[str], summaries: Sequence[BackupSummary]) -> None:
    first = summaries[0]
    if first.kind != "full":
        raise UsageError(f"{sources[0]} is an incremental backup; a chain starts with a full one")
    for n in range(1, len(summaries)):
        prev, source, summary = summaries[n - 1], sources[n], summaries[n]
        if summary.kind != "incremental" or summary.volume_id != first.volume_id:
            raise UsageError(f"{source} is not an incremental backup of volume {first.volume_id}")
        if summary.base_content_digest != prev.content_digest:
            raise UsageError(
                f"{source} applies to content {str(summary.base_content_digest)[:16]}..., "
                f"the backup before it leaves {prev.content_digest[:16]}...: give the chain in "
                "pass order, without gaps"
            )


def extract_backup(
    source: str | Sequence[str], output: str | os.PathLike[str]
) -> BackupSummary:
    """Write the volume of a backup (or a chain: full, then incrementals) to ``output``, checked.

    The image is sparse; it appears under its name only when every check
    passed (the chain's links, every piece, and for a chain the content digest
    of the result against the last backup's): it is written as
    ``.<name>.part`` (0600, the data is a user's) and renamed.
    """
    sources = [source] if isinstance(source, str) else list(source)
    out = Path(output)
    if out.exists() and not out.is_file():
        raise ConfigError(f"cannot extract to {out}: it exists and is not a regular file")
    part = out.with_name(f".{out.name}.part")
    try:
        part.unlink(missing_ok=True)
        fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {part}: {exc.strerror}; check -o") from exc
    try:
        with os.fdopen(fd, "wb") as f:

            def write(offset: int, data: bytes) -> None:
                f.seek(offset)
                f.write(data)

            summaries: list[BackupSummary] = []
            for n, one in enumerate(sources):
                summary = scan_backup(one, write)
                summaries.append(summary)
                _check_links(sources[: n + 1], summaries)
                if n == 0:
                    f.truncate(summary.size)  # trailing holes; the file stays sparse
            f.flush()
            os.fsync(f.fileno())
        if len(summaries) > 1 and file_digest(part, summary.size) != summary.content_digest:
            raise IntegrityError(
                f"the chain ending with {sources[-1]} does not rebuild the volume it recorded "
                f"(content digest {summary.content_digest[:16]}...); use other copies"
            )
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return summary
