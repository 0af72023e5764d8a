"""Streams under the archive: a strict tar reader and writer, and the compression layers.

:mod:`stackhop.archive` decides *what* an archive holds; this module moves its
bytes. Reading never trusts the file: the tar parser accepts regular files,
PAX and GNU long-name headers only, caps every header it buffers, and never
touches the filesystem; the zstd frame structure is walked to catch a
truncated stream, which the decompressor alone reports as a clean end.
"""

from __future__ import annotations

import bz2
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, cast

import zstandard

from stackhop.errors import (
    ArchiveIntegrityError,
    ArchiveUnsafeError,
    NotAnArchiveError,
)

Compression = Literal["zstd", "bz2"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
IO_CHUNK = 1 << 20
_BLOCK = 512
_RECORD = 20 * _BLOCK  # tar record size; the end of the archive is padded to it
_ZERO_BLOCK = bytes(_BLOCK)
_EXTENDED_HEADER_MAX = 1 << 20
_CODEC_PROBE = 4 << 20  # more than a bzip2 block, so its CRC is checked


# --------------------------------------------------------------------------- writing


def block_compressor(compression: Compression, level: int) -> Callable[[bytes], bytes]:
    """Compress one block into a self-contained zstd frame or bzip2 stream.

    An archive is a sequence of such blocks: concatenated zstd frames and
    concatenated bzip2 streams are each valid input for every decompressor
    (``zstd -d``, ``tar --zstd``, ``bzip2 -d``, Python), and independent blocks
    can be compressed on all cores while records are still being written.
    Both codecs release the GIL while they work.
    """
    if compression == "zstd":

        def zstd_block(data: bytes) -> bytes:
            # A compressor per block: one instance is not safe across threads.
            return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data)

        return zstd_block

    def bz2_block(data: bytes) -> bytes:
        return bz2.compress(data, level)

    return bz2_block


class TarWriter:
    """Writes a compressed tar (PAX headers, regular files only) as a sequence of blocks.

    Headers, padding and small members are gathered and compressed together;
    large members arrive already compressed (see ``block_compressor``) and are
    copied as they are, so assembling an archive costs a file copy.
    """

    def __init__(self, raw: IO[bytes], compress: Callable[[bytes], bytes], mtime: int) -> None:
        self._raw = raw
        self._compress = compress
        self._mtime = mtime
        self._pending = bytearray()
        self._written = 0  # uncompressed tar bytes so far

    def _put(self, data: bytes) -> None:
        self._pending += data
        self._written += len(data)

    def _emit(self) -> None:
        if self._pending:
            self._raw.write(self._compress(bytes(self._pending)))
            self._pending.clear()

    def _header(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o600
        info.mtime = self._mtime
        info.type = tarfile.REGTYPE
        info.uname = info.gname = ""
        self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))

    def _pad(self, size: int) -> None:
        if size % _BLOCK:
            self._put(bytes(_BLOCK - size % _BLOCK))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self._put(data)
        self._pad(len(data))

    def add_compressed(self, name: str, path: Path, size: int) -> None:
        """Add a member of ``size`` bytes whose compressed blocks are in the file ``path``."""
        self._header(name, size)
        self._emit()
        with open(path, "rb", buffering=0) as source:
            while chunk := source.read(IO_CHUNK):
                self._raw.write(chunk)
        self._written += size
        self._pad(size)

    def finish(self) -> None:
        self._put(_ZERO_BLOCK * 2)
        if self._written % _RECORD:
            self._put(bytes(_RECORD - self._written % _RECORD))
        self._emit()


# --------------------------------------------------------------------------- reading


class PositionalFile:
    """A read-only view of a held file descriptor with its own offset (``pread``)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(os.fstat(self._fd).st_size - self._pos, 0)
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        return None

    @property
    def closed(self) -> bool:
        return False


def check_zstd_frames(fd: int, size: int, path: Path) -> None:
    """Walk the zstd frame and block headers: refuse a truncated stream or trailing junk.

    The decompressor alone returns a clean end of data when the input stops in
    the middle of a frame, so completeness is checked from the frame structure.
    """

    def read(offset: int, length: int) -> bytes:
        data = os.pread(fd, length, offset)
        if len(data) < length:
            raise ArchiveIntegrityError(path=path, detail="the zstd stream ends early (truncated)")
        return data

    pos = 0
    while pos < size:
        magic = read(pos, 4)
        if 0x184D2A50 <= int.from_bytes(magic, "little") <= 0x184D2A5F:  # skippable frame
            pos += 8 + int.from_bytes(read(pos + 4, 4), "little")
            continue
        if magic != ZSTD_MAGIC:
            raise ArchiveIntegrityError(path=path, detail="data follows the end of the zstd stream")
        descriptor = read(pos + 4, 1)[0]
        if descriptor & 0x08:
            raise ArchiveIntegrityError(path=path, detail="the zstd stream is corrupt")
        single_segment = (descriptor >> 5) & 1
        content_size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
        dict_id_bytes = (0, 1, 2, 4)[descriptor & 3]
        pos += 5 + (0 if single_segment else 1) + dict_id_bytes + content_size_bytes
        while True:
            block = int.from_bytes(read(pos, 3), "little")
            block_type = (block >> 1) & 3
            if block_type == 3:
                raise ArchiveIntegrityError(path=path, detail="the zstd stream is corrupt")
            pos += 3 + (1 if block_type == 1 else block >> 3)
            if block & 1:
                break
        if descriptor & 0x04:
            pos += 4
    if pos > size:  # the last frame (or a skippable one) claims bytes the file lacks
        raise ArchiveIntegrityError(path=path, detail="the zstd stream ends early (truncated)")


class DecompressedStream:
    """The uncompressed tar stream, mapping codec errors to archive errors."""

    def __init__(self, fd: int, compression: Compression, path: Path) -> None:
        self._path = path
        self._compression = compression
        source = cast(IO[bytes], PositionalFile(fd))
        self._reader: IO[bytes]
        if compression == "zstd":
            self._reader = zstandard.ZstdDecompressor().stream_reader(
                source, read_size=IO_CHUNK, read_across_frames=True, closefd=False
            )
        else:
            self._reader = bz2.BZ2File(source, "rb")

    def read(self, size: int) -> bytes:
        try:
            return self._reader.read(size)
        except EOFError:
            raise ArchiveIntegrityError(
                path=self._path, detail=f"the {self._compression} stream ends early (truncated)"
            ) from None
        except (zstandard.ZstdError, OSError) as exc:
            raise ArchiveIntegrityError(
                path=self._path, detail=f"the {self._compression} stream is corrupt ({exc})"
            ) from None

    def close(self) -> None:
        self._reader.close()


@dataclass
class TarMember:
    """One tar member under the reading cursor; ``read`` stops at its end."""

    name: str
    typeflag: bytes
    size: int
    stream: TarReader

    def read(self, size: int) -> bytes:
        return self.stream.read_data(size)


class TarReader:
    """A strict, streaming tar parser: regular files, PAX and GNU long-name headers only.

    ``tarfile`` would read an extended header of any declared size into memory;
    this parser caps them, and it never touches the filesystem.
    """

    def __init__(self, stream: DecompressedStream, path: Path) -> None:
        self._stream = stream
        self._path = path
        self._remaining = 0  # data bytes left in the current member
        self._padding = 0

    def _exact(self, size: int) -> bytes:
        parts: list[bytes] = []
        missing = size
        while missing:
            data = self._stream.read(missing)
            if not data:
                break
            parts.append(data)
            missing -= len(data)
        return b"".join(parts)

    def _truncated(self) -> ArchiveIntegrityError:
        return ArchiveIntegrityError(path=self._path, detail="the tar data ends early (truncated)")

    def read_data(self, size: int) -> bytes:
        size = min(size, self._remaining)
        if size <= 0:
            return b""
        data = self._stream.read(size)
        if not data:
            raise self._truncated()
        self._remaining -= len(data)
        return data

    def _skip_rest(self) -> None:
        while self._remaining:
            self.read_data(IO_CHUNK)
        if self._padding and len(self._exact(self._padding)) != self._padding:
            raise self._truncated()
        self._padding = 0

    def members(self) -> Iterator[TarMember]:
        """Yield each member; a member's data must be read (or is skipped) before the next."""
        extended: dict[str, str] = {}
        first = True
        while True:
            header = self._exact(_BLOCK)
            if len(header) < _BLOCK:
                if first and not header:
                    raise NotAnArchiveError(path=self._path, reason="it holds no data")
                raise self._truncated()
            if header == _ZERO_BLOCK:
                self._finish()
                return
            if not _header_checksum_ok(header):
                # A damaged compressed block yields garbage before its checksum is
                # reached; read on a little so the codec can name the real fault.
                self._drain(_CODEC_PROBE)
                if first:
                    raise NotAnArchiveError(path=self._path, reason="its content is not a tar")
                raise ArchiveIntegrityError(path=self._path, detail="a tar header is corrupt")
            first = False
            typeflag = header[156:157]
            size = _parse_number(header[124:136])
            if size is None:
                raise ArchiveIntegrityError(path=self._path, detail="a tar header is corrupt")
            if typeflag in (b"x", b"g", b"L", b"K"):
                if size > _EXTENDED_HEADER_MAX:
                    raise ArchiveIntegrityError(
                        path=self._path, detail=f"an extended tar header of {size} bytes"
                    )
                data = self._exact(size)
                if len(data) < size or len(self._exact(-size % _BLOCK)) != -size % _BLOCK:
                    raise self._truncated()
                if typeflag == b"x":
                    extended.update(self._parse_pax(data))
                elif typeflag == b"L":
                    extended["path"] = data.rstrip(b"\0").decode("utf-8", "replace")
                continue  # global headers and long link names change nothing we read
            name = extended.get("path") or _ustar_name(header)
            if "size" in extended:
                if not extended["size"].isdigit():  # digits only: no sign, no spaces
                    raise ArchiveIntegrityError(path=self._path, detail="a tar header is corrupt")
                size = int(extended["size"])
            extended = {}
            has_data = typeflag in (b"0", b"\0", b"7")
            self._remaining = size if has_data else 0
            self._padding = -self._remaining % _BLOCK
            yield TarMember(name=name, typeflag=typeflag, size=size, stream=self)
            self._skip_rest()

    def _drain(self, limit: int) -> None:
        while limit > 0 and (chunk := self._stream.read(min(limit, IO_CHUNK))):
            limit -= len(chunk)

    def _parse_pax(self, data: bytes) -> dict[str, str]:
        records: dict[str, str] = {}
        pos = 0
        try:
            while pos < len(data) and data[pos] != 0:
                space = data.index(b" ", pos)
                length = int(data[pos:space])
                record = data[space + 1 : pos + length]
                if length <= 0 or not record.endswith(b"\n"):
                    raise ValueError("bad record")
                key, _, value = record[:-1].partition(b"=")
                records[key.decode("utf-8")] = value.decode("utf-8")
                pos += length
        except (ValueError, UnicodeDecodeError):
            raise ArchiveIntegrityError(
                path=self._path, detail="a PAX tar header is corrupt"
            ) from None
        return records

    def _finish(self) -> None:
        """After the end-of-archive block only zero padding may follow, up to the stream's end.

        Reading to the end also makes the decompressor check the frame checksum.
        """
        while chunk := self._stream.read(IO_CHUNK):
            if chunk.count(0) != len(chunk):
                raise ArchiveIntegrityError(
                    path=self._path, detail="data follows the end of the tar"
                )


def _header_checksum_ok(header: bytes) -> bool:
    stored = _parse_number(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored is not None and stored == unsigned


def _parse_number(field: bytes) -> int | None:
    if field[:1] == b"\x80":  # GNU base-256 for values beyond the octal field
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _ustar_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


_TYPE_NAMES = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"6": "fifo",
}


def refuse_unsafe(member: TarMember, path: Path) -> None:
    """Raise for a member no reader should act on, whatever the manifest says."""
    name = member.name
    reason = None
    if not name:
        reason = "empty name"
    elif name.startswith("/") or name.startswith("\\") or re.match(r"[A-Za-z]:[\\/]", name):
        reason = "absolute path"
    elif ".." in re.split(r"[\\/]", name):
        reason = "path with '..'"
    elif member.typeflag in _TYPE_NAMES:
        reason = _TYPE_NAMES[member.typeflag]
    elif member.typeflag not in (b"0", b"\0", b"7", b"5"):
        reason = f"unsupported tar member type {member.typeflag!r}"
    if reason is not None:
        raise ArchiveUnsafeError(path=path, member=name, reason=reason)


def read_all(member: TarMember) -> bytes:
    parts = []
    while chunk := member.read(IO_CHUNK):
        parts.append(chunk)
    return b"".join(parts)
