"""Images in Glance's ``fast`` store: properties, tags, sizes, visibility, members, protection.

Created through Glance's plain API (create the record, then upload the bytes
with ``X-Image-Meta-Store: fast``) rather than openstacksdk's ``create_image``,
which would pick an import workflow whenever a store is named. An image is
found by name and owner; its data is never re-uploaded (Glance forbids it), so
a mismatch of its hash is an error, while a differing property, tag or flag is
corrected in place.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack.connection

from testbed.process import tcp_open
from testbed.seed import inventory as inv
from testbed.seed.content import Pattern
from testbed.seed.context import SeedContext, admin_connection

PATCH_TYPE = "application/openstack-images-v2.1-json-patch"


class ImageContentMismatch(RuntimeError):
    """An image of the inventory exists with bytes other than the inventory's."""


def seed(ctx: SeedContext, report: Callable[[str], None] | None = None) -> dict[str, str]:
    """Ensure every image (and the legacy Glance's, on src); return image IDs by name."""
    ids: dict[str, str] = {}
    for image in inv.IMAGES:
        ids[image.name] = _ensure_image(ctx, image)
        _ensure_members(ctx, image, ids[image.name])
    seed_legacy(ctx, report or (lambda line: None))
    return ids


def wanted_fields(ctx: SeedContext, image: inv.Image) -> dict[str, Any]:
    """The image record as the inventory wants it (Glance's JSON names)."""
    return {
        "name": image.name,
        "owner": ctx.project_id(image.project),
        "visibility": image.visibility,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "protected": image.protected,
        "tags": sorted(image.tags),
        **image.properties,
    }


def find(ctx: SeedContext, image: inv.Image) -> dict[str, Any] | None:
    owner = ctx.project_id(image.project)
    # visibility=all: without it Glance leaves community images out of every listing.
    query = {"name": image.name, "owner": owner, "visibility": "all"}
    found = ctx.conn.image.get("/images", params=query).json()
    images = found["images"]
    if len(images) > 1:
        raise RuntimeError(
            f"{ctx.name}: {len(images)} images named {image.name} in {image.project}"
        )
    return images[0] if images else None


def _ensure_image(ctx: SeedContext, image: inv.Image) -> str:
    glance = ctx.conn.image
    wanted = wanted_fields(ctx, image)
    record = find(ctx, image)
    if record is None:
        record = glance.post("/images", json=wanted).json()
        ctx.made("image", f"{image.project}/{image.name}")
    else:
        _correct_fields(ctx, image, record, wanted)
    data = image.content.data()
    if record["status"] == "queued":
        glance.put(
            f"/images/{record['id']}/file",
            data=data,
            headers={"Content-Type": "application/octet-stream",
                     "X-Image-Meta-Store": image.store},
        )
        record = glance.get(f"/images/{record['id']}").json()
        ctx.made("image data", f"{image.name}: {len(data)} bytes into store {image.store}")
    elif record["status"] == "active":
        ctx.found("image data")
    if record["status"] != "active":
        raise RuntimeError(f"{ctx.name}: image {image.name} is {record['status']}, not active")
    if record.get("os_hash_value") != hashlib.sha512(data).hexdigest():
        raise ImageContentMismatch(
            f"{ctx.name}: image {image.name} ({record['id']}) holds other bytes than the "
            "inventory; delete it (unprotect first) and seed again"
        )
    return str(record["id"])


def _correct_fields(
    ctx: SeedContext, image: inv.Image, record: dict[str, Any], wanted: dict[str, Any]
) -> None:
    ops = []
    for key, value in wanted.items():
        current = sorted(record.get(key) or []) if key == "tags" else record.get(key)
        if current == value:
            continue
        if key in ("disk_format", "container_format"):
            raise RuntimeError(f"{ctx.name}: image {image.name} has {key}={current!r}, "
                               f"not {value!r}; delete it and seed again")
        ops.append({"op": "replace" if key in record else "add", "path": f"/{key}", "value": value})
    if not ops:
        ctx.found("image")
        return
    ctx.conn.image.patch(f"/images/{record['id']}", json=ops,
                         headers={"Content-Type": PATCH_TYPE})
    ctx.changed("image", f"{image.name}: {', '.join(o['path'][1:] for o in ops)}")


def _ensure_members(ctx: SeedContext, image: inv.Image, image_id: str) -> None:
    if not image.members:
        return  # Glance has members only for shared images (listing others is refused)
    glance = ctx.conn.image
    have = {m.member_id: m for m in glance.members(image_id)}
    for project in image.members:
        pid = ctx.project_id(project)
        member = have.get(pid)
        if member is None:
            member = glance.add_member(image_id, member_id=pid)
            ctx.made("image member", f"{image.name} -> {project}")
        if member.status == "accepted":
            ctx.found("image member")
            continue
        # Accepting a share is the member project's own decision: its user does it.
        ctx.actor(project).image.update_member(member, image_id, status="accepted")
        ctx.changed("image member", f"{image.name}: {project} accepted")


# -- the legacy single-store Glance of src (testbed/openstack/glance_legacy.py) -----------------

LEGACY_MIB = 1024 * 1024


@dataclass(frozen=True)
class LegacyImage:
    """An image of the legacy Glance, in its ``file`` store; ``deactivated`` after upload."""

    image: inv.Image
    deactivated: bool = False


LEGACY_IMAGES = (
    LegacyImage(inv.Image("alpha", "legacy-raw-small", Pattern("legacy-raw-small", 512 * 1024),
                          properties={"os_distro": "seedos", "legacy": "yes"}, tags=("legacy",),
                          min_ram=64)),
    LegacyImage(inv.Image("alpha", "legacy-raw-large",
                          Pattern("legacy-raw-large", 24 * LEGACY_MIB,
                                  ((4 * LEGACY_MIB, 8 * LEGACY_MIB),)),
                          visibility="shared", members=("beta",),
                          properties={"purpose": "shared with beta"}, tags=("legacy", "big"))),
    LegacyImage(inv.Image("beta", "legacy-qcow2",
                          Pattern("legacy-qcow2", 6 * LEGACY_MIB, ((LEGACY_MIB, 3 * LEGACY_MIB),)),
                          disk_format="qcow2", properties={"hw_disk_bus": "virtio"},
                          tags=("qcow2",), min_disk=1)),
    LegacyImage(inv.Image("alpha", "legacy-protected", Pattern("legacy-protected", 2 * LEGACY_MIB),
                          properties={"release": "golden"}, protected=True)),
    LegacyImage(inv.Image("beta", "legacy-deactivated",
                          Pattern("legacy-deactivated", 3 * LEGACY_MIB),
                          properties={"state": "retired"}), deactivated=True),
)


def legacy_connection(ctx: SeedContext) -> openstack.connection.Connection | None:
    """src's admin on the legacy Glance; None when that Glance is not running."""
    from testbed.openstack import glance_legacy

    if ctx.cloud not in glance_legacy.CLOUDS:
        return None
    if not tcp_open(glance_legacy.port(ctx.cloud)):
        return None
    conn = admin_connection(ctx.cloud)
    conn.config.config["image_endpoint_override"] = glance_legacy.url(ctx.cloud)
    return openstack.connection.Connection(config=conn.config)


def legacy_data(image: inv.Image) -> bytes:
    """The bytes of a legacy image: its pattern, converted by qemu-img for qcow2."""
    raw = image.content.data()
    if image.disk_format == "raw":
        return raw
    with tempfile.TemporaryDirectory(prefix="stackhop-seed-") as tmp:
        source, target = Path(tmp) / "raw", Path(tmp) / "out"
        source.write_bytes(raw)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", image.disk_format,
                        str(source), str(target)], check=True, capture_output=True)
        return target.read_bytes()


def seed_legacy(ctx: SeedContext, report: Callable[[str], None]) -> dict[str, str]:
    """Ensure the legacy Glance's images; return their IDs by name ({} without that Glance)."""
    conn = legacy_connection(ctx)
    if conn is None:
        report(f"{ctx.name}: no legacy Glance running; its images are not seeded")
        return {}
    ids: dict[str, str] = {}
    legacy_ctx = LegacyContext(ctx, conn)
    for item in LEGACY_IMAGES:
        ids[item.image.name] = _ensure_legacy_image(legacy_ctx, item)
    return ids


@dataclass
class LegacyContext:
    """The seed context with its image API pointed at the legacy Glance."""

    base: SeedContext
    conn: openstack.connection.Connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def _ensure_legacy_image(ctx: Any, item: LegacyImage) -> str:
    image, glance = item.image, ctx.conn.image
    wanted = wanted_fields(ctx, image)
    record = find(ctx, image)
    if record is None:
        record = glance.post("/images", json=wanted).json()
        ctx.made("legacy image", image.name)
    elif record["status"] in ("active", "queued"):
        _correct_fields(ctx, image, record, wanted)
    data = legacy_data(image)
    if record["status"] == "queued":
        glance.put(f"/images/{record['id']}/file", data=data,
                   headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        ctx.made("legacy image data", f"{image.name}: {len(data)} bytes")
        record = glance.get(f"/images/{record['id']}").json()
    if record.get("os_hash_value") != hashlib.sha512(data).hexdigest():
        raise ImageContentMismatch(
            f"{ctx.name} legacy Glance: image {image.name} ({record['id']}) holds other bytes "
            "than the inventory; delete it (unprotect first) and seed again"
        )
    for project in image.members:
        pid = ctx.project_id(project)
        members = {m["member_id"]: m["status"]
                   for m in glance.get(f"/images/{record['id']}/members").json()["members"]}
        if pid not in members:
            glance.post(f"/images/{record['id']}/members", json={"member": pid})
            ctx.made("legacy image member", f"{image.name} -> {project}")
        if members.get(pid) != "accepted":
            glance.put(f"/images/{record['id']}/members/{pid}",
                       json={"status": "accepted"}).raise_for_status()
    if item.deactivated and record["status"] == "active":
        glance.post(f"/images/{record['id']}/actions/deactivate").raise_for_status()
        ctx.changed("legacy image", f"{image.name}: deactivated")
    return str(record["id"])
