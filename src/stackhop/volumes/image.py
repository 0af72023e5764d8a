"""The ``image`` method: a volume through Glance, API only, any backend on either side.

One pass of one volume:

1. **exported** — Cinder uploads the source volume to a raw image on the
   source (``os-volume_upload_image``, ``force`` for an in-use volume);
2. the image's data is streamed into a new image on the destination's Glance
   with the images mover's transfer (:mod:`stackhop.transfer.glance`: no
   temporary file, Glance's own hash checked before the upload commits), and
   teed into the ``--backup-to`` file; on the way every 4 MiB piece is hashed,
   which gives the volume's :func:`~stackhop.volumes.model.content_digest`;
   the source image is deleted;
3. **imported** — the destination volume is created from that image in the
   destination project, with the source's name, description, type and
   metadata (the orchestration records its ID at once, so an interrupted pass
   replaces it instead of leaving two);
4. **adopted** — it is ``available``; its bootable flag is set like the
   source's; the destination image is deleted;
5. **verified** — when the storage map knows the destination volume's
   backend, its bytes are read back there (:mod:`.readback`) and must hash to
   the digest of step 2; otherwise Cinder uploads the new volume to an image on
   the destination and its Glance hash must equal the source upload's.

Both temporary images are named ``stackhop-volume-<source id>-<run>`` and
journaled before they are created, so ``volumes cleanup --run`` finds them by
name even when a crash came before their ID was known. The method keeps no
incremental state: every pass copies the whole volume (the preflight refuses
``--incremental`` with it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from openstack import exceptions as sdk_exceptions

from stackhop.errors import CapabilityError, IntegrityError, TransientError
from stackhop.transfer.base import Chunk, Destination, Digest, Source, copy
from stackhop.transfer.glance import GlanceDestination, GlanceSource, get_image, image_digest
from stackhop.volumes.backup import ContentHasher, Tee
from stackhop.volumes.inventory import project_connection, wait_volume
from stackhop.volumes.model import PassContext, PassResult, Temporary, VolumeRef
from stackhop.volumes.readback import backend_knows, describe, volume_digest
from stackhop.volumes.storage import StorageMap

NAME = "image"
COPYABLE = ("available", "in-use")


class HashingSink:
    """A transfer destination computing the content digest of what passes (keeps nothing)."""

    durable_chunks = False

    def __init__(self) -> None:
        self.hasher = ContentHasher()
        self.size = 0
        self.content_digest = ""

    def open(self, size: int | None) -> None:
        self.size = size or 0

    def write(self, chunk: Chunk) -> None:
        self.hasher.write(chunk.offset, chunk.data)

    def commit(self) -> None:
        self.content_digest = self.hasher.finish(self.size)

    def abort(self, reason: BaseException) -> None:
        return None

    def verify(self, digest: Digest) -> None:
        return None


def temporary_name(volume_id: str, run_id: str, purpose: str = "") -> str:
    """The name of a temporary image of this method (found by it at cleanup)."""
    suffix = f"-{purpose}" if purpose else ""
    return f"stackhop-volume-{volume_id}-{run_id[:8]}{suffix}"


def images_named(service: Any, name: str) -> list[dict[str, Any]]:
    """Every image called ``name`` visible to the connection (admin: all)."""
    response = service.get("/images", params={"name": name, "limit": 100})
    sdk_exceptions.raise_from_response(response)
    images: list[dict[str, Any]] = response.json().get("images", [])
    return images


def delete_images_named(service: Any, name: str) -> int:
    """Delete every image called ``name``; the number deleted."""
    count = 0
    for image in images_named(service, name):
        response = service.delete(f"/images/{image['id']}")
        if response.status_code != 404:
            sdk_exceptions.raise_from_response(response)
            count += 1
    return count


def create_image(service: Any, name: str, owner: str | None) -> dict[str, Any]:
    """A new, queued, private raw image to upload into."""
    body: dict[str, Any] = {
        "name": name,
        "disk_format": "raw",
        "container_format": "bare",
        "visibility": "private",
    }
    if owner:
        body["owner"] = owner
    response = service.post("/images", json=body)
    sdk_exceptions.raise_from_response(response)
    image: dict[str, Any] = response.json()
    return image


def wait_image_active(service: Any, image_id: str, *, timeout: float = 3600) -> dict[str, Any]:
    """Poll until the image is ``active``; IntegrityError if it is killed or deleted."""
    deadline = time.monotonic() + timeout
    while True:
        image = get_image(service, image_id)
        status = (image or {}).get("status")
        if image is not None and status == "active":
            return image
        if image is None or status in ("killed", "deleted", "deactivated"):
            raise IntegrityError(
                f"image {image_id} is {status or 'gone'}; the upload failed, re-run to retry"
            )
        if time.monotonic() > deadline:
            raise TransientError(f"image {image_id} is still {status} after {timeout:.0f} s")
        time.sleep(1.0)


def upload_volume(
    conn: Any, volume_id: str, name: str, *, force: bool, settle: tuple[str, ...] = COPYABLE
) -> dict[str, Any]:
    """Have Cinder upload the volume into a new raw image ``name``; its Glance JSON, active."""
    answer = conn.block_storage.upload_volume_to_image(
        volume_id, name, force=force, disk_format="raw", container_format="bare"
    )
    image = wait_image_active(conn.image, str(answer["image_id"]))
    wait_volume(conn, volume_id, settle)
    return image


def volume_from_image(
    conn: Any, source: VolumeRef, image_id: str, volume_type: str | None, name: str | None = None
) -> Any:
    """Create (not wait for) a volume like ``source`` from image ``image_id`` on ``conn``."""
    return conn.block_storage.create_volume(
        size=source.size_gib,
        image_id=image_id,
        name=name if name is not None else source.name,
        description=source.description,
        volume_type=volume_type,
        metadata=dict(source.metadata),
    )


def delete_volume(conn: Any, volume_id: str) -> None:
    """Delete a volume (a missing one is fine) and wait until it is gone."""
    volume = conn.block_storage.find_volume(volume_id, ignore_missing=True)
    if volume is None:
        return
    if volume.status not in ("deleting",):
        wait_volume(conn, volume_id, ("available", "error", "error_restoring", "in-use"))
        conn.block_storage.delete_volume(volume_id, ignore_missing=True, force=True)
    conn.block_storage.wait_for_delete(volume, interval=1, wait=600)


def _destination_cloud(ctx: PassContext) -> str:
    return ctx.destination_cloud or str(ctx.destination_conn.config.name)


class ImageMethod:
    """Copy volumes through Glance images (see the module's docstring)."""

    name: ClassVar[str] = NAME
    supports_incremental: ClassVar[bool] = False

    def check(
        self,
        source: VolumeRef,
        storage: StorageMap,
        destination_cloud: str,
        destination_type: str | None,
    ) -> None:
        if source.status not in COPYABLE:
            raise CapabilityError(
                f"{source.label} is {source.status}; the image method copies available or "
                "in-use volumes only: wait for it or fix its status"
            )

    def _temporary(self, ctx: PassContext, side: str, purpose: str = "") -> Temporary:
        cloud = ctx.source.cloud if side == "source" else _destination_cloud(ctx)
        return Temporary(
            NAME, "image", cloud, temporary_name(ctx.source.id, ctx.run_id, purpose), {"side": side}
        )

    def copy_pass(self, ctx: PassContext) -> PassResult:
        source = ctx.source
        src, dst = ctx.source_conn, ctx.destination_conn
        # Cinder creates a volume in the token's project: work there for the volume.
        scoped = ctx.destination_project_conn or project_connection(
            dst, _destination_cloud(ctx), ctx.destination_project_id
        )
        if ctx.destination_id:  # an interrupted pass left a volume: replace it
            delete_volume(dst, ctx.destination_id)

        upload = self._temporary(ctx, "source")
        ctx.created(upload)
        src_image = upload_volume(src, source.id, upload.name, force=bool(source.attachments))
        ctx.stage("exported", source_image=src_image["id"])

        landing = self._temporary(ctx, "destination")
        ctx.created(landing)
        dst_image = create_image(dst.image, landing.name, ctx.destination_project_id)
        sink = HashingSink()
        parts: list[Destination] = [GlanceDestination(dst.image, dst_image["id"]), sink]
        if ctx.backup is not None:
            parts.append(ctx.backup)
        glance: Source = GlanceSource(src.image, src_image)
        moved = copy(
            glance,
            Tee(*parts),
            key=f"volume:{source.id}:image",
            journal=ctx.journal,
            progress=ctx.on_progress,
        )
        source_hash = image_digest(src_image)
        delete_images_named(src.image, upload.name)
        ctx.removed(upload)

        volume = volume_from_image(scoped, source, dst_image["id"], ctx.destination_type)
        ctx.stage("imported", destination_id=volume.id, destination_image=dst_image["id"])
        wait_volume(dst, volume.id, ("available",))
        dst.block_storage.set_volume_bootable_status(volume.id, source.bootable)
        delete_images_named(dst.image, landing.name)
        ctx.removed(landing)
        ctx.stage("adopted", destination_id=volume.id)

        verified_by = self._verify(ctx, scoped, volume.id, sink.content_digest, source_hash)
        ctx.stage(
            "verified",
            destination_id=volume.id,
            content_digest=sink.content_digest,
            verified_by=verified_by,
        )
        return PassResult(
            destination_id=str(volume.id),
            bytes_read=moved.bytes,
            bytes_sent=moved.bytes,
            bytes_wire=moved.bytes,
            content_digest=sink.content_digest,
            details={"verified_by": verified_by},
        )

    def _verify(
        self, ctx: PassContext, scoped: Any, volume_id: str, digest: str, source_hash: Digest | None
    ) -> str:
        dst = ctx.destination_conn
        cloud = _destination_cloud(ctx)
        host = dst.block_storage.get_volume(volume_id).host
        backend = backend_knows(ctx.storage, cloud, host)
        if backend is not None:
            found = volume_digest(backend, volume_id, ctx.source.size_bytes)
            if found != digest:
                raise IntegrityError(
                    f"{ctx.source.label}: the destination volume {volume_id} hashes to "
                    f"{found[:16]}..., not {digest[:16]}...; re-run to copy it again"
                )
            return describe(backend)
        check = self._temporary(ctx, "destination", "verify")
        ctx.created(check)
        try:
            image = upload_volume(scoped, volume_id, check.name, force=False, settle=("available",))
        finally:
            delete_images_named(dst.image, check.name)
            ctx.removed(check)
        stored = image_digest(image)
        if source_hash is None or stored != source_hash:
            raise IntegrityError(
                f"{ctx.source.label}: the destination volume {volume_id} uploads as "
                f"{stored.value[:16] if stored else 'nothing'}..., the source as "
                f"{source_hash.value[:16] if source_hash else 'nothing'}...; re-run to copy again"
            )
        return f"Glance {stored.algorithm} of both uploads"

    def remove_temporary(
        self, temporary: Temporary, source_conn: Any, destination_conn: Any, storage: StorageMap
    ) -> None:
        side = temporary.details.get("side")
        conn = source_conn if side == "source" else destination_conn
        if temporary.kind == "volume":  # a restore's volume, not verified: found by its marker
            from stackhop.volumes.restore import delete_marked_volumes

            delete_marked_volumes(conn, str(temporary.details["marker"]))
            return
        delete_images_named(conn.image, temporary.name)

    def forget_incremental(
        self, state: Mapping[str, Any], source_conn: Any, destination_conn: Any, storage: StorageMap
    ) -> None:
        return None
