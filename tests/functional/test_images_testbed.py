"""The testbed's image side: the ``rbd`` store of each Glance, the legacy Glance and its seed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from testbed import layout
from testbed.infra import ceph
from testbed.openstack import glance
from testbed.seed import images as seed_images
from tests.functional.test_images_legacy_support import LEGACY
from tests.functional.test_images_support import MIB, connect, project_id

pytestmark = pytest.mark.functional


@pytest.mark.parametrize("cloud", [layout.SRC, layout.DST], ids=lambda c: c.name)
def test_each_glance_has_an_rbd_store_on_its_own_pool(testbed: Any, cloud: Any) -> None:
    conn = connect(cloud.name)
    stores = {s["id"] for s in conn.image.get("/info/stores").json()["stores"]}
    assert stores == {"fast", "slow", "rbd"}
    # Glance's cephx user may use the images pool only.
    caps = json.loads(ceph.ceph(cloud, "auth", "get", f"client.{glance.ceph_user(cloud)}",
                                "--format", "json"))[0]["caps"]
    assert caps["osd"] == "profile rbd pool=images"
    assert ceph.keyring(cloud, glance.ceph_user(cloud)).stat().st_mode & 0o777 == 0o600


def test_legacy_glance_is_single_store_and_shows_locations(testbed: Any) -> None:
    conn = connect(LEGACY)
    assert conn.image.get("/info/stores").status_code == 404, "no multi-store"
    image = conn.image.post("/images", json={"name": "t14-probe", "disk_format": "raw",
                                             "container_format": "bare"}).json()
    try:
        data = b"legacy" * MIB
        conn.image.put(f"/images/{image['id']}/file", data=data,
                       headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        after = conn.image.get(f"/images/{image['id']}").json()
        assert [loc["url"].split(":")[0] for loc in after["locations"]] == ["file"]
        assert after["direct_url"] == after["locations"][0]["url"]
        assert after["os_hash_value"] == hashlib.sha512(data).hexdigest()
    finally:
        conn.image.delete(f"/images/{image['id']}")
    # Not in the catalog: the src cloud's own Glance does not know the image.
    assert connect("src").image.get(f"/images/{image['id']}").status_code == 404


def test_legacy_glance_is_seeded(seeded: Any) -> None:
    conn = connect(LEGACY)
    for item in seed_images.LEGACY_IMAGES:
        want = item.image
        found = conn.image.get("/images", params={"name": want.name, "visibility": "all",
                                                  "owner": project_id(conn, want.project)}
                               ).json()["images"]
        assert len(found) == 1, want.name
        image = found[0]
        assert image["status"] == ("deactivated" if item.deactivated else "active")
        assert image["disk_format"] == want.disk_format
        assert image["protected"] is want.protected
        assert {k: image.get(k) for k in want.properties} == dict(want.properties)
        assert sorted(image["tags"]) == sorted(want.tags)
        assert image["os_hash_value"] == hashlib.sha512(seed_images.legacy_data(want)).hexdigest()
        assert len(image["locations"]) == 1
        if want.members:
            listed = conn.image.get(f"/images/{image['id']}/members").json()["members"]
            assert {m["member_id"]: m["status"] for m in listed} == {
                project_id(conn, p): "accepted" for p in want.members}
    qcow2 = [i.image for i in seed_images.LEGACY_IMAGES if i.image.disk_format == "qcow2"][0]
    assert seed_images.legacy_data(qcow2)[:4] == b"QFI\xfb", "a real qcow2 (magic)"
