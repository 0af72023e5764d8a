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
from typing import Any

from testbed.seed import inventory as inv
from testbed.seed.context import SeedContext

PATCH_TYPE = "application/openstack-images-v2.1-json-patch"


class ImageContentMismatch(RuntimeError):
    """An image of the inventory exists with bytes other than the inventory's."""


def seed(ctx: SeedContext) -> dict[str, str]:
    """Ensure every image; return image IDs by name."""
    ids: dict[str, str] = {}
    for image in inv.IMAGES:
        ids[image.name] = _ensure_image(ctx, image)
        _ensure_members(ctx, image, ids[image.name])
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
