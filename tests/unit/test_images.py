"""Image records, comparison, and the move-store plan (pure logic)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from stackhop.errors import UsageError
from stackhop.images.common import Selection, image_stores, inactive
from stackhop.images.move_store import moved, plan_moves
from stackhop.kinds import get
from stackhop.kinds.image import MARKER_PROPERTY, Image, image_record

GLANCE_JSON: dict[str, Any] = {
    "id": "img-1", "name": "web", "status": "active", "visibility": "shared",
    "protected": True, "disk_format": "qcow2", "container_format": "bare", "min_disk": 2,
    "min_ram": 512, "os_hidden": False, "owner": "p-owner", "tags": ["b", "a"],
    "size": 1024, "virtual_size": 4096, "checksum": "md5", "os_hash_algo": "sha512",
    "os_hash_value": "abc", "stores": "fast,slow", "created_at": "t", "updated_at": "t",
    "file": "/v2/images/img-1/file", "schema": "/v2/schemas/image", "self": "/v2/images/img-1",
    "hw_disk_bus": "scsi", "purpose": "web", "os_glance_import_task": "task-1",
    "os_glance_importing_to_stores": "", MARKER_PROPERTY: "src-9",
}


def test_record_separates_attributes_properties_and_source_facts() -> None:
    record = image_record(GLANCE_JSON, [
        {"member_id": "p-z", "status": "pending"}, {"member_id": "p-a", "status": "accepted"},
    ])
    assert record["properties"] == {"hw_disk_bus": "scsi", "purpose": "web"}
    assert record["tags"] == ["a", "b"]
    assert record["members"] == ["p-a", "p-z"]
    assert record["member_statuses"] == ["accepted", "pending"]
    assert record["stores"] == ["fast", "slow"]
    assert record["source_marker"] == "src-9"
    assert (record["protected"], record["min_disk"], record["min_ram"]) == (True, 2, 512)


def test_the_kind_is_registered_and_maps_owner_and_members_to_projects() -> None:
    kind = get("glance.image")
    assert isinstance(kind, Image)
    assert kind.references == {"owner": "identity.project", "members": "identity.project"}
    record = image_record(GLANCE_JSON, [])
    assert kind.identity(record) == "web/img-1"


def test_compare_ignores_the_marker_and_ordering_but_sees_real_changes() -> None:
    kind = Image()
    record = image_record(GLANCE_JSON, [{"member_id": "p-a", "status": "accepted"}])
    copy = {**record, "tags": ["b", "a"],
            "properties": {**record["properties"], MARKER_PROPERTY: "img-1"}}
    assert kind.compare(record, copy) == []
    changed = {**copy, "min_ram": 1024, "properties": {"purpose": "other"}}
    assert {d.field for d in kind.compare(record, changed)} == {"min_ram", "properties"}


def _image(image_id: str, stores: str, status: str = "active") -> dict[str, Any]:
    return {"id": image_id, "name": image_id, "stores": stores, "status": status}


def test_plan_moves_skips_moved_images_and_refuses_bad_ones() -> None:
    plans = plan_moves([
        _image("a", "fast"), _image("b", "slow"), _image("c", "fast,slow"),
        _image("d", "fast", status="queued"), _image("e", "other"),
    ], "fast", "slow", keep_source=False)
    assert [(p.image_id, p.action) for p in plans] == [
        ("a", "move"), ("b", "skip"), ("c", "move"), ("d", "error"), ("e", "error"),
    ]
    assert "not active" in plans[3].reason and "not in store fast" in plans[4].reason
    kept = plan_moves([_image("c", "fast,slow")], "fast", "slow", keep_source=True)
    assert kept[0].action == "skip"


def test_moved_and_stores_helpers() -> None:
    assert image_stores({"stores": "fast,slow"}) == {"fast", "slow"}
    assert image_stores({}) == set()
    assert moved(_image("a", "slow"), "fast", "slow", keep_source=False)
    assert not moved(_image("a", "fast,slow"), "fast", "slow", keep_source=False)
    assert inactive([_image("a", "fast"), _image("b", "fast", "saving")]) == ["b (b): saving"]


@pytest.mark.parametrize("selection", [
    Selection(), Selection(images=("a",), all=True), Selection(project="p", all=True),
])
def test_a_selection_names_exactly_one_set_of_images(selection: Selection) -> None:
    with pytest.raises(UsageError):
        selection.check()


# -- locations, the RBD store's layout, property globs ---------------------------------------


def test_location_url_quotes_each_part_as_glance_store_does() -> None:
    from stackhop.images.rbd_store import location_url

    assert location_url("f-1", "images", "abc") == "rbd://f-1/images/abc/snap"
    assert location_url("f", "my pool", "a/b") == "rbd://f/my%20pool/a%2Fb/snap"


def test_nonzero_runs_leave_zero_blocks_out_and_do_not_copy_dense_data() -> None:
    from stackhop.images.rbd_store import ZERO_BLOCK, nonzero_runs

    dense = b"x" * (3 * ZERO_BLOCK)
    assert [(o, d) for o, d in nonzero_runs(dense)] == [(0, dense)]
    assert next(nonzero_runs(dense))[1] is dense
    assert list(nonzero_runs(bytes(2 * ZERO_BLOCK + 5))) == []
    data = b"a" + bytes(2 * ZERO_BLOCK - 1) + b"b" * 10
    runs = list(nonzero_runs(data))
    assert [(o, len(d)) for o, d in runs] == [(0, ZERO_BLOCK), (2 * ZERO_BLOCK, 10)]
    rebuilt = bytearray(len(data))
    for offset, piece in runs:
        rebuilt[offset:offset + len(piece)] = piece
    assert bytes(rebuilt) == data


def _legacy(image_id: str, *urls: str, status: str = "active") -> dict[str, object]:
    return {"id": image_id, "name": image_id, "status": status,
            "locations": [{"url": u, "metadata": {}} for u in urls]}


def test_plan_location_moves_by_location_scheme() -> None:
    from stackhop.images.locations import plan_location_moves

    plans = plan_location_moves([
        _legacy("a", "file:///x/a"),
        _legacy("b", "rbd://f/images/b/snap"),
        _legacy("c", "file:///x/c", status="deactivated"),
        _legacy("d", "file:///x/d", status="queued"),
        _legacy("e", "http://h/e"),
    ], "file", "rbd")
    assert [(p.image_id, p.action) for p in plans] == [
        ("a", "move"), ("b", "skip"), ("c", "move"), ("d", "error"), ("e", "error")]


def test_locations_refused_without_visible_locations_or_into_file() -> None:
    from stackhop.errors import CapabilityError
    from stackhop.images.locations import check_locations_method

    with pytest.raises(CapabilityError, match="show_multiple_locations"):
        check_locations_method("old", [{"id": "a", "status": "active"}], "rbd")
    with pytest.raises(CapabilityError, match="file"):
        check_locations_method("old", [_legacy("a", "rbd://f/p/a/snap")], "file")
    check_locations_method("old", [_legacy("a", "file:///x/a")], "rbd")


def test_property_filter_globs() -> None:
    from stackhop.images.common import PropertyFilter

    record = {"id": "a", "properties": {"os_distro": "x", "os_version": "1", "team": "t",
                                        "hw_disk_bus": "virtio"}}
    assert PropertyFilter().apply(record) is record
    kept = PropertyFilter(include=("os_*", "team"), exclude=("os_version",)).apply(record)
    assert kept["properties"] == {"os_distro": "x", "team": "t"}
    assert record["properties"]["os_version"] == "1", "the input is not changed"
    assert PropertyFilter(exclude=("hw_*",)).apply(record)["properties"] == {
        "os_distro": "x", "os_version": "1", "team": "t"}
    assert not PropertyFilter(include=("OS_*",)).keeps("os_distro"), "globs are case-sensitive"


def test_stream_hasher_hashes_holes_as_zeros_and_falls_back_when_out_of_order() -> None:
    import hashlib

    from stackhop.errors import IntegrityError
    from stackhop.images.ceph_copy import StreamHasher
    from stackhop.transfer.base import Digest
    from stackhop.transfer.rbd_diff import DiffHeader, WriteExtent, ZeroExtent

    size = 10 * 1024 * 1024 + 3
    image = bytearray(size)
    image[5:9] = b"abcd"
    image[6 * 1024 * 1024:6 * 1024 * 1024 + 2] = b"xy"
    header = DiffHeader(from_snap=None, to_snap="snap", size=size)
    digest = Digest("sha512", hashlib.sha512(image).hexdigest())
    md5 = hashlib.md5(image, usedforsecurity=False).hexdigest()
    hasher = StreamHasher("sha512", size)
    for record in (WriteExtent(5, b"abcd"), ZeroExtent(9, 100),
                   WriteExtent(6 * 1024 * 1024, b"xy")):
        hasher.record(header, record)
    hasher.check("img", digest, md5)
    bad = StreamHasher("sha512", size)
    bad.record(header, WriteExtent(5, b"abce"))
    with pytest.raises(IntegrityError, match="hashes to"):
        bad.check("img", digest, md5)
    backwards = StreamHasher("sha512", size)
    backwards.record(header, WriteExtent(100, b"a"))
    backwards.record(header, WriteExtent(50, b"b"))
    assert not backwards.in_order


def test_the_cli_imports_no_plotting_library() -> None:
    """matplotlib and numpy (about 55 MB) load only when a usage report draws its charts."""
    code = ("import sys, stackhop.cli.main; "
            "print(sorted(m for m in ('matplotlib', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_image_name_patterns_match_names_or_an_exact_id() -> None:
    from stackhop.images.common import is_glob, name_matches

    web = {"id": "3f2a", "name": "web-base"}
    assert is_glob("web-*") and is_glob("db-?") and is_glob("[wd]*") and not is_glob("web-base")
    assert name_matches(web, "web-*") and name_matches(web, "3f2a")
    assert not name_matches(web, "Web-*"), "case-sensitive, as the property globs"
    assert not name_matches({"id": "x", "name": None}, "web-*")
