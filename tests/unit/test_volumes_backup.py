"""The volume backup (a tar stream), its targets and readers, and the content digest helpers.

Everything here is real and local: files, pipes, FIFOs, and the standard tools
(tar, zstd, sha256sum, dd) a backup promises to be readable with.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from stackhop.cli.main import main
from stackhop.errors import ConfigError, IntegrityError, UsageError
from stackhop.transfer.base import Chunk, HashingDestination, copy
from stackhop.volumes.backup import (
    BackupWriter,
    ContentHasher,
    IncrementalBackupWriter,
    Rechunker,
    Tee,
)
from stackhop.volumes.backup_reader import (
    BackupReader,
    IncrementalBackupError,
    extract_backup,
    scan_backup,
    verify_chain,
)
from stackhop.volumes.model import VERIFY_CHUNK, VolumeRef, content_digest

MIB = 1024 * 1024


def _volume(size_gib: int = 1) -> VolumeRef:
    return VolumeRef(cloud="src", id="0d2a6c1e-1111-2222-3333-444455556666", name="data",
                     size_gib=size_gib, project_id="p1", status="available",
                     volume_type="file", metadata={"a": "b"}, bootable=True)  # fmt: skip


def _flat_digest(data: bytes) -> str:
    return content_digest(
        hashlib.sha256(data[o : o + VERIFY_CHUNK]).hexdigest()
        for o in range(0, len(data), VERIFY_CHUNK)
    )


def _sparse_image(size: int) -> tuple[bytes, list[Chunk]]:
    """A volume image with data in a few places, and the chunks a sparse source would yield."""
    image = bytearray(size)
    chunks = []
    for offset, length in ((0, 100), (5 * MIB + 7, 3 * MIB), (size - 10, 10)):
        data = os.urandom(length)
        image[offset : offset + length] = data
        chunks.append(Chunk(offset, data))
    return bytes(image), chunks


def test_rechunker_cuts_any_chunks_into_aligned_pieces_with_holes() -> None:
    seen: list[tuple[int, bool, int]] = []
    r = Rechunker(lambda off, data, n: seen.append((off, data is not None, n)))
    r.write(VERIFY_CHUNK + 5, b"x" * 10)
    r.write(3 * VERIFY_CHUNK - 1, b"yy")
    r.finish(5 * VERIFY_CHUNK + 3)
    assert seen == [
        (0, False, VERIFY_CHUNK),
        (VERIFY_CHUNK, True, VERIFY_CHUNK),
        (2 * VERIFY_CHUNK, True, VERIFY_CHUNK),
        (3 * VERIFY_CHUNK, True, VERIFY_CHUNK),
        (4 * VERIFY_CHUNK, False, VERIFY_CHUNK),
        (5 * VERIFY_CHUNK, False, 3),
    ]


def test_rechunker_refuses_chunks_out_of_order() -> None:
    r = Rechunker(lambda *_: None)
    r.write(100, b"a")
    with pytest.raises(IntegrityError, match="offset order"):
        r.write(50, b"b")


def test_content_hasher_equals_the_flat_definition_for_sparse_input() -> None:
    size = 3 * VERIFY_CHUNK + 12345
    image, chunks = _sparse_image(size)
    hasher = ContentHasher()
    for chunk in chunks:
        hasher.write(chunk.offset, chunk.data)
    assert hasher.finish(size) == _flat_digest(image)


def _write_backup(target: str, image: bytes, chunks: list[Chunk]) -> BackupWriter:
    """Write a backup as the copy methods do: open, write, commit; abort on any error."""
    writer = BackupWriter(target, _volume())
    writer.open(len(image))
    try:
        for chunk in chunks:
            writer.write(chunk)
        writer.commit()
    except Exception as exc:
        writer.abort(exc)
        raise
    return writer


def test_backup_round_trip_stores_no_holes_and_reads_back_every_byte(tmp_path: Path) -> None:
    size = 16 * MIB
    image, chunks = _sparse_image(size)
    writer = _write_backup(str(tmp_path / "b"), image, chunks)
    path = Path(writer.location)
    assert path == tmp_path / "b" / f"{_volume().id}.tar"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .part left
    assert path.stat().st_mode & 0o777 == 0o600
    assert writer.content_digest == _flat_digest(image)
    assert path.stat().st_size < 4 * MIB + 100_000  # 3 pieces of random data, 1 of them partial
    assert writer.result is not None and writer.result.bytes == path.stat().st_size
    assert writer.result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    reader = BackupReader(path)
    assert reader.content_digest == writer.content_digest
    assert reader.volume["name"] == "data" and reader.volume["metadata"] == {"a": "b"}
    assert b"".join(c.data for c in reader.chunks(VERIFY_CHUNK)) == image


def test_a_backup_restores_with_standard_tools_alone(tmp_path: Path) -> None:
    """The README inside the backup is the procedure: run it with tar, zstd and coreutils."""
    size = 6 * VERIFY_CHUNK + 12345  # pieces 3, 4 and 5 are holes
    image, chunks = _sparse_image(size)
    writer = _write_backup(str(tmp_path), image, chunks)
    with tarfile.open(writer.location) as tar:
        readme = tar.extractfile(f"{_volume().id}/README.txt")
        assert readme is not None
        text = readme.read().decode()
    script = text[text.index("tar -xf") : text.index("\n\nAn incremental")]
    script = script.replace("BACKUP.tar", writer.location)
    work = tmp_path / "restore"
    work.mkdir()
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, check=True)
    restored = work / _volume().id / "volume.raw"
    assert restored.read_bytes() == image
    assert restored.stat().st_blocks * 512 <= 4 * VERIFY_CHUNK + 65536  # holes stayed holes


def test_backup_is_written_from_the_same_copy_through_a_tee(tmp_path: Path) -> None:
    data = os.urandom(VERIFY_CHUNK + 99)

    class Bytes:
        label, declared = "bytes", None
        size: int | None = len(data)

        def chunks(self, chunk_size: int):  # type: ignore[no-untyped-def]
            for o in range(0, len(data), 1000):
                yield Chunk(o, data[o : o + 1000])

        def close(self) -> None:
            return None

    writer = BackupWriter(str(tmp_path), _volume())
    copy(Bytes(), Tee(HashingDestination(), writer), key="k")
    assert writer.content_digest == _flat_digest(data)
    assert b"".join(c.data for c in BackupReader(writer.location).chunks(0)) == data


def test_the_part_file_is_0600_from_its_first_byte_and_an_abort_leaves_nothing(
    tmp_path: Path,
) -> None:
    writer = BackupWriter(str(tmp_path), _volume())
    writer.open(MIB)
    (part,) = tmp_path.iterdir()
    assert part.name.startswith(".") and part.stat().st_mode & 0o777 == 0o600
    writer.write(Chunk(0, b"a" * 10))
    writer.abort(RuntimeError("cut"))
    assert list(tmp_path.iterdir()) == []


def test_a_command_target_gets_the_stream_through_a_fifo_read_by_another_process(
    tmp_path: Path,
) -> None:
    """``cmd:`` standing in for a tape drive: a FIFO drained by a separate process."""
    image, chunks = _sparse_image(16 * MIB)
    fifo, tape = tmp_path / "nst0", tmp_path / "tape.img"
    os.mkfifo(fifo)
    drive = subprocess.Popen(["dd", f"if={fifo}", f"of={tape}", "bs=1M", "status=none"])
    writer = _write_backup(f"cmd:dd of={fifo} bs=1M status=none", image, chunks)
    assert drive.wait(timeout=60) == 0
    assert writer.location == f"cmd:dd of={fifo} bs=1M status=none"
    assert writer.result is not None and writer.result.exit_status == 0
    assert writer.result.sha256 == hashlib.sha256(tape.read_bytes()).hexdigest()
    assert b"".join(c.data for c in BackupReader(tape).chunks(0)) == image


def test_a_failing_command_is_a_one_line_error_naming_its_status_and_words(
    tmp_path: Path,
) -> None:
    image, chunks = _sparse_image(16 * MIB)
    with pytest.raises(IntegrityError, match=r"exited with status 3: no tape") as caught:
        _write_backup("cmd:cat >/dev/null; echo no tape >&2; exit 3", image, chunks)
    assert "\n" not in str(caught.value)


def test_a_command_that_stops_reading_early_fails_the_backup(tmp_path: Path) -> None:
    image = os.urandom(4 * VERIFY_CHUNK)
    chunks = [Chunk(o, image[o : o + VERIFY_CHUNK]) for o in range(0, len(image), VERIFY_CHUNK)]
    with pytest.raises(IntegrityError, match="backup command"):
        _write_backup("cmd:head -c 1000 >/dev/null", image, chunks)


def test_backup_to_a_file_that_is_not_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    code = main(["volumes", "copy", "--from", "a", "--to", "b", "--project", "p", "--all",
                 "--backup-to", str(target)])  # fmt: skip
    assert code != 0


def test_verify_and_extract_read_a_stream_on_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image, chunks = _sparse_image(3 * VERIFY_CHUNK + 5)
    writer = _write_backup(str(tmp_path), image, chunks)
    raw = Path(writer.location).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(raw))))
    assert main(["volumes", "backup", "extract", "-", "-o", str(tmp_path / "v.raw"),
                 "-f", "json"]) == 0  # fmt: skip
    assert (tmp_path / "v.raw").read_bytes() == image
    assert (tmp_path / "v.raw").stat().st_mode & 0o777 == 0o600
    assert writer.content_digest is not None
    assert writer.content_digest in capsys.readouterr().out
    assert main(["volumes", "backup", "verify", writer.location]) == 0


def _backup_with(tmp_path: Path, build: Callable[[tarfile.TarFile], None]) -> Path:
    path = tmp_path / "hostile.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **kw: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


@pytest.mark.parametrize(
    ("why", "build"),
    [
        ("symlink", lambda t: _add(t, "v/chunks/0000000000000000.zst", b"", type=tarfile.SYMTYPE,
                                   linkname="/etc/passwd")),
        ("hard link", lambda t: _add(t, "v/size", b"", type=tarfile.LNKTYPE, linkname="v/x")),
        ("device", lambda t: _add(t, "v/size", b"", type=tarfile.CHRTYPE)),
        ("fifo", lambda t: _add(t, "v/size", b"", type=tarfile.FIFOTYPE)),
        ("dot-dot", lambda t: _add(t, "../chunks/0000000000000000.zst")),
        ("absolute", lambda t: _add(t, "/v/manifest.json")),
        ("unknown", lambda t: _add(t, "v/evil.sh")),
        ("two roots", lambda t: (_add(t, "v/size"), _add(t, "w/size"))),
        ("no manifest", lambda t: _add(t, "v/README.txt")),
    ],
)  # fmt: skip
def test_hostile_or_incomplete_archives_are_refused_in_one_line(
    tmp_path: Path, why: str, build: Callable[[tarfile.TarFile], None]
) -> None:
    path = _backup_with(tmp_path, build)
    for read in (BackupReader, scan_backup):
        with pytest.raises(IntegrityError, match="damaged, incomplete or not a stackhop") as e:
            read(str(path))
        assert "\n" not in str(e.value), why


def test_a_member_declaring_a_huge_size_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.tar"
    info = tarfile.TarInfo("v/chunks/0000000000000000.zst")
    info.size = 10 * 1024**3
    with path.open("wb") as f:
        f.write(info.tobuf(format=tarfile.PAX_FORMAT))  # a header alone: no 10 GB behind it
    with pytest.raises(IntegrityError, match="declares 10737418240 bytes"):
        BackupReader(path)


def test_damaged_or_cut_backups_are_refused_and_extract_leaves_nothing(tmp_path: Path) -> None:
    image = os.urandom(VERIFY_CHUNK)
    writer = _write_backup(str(tmp_path), image, [Chunk(0, image)])
    path = Path(writer.location)
    raw = path.read_bytes()
    frame_at = raw.index(b"\x28\xb5\x2f\xfd")  # the zstd frame's magic number
    flipped = bytearray(raw)
    flipped[frame_at + 200] ^= 0xFF
    bad = tmp_path / "flipped.tar"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(IntegrityError):
        list(BackupReader(bad).chunks(0))
    out = tmp_path / "out" / "v.raw"
    out.parent.mkdir()
    with pytest.raises(IntegrityError):
        extract_backup(str(bad), out)
    assert list(out.parent.iterdir()) == []
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[: frame_at + 1000])
    for read in (BackupReader, scan_backup):
        with pytest.raises(IntegrityError, match="damaged, incomplete"):
            read(str(cut))


def test_a_missing_piece_or_a_wrong_manifest_is_found(tmp_path: Path) -> None:
    image = os.urandom(2 * VERIFY_CHUNK)
    chunks = [Chunk(0, image[:VERIFY_CHUNK]), Chunk(VERIFY_CHUNK, image[VERIFY_CHUNK:])]
    writer = _write_backup(str(tmp_path), image, chunks)

    path = Path(writer.location)
    rebuilt = tmp_path / "rebuilt.tar"
    with tarfile.open(path) as src, tarfile.open(rebuilt, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            if not m.name.endswith(f"{VERIFY_CHUNK:016d}.zst"):
                dst.addfile(m, src.extractfile(m))
    for read in (BackupReader, scan_backup):
        with pytest.raises(IntegrityError, match="pieces are not the ones its manifest lists"):
            read(str(rebuilt))


def test_the_first_format_is_named_not_misread(tmp_path: Path) -> None:
    old = tmp_path / "v.shvol"
    old.write_bytes(b"SHVOL1\n" + os.urandom(100))
    with pytest.raises(IntegrityError, match="first backup format"):
        BackupReader(old)
    with pytest.raises(ConfigError):
        BackupReader(tmp_path / "missing.tar")


def test_a_huge_sparse_volume_stores_only_its_data(tmp_path: Path) -> None:
    """A sparse 64 GiB volume: only its stored pieces are written, one piece at a time."""
    size = 64 * 1024**3
    writer = BackupWriter(str(tmp_path), _volume())
    writer.open(size)
    writer.write(Chunk(size - VERIFY_CHUNK, os.urandom(VERIFY_CHUNK)))
    writer.commit()
    summary = scan_backup(writer.location)
    assert summary.size == size and summary.stored_pieces == 1
    assert summary.pieces == size // VERIFY_CHUNK


def _incremental(
    tmp_path: Path, base: bytes, changes: list[Chunk], pass_number: int
) -> tuple[IncrementalBackupWriter, bytes]:
    """An incremental backup of ``changes`` over the image ``base``; returns it and the result."""
    after = bytearray(base)
    for c in changes:
        after[c.offset : c.offset + len(c.data)] = c.data
    writer = IncrementalBackupWriter(
        str(tmp_path), _volume(), base_digest=_flat_digest(base), pass_number=pass_number
    )
    writer.open(len(base))
    for c in changes:
        writer.write(c)
    writer.commit()
    writer.finish(_flat_digest(bytes(after)))
    return writer, bytes(after)


def test_an_incremental_chain_stores_exact_changes_and_rebuilds_the_volume(
    tmp_path: Path,
) -> None:
    size = 6 * VERIFY_CHUNK + 12345
    image, chunks = _sparse_image(size)
    full = _write_backup(str(tmp_path), image, chunks)
    # Pass 2: a few bytes inside a piece, an extent across a piece boundary, a zeroed run.
    first, after2 = _incremental(tmp_path, image, [
        Chunk(10, b"abc"),
        Chunk(VERIFY_CHUNK - 5, os.urandom(10)),
        Chunk(5 * MIB + 7, bytes(MIB)),
    ], 2)  # fmt: skip
    second, after3 = _incremental(tmp_path, after2, [Chunk(size - 3, b"xyz")], 3)
    assert Path(first.location).name == f"{_volume().id}.pass2.tar"
    assert Path(first.location).stat().st_size < 100_000  # the changes, not the volume

    summaries = verify_chain([full.location, first.location, second.location])
    assert [s.kind for s in summaries] == ["full", "incremental", "incremental"]
    assert summaries[1].pieces == 4  # the boundary-crossing extent is split in two
    out = tmp_path / "v.raw"
    summary = extract_backup([full.location, first.location, second.location], out)
    assert out.read_bytes() == after3 and summary.content_digest == _flat_digest(after3)

    # Standard tools: the full backup's procedure, then each incremental without sparse.
    work = tmp_path / "tools"
    work.mkdir()
    vid = _volume().id
    script = f"""
    for b in {full.location} {first.location} {second.location}; do tar -xf "$b"; done
    cd {vid} && zstd -d -q --rm chunks/*.zst && sha256sum -c --quiet SHA256SUMS
    truncate -s "$(cat size)" volume.raw
    for f in chunks/*; do dd if="$f" of=volume.raw bs=4M oflag=seek_bytes \
        seek="$((10#${{f#chunks/}}))" conv=notrunc,sparse status=none; done
    for n in 2 3; do
      (cd ../{vid}.pass$n && zstd -d -q --rm chunks/*.zst && sha256sum -c --quiet SHA256SUMS)
      for f in ../{vid}.pass$n/chunks/*; do o=${{f##*/}}; dd if="$f" of=volume.raw bs=4M \
          oflag=seek_bytes seek="$((10#$o))" conv=notrunc status=none; done
    done
    """
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, check=True)
    assert (work / vid / "volume.raw").read_bytes() == after3


def test_a_chain_out_of_order_or_with_a_gap_is_refused_and_an_incremental_alone_too(
    tmp_path: Path,
) -> None:
    size = 2 * VERIFY_CHUNK
    image = os.urandom(size)
    full = _write_backup(str(tmp_path), image, [Chunk(0, image)])
    first, after2 = _incremental(tmp_path, image, [Chunk(0, b"1")], 2)
    second, _ = _incremental(tmp_path, after2, [Chunk(1, b"2")], 3)
    with pytest.raises(UsageError, match="give the chain in pass order, without gaps"):
        extract_backup([full.location, second.location], tmp_path / "o.raw")
    with pytest.raises(UsageError, match="a chain starts with a full one"):
        verify_chain([first.location, second.location])
    assert not (tmp_path / "o.raw").exists()
    with pytest.raises(IncrementalBackupError, match="incremental backup"):
        BackupReader(first.location)
    assert scan_backup(first.location).base_content_digest == full.content_digest


def test_an_incremental_backup_is_sealed_only_by_a_verified_pass(tmp_path: Path) -> None:
    writer = IncrementalBackupWriter(str(tmp_path), _volume(), base_digest="b", pass_number=2)
    writer.open(VERIFY_CHUNK)
    writer.write(Chunk(0, b"x"))
    with pytest.raises(IntegrityError, match="never completed"):
        writer.finish("d")
    with pytest.raises(IntegrityError, match="offset order"):
        writer.write(Chunk(0, b"y"))
    writer.abort(RuntimeError("cut"))
    assert list(tmp_path.iterdir()) == []
