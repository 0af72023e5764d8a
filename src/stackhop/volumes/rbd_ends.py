"""The two ends of an rbd pass: their storage-map backends, how each is reached, temporaries."""

from __future__ import annotations

from dataclasses import dataclass

from stackhop.errors import CapabilityError, ConfigError
from stackhop.transfer.rbd import open_cluster
from stackhop.transfer.rbd_access import RbdAccess
from stackhop.transfer.ssh import SshHost
from stackhop.volumes.model import Temporary, VolumeRef
from stackhop.volumes.storage import Backend, StorageMap

METHOD = "rbd"


def cluster_of(backend: Backend) -> RbdAccess:
    """How to reach the pool of ``backend`` (an ``rbd`` entry of the storage map)."""
    return open_cluster(
        cloud=backend.cloud,
        pool=backend.pool or "",
        ceph_conf=backend.ceph_conf,
        keyring=backend.keyring,
        user=backend.user,
        ssh=SshHost.named(backend.ssh_host) if backend.ssh_host else None,
    )


def snapshot_temporary(backend: Backend, image: str, snap: str) -> Temporary:
    return Temporary(
        method=METHOD,
        kind="rbd-snapshot",
        cloud=backend.cloud,
        name=f"{backend.pool}/{image}@{snap}",
        details={"backend": backend.name, "image": image, "snap": snap},
    )


def source_backend(storage: StorageMap, ref: VolumeRef) -> Backend:
    backend = storage.backend_of(ref.cloud, ref.host)
    if backend.driver != "rbd":
        raise CapabilityError(
            f"{ref.label} is on backend {backend.name!r} (driver {backend.driver}) of cloud "
            f"{ref.cloud!r}, not RBD; use --method stream or --method image"
        )
    return backend


def destination_backend(storage: StorageMap, cloud: str, backend_name: str | None) -> Backend:
    """The destination's RBD backend: the one the volume type names, else the only one."""
    if backend_name:
        backend = storage.backend(cloud, backend_name)
        if backend.driver != "rbd":
            raise CapabilityError(
                f"volume type's backend {backend_name!r} of cloud {cloud!r} is not RBD; pick a "
                "Ceph volume type with --type, or use --method stream"
            )
        return backend
    candidates = [b for (c, _), b in storage.backends.items() if c == cloud and b.driver == "rbd"]
    if len(candidates) != 1:
        raise ConfigError(
            f"cloud {cloud!r} has {len(candidates)} RBD backends in the storage map "
            f"{storage.source}; pick a volume type whose volume_backend_name is one of them"
        )
    return candidates[0]


@dataclass(frozen=True)
class RbdEnds:
    """Both ends of one pass: their storage-map entries and how each is reached."""

    src_backend: Backend
    dst_backend: Backend
    src: RbdAccess
    dst: RbdAccess
