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
   metadata plus the :data:`~stackhop.volumes.cinder_adopt.MARKER` (the
   orchestration records its ID at once);
4. **adopted** — it is ``available``; its bootable flag is set like the
   source's; the destination image is deleted;
5. **verified** — when the storage map knows the destination volume's
   backend, its bytes are read back there (:mod:`.readback`) and must hash to
   the digest of step 2; otherwise Cinder uploads the new volume to an image on
   the destination and its Glance hash must equal the source upload's.

**A copy made before** (the journal's destination ID of an interrupted pass,
or, the journal lost, the volume carrying the marker) is kept, never doubled:
the source image is read and hashed (not sent), the copy is read back (or
uploaded, and Glance's hashes compared) and, when it holds the same bytes,
it stays as it is; when it differs, the new image is written into it with
Cinder's re-image (microversion 3.68: same volume, same ID). Only a copy that
is not ``available``, or a Cinder without re-image, is replaced by a new
volume.

Both temporary images are named ``stackhop-volume-<source id>`` and
journaled before they are created, so ``volumes cleanup --run`` finds them by
name even when a crash came before their ID was known; and a pass removes
what is already under those names first (a killed run's, its journal lost),
on the destination as soon as the earlier copy has settled, whether the pass
then keeps that copy or not. The method keeps no
incremental state: every pass copies the whole volume (the preflight refuses
``--incremental`` with it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from openstack import exceptions as sdk_exceptions
from openstack import utils as sdk_utils

from stackhop.errors import CapabilityError, ConflictError, IntegrityError, TransientError
from stackhop.transfer.base import Chunk, Destination, Digest, Source, copy
from stackhop.transfer.glance import GlanceDestination, GlanceSource, get_image, image_digest
from stackhop.volumes import cinder_adopt
from stackhop.volumes.backup import ContentHasher, Tee
from stackhop.volumes.cinder_adopt import MARKER
from stackhop.volumes.inventory import project_connection, wait_volume
from stackhop.volumes.model import PassContext, PassResult, Temporary, VolumeRef
from stackhop.volumes.readback import backend_knows, describe, volume_digest
from stackhop.volumes.storage import StorageMap

NAME = "image"
COPYABLE = ("available", "in-use")
#: Statuses a volume leaves by itself (Cinder is still writing it).
SETTLING = ("creating", "downloading", "uploading", "extending")


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


def temporary_name(volume_id: str, purpose: str = "") -> str:
    """The name of a temporary image of this method: the source volume's, not the run's, so
    a pass finds and removes what a killed run whose journal is lost left under it."""
    suffix = f"-{purpose}" if purpose else ""
    return f"stackhop-volume-{volume_id}{suffix}"


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
    conn: Any,
    source: VolumeRef,
    image_id: str,
    volume_type: str | None,
    name: str | None = None,
    *,
    marker: Mapping[str, str] | None = None,
) -> Any:
    """Create (not wait for) a volume like ``source`` from image ``image_id`` on ``conn``;
    ``marker``: metadata added to the source's."""
    return conn.block_storage.create_volume(
        size=source.size_gib,
        image_id=image_id,
        name=name if name is not None else source.name,
        description=source.description,
        volume_type=volume_type,
        metadata={**source.metadata, **(marker or {})},
    )


REIMAGE_VERSION = "3.68"
"""The Block Storage microversion of ``os-reimage`` (Yoga)."""


def reimage(conn: Any, volume_id: str, image_id: str) -> bool:
    """Write image ``image_id`` into volume ``volume_id`` in place (Cinder's re-image) and
    wait until it is available; False, doing nothing, when the Cinder is too old for it."""
    if not sdk_utils.supports_microversion(conn.block_storage, REIMAGE_VERSION):
        return False
    response = conn.block_storage.post(
        f"/volumes/{volume_id}/action",
        json={"os-reimage": {"image_id": image_id, "reimage_reserved": False}},
        microversion=REIMAGE_VERSION,
    )
    sdk_exceptions.raise_from_response(response)
    # The API has set ``downloading`` before answering: wait for the end of the write.
    wait_volume(conn, volume_id, ("available",))
    return True


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
        # An upload still running (a killed run's, an answer lost) ends by itself: the
        # pass waits for it.
        if source.status not in COPYABLE + ("uploading",):
            raise CapabilityError(
                f"{source.label} is {source.status}; the image method copies available or "
                "in-use volumes only: wait for it or fix its status"
            )

    def _temporary(self, ctx: PassContext, side: str, purpose: str = "") -> Temporary:
        cloud = ctx.source.cloud if side == "source" else _destination_cloud(ctx)
        return Temporary(
            NAME, "image", cloud, temporary_name(ctx.source.id, purpose), {"side": side}
        )

    def copy_pass(self, ctx: PassContext) -> PassResult:
        source = ctx.source
        src, dst = ctx.source_conn, ctx.destination_conn
        # Cinder creates a volume in the token's project: work there for the volume.
        scoped = ctx.destination_project_conn or project_connection(
            dst, _destination_cloud(ctx), ctx.destination_project_id
        )
        earlier = self._earlier_copy(ctx)
        # What a killed run left on the destination (its journal lost), now that the volumes
        # it was making have settled: a pass that keeps its copy never reaches the landing
        # step, which removes it otherwise.
        for purpose in ("", "verify"):
            delete_images_named(dst.image, temporary_name(source.id, purpose))

        upload = self._temporary(ctx, "source")
        ctx.created(upload)
        # An upload whose answer was lost (or a killed run's) may still run: let it end,
        # then remove what it made (a killed run's image too, its journal lost).
        wait_volume(src, source.id, COPYABLE)
        delete_images_named(src.image, upload.name)
        src_image = upload_volume(src, source.id, upload.name, force=bool(source.attachments))
        ctx.stage("exported", source_image=src_image["id"])
        source_hash = image_digest(src_image)
        glance: Source = GlanceSource(src.image, src_image)

        backed_up = False
        if earlier is not None:
            # Read and hash the source only (and back it up): is the copy already equal?
            digest, read = self._hash_source(ctx, glance)
            backed_up = ctx.backup is not None
            same = self._matches(ctx, scoped, earlier, digest, source_hash)
            if same is not None:
                delete_images_named(src.image, upload.name)
                ctx.removed(upload)
                return self._kept(ctx, earlier, digest, same, read)

        landing = self._temporary(ctx, "destination")
        ctx.created(landing)
        delete_images_named(dst.image, landing.name)
        dst_image = create_image(dst.image, landing.name, ctx.destination_project_id)
        sink, moved = self._read_source(
            ctx, glance, GlanceDestination(dst.image, dst_image["id"]), backup=not backed_up
        )
        delete_images_named(src.image, upload.name)
        ctx.removed(upload)

        if earlier is not None and reimage(scoped, earlier, dst_image["id"]):
            volume_id = earlier
            ctx.stage(
                "imported",
                destination_id=volume_id,
                destination_image=dst_image["id"],
                reimaged=True,
            )
            cinder_adopt.sync_volume_fields(ctx, volume_id)
        else:
            if earlier is not None:
                delete_volume(dst, earlier)  # a Cinder without re-image: replaced
            volume = volume_from_image(
                scoped, source, dst_image["id"], ctx.destination_type, marker={MARKER: source.id}
            )
            volume_id = str(volume.id)
            ctx.stage("imported", destination_id=volume_id, destination_image=dst_image["id"])
            wait_volume(dst, volume_id, ("available",))
            dst.block_storage.set_volume_bootable_status(volume_id, source.bootable)
        delete_images_named(dst.image, landing.name)
        ctx.removed(landing)
        ctx.stage("adopted", destination_id=volume_id)

        verified_by = self._matches(ctx, scoped, volume_id, sink.content_digest, source_hash)
        if verified_by is None:
            raise IntegrityError(
                f"{ctx.source.label}: the destination volume {volume_id} does not hold the "
                "source's bytes after the copy; re-run to copy it again"
            )
        ctx.stage(
            "verified",
            destination_id=volume_id,
            content_digest=sink.content_digest,
            verified_by=verified_by,
        )
        return PassResult(
            destination_id=volume_id,
            bytes_read=moved.bytes,
            bytes_sent=moved.bytes,
            bytes_wire=moved.bytes,
            content_digest=sink.content_digest,
            details={"verified_by": verified_by},
        )

    def _earlier_copy(self, ctx: PassContext) -> str | None:
        """The copy an earlier pass made, to keep: the journal's (an interrupted pass) or,
        the journal lost, the oldest carrying the marker; ``available``, in the destination
        project, big enough.

        Deleted: the journal's copy when it cannot be kept and is not attached (as an
        interrupted pass's always was) and marked copies whose creation failed. A marked
        copy attached to a server is never touched: with nothing to keep, the pass stops
        and says so rather than make a second copy.
        """
        dst = ctx.destination_conn
        copies = cinder_adopt.previous_copies(dst, ctx.source.id, ctx.destination_id)
        if any(v.status in SETTLING for v in copies):
            # A create whose answer was lost is still writing the image: let it finish.
            for volume in copies:
                if volume.status in SETTLING:
                    with contextlib.suppress(IntegrityError):
                        wait_volume(dst, str(volume.id), ("available", "in-use"))
            copies = cinder_adopt.previous_copies(dst, ctx.source.id, ctx.destination_id)

        def usable(volume: Any) -> bool:
            return (
                volume.status == "available"
                and volume.project_id == ctx.destination_project_id
                and int(volume.size or 0) >= ctx.source.size_gib
            )

        journaled = [v for v in copies if v.id == ctx.destination_id and usable(v)]
        others = sorted((v for v in copies if usable(v)), key=lambda v: str(v.created_at))
        keep = (journaled or others or [None])[0]
        for volume in copies:
            if keep is not None and volume.id == keep.id:
                continue
            if (volume.id == ctx.destination_id and not volume.attachments) or str(
                volume.status
            ).startswith("error"):
                delete_volume(dst, str(volume.id))
        if keep is None:
            attached = [str(v.id) for v in copies if v.attachments]
            if attached:
                raise ConflictError(
                    f"{ctx.source.label}: its copy on the destination, volume {attached[0]}, "
                    "is attached to a server; detach it to copy again, or leave the volume out"
                )
        return None if keep is None else str(keep.id)

    def _hash_source(self, ctx: PassContext, glance: Source) -> tuple[str, int]:
        """The source image's content digest (and the backup, if asked), sending nothing."""
        sink, moved = self._read_source(ctx, glance)
        return sink.content_digest, moved.bytes

    def _read_source(
        self, ctx: PassContext, glance: Source, *into: Destination, backup: bool = True
    ) -> tuple[HashingSink, Any]:
        """Read the source upload once into ``into``, hashed, and into the backup if asked."""
        sink = HashingSink()
        parts: list[Destination] = [*into, sink]
        if backup and ctx.backup is not None:
            parts.append(ctx.backup)
        moved = copy(
            glance,
            Tee(*parts),
            key=f"volume:{ctx.source.id}:image",
            journal=ctx.journal,
            progress=ctx.on_progress,
        )
        return sink, moved

    def _kept(
        self, ctx: PassContext, volume_id: str, digest: str, verified_by: str, read: int
    ) -> PassResult:
        """The result of a pass that found its earlier copy equal to the source."""
        cinder_adopt.sync_volume_fields(ctx, volume_id)
        ctx.stage("imported", destination_id=volume_id, reused=True)
        ctx.stage("adopted", destination_id=volume_id)
        ctx.stage(
            "verified",
            destination_id=volume_id,
            content_digest=digest,
            verified_by=verified_by,
            reused=True,
        )
        return PassResult(
            destination_id=volume_id,
            bytes_read=read,
            bytes_sent=0,
            bytes_wire=0,
            content_digest=digest,
            details={"verified_by": verified_by, "reused": True},
        )

    def _matches(
        self, ctx: PassContext, scoped: Any, volume_id: str, digest: str, source_hash: Digest | None
    ) -> str | None:
        """How the destination volume was found to hold the source's bytes, or None when it
        does not: read back where the storage map knows its backend, else uploaded to
        Glance and its hash compared with the source upload's."""
        dst = ctx.destination_conn
        cloud = _destination_cloud(ctx)
        host = dst.block_storage.get_volume(volume_id).host
        backend = backend_knows(ctx.storage, cloud, host)
        if backend is not None:
            found = volume_digest(backend, volume_id, ctx.source.size_bytes)
            return describe(backend) if found == digest else None
        check = self._temporary(ctx, "destination", "verify")
        ctx.created(check)
        delete_images_named(dst.image, check.name)
        try:
            image = upload_volume(scoped, volume_id, check.name, force=False, settle=("available",))
        finally:
            delete_images_named(dst.image, check.name)
            ctx.removed(check)
        stored = image_digest(image)
        if source_hash is None or stored != source_hash:
            return None
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
