"""RBD pools reached with librbd in this process (Debian's ``rados``/``rbd`` bindings).

No process start and no new cluster connection per operation: one
``rados.Rados`` per cluster (conf, keyring, client id) is opened on first use
and kept for the life of the process, which is what takes an incremental
pass's fixed cost from seconds to milliseconds. librbd's ``read``/``write``
and ``hashlib`` release the GIL, so reading, hashing and writing overlap on
threads.

Diffs are read and applied, and chunks hashed, by :mod:`stackhop.transfer.rbd_lib_io`.

When the bindings are missing (:func:`available` is false),
:func:`stackhop.transfer.rbd.open_cluster` falls back to the ``rbd`` tools.
"""

from __future__ import annotations

import atexit
import ctypes
import threading
from dataclasses import dataclass
from typing import Any

from stackhop.transfer.rbd_access import RbdError, once_unwatched
from stackhop.transfer.rbd_diff import ChunkDigests
from stackhop.transfer.rbd_lib_io import (
    LibDiffReader,
    LibDiffSink,
    available,
    bindings,
    hash_chunks,
)

__all__ = ["LibRbdCluster", "available"]

CONNECT_TIMEOUT = 30

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter numbers (malloc.h)."""

MALLOC_MMAP_THRESHOLD = 32 << 20
"""Allocations from this size up get a mapping of their own; the 4 MiB buffers do not."""

MALLOC_TRIM_THRESHOLD = 8 << 20
"""Free memory above this at the top of the heap goes back to the system."""


def _reuse_large_buffers() -> None:
    """Have glibc reuse the freed 4 MiB buffers from one heap, and give back what it holds.

    A copy moves hundreds of 4 MiB buffers per GiB through Python and librados threads
    (librados' receive buffers, the ``bytes`` of each read, librbd's copy of each write).
    glibc's defaults keep them in one arena per thread, which took the process from 190 to
    290 MB on a 1 GiB copy here. Serving them with a mapping each (the earlier cure) costs
    a page fault per 4 KiB and a TLB shootdown per buffer: 35 % of the process's CPU time
    (1.1 of 3.3 s per GiB copied, perf). One arena, no mapping below 32 MiB and a fixed trim
    threshold reuse the buffers without faults and keep the peak at the same ~190 MB.
    Only threads that allocate after this call share the one arena (librados starts its
    own on connect, after it). Elsewhere than glibc there is no ``mallopt``: nothing to do.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt(_M_ARENA_MAX, 1)
    mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)


_connections: dict[tuple[str | None, str | None, str | None], Any] = {}
_connections_lock = threading.Lock()


def _shutdown_all() -> None:
    with _connections_lock:
        for cluster in _connections.values():
            cluster.shutdown()
        _connections.clear()


atexit.register(_shutdown_all)


@dataclass(frozen=True)
class LibRbdCluster:
    """One Ceph cluster's pool, reached with librbd in-process."""

    cloud: str
    pool: str
    ceph_conf: str | None = None
    keyring: str | None = None
    user: str | None = None

    @property
    def where(self) -> str:
        return f"cloud {self.cloud!r} (pool {self.pool})"

    def spec(self, image: str, snap: str | None = None) -> str:
        return f"{self.pool}/{image}" + (f"@{snap}" if snap else "")

    # -- connection --------------------------------------------------------------

    def _cluster(self) -> Any:
        rados, _ = bindings()
        key = (self.ceph_conf, self.keyring, self.user)
        with _connections_lock:
            cluster = _connections.get(key)
            if cluster is not None:
                return cluster
            # No client cache: a bulk copy reads and writes each byte once, and librbd's
            # cache halves the throughput of large sequential reads (measured here).
            conf = {"rbd_cache": "false"}
            if not _connections:
                _reuse_large_buffers()
            if self.keyring:
                conf["keyring"] = self.keyring
            try:
                cluster = rados.Rados(
                    conffile=self.ceph_conf or "", rados_id=self.user or "admin", conf=conf
                )
                cluster.connect(timeout=CONNECT_TIMEOUT)
            except rados.Error as exc:
                raise RbdError(
                    f"cannot connect to the Ceph cluster of {self.where} ({exc}); check "
                    "ceph_conf, keyring and user in the storage map, and the cluster's health"
                ) from exc
            _connections[key] = cluster
            return cluster

    def ioctx(self) -> Any:
        """A new I/O context on the pool (cheap: the connection is shared)."""
        rados, _ = bindings()
        try:
            return self._cluster().open_ioctx(self.pool)
        except rados.ObjectNotFound as exc:
            raise RbdError(
                f"pool {self.pool!r} does not exist on {self.where}; fix the storage map"
            ) from exc

    def failed(self, what: str, exc: Exception) -> RbdError:
        """The one-line error for a librbd call ``what`` that raised ``exc``."""
        return RbdError(f"rbd {what} on {self.where} failed: {exc}")

    def open_image(
        self, ioctx: Any, image: str, snap: str | None = None, *, read_only: bool
    ) -> Any:
        """An ``rbd.Image`` of ``image`` (at ``snap``); the caller closes it."""
        _, rbd = bindings()
        return rbd.Image(ioctx, image, snapshot=snap, read_only=read_only)

    # -- images and snapshots ----------------------------------------------------

    def size(self, image: str) -> int | None:
        _, rbd = bindings()
        with self.ioctx() as ioctx:
            try:
                with self.open_image(ioctx, image, read_only=True) as handle:
                    return int(handle.size())
            except rbd.ImageNotFound:
                return None
            except rbd.Error as exc:
                raise self.failed(f"info {self.spec(image)}", exc) from exc

    def snapshots(self, image: str) -> list[str]:
        _, rbd = bindings()
        with self.ioctx() as ioctx:
            try:
                with self.open_image(ioctx, image, read_only=True) as handle:
                    return [str(s["name"]) for s in handle.list_snaps()]
            except rbd.ImageNotFound:
                return []
            except rbd.Error as exc:
                raise self.failed(f"snap ls {self.spec(image)}", exc) from exc

    def create_snapshot(self, image: str, snap: str) -> None:
        _, rbd = bindings()
        with self.ioctx() as ioctx:
            try:
                with self.open_image(ioctx, image, read_only=False) as handle:
                    handle.create_snap(snap)
            except rbd.Error as exc:
                raise self.failed(f"snap create {self.spec(image, snap)}", exc) from exc

    def remove_snapshot(self, image: str, snap: str) -> None:
        _, rbd = bindings()
        with self.ioctx() as ioctx:
            try:
                with self.open_image(ioctx, image, read_only=False) as handle:
                    handle.remove_snap(snap)
            except rbd.ImageNotFound:
                return  # the image, or the snapshot, is already gone
            except rbd.Error as exc:
                raise self.failed(f"snap rm {self.spec(image, snap)}", exc) from exc

    def create_image(self, image: str, size: int) -> None:
        _, rbd = bindings()
        with self.ioctx() as ioctx:
            try:
                # Features from the cluster's rbd_default_features, as ``rbd create`` does.
                rbd.RBD().create(ioctx, image, size, old_format=False)
            except rbd.Error as exc:
                raise self.failed(f"create {self.spec(image)}", exc) from exc

    def remove_image(self, image: str) -> None:
        _, rbd = bindings()
        with self.ioctx() as ioctx:
            try:
                with self.open_image(ioctx, image, read_only=False) as handle:
                    for snap in list(handle.list_snaps()):
                        handle.remove_snap(snap["name"])
                once_unwatched(
                    lambda: rbd.RBD().remove(ioctx, image),
                    lambda exc: isinstance(exc, rbd.ImageBusy),
                )
            except rbd.ImageNotFound:
                return
            except rbd.Error as exc:
                raise self.failed(f"rm {self.spec(image)}", exc) from exc

    # -- diffs and digests -------------------------------------------------------

    def export_diff(self, image: str, snap: str, from_snap: str | None = None) -> LibDiffReader:
        return LibDiffReader(self, image, snap, from_snap)

    def import_diff(
        self, image: str, retire: str | None = None, *, fresh: bool = False,
        read_back: bool = False,
    ) -> LibDiffSink:
        return LibDiffSink(self, image, retire, fresh=fresh, read_back=read_back)

    def chunk_digests(
        self, image: str, snap: str, chunk: int, from_snap: str | None = None
    ) -> ChunkDigests:
        """Read whole chunks the diff touches (since ``from_snap``, or all allocated) and hash
        them: holes within a chunk read as zeros, so no digest is ever partial."""
        _, rbd = bindings()
        with self.ioctx() as ioctx:
            try:
                handle = self.open_image(ioctx, image, snap, read_only=True)
            except rbd.Error as exc:
                raise self.failed(f"open {self.spec(image, snap)}", exc) from exc
            try:
                return hash_chunks(handle, chunk, from_snap)
            except rbd.Error as exc:
                raise self.failed(f"read {self.spec(image, snap)}", exc) from exc
            finally:
                handle.close()
