"""``stackhop images copy`` from the testbed's src cloud to dst: streamed, verified, mapped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testbed import layout
from tests.functional.test_images_legacy_support import glance_rbd_entry, service_cloud
from tests.functional.test_images_support import (
    MIB,
    ImageFactory,
    connect,
    download_sha512,
    glance_json,
    marked_copies,
    members,
    own_images,
    project_id,
)

from stackhop.images import ceph_copy
from stackhop.images.rbd_store import GlanceRbdStore
from stackhop.kinds.image import image_record
from stackhop.transfer import Chunk, chunk_filters
from stackhop.transfer.rbd_diff import WriteExtent
from stackhop.transfer.rbd_lib import LibRbdCluster

pytestmark = pytest.mark.functional
__all__ = ["own_images"]  # the fixture, imported for pytest

#: Fields that must be equal on both sides (owner and members are compared mapped).
SAME = ("name", "disk_format", "container_format", "visibility", "protected", "min_disk",
        "min_ram", "os_hidden", "tags", "os_hash_algo", "os_hash_value", "size", "checksum")


@pytest.fixture
def filters() -> Iterator[list[Any]]:
    """The transfer's test hook, emptied again whatever the test does."""
    try:
        yield chunk_filters
    finally:
        chunk_filters.clear()


def _record(conn: Any, image_id: str) -> dict[str, Any]:
    image = glance_json(conn, image_id)
    assert image is not None, f"image {image_id} is missing"
    listed = members(conn, image_id)
    return image_record(image, [{"member_id": m, "status": s} for m, s in listed.items()])


def _assert_copied(own: ImageFactory, source_id: str, copy_id: str) -> None:
    src, dst = _record(own.src, source_id), _record(own.dst, copy_id)
    assert {f: dst[f] for f in SAME} == {f: src[f] for f in SAME}
    assert dst["status"] == "active"
    assert dst["properties"] == src["properties"]
    assert dst["source_marker"] == source_id
    # Owner and members: the same projects by name, with their destination IDs.
    assert dst["owner"] == project_id(own.dst, "admin") != src["owner"]
    src_names = {own.src.identity.get_project(m).name: s
                 for m, s in zip(src["members"], src["member_statuses"], strict=True)}
    dst_names = {own.dst.identity.get_project(m).name: s
                 for m, s in zip(dst["members"], dst["member_statuses"], strict=True)}
    assert dst_names == src_names
    assert download_sha512(own.dst, copy_id) == src["os_hash_value"]


def _copy(cli: Any, journal: Path, *args: str) -> Any:
    return cli("--journal", str(journal), "images", "copy", "--from", "src", "--to", "dst",
               "-f", "json", *args)


def test_copy_keep_id_carries_every_attribute_and_rerun_skips(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    shared = own_images.create(
        "shared", visibility="shared", member_projects=("demo", "service"), tags=["a", "b"],
        purpose="copy me", hw_disk_bus="scsi", min_disk=2, min_ram=128,
    )
    golden = own_images.create("golden", protected=True, visibility="public", release="2")
    journal = tmp_path / "journal.sqlite"
    result = _copy(cli, journal, "--keep-id", "--image", shared["id"], "--image", golden["id"])
    assert result.code == 0, result.err
    assert result.json()["counts"]["glance.image"]["done"] == 2
    for image in (shared, golden):
        _assert_copied(own_images, image["id"], image["id"])

    again = _copy(cli, journal, "--keep-id", "--image", shared["id"], "--image", golden["id"])
    assert again.code == 0, again.err
    counts = again.json()["counts"]["glance.image"]
    assert counts["done"] == 0 and counts["skipped"] == 2
    # A fresh journal finds the copies by ID and hash: still nothing copied twice.
    fresh = _copy(cli, tmp_path / "fresh.sqlite", "--keep-id", "--image", shared["id"])
    assert fresh.json()["counts"]["glance.image"]["skipped"] == 1, fresh.err


def test_copy_without_keep_id_gets_new_id_with_marker(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    image = own_images.create("newid", visibility="shared", member_projects=("demo",),
                              accept=False, note="pending member")
    result = _copy(cli, tmp_path / "j.sqlite", "--image", own_images.prefix + "newid")
    assert result.code == 0, result.err
    (copy,) = marked_copies(own_images.dst, image["id"])
    assert copy["id"] != image["id"]
    _assert_copied(own_images, image["id"], copy["id"])
    rerun = _copy(cli, tmp_path / "other.sqlite", "--image", image["id"])
    assert rerun.json()["counts"]["glance.image"]["skipped"] == 1, rerun.err
    assert len(marked_copies(own_images.dst, image["id"])) == 1


def test_corrupted_stream_is_detected_and_leaves_nothing_on_dst(
    own_images: ImageFactory, cli: Any, tmp_path: Path, filters: list[Any]
) -> None:
    image = own_images.create("corrupt", size=20 * MIB)

    def flip_one_byte(chunk: Chunk) -> Chunk:
        if chunk.offset <= 10 * MIB < chunk.end:
            data = bytearray(chunk.data)
            data[10 * MIB - chunk.offset] ^= 0x01
            return Chunk(chunk.offset, bytes(data))
        return chunk

    filters.append(flip_one_byte)
    journal = tmp_path / "journal.sqlite"
    result = _copy(cli, journal, "--keep-id", "--image", image["id"])
    assert result.code == 12, result.err
    assert "hashes to sha512" in result.out and image["id"] in result.out
    assert glance_json(own_images.dst, image["id"]) is None
    assert marked_copies(own_images.dst, image["id"]) == []

    filters.clear()
    retry = _copy(cli, journal, "--image", image["id"])
    assert retry.code == 0, retry.err
    (copy,) = marked_copies(own_images.dst, image["id"])
    _assert_copied(own_images, image["id"], copy["id"])


def test_broken_off_upload_is_redone_into_the_same_image(
    own_images: ImageFactory, cli: Any, tmp_path: Path, filters: list[Any]
) -> None:
    image = own_images.create("broken", size=24 * MIB)
    broke: list[int] = []

    def break_once(chunk: Chunk) -> Chunk:
        if chunk.offset >= 8 * MIB and not broke:
            broke.append(chunk.offset)
            raise ConnectionResetError("connection reset mid-stream (test)")
        return chunk

    filters.append(break_once)
    result = _copy(cli, tmp_path / "j.sqlite", "--keep-id", "--image", image["id"])
    assert result.code == 0, result.err
    assert broke, "the stream was never broken: the test proves nothing"
    assert [c["id"] for c in marked_copies(own_images.dst, image["id"])] == [image["id"]]
    _assert_copied(own_images, image["id"], image["id"])


def test_copy_is_finished_before_its_data_makes_it_active(
    own_images: ImageFactory, cli: Any, tmp_path: Path, filters: list[Any]
) -> None:
    """Glance makes a copy active when its data is in, and a re-run takes an active copy with
    the source's hash for the copy: its protection and members must be set by then. (A run
    killed between the data and those left an unprotected copy that every re-run reported as
    differing, exit 10: bench/chaos_kills.py.)"""
    image = own_images.create("finished-first", 12 * MIB, protected=True, visibility="shared",
                              member_projects=("demo",))
    seen: list[tuple[str, bool, list[str]]] = []

    def look_before_the_last_chunk(chunk: Chunk) -> Chunk:
        if chunk.end >= image["size"]:
            (copy,) = marked_copies(own_images.dst, image["id"])
            seen.append((copy["status"], copy["protected"],
                         sorted(members(own_images.dst, copy["id"]))))
        return chunk

    filters.append(look_before_the_last_chunk)
    result = _copy(cli, tmp_path / "j.sqlite", "--image", image["id"])
    assert result.code == 0, result.err
    assert len(seen) == 1, "the last chunk was never seen: the test proves nothing"
    status, protected, shared_with = seen[0]
    assert status != "active"
    assert (protected, shared_with) == (True, [project_id(own_images.dst, "demo")])
    (copy,) = marked_copies(own_images.dst, image["id"])
    _assert_copied(own_images, image["id"], copy["id"])


# About 20 s; every other copy here is the same path with smaller images.
@pytest.mark.long
def test_copy_one_gib_image(own_images: ImageFactory, cli: Any, tmp_path: Path) -> None:
    image = own_images.create("gib", size=1024 * MIB)
    result = _copy(cli, tmp_path / "j.sqlite", "--keep-id", "--image", image["id"])
    assert result.code == 0, result.err
    _assert_copied(own_images, image["id"], image["id"])


def test_copy_all_includes_community_images(testbed: Any, cli: Any, tmp_path: Path) -> None:
    """``--all`` lists community images too (Glance leaves them out unless asked for)."""
    src = connect("src")
    body = src.image.get("/images?visibility=community&name=delta-lab").json()
    (lab,) = body["images"]  # seeded, read only here
    result = _copy(cli, tmp_path / "journal.sqlite", "--all", "--dry-run")
    assert result.code == 0, result.err
    planned = {op["source_id"] for op in result.json()}
    assert lab["id"] in planned


def test_copy_between_rbd_stores_with_property_globs(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    """An image on src's rbd store copied into dst's rbd store, properties filtered by globs."""
    image = own_images.create("rbd-to-rbd", 9 * MIB, os_distro="seedos", os_version="3",
                              owner_team="web", internal_note="do not carry")
    journal = tmp_path / "journal.sqlite"
    moved = cli("--journal", str(journal), "images", "move-store", "--cloud", "src",
                "--from-store", "fast", "--to-store", "rbd", "--image", image["id"])
    assert moved.code == 0, moved.err
    result = _copy(cli, journal, "--keep-id", "--to-store", "rbd", "--image", image["id"],
                   "--property-include", "os_*", "--property-include", "owner_team",
                   "--property-exclude", "os_version")
    assert result.code == 0, result.err
    copy = glance_json(own_images.dst, image["id"])
    assert copy is not None and copy["stores"] == "rbd"
    assert download_sha512(own_images.dst, image["id"]) == image["os_hash_value"]
    carried = _record(own_images.dst, image["id"])["properties"]
    assert carried == {"os_distro": "seedos", "owner_team": "web"}
    again = _copy(cli, journal, "--keep-id", "--to-store", "rbd", "--image", image["id"],
                  "--property-include", "os_*", "--property-include", "owner_team",
                  "--property-exclude", "os_version")
    assert again.code == 0, again.err
    unknown = _copy(cli, tmp_path / "j2.sqlite", "--to-store", "tape", "--image", image["id"])
    assert unknown.code == 3 and "no image store 'tape'" in unknown.err


def test_copy_ceph_to_ceph_when_both_images_live_in_rbd(
    own_images: ImageFactory, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rbd on src -> rbd on dst pool to pool, attached by the locations API, same bytes."""
    clouds = yaml.safe_load(layout.CLOUDS_YAML.read_text())
    clouds["clouds"]["dst-glance-service"] = service_cloud(layout.DST)
    config = tmp_path / "clouds.yaml"
    config.write_text(yaml.safe_dump(clouds))
    config.chmod(0o600)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(config))
    storage = tmp_path / "storage.yaml"
    storage.write_text(yaml.safe_dump({"src": {"glance-rbd": glance_rbd_entry(layout.SRC)},
                                       "dst": {"glance-rbd": glance_rbd_entry(layout.DST)}}))
    body = os.urandom(5 * MIB) + bytes(8 * MIB) + os.urandom(MIB + 7)
    image = own_images.create("ceph-to-ceph", content=body, purpose="pool to pool")
    journal = tmp_path / "journal.sqlite"
    moved = cli("--journal", str(journal), "images", "move-store", "--cloud", "src",
                "--from-store", "fast", "--to-store", "rbd", "--image", image["id"])
    assert moved.code == 0, moved.err
    args = ("--keep-id", "--to-store", "rbd", "--location-cloud", "dst-glance-service",
            "--storage-map", str(storage), "--image", image["id"])
    result = cli("--log-json", "--journal", str(journal), "images", "copy", "--from", "src",
                 "--to", "dst", "-f", "json", *args)
    assert result.code == 0, result.err
    assert "Ceph to Ceph" in result.err and "API stream" not in result.err
    copy = glance_json(own_images.dst, image["id"])
    assert copy is not None and copy["status"] == "active" and copy["stores"] == "rbd"
    _assert_copied(own_images, image["id"], image["id"])
    dst_pool = GlanceRbdStore(LibRbdCluster(cloud="dst", pool="images",
                                            ceph_conf=str(layout.DST.ceph_conf),
                                            keyring=str(layout.DST.ceph_keyring), user="admin"))
    assert dst_pool.state(image["id"]).complete
    again = _copy(cli, journal, *args)
    assert again.code == 0, again.err


# About 17 s; make test keeps test_corrupted_stream_is_detected_and_leaves_nothing_on_dst.
@pytest.mark.long
def test_copy_ceph_to_ceph_flipped_byte_leaves_nothing_on_dst(
    own_images: ImageFactory, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte flipped between the source pool and the destination pool: integrity error,
    no RBD copy and no data on dst (the record stays queued); a re-run copies it right,
    under the same ID."""
    clouds = yaml.safe_load(layout.CLOUDS_YAML.read_text())
    clouds["clouds"]["dst-glance-service"] = service_cloud(layout.DST)
    config = tmp_path / "clouds.yaml"
    config.write_text(yaml.safe_dump(clouds))
    config.chmod(0o600)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(config))
    storage = tmp_path / "storage.yaml"
    storage.write_text(yaml.safe_dump({"src": {"glance-rbd": glance_rbd_entry(layout.SRC)},
                                       "dst": {"glance-rbd": glance_rbd_entry(layout.DST)}}))
    image = own_images.create("ceph-flip", 6 * MIB)
    journal = tmp_path / "journal.sqlite"
    assert cli("--journal", str(journal), "images", "move-store", "--cloud", "src",
               "--from-store", "fast", "--to-store", "rbd", "--image", image["id"]).code == 0
    real_copy_diff = ceph_copy.copy_diff

    def flipping(reader: Any, sink: Any, **kwargs: Any) -> Any:
        records = reader.records

        def flipped() -> Any:
            for n, record in enumerate(records()):
                if n == 0 and isinstance(record, WriteExtent):
                    record = WriteExtent(record.offset,
                                         bytes([record.data[0] ^ 1]) + record.data[1:])
                yield record

        reader.records = flipped
        return real_copy_diff(reader, sink, **kwargs)

    monkeypatch.setattr(ceph_copy, "copy_diff", flipping)
    args = ("--keep-id", "--to-store", "rbd", "--location-cloud", "dst-glance-service",
            "--storage-map", str(storage), "--image", image["id"])
    result = _copy(cli, journal, *args)
    assert result.code == 12, result.err
    dst_pool = GlanceRbdStore(LibRbdCluster(cloud="dst", pool="images",
                                            ceph_conf=str(layout.DST.ceph_conf),
                                            keyring=str(layout.DST.ceph_keyring), user="admin"))
    assert image["id"] not in dst_pool.images(), "the bad RBD copy must be removed"
    (left,) = marked_copies(own_images.dst, image["id"])
    assert left["id"] == image["id"] and left["status"] == "queued", "no data, ID kept"
    monkeypatch.setattr(ceph_copy, "copy_diff", real_copy_diff)
    retry = _copy(cli, journal, *args)
    assert retry.code == 0, retry.err
    _assert_copied(own_images, image["id"], image["id"])
