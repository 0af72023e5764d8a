"""Volumes with known content on both backends (``ceph`` and ``file``).

A volume is created by its project's member user (Cinder puts a volume in the
caller's project) from an image with known bytes, blank, or blank and then
filled with dense content written straight into the backend. Bootable flag and
metadata are then set as the inventory says. The expected sha256 of every
volume's content is a function of the inventory (``inventory.volume_sha256``).
"""

from __future__ import annotations

from typing import Any

from testbed.seed import inventory as inv
from testbed.seed.backing import backing, ends_match
from testbed.seed.content import GIB
from testbed.seed.context import SeedContext

WAIT = 300


def find(ctx: SeedContext, v: inv.Volume) -> Any | None:
    pid = ctx.project_id(v.project)
    found = [
        x for x in ctx.conn.block_storage.volumes(details=True, all_projects=True, name=v.name,
                                                  project_id=pid)
        if x.name == v.name and x.project_id == pid
    ]
    if len(found) > 1:
        raise RuntimeError(f"{ctx.name}: {len(found)} volumes named {v.name} in {v.project}")
    return found[0] if found else None


def seed(ctx: SeedContext, image_ids: dict[str, str]) -> dict[str, str]:
    """Create the inventory's volumes (in parallel), then fix flags, metadata and content."""
    pending = {}
    volumes: dict[str, Any] = {}
    for v in inv.VOLUMES:
        found = find(ctx, v)
        if found is None:
            attrs: dict[str, Any] = {
                "name": v.name, "size": v.size_gib, "volume_type": v.volume_type,
                "description": v.description, "metadata": dict(v.metadata),
            }
            if v.image:
                attrs["image_id"] = image_ids[v.image]
            found = ctx.actor(v.project).block_storage.create_volume(**attrs)
            ctx.made("volume", f"{v.project}/{v.name} ({v.volume_type})")
        else:
            ctx.found("volume")
        pending[v.name] = found
    # Cinder works on all of them at once; wait afterwards.
    for name, vol in pending.items():
        if vol.status not in ("available", "in-use"):
            vol = ctx.conn.block_storage.wait_for_status(
                vol, "available", failures=["error"], wait=WAIT, interval=1
            )
        volumes[name] = vol
    for v in inv.VOLUMES:
        vol = volumes[v.name]
        _ensure_flags(ctx, v, vol)
        if v.dense:
            _ensure_dense_content(ctx, v, vol)
    return {name: vol.id for name, vol in volumes.items()}


def _ensure_flags(ctx: SeedContext, v: inv.Volume, vol: Any) -> None:
    storage = ctx.conn.block_storage
    if bool(vol.is_bootable) != v.bootable:
        storage.set_volume_bootable_status(vol, v.bootable)
        ctx.changed("volume", f"{v.name}: bootable={v.bootable}")
    else:
        ctx.found("volume flag")
    have = dict(vol.metadata or {})
    missing = {k: val for k, val in v.metadata.items() if have.get(k) != val}
    if missing:
        storage.set_volume_metadata(vol, **missing)
        ctx.changed("volume", f"{v.name}: metadata {sorted(missing)}")
    else:
        ctx.found("volume metadata")


def _ensure_dense_content(ctx: SeedContext, v: inv.Volume, vol: Any) -> None:
    b = backing(ctx.cloud, v.volume_type, vol.id)
    size = v.size_gib * GIB
    if ends_match(b, inv.volume_chunks(v), size):
        ctx.found("volume content")
        return
    written = b.write_all(inv.volume_chunks(v))
    ctx.made("volume content", f"{v.name}: {written // (1024 * 1024)} MiB written into the "
             f"{v.volume_type} backend")
