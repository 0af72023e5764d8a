"""Shared helpers of the image tests: images of our own on the testbed, and their cleanup.

The tests never touch the seeded images (other tests check the seed
inventory): every image is created here with a unique name prefix, owned by
the ``admin`` project (exempt from the seed checks, and with a different ID
on dst, so owner mapping is exercised), shared with ``demo`` and ``service``
(also different IDs on dst). Everything made on src and dst, including
copies found by their ``stackhop_source`` marker, is deleted at the end,
protected or not.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openstack.config
import pytest
from openstack.connection import Connection
from testbed import layout

from stackhop.kinds.image import MARKER_PROPERTY

MIB = 1024 * 1024
JSON_PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def connect(name: str) -> Connection:
    config = openstack.config.OpenStackConfig(config_files=[str(layout.CLOUDS_YAML)])
    return Connection(config=config.get_one(cloud=name))


class RandomBody:
    """``size`` random bytes as an upload body (file-like with a length: no temp file)."""

    def __init__(self, size: int) -> None:
        self.len = size
        self._left = size
        self.sha512 = hashlib.sha512()

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = os.urandom(n) if n else b""
        self._left -= n
        self.sha512.update(data)
        return data


def glance_json(conn: Connection, image_id: str) -> dict[str, Any] | None:
    response = conn.image.get(f"/images/{image_id}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def members(conn: Connection, image_id: str) -> dict[str, str]:
    response = conn.image.get(f"/images/{image_id}/members")
    if response.status_code == 403 and "only shared images have members" in response.text.lower():
        return {}  # only a shared image has members
    response.raise_for_status()
    body = response.json()
    return {m["member_id"]: m["status"] for m in body["members"]}


def download_sha512(conn: Connection, image_id: str) -> str:
    digest = hashlib.sha512()
    with conn.image.get(f"/images/{image_id}/file", stream=True) as response:
        response.raise_for_status()
        for block in response.iter_content(chunk_size=MIB):
            digest.update(block)
    return digest.hexdigest()


def marked_copies(conn: Connection, source_id: str) -> list[dict[str, Any]]:
    found = []
    for hidden in ("false", "true"):
        url = f"/images?{MARKER_PROPERTY}={source_id}&member_status=all&os_hidden={hidden}"
        found += conn.image.get(url).json()["images"]
    return found


def project_id(conn: Connection, name: str) -> str:
    return str(conn.identity.find_project(name, ignore_missing=False).id)


@dataclass
class ImageFactory:
    """Creates images on src for one test and removes them (and their copies) afterwards."""

    src: Connection
    dst: Connection
    prefix: str = field(default_factory=lambda: f"t5-{uuid.uuid4().hex[:8]}-")
    created: list[str] = field(default_factory=list)

    def create(
        self,
        name: str,
        size: int = 3 * MIB,
        *,
        store: str = "fast",
        content: bytes | None = None,
        visibility: str = "private",
        protected: bool = False,
        member_projects: tuple[str, ...] = (),
        accept: bool = True,
        **attributes: Any,
    ) -> dict[str, Any]:
        body = {
            "name": self.prefix + name, "disk_format": "raw", "container_format": "bare",
            "visibility": visibility, "owner": project_id(self.src, "admin"), **attributes,
        }
        response = self.src.image.post("/images", json=body)
        response.raise_for_status()
        image_id = response.json()["id"]
        self.created.append(image_id)
        data: Any = RandomBody(size) if content is None else content
        self.src.image.put(
            f"/images/{image_id}/file", data=data,
            headers={"Content-Type": "application/octet-stream", "X-Image-Meta-Store": store},
        ).raise_for_status()
        for project in member_projects:
            pid = project_id(self.src, project)
            self.src.image.post(f"/images/{image_id}/members", json={"member": pid})
            if accept:
                self.src.image.put(f"/images/{image_id}/members/{pid}",
                                   json={"status": "accepted"}).raise_for_status()
        if protected:
            self.src.image.patch(
                f"/images/{image_id}", json=[{"op": "replace", "path": "/protected",
                                              "value": True}], headers=JSON_PATCH,
            ).raise_for_status()
        image = glance_json(self.src, image_id)
        assert image is not None and image["status"] == "active"
        want = hashlib.sha512(content) if content is not None else data.sha512
        assert image["os_hash_value"] == want.hexdigest()
        return image

    def cleanup(self) -> None:
        for conn in (self.dst, self.src):
            doomed = {i for i in self.created if glance_json(conn, i) is not None}
            for source_id in self.created:
                doomed |= {c["id"] for c in marked_copies(conn, source_id)}
            for image_id in doomed:
                conn.image.patch(f"/images/{image_id}", json=[
                    {"op": "replace", "path": "/protected", "value": False}], headers=JSON_PATCH)
                conn.image.delete(f"/images/{image_id}")


@pytest.fixture
def own_images(testbed: Any) -> Iterator[ImageFactory]:
    """Images of this test's own on src; removed from src and dst at the end."""
    images = ImageFactory(connect("src"), connect("dst"))
    try:
        yield images
    finally:
        images.cleanup()
