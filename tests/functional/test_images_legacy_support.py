"""Images of a test's own on the legacy single-store Glance (cloud ``src-legacy``), cleaned up.

Each image is uploaded into the legacy Glance's ``file`` store with a unique
name prefix, owned by ``admin``; members, protection and deactivation as
asked. At the end every image is deleted (reactivated and unprotected
first), and any RBD image named after one of them is removed from the pool,
so a failing test leaves nothing behind either.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openstack.config
import pytest
from openstack.connection import Connection
from testbed import layout
from testbed.openstack import glance_legacy
from tests.functional.test_images_support import (
    JSON_PATCH,
    MIB,
    RandomBody,
    connect,
    glance_json,
    project_id,
)

from stackhop.images.rbd_store import GlanceRbdStore
from stackhop.transfer.rbd_lib import LibRbdCluster

LEGACY = glance_legacy.cloud_name(layout.SRC)


def rbd_pool() -> GlanceRbdStore:
    """The legacy Glance's RBD pool as the testbed's storage map reaches it."""
    c = layout.SRC
    return GlanceRbdStore(LibRbdCluster(cloud=LEGACY, pool="images", ceph_conf=str(c.ceph_conf),
                                        keyring=str(c.ceph_keyring), user="admin"))


def file_path(url: str) -> Path:
    assert url.startswith("file://"), url
    return Path(url[len("file://"):])


def locations(conn: Connection, image_id: str) -> list[str]:
    image = glance_json(conn, image_id)
    assert image is not None
    return [str(loc["url"]) for loc in image["locations"]]


def download_sha512(conn: Connection, image_id: str) -> str:
    digest = hashlib.sha512()
    with conn.image.get(f"/images/{image_id}/file", stream=True) as response:
        response.raise_for_status()
        for block in response.iter_content(chunk_size=MIB):
            digest.update(block)
    return digest.hexdigest()


def rbd_sha512(pool: GlanceRbdStore, image_id: str) -> str:
    digest = hashlib.sha512()
    for data in pool.read(image_id):
        digest.update(data)
    return digest.hexdigest()


@dataclass
class LegacyImages:
    """Creates images on the legacy Glance for one test and removes them afterwards."""

    conn: Connection
    pool: GlanceRbdStore
    prefix: str = field(default_factory=lambda: f"t14-{uuid.uuid4().hex[:8]}-")
    created: list[str] = field(default_factory=list)

    def create(
        self,
        name: str,
        size: int = 3 * MIB,
        *,
        body: bytes | None = None,
        visibility: str = "private",
        protected: bool = False,
        deactivated: bool = False,
        member_projects: tuple[str, ...] = (),
        **attributes: Any,
    ) -> dict[str, Any]:
        record = {
            "name": self.prefix + name, "disk_format": "raw", "container_format": "bare",
            "visibility": visibility, "owner": project_id(self.conn, "admin"), **attributes,
        }
        response = self.conn.image.post("/images", json=record)
        response.raise_for_status()
        image_id = response.json()["id"]
        self.created.append(image_id)
        data: Any = body if body is not None else RandomBody(size)
        self.conn.image.put(f"/images/{image_id}/file", data=data,
                            headers={"Content-Type": "application/octet-stream"}
                            ).raise_for_status()
        for project in member_projects:
            pid = project_id(self.conn, project)
            self.conn.image.post(f"/images/{image_id}/members", json={"member": pid})
            self.conn.image.put(f"/images/{image_id}/members/{pid}",
                                json={"status": "accepted"}).raise_for_status()
        if protected:
            self.conn.image.patch(f"/images/{image_id}", headers=JSON_PATCH, json=[
                {"op": "replace", "path": "/protected", "value": True}]).raise_for_status()
        if deactivated:
            self.conn.image.post(f"/images/{image_id}/actions/deactivate").raise_for_status()
        image = glance_json(self.conn, image_id)
        assert image is not None
        assert image["status"] == ("deactivated" if deactivated else "active")
        if isinstance(data, RandomBody):
            assert image["os_hash_value"] == data.sha512.hexdigest()
        return image

    def cleanup(self) -> None:
        for image_id in self.created:
            image = glance_json(self.conn, image_id)
            if image is not None:
                if image["status"] == "deactivated":
                    self.conn.image.post(f"/images/{image_id}/actions/reactivate")
                self.conn.image.patch(f"/images/{image_id}", headers=JSON_PATCH, json=[
                    {"op": "replace", "path": "/protected", "value": False}])
                self.conn.image.delete(f"/images/{image_id}")
            self.pool.remove(image_id)


@pytest.fixture
def legacy_images(testbed: Any) -> Iterator[LegacyImages]:
    """Images of this test's own on the legacy Glance; removed (with any RBD copy) at the end."""
    if not glance_legacy.port(layout.SRC) or not _answers():
        pytest.fail("the legacy Glance (glance-legacy-src) does not answer; bring it up with "
                    "python -m testbed up --only glance-legacy-src")
    images = LegacyImages(connect(LEGACY), rbd_pool())
    try:
        yield images
    finally:
        images.cleanup()


@contextmanager
def legacy_server(name: str, image_id: str) -> Iterator[tuple[Connection, Any]]:
    """A server of the legacy Nova (images from the legacy Glance) booted from ``image_id``.

    Yields src's admin on the legacy Nova and the ACTIVE server; deletes it at the end.
    """
    from testbed.openstack import nova_legacy
    from testbed.process import tcp_open

    c = layout.SRC
    if not tcp_open(nova_legacy.port(c)):
        pytest.fail("the legacy Nova (nova-legacy-src) does not answer; bring it up with "
                    "python -m testbed up --only nova-legacy-src")
    config = openstack.config.OpenStackConfig(config_files=[str(layout.CLOUDS_YAML)])
    conn = Connection(config=config.get_one(
        cloud=LEGACY, compute_endpoint_override=nova_legacy.url(c)))
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    server = conn.compute.create_server(
        name=name, image_id=image_id, flavor_id=flavor.id, networks="none",
        availability_zone=nova_legacy.availability_zone(c))
    try:
        server = conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                              interval=1, wait=180)
        assert server.hypervisor_hostname == nova_legacy.compute_host(c)
        yield conn, server
    finally:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, interval=1, wait=180)


def _answers() -> bool:
    from testbed.process import tcp_open

    return tcp_open(glance_legacy.port(layout.SRC))


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def glance_rbd_entry(c: layout.CloudLayout) -> dict[str, str]:
    """A storage-map entry reaching cloud ``c``'s Glance RBD pool (``images``) as client.admin."""
    return {"driver": "rbd", "pool": "images", "ceph_conf": str(c.ceph_conf),
            "keyring": str(c.ceph_keyring), "user": "admin"}


def service_cloud(c: layout.CloudLayout) -> dict[str, Any]:
    """A clouds.yaml entry for Glance's service user of cloud ``c`` (it has the service role)."""
    return {
        "auth": {"auth_url": c.keystone_url, "username": "glance",
                 "password": layout.SERVICE_PASSWORD, "project_name": "service",
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": layout.REGION, "interface": "public", "identity_api_version": 3,
    }
