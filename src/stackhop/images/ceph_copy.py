"""Cross-cloud image copies Ceph to Ceph, when both Glances keep the image in RBD.

The API stream (download from the source Glance, upload into the
destination Glance) moves every byte through two Glance processes. When the
source image is in an RBD store of the source Glance, the destination store
is an RBD store too, and the storage map reaches both pools
(``glance-<store>`` entries), the data goes from pool to pool instead:

1. the destination image record is made as for the API stream (every
   attribute, the ``stackhop_source`` marker, ``--keep-id``), ``queued``;
2. the source's ``<pool>/<source id>@snap`` (glance_store's layout) is read
   as a diff from nothing (allocated extents only, like ``rbd export-diff``)
   and applied to a new ``<pool>/<destination id>`` on the destination
   cluster, ending in snapshot ``snap``, which is then protected;
3. the location is attached with ``POST /v2/images/{id}/locations`` (Glance
   2024.2 and later, ``queued`` images, the ``service`` role: the
   ``--location-cloud`` connection) with the source's ``os_hash_value`` as
   validation data: Glance reads the copy, computes its own hash and md5,
   compares and makes the image ``active``; stackhop then compares the md5
   ``checksum`` with the source's. A Glance that does not hash
   (``do_secure_hash = False``: no checksum) gets the copy read back with
   librbd instead. Any mismatch removes the RBD copy (the record stays
   ``queued`` without data, so a re-run copies into it again under the same
   ID). ``hash_stream=True`` also hashes the diff as it passes (holes as
   zeros), before Glance sees it;
4. members and protection are set as for the API stream.

Anything missing (no storage map entry, the image not in the RBD store,
no ``--location-cloud``) falls back to the API stream, with an event saying why.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openstack import exceptions as sdk_exceptions

from stackhop.errors import CapabilityError, IntegrityError
from stackhop.events import Event, EventType
from stackhop.images.rbd_store import SNAPSHOT, GlanceRbdStore
from stackhop.kinds.base import Connection
from stackhop.kinds.image import Image
from stackhop.transfer.base import Digest
from stackhop.transfer.glance import get_image
from stackhop.transfer.rbd_access import copy_diff
from stackhop.transfer.rbd_diff import DiffHeader, Record, WriteExtent
from stackhop.transfer.rbd_lib_io import bindings

PIECE = 4 * 1024 * 1024
ATTACH_TIMEOUT = 3600.0


class StreamHasher:
    """The whole image's digest and md5 from a diff from nothing, holes hashed as zeros."""

    def __init__(self, algorithm: str, size: int) -> None:
        self.size = size
        self.whole = hashlib.new(algorithm)
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.position = 0
        self.in_order = True

    def _zeros(self, length: int) -> None:
        while length > 0:
            n = min(length, len(_ZEROS))
            self.whole.update(_ZEROS[:n])
            self.md5.update(_ZEROS[:n])
            length -= n

    def record(self, header: DiffHeader, record: Record) -> None:
        if record.offset < self.position:
            self.in_order = False  # overlapping records: read the copy back instead
        if not self.in_order:
            return
        self._zeros(record.offset - self.position)
        if isinstance(record, WriteExtent):
            self.whole.update(record.data)
            self.md5.update(record.data)
        else:
            self._zeros(record.length)
        self.position = record.offset + record.length

    def check(self, image_id: str, digest: Digest, checksum: str | None) -> None:
        self._zeros(self.size - self.position)
        self.position = self.size
        wrong = []
        if self.whole.hexdigest() != digest.value:
            wrong.append(f"{digest.algorithm} {self.whole.hexdigest()[:16]}..., not "
                         f"{digest.value[:16]}...")
        if checksum and self.md5.hexdigest() != checksum:
            wrong.append(f"md5 {self.md5.hexdigest()}, not {checksum}")
        if wrong:
            raise IntegrityError(f"image {image_id}: the data read from the source pool hashes "
                                 f"to {'; '.join(wrong)}; the copy is being removed")


_ZEROS = memoryview(bytes(PIECE))


@dataclass(frozen=True)
class CephRoute:
    """The two RBD pools of a Ceph-to-Ceph copy, and who may attach locations on the destination."""

    source: GlanceRbdStore
    source_store: str
    destination: GlanceRbdStore
    #: ``conn.image`` of a destination connection with Glance's ``service`` role.
    locations: Any


class CephImage(Image):
    """The image kind, copying data pool to pool where :class:`CephRoute` allows."""

    def __init__(self, source: Connection | None, route: CephRoute, *,
                 hash_stream: bool = False, **kwargs: Any) -> None:
        super().__init__(source, **kwargs)
        self.route = route
        #: Also hash the diff as it passes (Glance hashes the attached copy anyway).
        self.hash_stream = hash_stream

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        why_not = self._why_not(record)
        if why_not:
            self._note(record, f"API stream: {why_not}")
            return super().create(conn, record)
        image_id = self._left_over(conn, record) or self._create_record(conn, record)
        self._protect_and_share(conn, image_id, record)  # before the data: see Image.create
        self._note(record, f"Ceph to Ceph into {self.route.destination.cluster.spec(image_id)}")
        destination = self.route.destination
        destination.remove(image_id)  # a partial copy of a killed run (never attached: queued)
        digest = Digest(str(record["os_hash_algo"]), str(record["os_hash_value"]))
        size = int(record["size"])
        try:
            hasher = StreamHasher(digest.algorithm, size) if self.hash_stream else None
            self._copy_pool_to_pool(str(record["id"]), image_id, size, hasher)
            if hasher is not None and hasher.in_order:
                hasher.check(image_id, digest, record.get("checksum"))
            attached = self._attach(image_id, digest)
            if attached.get("checksum") != record.get("checksum"):
                if attached.get("checksum") is not None:
                    raise IntegrityError(f"image {image_id}: Glance hashed the attached copy to "
                                         f"md5 {attached.get('checksum')}, not "
                                         f"{record.get('checksum')}")
                # Glance did not hash it (do_secure_hash = False): read it back ourselves.
                destination.check(image_id, digest, record.get("checksum"), size)
        except BaseException:
            if (get_image(conn.image, image_id) or {}).get("status") != "active":
                # The record stays queued, without data: a re-run finds it by its marker
                # and copies into it again, so --keep-id keeps its ID (Glance never
                # re-uses the ID of a deleted image).
                destination.remove(image_id)
            raise
        return image_id

    def _why_not(self, record: Mapping[str, Any]) -> str:
        if self.route.source_store not in (record.get("stores") or []):
            return f"not in the source's {self.route.source_store} store"
        if not record.get("os_hash_value") or not record.get("size"):
            return "the source declares no hash or size"
        if not self.route.source.state(str(record["id"])).complete:
            return (f"no {self.route.source.cluster.spec(str(record['id']), SNAPSHOT)} in the "
                    "source pool")
        return ""

    def _copy_pool_to_pool(self, source_id: str, image_id: str, size: int,
                           hasher: StreamHasher | None) -> None:
        source, destination = self.route.source.cluster, self.route.destination.cluster
        destination.create_image(image_id, size)
        progress_total = size

        def progress(done: int) -> None:
            self.events.emit(Event(EventType.PROGRESS, kind=self.name, identity=image_id,
                                   operation="ceph copy", done=done, total=progress_total,
                                   unit="bytes"))

        copy_diff(source.export_diff(source_id, SNAPSHOT), destination.import_diff(image_id),
                  chunk=PIECE, on_progress=progress,
                  hooks=[hasher.record] if hasher is not None else [])
        _, rbd = bindings()
        with destination.ioctx() as ioctx, destination.open_image(
                ioctx, image_id, read_only=False) as handle:
            try:
                handle.protect_snap(SNAPSHOT)
            except rbd.Error as exc:
                raise destination.failed(f"snap protect {destination.spec(image_id, SNAPSHOT)}",
                                         exc) from exc

    def _attach(self, image_id: str, digest: Digest) -> dict[str, Any]:
        service = self.route.locations
        body = {"url": self.route.destination.location(image_id),
                "validation_data": {"os_hash_algo": digest.algorithm,
                                    "os_hash_value": digest.value}}
        response = service.post(f"/images/{image_id}/locations", json=body)
        if response.status_code in (404, 405):
            raise CapabilityError(
                cloud="destination", feature="POST /v2/images/{id}/locations (Glance 2024.2+)",
                detail="copy without --location-cloud to use the API stream",
            )
        sdk_exceptions.raise_from_response(response)
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while time.monotonic() < deadline:
            image = get_image(service, image_id) or {}
            status = image.get("status")
            if status == "active":
                if image.get("os_hash_value") != digest.value:
                    raise IntegrityError(f"image {image_id}: Glance hashed the attached copy to "
                                         f"{str(image.get('os_hash_value'))[:16]}...")
                return image
            if status == "queued" and not image.get("os_glance_import_task"):
                # Glance takes its task lock before answering the POST: the task is over
                # and did not activate the image, so the validation data did not match.
                raise IntegrityError(f"image {image_id}: Glance refused the attached copy "
                                     "(its hash did not match); it is being removed")
            if status not in ("queued", "importing", "saving"):
                raise IntegrityError(f"image {image_id}: Glance left the attached copy {status}")
            time.sleep(0.5)
        raise IntegrityError(f"image {image_id}: Glance did not activate the attached copy "
                             f"within {ATTACH_TIMEOUT:.0f} s")

    def _note(self, record: Mapping[str, Any], message: str) -> None:
        self.events.emit(Event(EventType.INFO, kind=self.name, identity=self.identity(record),
                               operation="route", message=message))
