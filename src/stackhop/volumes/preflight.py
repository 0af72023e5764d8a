"""Checks made before any volume moves: each failure is one line saying what to do.

In order: the destination project exists (mapped) and the credentials can act
in it; every volume type used exists on the destination; the destination
quota has room for the volumes that will be created (count and gigabytes,
per volume type too); in-use volumes only with ``--allow-in-use`` and
``--incremental``; the method accepts every volume (:meth:`VolumeMethod.check`);
the storage hosts the method will use answer over ssh. Reads only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stackhop.errors import ConfigError, ConflictError, UsageError
from stackhop.transfer.ssh import SshHost
from stackhop.volumes.inventory import QuotaRoom
from stackhop.volumes.methods import supports_incremental
from stackhop.volumes.model import VolumeMethod, VolumeRef
from stackhop.volumes.storage import StorageMap


class QuotaExceededError(ConflictError):
    """The destination project's block-storage quota cannot take the selected volumes."""


@dataclass(frozen=True)
class Need:
    """What the volumes to be created ask of the destination project."""

    volumes: int
    gigabytes: int


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _fits(need: Need, volumes_left: int | None, gigabytes_left: int | None) -> bool:
    return (volumes_left is None or need.volumes <= volumes_left) and (
        gigabytes_left is None or need.gigabytes <= gigabytes_left
    )


def _room(volumes_left: int | None, gigabytes_left: int | None) -> str:
    count = "unlimited volumes" if volumes_left is None else _plural(max(volumes_left, 0), "volume")
    size = "unlimited GiB" if gigabytes_left is None else f"{max(gigabytes_left, 0)} GiB"
    return f"{count} / {size}"


def check_quota(
    project_label: str, room: QuotaRoom, creating: Sequence[VolumeRef], types: dict[str, str | None]
) -> None:
    """QuotaExceededError with the numbers when ``creating`` does not fit in ``room``.

    ``types`` maps each source volume ID to its destination volume type name.
    """
    if not creating:
        return
    total = Need(len(creating), sum(v.size_gib for v in creating))
    if not _fits(total, room.volumes, room.gigabytes):
        raise QuotaExceededError(
            f"dst project {project_label}: {_plural(total.volumes, 'volume')} / "
            f"{total.gigabytes} GiB requested, quota leaves "
            f"{_room(room.volumes, room.gigabytes)}; raise the quota or select fewer"
        )
    by_type: dict[str, list[VolumeRef]] = {}
    for volume in creating:
        type_name = types.get(volume.id)
        if type_name:
            by_type.setdefault(type_name, []).append(volume)
    for type_name, volumes in sorted(by_type.items()):
        volumes_left, gigabytes_left = room.per_type.get(type_name, (None, None))
        need = Need(len(volumes), sum(v.size_gib for v in volumes))
        if not _fits(need, volumes_left, gigabytes_left):
            raise QuotaExceededError(
                f"dst project {project_label}, volume type {type_name}: "
                f"{_plural(need.volumes, 'volume')} / {need.gigabytes} GiB requested, quota "
                f"leaves {_room(volumes_left, gigabytes_left)}; raise the quota or select fewer"
            )


def check_in_use(volumes: Iterable[VolumeRef], allow_in_use: bool, incremental: bool) -> None:
    """Refuse attached volumes unless the operator allows them, and then only incrementally."""
    attached = [v for v in volumes if v.attachments or v.status == "in-use"]
    if not attached:
        return
    names = ", ".join(v.name or v.id for v in attached)
    if not allow_in_use:
        raise ConflictError(
            f"volume(s) in use: {names}; detach them (shut the servers down) or pass "
            "--allow-in-use --incremental for a first pass, then a final pass detached"
        )
    if not incremental:
        raise UsageError(
            f"--allow-in-use copies in-use volumes ({names}) only with --incremental; the "
            "final pass must be made with the volumes detached"
        )


def destination_types(
    dst: Any,
    volumes: Iterable[VolumeRef],
    destination_cloud: str,
    type_map: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Source volume ID -> destination volume type (``type_map``'s, else the same name).

    A type the destination lacks is a ConfigError naming the fix, before anything moves.
    """
    known = {t.name for t in dst.block_storage.types()}
    mapping = dict(type_map or {})
    choices = ", ".join(sorted(known))
    for source, target in mapping.items():
        if target not in known:
            raise ConfigError(
                f"--type-map {source}={target}: cloud {destination_cloud!r} has no volume type "
                f"{target!r} (types: {choices})"
            )
    result: dict[str, str | None] = {}
    for volume in volumes:
        wanted = mapping.get(volume.volume_type, volume.volume_type) if volume.volume_type else None
        if wanted and wanted not in known:
            raise ConfigError(
                f"{volume.label} has volume type {volume.volume_type!r}, which cloud "
                f"{destination_cloud!r} lacks; map it with --type-map "
                f"{volume.volume_type}=TYPE or create it there (types: {choices})"
            )
        result[volume.id] = wanted
    return result


def backend_for_type(dst: Any, type_name: str | None) -> str | None:
    """The ``volume_backend_name`` of destination type ``type_name`` (None: not set)."""
    if not type_name:
        return None
    for volume_type in dst.block_storage.types():
        if volume_type.name == type_name:
            name = (volume_type.extra_specs or {}).get("volume_backend_name")
            return str(name) if name else None
    return None


def check_hosts(
    method: VolumeMethod,
    volumes: Iterable[VolumeRef],
    storage: StorageMap,
    dst: Any,
    destination_cloud: str,
    types: dict[str, str | None],
) -> None:
    """Every ssh storage host the method will use answers (the ``image`` method uses none)."""
    if method.name == "image":
        return
    hosts: set[str] = set()
    for volume in volumes:
        name = volume.backend_name
        if name and (volume.cloud, name) in storage.backends:
            host = storage.backends[(volume.cloud, name)].ssh_host
            if host:
                hosts.add(host)
        backend = backend_for_type(dst, types.get(volume.id))
        if backend and (destination_cloud, backend) in storage.backends:
            host = storage.backends[(destination_cloud, backend)].ssh_host
            if host:
                hosts.add(host)
    for host in sorted(hosts):
        SshHost.named(host).run(["true"], timeout=60)


def check_method(
    method: VolumeMethod,
    volumes: Iterable[VolumeRef],
    storage: StorageMap,
    destination_cloud: str,
    types: dict[str, str | None],
    incremental: bool,
) -> None:
    """The method's own check of each volume, and whether it can do ``--incremental``."""
    if incremental and not supports_incremental(method):
        raise UsageError(
            f"the {method.name} method copies whole volumes and has no --incremental; "
            "use --method rbd or --method stream"
        )
    for volume in volumes:
        method.check(volume, storage, destination_cloud, types.get(volume.id))
