"""A Glance RBD store's pool, written the way glance_store's RBD driver writes it.

An image's data is the RBD image named after the image ID in the store's
pool, with a protected snapshot ``snap``; Glance's location for it is
``rbd://<fsid>/<pool>/<image>/snap``, each part URL-quoted (glance_store
``_drivers/rbd.py``: ``StoreLocation.get_uri``, ``Store._create_image``,
``DEFAULT_SNAPNAME``). When Glance removes such a location it unprotects and
removes the snapshot and then the image, so data written here is Glance's
to delete once its location is added.

The pool is reached with librbd in this process (the volumes' connection
pool, :class:`stackhop.transfer.rbd_lib.LibRbdCluster`), as the storage map's
``glance-<store>`` entry of the cloud says (docs/images.md).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stackhop.errors import CapabilityError, ConfigError, IntegrityError
from stackhop.transfer.base import DEFAULT_CHUNK_SIZE, Chunk, Digest
from stackhop.transfer.rbd_lib import LibRbdCluster, available
from stackhop.transfer.rbd_lib_io import bindings, read_pieces
from stackhop.volumes.storage import StorageMap

SNAPSHOT = "snap"
"""The snapshot glance_store's RBD driver makes and protects on every image it writes."""


def storage_entry(store: str) -> str:
    """The storage map's backend name for Glance store ``store`` (``glance-rbd``)."""
    return f"glance-{store}"


def location_url(fsid: str, pool: str, image: str, snap: str = SNAPSHOT) -> str:
    """Glance's RBD location of ``pool/image@snap`` on cluster ``fsid``."""
    parts = (urllib.parse.quote(p, safe="") for p in (fsid, pool, image, snap))
    return "rbd://" + "/".join(parts)


@dataclass(frozen=True)
class ImageState:
    """What the pool holds for one image: nothing, a partial write, or a finished copy."""

    exists: bool
    complete: bool  # the protected snapshot is there: the write finished


class GlanceRbdStore:
    """One cloud's Glance RBD pool, as the storage map reaches it."""

    def __init__(self, cluster: LibRbdCluster) -> None:
        self.cluster = cluster

    @classmethod
    def from_storage_map(cls, storage: StorageMap, cloud: str, store: str) -> GlanceRbdStore:
        """The pool behind store ``store`` of ``cloud``; ConfigError naming what to add."""
        backend = storage.backend(cloud, storage_entry(store))
        if backend.driver != "rbd" or not backend.pool:
            raise ConfigError(
                f"storage map {storage.source}: {cloud}.{storage_entry(store)} must be an rbd "
                "entry with a pool (see docs/images.md)"
            )
        if backend.ssh_host:
            raise CapabilityError(
                cloud=cloud, feature="an RBD pool reachable from here",
                detail=f"{storage_entry(store)} names ssh_host {backend.ssh_host}; moving "
                "images by location writes with librbd on this machine",
            )
        if not available():
            raise CapabilityError(
                cloud=cloud, feature="librbd here",
                detail="the rados/rbd Python bindings do not import; apt-get install "
                "python3-rbd python3-rados and make them importable (docs/images.md)",
            )
        return cls(LibRbdCluster(cloud=cloud, pool=backend.pool, ceph_conf=backend.ceph_conf,
                                 keyring=backend.keyring, user=backend.user))

    @property
    def pool(self) -> str:
        return self.cluster.pool

    def fsid(self) -> str:
        # The shared connection of the pool's cluster (opened on first use).
        return str(self.cluster._cluster().get_fsid())

    def location(self, image_id: str) -> str:
        return location_url(self.fsid(), self.pool, image_id)

    def owns(self, url: str, image_id: str) -> bool:
        """Whether ``url`` is this pool's location of ``image_id`` (whatever quoting)."""
        if not url.startswith("rbd://"):
            return False
        parts = [urllib.parse.unquote(p) for p in url[len("rbd://"):].split("/")]
        return parts == [self.fsid(), self.pool, image_id, SNAPSHOT]

    def state(self, image_id: str) -> ImageState:
        _, rbd = bindings()
        with self.cluster.ioctx() as ioctx:
            try:
                with self.cluster.open_image(ioctx, image_id, read_only=True) as handle:
                    snaps = [s["name"] for s in handle.list_snaps()]
                    complete = SNAPSHOT in snaps and bool(handle.is_protected_snap(SNAPSHOT))
                    return ImageState(exists=True, complete=complete)
            except rbd.ImageNotFound:
                return ImageState(exists=False, complete=False)
            except rbd.Error as exc:
                raise self.cluster.failed(f"info {self.cluster.spec(image_id)}", exc) from exc

    def remove(self, image_id: str) -> None:
        """Remove the image and its snapshots (unprotecting them); a missing one is fine."""
        _, rbd = bindings()
        with self.cluster.ioctx() as ioctx:
            try:
                with self.cluster.open_image(ioctx, image_id, read_only=False) as handle:
                    for snap in list(handle.list_snaps()):
                        if handle.is_protected_snap(snap["name"]):
                            handle.unprotect_snap(snap["name"])
                        handle.remove_snap(snap["name"])
                rbd.RBD().remove(ioctx, image_id)
            except rbd.ImageNotFound:
                return
            except rbd.Error as exc:
                raise self.cluster.failed(f"rm {self.cluster.spec(image_id)}", exc) from exc

    def images(self) -> list[str]:
        """Every image name in the pool (the tests look for orphans with it)."""
        _, rbd = bindings()
        with self.cluster.ioctx() as ioctx:
            return [str(n) for n in rbd.RBD().list(ioctx)]

    def destination(self, image_id: str) -> RbdImageDestination:
        return RbdImageDestination(self, image_id)

    def read(self, image_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """The data of ``image@snap`` in order (holes read as zeros)."""
        _, rbd = bindings()
        with self.cluster.ioctx() as ioctx:
            try:
                handle = self.cluster.open_image(ioctx, image_id, SNAPSHOT, read_only=True)
            except rbd.Error as exc:
                raise self.cluster.failed(f"open {self.cluster.spec(image_id, SNAPSHOT)}",
                                          exc) from exc
            try:
                size = int(handle.size())
                pieces = ((o, min(chunk_size, size - o)) for o in range(0, size, chunk_size))
                for _, data in read_pieces(handle, pieces):
                    yield data
            except rbd.Error as exc:
                raise self.cluster.failed(f"read {self.cluster.spec(image_id, SNAPSHOT)}",
                                          exc) from exc
            finally:
                handle.close()

    def check(self, image_id: str, declared: Digest, checksum: str | None, size: int) -> None:
        """Read ``image@snap`` back and compare size, ``declared`` digest and md5 checksum.

        IntegrityError when anything differs (the caller removes the image).
        """
        whole = hashlib.new(declared.algorithm)
        md5 = hashlib.md5(usedforsecurity=False) if checksum else None
        length = 0
        for data in self.read(image_id):
            whole.update(data)
            if md5 is not None:
                md5.update(data)
            length += len(data)
        wrong = []
        if length != size:
            wrong.append(f"{length} bytes, not {size}")
        if whole.hexdigest() != declared.value:
            wrong.append(f"{declared.algorithm} {whole.hexdigest()[:16]}..., not "
                         f"{declared.value[:16]}...")
        if md5 is not None and md5.hexdigest() != checksum:
            wrong.append(f"md5 {md5.hexdigest()}, not {checksum}")
        if wrong:
            raise IntegrityError(
                f"image {image_id}: the copy in {self.cluster.spec(image_id, SNAPSHOT)} read "
                f"back as {'; '.join(wrong)}; it was removed and the image keeps its original "
                "location, re-run to copy it again"
            )


ZERO_BLOCK = 64 * 1024
"""Granularity of the holes left in a written image: all-zero blocks of this size."""
_ZEROS = bytes(ZERO_BLOCK)


def nonzero_runs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` of ``data`` without its all-zero :data:`ZERO_BLOCK` blocks.

    A new RBD image reads zeros where nothing was written, so those blocks
    need no write (and take no space); adjacent data blocks go as one write.
    """
    view = memoryview(data)
    start: int | None = None
    for offset in range(0, len(data), ZERO_BLOCK):
        block = view[offset:offset + ZERO_BLOCK]
        zero = block == _ZEROS[:len(block)]
        if zero and start is not None:
            yield start, bytes(view[start:offset])
            start = None
        elif not zero and start is None:
            start = offset
    if start == 0:
        yield 0, data  # no hole: no copy
    elif start is not None:
        yield start, bytes(view[start:])


class RbdImageDestination:
    """A transfer destination writing the RBD image ``image_id`` as Glance would.

    Created at :meth:`open` (an earlier partial image must be removed first),
    all-zero chunks left as holes, then snapshot ``snap`` made and protected at
    :meth:`commit`. :meth:`abort` removes the image. The read-back check is
    :meth:`GlanceRbdStore.check`, a separate step of the move.
    """

    durable_chunks = False  # a resumed move writes the image again from the start

    def __init__(self, store: GlanceRbdStore, image_id: str) -> None:
        self.store = store
        self.image_id = image_id
        self._ioctx: Any = None
        self._handle: Any = None

    def open(self, size: int | None) -> None:
        _, rbd = bindings()
        if size is None:
            raise IntegrityError(f"image {self.image_id}: Glance declares no size")
        cluster = self.store.cluster
        self._ioctx = cluster.ioctx()
        try:
            # Features from the cluster's rbd_default_features, as Glance's driver does.
            rbd.RBD().create(self._ioctx, self.image_id, size, old_format=False)
            self._handle = cluster.open_image(self._ioctx, self.image_id, read_only=False)
        except rbd.Error as exc:
            self._close()
            raise cluster.failed(f"create {cluster.spec(self.image_id)}", exc) from exc

    def write(self, chunk: Chunk) -> None:
        _, rbd = bindings()
        try:
            for offset, data in nonzero_runs(chunk.data):
                self._handle.write(data, chunk.offset + offset)
        except rbd.Error as exc:
            raise self.store.cluster.failed(
                f"write {self.store.cluster.spec(self.image_id)}", exc) from exc

    def commit(self) -> None:
        _, rbd = bindings()
        try:
            self._handle.flush()
            self._handle.create_snap(SNAPSHOT)
            self._handle.protect_snap(SNAPSHOT)
        except rbd.Error as exc:
            raise self.store.cluster.failed(
                f"snap {self.store.cluster.spec(self.image_id, SNAPSHOT)}", exc) from exc
        finally:
            self._close()

    def abort(self, reason: BaseException) -> None:
        self._close()
        self.store.remove(self.image_id)

    def verify(self, digest: Digest) -> None:
        return None  # the move reads the snapshot back in its own step (GlanceRbdStore.check)

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._ioctx is not None:
            self._ioctx.close()
            self._ioctx = None
