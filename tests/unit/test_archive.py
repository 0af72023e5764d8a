"""The portable archive: round trips, atomic writing, and every refusal with its exact message."""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

import stackhop
import stackhop.archive as archive_module
from stackhop.archive import (
    FORMAT_VERSION,
    ArchiveReader,
    ArchiveWriter,
    find_secret,
    is_secret_key,
)
from stackhop.errors import (
    ArchiveError,
    ArchiveFormatError,
    ArchiveIntegrityError,
    ArchiveSecretError,
    ArchiveUnsafeError,
    IntegrityError,
    NotAnArchiveError,
)

AUTH_URL = "http://127.0.0.1:5000/v3"

# ----------------------------------------------------------------------------- helpers


def write_archive(path: Path, records: list[tuple[str, dict[str, Any]]], **kwargs: Any) -> None:
    with ArchiveWriter(path, source_cloud="src", source_auth_url=AUTH_URL, **kwargs) as writer:
        for kind, record in records:
            writer.write(kind, record)


def jsonl(*records: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records)


def manifest(members: dict[str, bytes], **overrides: Any) -> bytes:
    """A manifest that truthfully describes ``members`` (kind -> member content)."""
    data: dict[str, Any] = {
        "format": "stackhop-archive",
        "format_version": 1,
        "tool_version": stackhop.__version__,
        "created_at": "2026-01-01T00:00:00Z",
        "source": {"cloud": "src", "auth_url": AUTH_URL},
        "compression": "zstd",
        "kinds": {
            kind: {"member": f"records/{kind}.jsonl", "records": content.count(b"\n")}
            for kind, content in members.items()
        },
        "members": {
            f"records/{kind}.jsonl": {
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
            for kind, content in members.items()
        },
    }
    data.update(overrides)
    return json.dumps(data).encode()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, type_: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    return info, None


def build(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], compression: str = "zstd"
) -> Path:
    """Hand-build an archive file from arbitrary tar members (for refusal tests)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buffer.getvalue()
    if compression == "zstd":
        path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    else:
        path.write_bytes(bz2.compress(raw))
    return path


KEYS = jsonl({"name": "k1", "user_id": "u1"}, {"name": "k2", "user_id": "u2"})


def good_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [
        regular("manifest.json", manifest({"nova.keypair": KEYS})),
        regular("records/nova.keypair.jsonl", KEYS),
    ]


def refusal(path: Path) -> str:
    with pytest.raises((ArchiveError, IntegrityError)) as caught:
        ArchiveReader(path)
    return str(caught.value)


def damaged(path: Path, detail: str) -> str:
    return (
        f"archive {path} is damaged or was modified: {detail}; restore a good copy or export again"
    )


def unsafe(path: Path, member: str, reason: str) -> str:
    return (
        f"archive {path} holds an unsafe member {member!r} ({reason}); refusing to read it, "
        "use an archive written by `stackhop export`"
    )


def not_archive(path: Path, reason: str) -> str:
    return f"{path} is not a stackhop archive ({reason}); pass a file written by `stackhop export`"


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("compression", ["zstd", "bz2"])
def test_round_trip_keeps_interleaved_kinds_in_order(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "export.shop"
    kinds = ["nova.keypair", "neutron.security_group", "cinder.quota", "glance.image"]
    written: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    stream = []
    for i in range(5000):
        kind = kinds[i % 7 % len(kinds)]
        record = {
            "name": f"naïve-名前-{i}-😀",
            "index": i,
            "nested": {"rules": [{"port": i, "cidr": "10.0.0.0/8"}], "empty": None},
            "ratio": i / 7,
            "flag": i % 2 == 0,
        }
        written[kind].append(record)
        stream.append((kind, record))
    write_archive(path, stream, compression=compression)

    with ArchiveReader(path) as reader:
        assert reader.compression == compression
        assert reader.kinds() == sorted(kinds)
        for kind in kinds:
            assert reader.count(kind) == len(written[kind])
            assert list(reader.records(kind)) == written[kind]
        # Reading twice gives the same records: each read streams the member again.
        assert list(reader.records("glance.image")) == written["glance.image"]


@pytest.mark.parametrize(
    ("compression", "magic"), [("zstd", b"\x28\xb5\x2f\xfd"), ("bz2", b"BZh9")]
)
def test_records_are_compressed_in_independent_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str, magic: bytes
) -> None:
    """Blocks (zstd frames, bzip2 streams) are compressed in parallel while writing."""
    monkeypatch.setattr(archive_module, "_SPOOL_FLUSH_CHARS", 64 * 1024)
    path = tmp_path / "export.shop"
    records = [{"name": f"k{i}", "fp": f"{i * 7919:x}"} for i in range(20000)]
    write_archive(path, [("nova.keypair", r) for r in records], compression=compression)
    assert path.read_bytes().count(magic) >= 5  # one header per independent block
    with ArchiveReader(path) as reader:
        assert list(reader.records("nova.keypair")) == records
    # Standard tools read the concatenated blocks as one stream.
    opener = {"zstd": "--zstd", "bz2": "--bzip2"}[compression]
    listing = subprocess.run(
        ["tar", opener, "-tf", str(path)], check=True, capture_output=True, text=True
    ).stdout
    assert listing.split() == ["manifest.json", "records/nova.keypair.jsonl"]
    # Cut at the start of the last block: whole blocks only, the tar is incomplete.
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(magic)])
    assert refusal(path) == damaged(path, "the tar data ends early (truncated)")


def test_many_kinds_share_one_compression_queue_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small blocks of 30 kinds interleave in the queue; each member keeps its order."""
    monkeypatch.setattr(archive_module, "_SPOOL_FLUSH_CHARS", 2000)
    path = tmp_path / "export.shop"
    kinds = [f"kind{n:02d}" for n in range(30)]
    stream = [(kinds[i * 7 % 30], {"i": i}) for i in range(20000)]
    write_archive(path, stream)
    with ArchiveReader(path) as reader:
        assert reader.kinds() == kinds
        for kind in kinds:
            assert list(reader.records(kind)) == [r for k, r in stream if k == kind]


def test_manifest_describes_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    write_archive(path, [("nova.keypair", {"name": "k"}), ("nova.quota", {"cores": 4})])
    with ArchiveReader(path) as reader:
        m = reader.manifest
    assert m.format_version == FORMAT_VERSION == 1
    assert m.tool_version == stackhop.__version__
    assert (m.source_cloud, m.source_auth_url) == ("src", AUTH_URL)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m.created_at)
    assert m.compression == "zstd"
    assert m.record_counts == {"nova.keypair": 1, "nova.quota": 1}
    content = b'{"name":"k"}\n'
    assert m.members["records/nova.keypair.jsonl"].size == len(content)
    assert m.members["records/nova.keypair.jsonl"].sha256 == hashlib.sha256(content).hexdigest()
    # Standard tools can list it, and the manifest comes first.
    with (
        open(path, "rb") as raw,
        tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(raw), mode="r|") as tar,
    ):
        assert [member.name for member in tar] == [
            "manifest.json",
            "records/nova.keypair.jsonl",
            "records/nova.quota.jsonl",
        ]


def test_declared_empty_kind_is_listed_with_zero_records(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    with ArchiveWriter(path, source_cloud="src", source_auth_url=AUTH_URL) as writer:
        writer.add_kind("nova.keypair")
    with ArchiveReader(path) as reader:
        assert reader.kinds() == ["nova.keypair"]
        assert reader.count("nova.keypair") == 0
        assert list(reader.records("nova.keypair")) == []


def test_reading_an_absent_kind_names_the_kinds_held(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    write_archive(path, [("nova.keypair", {"name": "k"})])
    with ArchiveReader(path) as reader, pytest.raises(ArchiveError) as caught:
        reader.records("glance.image")
    assert str(caught.value) == (
        f"archive {path} holds no 'glance.image' records (it holds: nova.keypair)"
    )


# ----------------------------------------------------------------------------- writing safely


def test_archive_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    old = os.umask(0)
    try:
        write_archive(path, [("nova.keypair", {"name": "k"})])
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    with (
        pytest.raises(RuntimeError),
        ArchiveWriter(path, source_cloud="src", source_auth_url=AUTH_URL) as writer,
    ):
        for i in range(10000):
            writer.write("nova.keypair", {"name": f"k{i}"})
        # The spool directory exists, private, while writing.
        (spool_dir,) = list(tmp_path.iterdir())
        assert spool_dir.name.startswith(".export.shop.")
        assert spool_dir.stat().st_mode & 0o777 == 0o700
        raise RuntimeError("export failed half way")
    assert list(tmp_path.iterdir()) == []


def test_existing_archive_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    write_archive(path, [("nova.keypair", {"name": "old"})])
    with pytest.raises(ArchiveError) as caught:
        write_archive(path, [("nova.keypair", {"name": "new"})])
    assert str(caught.value) == (
        f"archive {path} already exists; choose another name or allow overwriting"
    )
    write_archive(path, [("nova.keypair", {"name": "new"})], overwrite=True)
    with ArchiveReader(path) as reader:
        assert list(reader.records("nova.keypair")) == [{"name": "new"}]
    assert [p.name for p in tmp_path.iterdir()] == ["export.shop"]


def test_invalid_kind_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as caught:
        write_archive(tmp_path / "a", [("../etc", {"name": "k"})])
    assert str(caught.value).startswith("invalid kind name '../etc':")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"name": "k", "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "private_key"),
        ({"name": "u", "password": "hunter2"}, "password"),
        ({"properties": {"admin_password": "x"}}, "properties.admin_password"),
        ({"auth": {"token": "gAAAA"}}, "auth.token"),
        ({"credentials": [{"clientSecret": "s"}]}, "credentials.0.clientSecret"),
        ({"privateKey": "pem"}, "privateKey"),
    ],
)
def test_records_holding_secrets_are_refused(
    tmp_path: Path, record: dict[str, Any], field: str
) -> None:
    path = tmp_path / "export.shop"
    with pytest.raises(ArchiveSecretError) as caught:
        write_archive(path, [("nova.keypair", {"name": "ok"}), ("identity.user", record)])
    assert str(caught.value) == (
        f"refusing to archive a identity.user record: field {field!r} holds a secret; archives "
        "never carry passwords, tokens or private keys, so drop the field from the export"
    )
    assert "hunter2" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_fields_that_only_describe_secrets_are_allowed() -> None:
    assert (
        find_secret(
            {
                "public_key": "ssh-ed25519 AAAA",
                "password_expires_at": "2026-01-01T00:00:00Z",
                "token_type": "bearer",
                "secret_ref": "http://127.0.0.1:9311/v1/secrets/1",
                "password": "",
                "token": None,
                "options": {"ignore_lockout_failure_attempts": True, "lock_password": False},
            }
        )
        is None
    )
    assert is_secret_key("db_password") and is_secret_key("apiToken")
    assert not is_secret_key("fingerprint") and not is_secret_key("keypair")


# ----------------------------------------------------------------------------- refusals


def test_hand_built_archive_is_accepted(tmp_path: Path) -> None:
    """The builder used by the refusal tests makes valid archives; each refusal is one defect."""
    for compression in ("zstd", "bz2"):
        path = build(tmp_path / f"good.{compression}", good_members(), compression)
        with ArchiveReader(path) as reader:
            assert list(reader.records("nova.keypair")) == [
                {"name": "k1", "user_id": "u1"},
                {"name": "k2", "user_id": "u2"},
            ]


def test_missing_file(tmp_path: Path) -> None:
    assert refusal(tmp_path / "nope") == f"archive {tmp_path / 'nope'} does not exist"


def test_not_compressed_at_all(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are notes\n")
    assert refusal(path) == not_archive(path, "it is neither zstd nor bzip2 compressed")
    path.write_bytes(b"")
    assert refusal(path) == not_archive(path, "it is empty")


def test_compressed_but_not_a_tar(tmp_path: Path) -> None:
    path = tmp_path / "data.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"hello world\n" * 100))
    assert refusal(path) == not_archive(path, "its content is not a tar")


def test_tar_without_a_leading_manifest(tmp_path: Path) -> None:
    path = build(tmp_path / "a", [regular("records/nova.keypair.jsonl", KEYS)])
    expected = "its first member is 'records/nova.keypair.jsonl', not 'manifest.json'"
    assert refusal(path) == not_archive(path, expected)


def test_newer_format_version_names_the_release_that_reads_it(tmp_path: Path) -> None:
    newer = manifest({"nova.keypair": KEYS}, format_version=2, tool_version="0.9.0")
    path = build(tmp_path / "a", [regular("manifest.json", newer)])
    with pytest.raises(ArchiveFormatError) as caught:
        ArchiveReader(path)
    assert str(caught.value) == (
        f"archive {path} has format version 2; this stackhop reads version 1 "
        "(upgrade to stackhop 0.9.0 or later to read it)"
    )
    assert caught.value.exit_code == 7


def test_manifest_missing_a_field(tmp_path: Path) -> None:
    broken = json.loads(manifest({"nova.keypair": KEYS}))
    del broken["members"]
    members = [regular("manifest.json", json.dumps(broken).encode()), good_members()[1]]
    path = build(tmp_path / "a", members)
    assert refusal(path) == damaged(path, "manifest.json lacks the field 'members'")


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (regular("/etc/cron.d/evil", b"x"), "absolute path"),
        (regular("records/../../.bashrc", b"x"), "path with '..'"),
        (special("records/link.jsonl", tarfile.SYMTYPE, "/etc/shadow"), "symbolic link"),
        (special("records/hard.jsonl", tarfile.LNKTYPE, "manifest.json"), "hard link"),
        (special("records/dev", tarfile.CHRTYPE), "character device"),
        (special("records/disk", tarfile.BLKTYPE), "block device"),
        (special("records/pipe", tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_unsafe_members_are_refused(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], reason: str
) -> None:
    path = build(tmp_path / "a", [*good_members(), member])
    with pytest.raises(ArchiveUnsafeError) as caught:
        ArchiveReader(path)
    assert str(caught.value) == unsafe(path, member[0].name, reason)


def test_unsafe_first_member_is_refused_before_anything_else(tmp_path: Path) -> None:
    path = build(tmp_path / "a", [special("manifest.json", tarfile.SYMTYPE, "/etc/passwd")])
    assert refusal(path) == unsafe(path, "manifest.json", "symbolic link")


def test_long_traversal_name_in_pax_header_is_refused(tmp_path: Path) -> None:
    name = "records/" + "a" * 120 + "/../../../etc/passwd"
    path = build(tmp_path / "a", [*good_members(), regular(name, b"x")])
    assert refusal(path) == unsafe(path, name, "path with '..'")


def test_member_not_in_manifest(tmp_path: Path) -> None:
    path = build(tmp_path / "a", [*good_members(), regular("records/extra.jsonl", b"{}\n")])
    assert refusal(path) == damaged(
        path, "member 'records/extra.jsonl' is not listed in the manifest"
    )


def test_member_in_manifest_but_missing(tmp_path: Path) -> None:
    path = build(tmp_path / "a", good_members()[:1])
    assert refusal(path) == damaged(
        path, "member 'records/nova.keypair.jsonl' listed in the manifest is missing"
    )


def test_member_appearing_twice(tmp_path: Path) -> None:
    path = build(tmp_path / "a", [*good_members(), good_members()[1]])
    assert refusal(path) == damaged(path, "member 'records/nova.keypair.jsonl' appears twice")


def test_tampered_member_same_size(tmp_path: Path) -> None:
    tampered = KEYS.replace(b"u2", b"u9")
    members = [good_members()[0], regular("records/nova.keypair.jsonl", tampered)]
    path = build(tmp_path / "a", members)
    assert refusal(path) == damaged(
        path, "member 'records/nova.keypair.jsonl' does not match its sha256 in the manifest"
    )


def test_tampered_member_other_size(tmp_path: Path) -> None:
    extra = KEYS + jsonl({"name": "injected", "user_id": "u0"})
    members = [good_members()[0], regular("records/nova.keypair.jsonl", extra)]
    path = build(tmp_path / "a", members)
    assert refusal(path) == damaged(
        path,
        f"member 'records/nova.keypair.jsonl' is {len(extra)} bytes, the manifest says {len(KEYS)}",
    )


def test_record_count_must_match(tmp_path: Path) -> None:
    lying = manifest({"nova.keypair": KEYS})
    lying = lying.replace(b'"records": 2', b'"records": 3')
    path = build(tmp_path / "a", [regular("manifest.json", lying), good_members()[1]])
    assert refusal(path) == damaged(
        path, "member 'records/nova.keypair.jsonl' holds 2 records, the manifest says 3"
    )


@pytest.mark.parametrize("compression", ["zstd", "bz2"])
def test_truncated_archive(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "export.shop"
    write_archive(
        path,
        [("nova.keypair", {"name": f"k{i}", "fp": f"{i * 7919:x}"}) for i in range(20000)],
        compression=compression,
    )
    whole = path.read_bytes()
    for cut in (len(whole) - 1, len(whole) // 2, 100):
        path.write_bytes(whole[:cut])
        assert refusal(path) == damaged(path, f"the {compression} stream ends early (truncated)")


def test_corrupt_zstd_stream(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    write_archive(path, [("nova.keypair", {"name": f"k{i}"}) for i in range(20000)])
    whole = path.read_bytes()
    # A flipped byte inside the records: the zstd layer or the member's sha256 catches it,
    # whichever comes first (a frame's checksum is checked at the frame's end).
    data = bytearray(whole)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert re.fullmatch(
        re.escape(f"archive {path} is damaged or was modified: ")
        + r"(the zstd stream is corrupt \(zstd decompress error: [^)]+\)"
        + r"|member 'records/nova.keypair.jsonl' does not match its sha256 in the manifest)"
        + re.escape("; restore a good copy or export again"),
        refusal(path),
    )
    # A flipped byte in the frame checksum is caught by the zstd layer itself.
    data = bytearray(whole)
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert refusal(path) == damaged(path, ZSTD_CHECKSUM_ERROR)


def test_corrupt_bz2_stream(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    write_archive(
        path, [("nova.keypair", {"name": f"k{i}"}) for i in range(2000)], compression="bz2"
    )
    whole = path.read_bytes()
    # Inside the records: bzip2 refuses undecodable data, but hands out a block's
    # data before checking its CRC, so the member's sha256 may be first to catch it.
    data = bytearray(whole)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert refusal(path) in (
        damaged(path, "the bz2 stream is corrupt (Invalid data stream)"),
        damaged(
            path, "member 'records/nova.keypair.jsonl' does not match its sha256 in the manifest"
        ),
    )
    # In the first stream's header (the block magic): bzip2 itself refuses it.
    data = bytearray(whole)
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    assert refusal(path) == damaged(path, "the bz2 stream is corrupt (Invalid data stream)")


ZSTD_CHECKSUM_ERROR = (
    "the zstd stream is corrupt (zstd decompress error: Restored data doesn't match checksum)"
)


def test_data_after_the_zstd_stream(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    write_archive(path, [("nova.keypair", {"name": "k"})])
    with open(path, "ab") as f:
        f.write(b"trailing junk")
    assert refusal(path) == damaged(path, "data follows the end of the zstd stream")


def test_file_modified_in_place_after_verification_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    build(path, good_members())
    reader = ArchiveReader(path)
    tampered = KEYS.replace(b"u2", b"u9")
    evil = build(
        tmp_path / "evil", [good_members()[0], regular("records/nova.keypair.jsonl", tampered)]
    )
    with open(path, "r+b") as f:  # same inode: the held descriptor sees the new bytes
        f.write(evil.read_bytes())
        f.truncate()
    with pytest.raises(ArchiveIntegrityError) as caught:
        list(reader.records("nova.keypair"))
    assert str(caught.value) == damaged(
        path, "member 'records/nova.keypair.jsonl' changed after it was verified"
    )
    reader.close()


def test_file_replaced_after_verification_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    build(path, good_members())
    with ArchiveReader(path) as reader:
        other = build(tmp_path / "other", [good_members()[0], regular("records/x", b"")])
        os.replace(other, path)  # a new inode under the same name
        assert [r["name"] for r in reader.records("nova.keypair")] == ["k1", "k2"]


def test_error_classes_carry_their_exit_codes() -> None:
    assert NotAnArchiveError(path="p", reason="r").exit_code == 7
    assert ArchiveUnsafeError(path="p", member="m", reason="r").exit_code == 7
    assert ArchiveSecretError(kind="k", field="f").exit_code == 7
    assert ArchiveIntegrityError(path="p", detail="d").exit_code == 8


def test_writer_refuses_records_it_cannot_encode_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    with ArchiveWriter(path, source_cloud="src", source_auth_url=AUTH_URL) as writer:
        for bad in (loop, {"name": "x", "when": object()}, {"ratio": float("nan")}):
            with pytest.raises(ArchiveError) as caught:
                writer.write("nova.keypair", bad)
            assert str(caught.value).startswith("a nova.keypair record cannot be written as JSON:")
        writer.write("nova.keypair", {"name": "fine", "nested": {"a": [1]}})
    with ArchiveReader(path) as reader:
        assert list(reader.records("nova.keypair")) == [{"name": "fine", "nested": {"a": [1]}}]
    with pytest.raises(ArchiveError) as caught:
        writer.write("nova.keypair", {"name": "late"})
    assert str(caught.value) == "ArchiveWriter used outside its `with` block (call open())"


@pytest.mark.parametrize(
    ("content", "bad_line"),
    [
        (b'{"a": 1}\n[1, 2]\n', 2),
        (b'{"a": 1}\n{"b": 2},{"c": 3}\n', 2),
        (b'{"a": 1}\n\n{"b": 2}\n', 2),
        (b'{"a": "\xff"}\n', 1),
    ],
)
def test_a_line_that_is_not_one_record_is_refused(
    tmp_path: Path, content: bytes, bad_line: int
) -> None:
    """Checksums match (the manifest describes the bytes), but the bytes are not records."""
    members = [
        regular("manifest.json", manifest({"nova.keypair": content})),
        regular("records/nova.keypair.jsonl", content),
    ]
    path = build(tmp_path / "a", members)
    with ArchiveReader(path) as reader, pytest.raises(ArchiveIntegrityError) as caught:
        list(reader.records("nova.keypair"))
    assert str(caught.value) == damaged(
        path, f"line {bad_line} of 'records/nova.keypair.jsonl' is not a record"
    )


def test_an_aborted_writer_cannot_be_reopened(tmp_path: Path) -> None:
    path = tmp_path / "export.shop"
    writer = ArchiveWriter(path, source_cloud="src", source_auth_url=AUTH_URL)
    writer.open()
    writer.write("nova.keypair", {"name": "k"})
    writer.abort()
    with pytest.raises(ArchiveError) as caught:
        writer.close()
    assert str(caught.value) == f"archive {path} is finished; use a new ArchiveWriter"
    assert list(tmp_path.iterdir()) == []


def test_a_member_declaring_10_gb_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A header may claim any size: the manifest's size is checked before the member is read."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info, data = regular("manifest.json", manifest({"nova.keypair": KEYS}))
        tar.addfile(info, io.BytesIO(data or b""))
        end = tar.offset  # where the end-of-archive blocks begin
    huge = tarfile.TarInfo("records/nova.keypair.jsonl")
    huge.size = 10 * 2**30
    raw = buffer.getvalue()[:end] + huge.tobuf(tarfile.PAX_FORMAT) + KEYS
    raw = raw.ljust(-(-len(raw) // 512) * 512 + 1024, b"\0")
    path = tmp_path / "huge.shop"
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    message = refusal(path)
    assert message.startswith(f"archive {path} is damaged or was modified"), message
    assert "is 10737418240 bytes, the manifest says" in message
