"""What the clouds hold: projects, a project's volumes (as VolumeRef), a destination's quota.

Reads only, except :func:`wait_volume` which polls. A destination project is
found the way every stackhop command maps projects
(:func:`stackhop.kinds.identity.map_identities`): a ``--project-map`` pair,
else the same ID, else the same (domain name, project name).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stackhop.clouds import scoped_connection
from stackhop.errors import ConfigError, IntegrityError, UsageError
from stackhop.kinds.base import Record
from stackhop.kinds.identity import OperatorMap, map_identities
from stackhop.volumes.model import VolumeRef


def volume_ref(cloud: str, volume: Any) -> VolumeRef:
    """The :class:`VolumeRef` of an openstacksdk block-storage Volume."""
    return VolumeRef(
        cloud=cloud,
        id=str(volume.id),
        name=str(volume.name or ""),
        size_gib=int(volume.size),
        project_id=str(volume.project_id or ""),
        status=str(volume.status),
        volume_type=volume.volume_type,
        host=volume.host,
        description=volume.description,
        bootable=bool(volume.is_bootable),
        metadata={str(k): str(v) for k, v in (volume.metadata or {}).items()},
        attachments=tuple(str(a.get("server_id")) for a in volume.attachments or ()),
        availability_zone=volume.availability_zone,
        encrypted=bool(volume.is_encrypted),
    )


def project_record(conn: Any, project: str) -> Record:
    """The project named or identified by ``project`` (ID first), with its domain's name."""
    found = conn.identity.find_project(project, ignore_missing=True)
    if found is None:
        raise ConfigError(f"project {project!r} does not exist on the source cloud")
    domain = conn.identity.get_domain(found.domain_id)
    return {
        "id": found.id,
        "name": found.name,
        "domain_id": found.domain_id,
        "domain_name": domain.name,
    }


def list_projects(conn: Any) -> list[Record]:
    """Every project of the cloud, by name."""
    domains = {d.id: d.name for d in conn.identity.domains()}
    projects = [
        {
            "id": p.id,
            "name": p.name,
            "domain_id": p.domain_id,
            "domain_name": domains.get(p.domain_id, p.domain_id),
        }
        for p in conn.identity.projects()
    ]
    return sorted(projects, key=lambda p: (p["domain_name"], p["name"]))


def list_volumes(conn: Any, cloud: str, project_id: str) -> list[VolumeRef]:
    """Every volume of the project, by name then ID (admin credentials see every project)."""
    volumes = conn.block_storage.volumes(details=True, all_projects=True, project_id=project_id)
    refs = [volume_ref(cloud, v) for v in volumes if str(v.project_id) == project_id]
    return sorted(refs, key=lambda v: (v.name, v.id))


def select_volumes(
    conn: Any, cloud: str, project_id: str, wanted: Sequence[str], everything: bool
) -> list[VolumeRef]:
    """The project's volumes named by ID or name in ``wanted``, or all of them."""
    if bool(wanted) == everything:
        raise UsageError("name the volumes: --volume ID_OR_NAME ..., --all or --interactive")
    volumes = list_volumes(conn, cloud, project_id)
    if everything:
        return volumes
    chosen: list[VolumeRef] = []
    for name in wanted:
        matches = [v for v in volumes if v.id == name] or [v for v in volumes if v.name == name]
        if not matches:
            raise ConfigError(f"project {project_id} has no volume with ID or name {name!r}")
        if len(matches) > 1:
            ids = ", ".join(v.id for v in matches)
            raise ConfigError(f"volume name {name!r} is ambiguous ({ids}); give an ID")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def map_project(source_project: Record, destination: Any, project_map: OperatorMap | None) -> str:
    """The destination project ID of ``source_project``; ConfigError when none matches."""
    mapping = map_identities([], [source_project], destination, project_map=project_map)
    found = mapping.projects.get(source_project["id"])
    if found is None:
        raise ConfigError(
            f"project {source_project['domain_name']}/{source_project['name']} has no "
            "counterpart on the destination (no same ID, no same domain and name); create it "
            "or pass --project-map FILE"
        )
    return found


def project_connection(conn: Any, cloud: str, project_id: str) -> Any:
    """A connection of the same user scoped to ``project_id``, where volumes are created.

    Cinder puts a new volume in the project of the token, so the operator's user needs
    a role there.
    """
    return scoped_connection(
        conn, project_id, purpose=f"create volumes on cloud {cloud!r}", role="admin"
    )


@dataclass(frozen=True)
class QuotaRoom:
    """What a project's block-storage quota still allows (None: unlimited)."""

    project_id: str
    volumes: int | None
    gigabytes: int | None
    #: Per volume type name: (volumes left, gigabytes left).
    per_type: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)


def _left(limit: Any, used: Any, reserved: Any) -> int | None:
    if limit is None or int(limit) < 0:
        return None
    return int(limit) - int(used or 0) - int(reserved or 0)


def quota_room(conn: Any, project_id: str) -> QuotaRoom:
    """The room left in the project's block-storage quota (limits minus usage and reservations)."""
    quota = conn.block_storage.get_quota_set(project_id, usage=True)
    values = quota.to_dict()
    usage = values.get("usage") or {}
    reserved = values.get("reservation") or {}

    def left(key: str) -> int | None:
        return _left(values.get(key), usage.get(key), reserved.get(key))

    per_type = {
        key[len("volumes_") :]: (left(key), left("gigabytes_" + key[len("volumes_") :]))
        for key in values
        if key.startswith("volumes_")
    }
    return QuotaRoom(project_id, left("volumes"), left("gigabytes"), per_type)


def wait_volume(conn: Any, volume_id: str, wanted: Sequence[str], *, timeout: float = 1800) -> Any:
    """Poll until the volume's status is one of ``wanted``; IntegrityError on ``error``."""
    deadline = time.monotonic() + timeout
    while True:
        volume = conn.block_storage.get_volume(volume_id)
        if volume.status in wanted:
            return volume
        if str(volume.status).startswith("error"):
            raise IntegrityError(
                f"volume {volume_id} went to status {volume.status}; see the Cinder logs, "
                "then re-run (the failed volume is replaced)"
            )
        if time.monotonic() > deadline:
            raise IntegrityError(
                f"volume {volume_id} is still {volume.status} after {timeout:.0f} s; "
                "check Cinder, then re-run"
            )
        time.sleep(1.0)
