"""The volume side of a project migration: selection, method per volume, copy, cleanup, verify.

Everything here goes through :mod:`stackhop.volumes.copy`, the library of
``stackhop volumes copy``: the same preflight, journal rows (kind ``volume``,
scope ``<src>-><dst>``), temporaries and resume. What a project migration
adds is the choice of a method per volume (``--method auto``) and one call
per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from stackhop.errors import OperationFailedError, StackhopError, UsageError
from stackhop.journal import DONE, Journal
from stackhop.project.report import ObjectLine, line_of
from stackhop.volumes import copy as volume_copy
from stackhop.volumes import inventory as volume_inventory
from stackhop.volumes import preflight
from stackhop.volumes.methods import get_method
from stackhop.volumes.model import VolumeRef
from stackhop.volumes.storage import load_storage_map

if TYPE_CHECKING:
    from stackhop.project.migrate import Migration

#: Methods ``auto`` tries, fastest first; ``image`` (API only) always applies.
AUTO_ORDER = ("rbd", "stream")


def inventory(conn: Any, project_id: str) -> dict[str, int]:
    """What the project holds on one cloud: images, volumes (and their GiB), groups, servers."""
    volumes = list(
        conn.block_storage.volumes(details=True, all_projects=True, project_id=project_id)
    )
    volumes = [v for v in volumes if str(v.project_id) == project_id]
    return {
        "images": sum(1 for _ in conn.image.images(owner=project_id)),
        "volumes": len(volumes),
        "gigabytes": sum(int(v.size or 0) for v in volumes),
        "security_groups": sum(1 for _ in conn.network.security_groups(project_id=project_id)),
        "servers": sum(1 for _ in conn.compute.servers(all_projects=True, project_id=project_id)),
    }


def _choose_method(migration: Migration, volume: VolumeRef, dst_type: str | None) -> str:
    wanted = migration.request.method
    if wanted != "auto":
        return wanted
    storage = load_storage_map(migration.request.storage_map)
    for name in AUTO_ORDER:
        try:
            get_method(name).check(volume, storage, migration.request.destination_cloud, dst_type)
        except StackhopError:
            continue
        return name
    return "image"


def _selected(migration: Migration, project_id: str, leave: AbstractSet[str]) -> list[VolumeRef]:
    request = migration.request
    cloud = request.source_cloud
    if request.choose_volumes is not None:
        listed = volume_inventory.list_volumes(migration.source, cloud, project_id)
        return list(request.choose_volumes([v for v in listed if v.id not in leave]))
    if not request.volumes and not request.all_volumes:
        return []
    chosen = volume_inventory.select_volumes(
        migration.source, cloud, project_id, request.volumes, request.all_volumes
    )
    return [v for v in chosen if v.id not in leave]


def _copy_request(
    migration: Migration,
    project_id: str,
    method: str,
    volumes: Sequence[str],
    *,
    dry_run: bool = False,
) -> volume_copy.CopyRequest:
    request = migration.request
    return volume_copy.CopyRequest(
        source_cloud=request.source_cloud,
        destination_cloud=request.destination_cloud,
        project=project_id,
        volumes=tuple(volumes),
        method=method,
        method_options={"reread": False} if method == "rbd" and request.trust_writes else {},
        incremental=request.allow_in_use,
        backup_to=str(request.backup_to) if request.backup_to else None,
        reshape=request.reshape,
        grant_role=request.grant_role,
        workers=request.workers,
        allow_in_use=request.allow_in_use,
        dry_run=dry_run,
        executor=request.executor,
    )


def _groups(selection: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for volume in selection:
        groups.setdefault(str(volume["method"]), []).append(str(volume["id"]))
    return groups


def select(
    migration: Migration,
    project_id: str,
    destination_id: str,
    leave: AbstractSet[str] = frozenset(),
) -> list[dict[str, Any]]:
    """The selected volumes with their method, after the whole preflight (gather phase);
    those in ``leave`` (the selected servers' volumes) are the servers phase's."""
    volumes = _selected(migration, project_id, leave)
    if not volumes:
        return []
    dst = migration.destination
    reshape = migration.request.reshape
    reshape.check(volumes)
    types = preflight.destination_types(
        dst, volumes, migration.request.destination_cloud, reshape.type_map
    )
    selection = [
        {
            "id": v.id,
            "name": v.name,
            "size_gib": v.size_gib,
            "method": _choose_method(migration, v, types[v.id]),
        }
        for v in volumes
    ]
    # The whole selection must fit the quota, not just each method's share of it.
    creating = [
        v
        for v in volumes
        if volume_copy.plan_volume(
            migration.journal,
            volume_copy.scope_of(
                migration.request.source_cloud, migration.request.destination_cloud
            ),
            v,
            False,
            destination_id,
            types[v.id],
        ).action
        == "copy"
    ]
    preflight.check_quota(
        project_id,
        volume_inventory.quota_room(dst, destination_id),
        reshape.sized(creating),
        types,
    )
    for method, ids in _groups(selection).items():
        copier = _copier(migration, project_id, method, ids, dry_run=True)
        copier.prepare()  # the method's own checks, hosts, in-use: raises before anything moves
    return selection


def _copier(
    migration: Migration, project_id: str, method: str, ids: Sequence[str], *, dry_run: bool = False
) -> volume_copy.VolumeCopier:
    return volume_copy.VolumeCopier(
        _copy_request(migration, project_id, method, ids, dry_run=dry_run),
        volume_copy.Clouds(migration.source, migration.destination),
        migration.journal,
        load_storage_map(migration.request.storage_map),
        events=migration.events,
        project_map=migration.project_map,
        stop=migration.stop,
        app=migration.app,
    )


def copy(migration: Migration, gathered: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Copy the selected volumes, one ``volumes copy`` run per method; raise if any failed."""
    project_id = gathered["project"]["id"]
    runs: list[dict[str, Any]] = []
    failed = 0
    for method, ids in _groups(gathered["volumes"]).items():
        copier = _copier(migration, project_id, method, ids)
        result = copier.run(copier.prepare())
        outcomes = [o.outcome for o in result.outcomes]
        runs.append(
            {
                "method": method,
                "run_id": result.run_id,
                "copied": outcomes.count(DONE),
                "skipped": outcomes.count("skipped"),
                "failed": len(result.failed),
            }
        )
        failed += len(result.failed)
        if result.failed and result.run_id:
            last_run = result.run_id
            raise OperationFailedError(failed=failed, run=last_run)
    return runs


def cleanup(migration: Migration, runs: Sequence[Mapping[str, Any]]) -> int:
    """Remove what the copy runs left behind; the number removed. Fails if one stays."""
    removed = 0
    clouds = volume_copy.Clouds(migration.source, migration.destination)
    storage = load_storage_map(migration.request.storage_map)
    for run in runs:
        if not run.get("run_id"):
            continue
        report = volume_copy.cleanup_run(
            str(run["run_id"]),
            volume_copy.scope_of(
                migration.request.source_cloud, migration.request.destination_cloud
            ),
            clouds,
            migration.journal,
            storage,
            events=migration.events,
        )
        stuck = [r for r in report if r["outcome"] != "removed"]
        if stuck:
            raise UsageError(
                f"{len(stuck)} temporary object(s) could not be removed ({stuck[0]['temporary']}: "
                f"{stuck[0].get('error')}); fix that and re-run"
            )
        removed += len(report)
    return removed


def verified_rows(journal: Journal, scope: str, volume_id: str) -> list[Any]:
    """The verified passes of a volume, oldest first."""
    return [
        r
        for r in journal.operations(scope=scope, kind=volume_copy.KIND)
        if r.source_id == volume_id and r.state == DONE
    ]


def verify(migration: Migration, selection: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each selected volume has a verified pass and its copy is on the destination, available."""
    scope = volume_copy.scope_of(
        migration.request.source_cloud, migration.request.destination_cloud
    )
    unverified: list[str] = []
    for volume in selection:
        rows = verified_rows(migration.journal, scope, str(volume["id"]))
        copy_id = rows[-1].destination_id if rows else None
        found = (
            migration.destination.block_storage.find_volume(copy_id, ignore_missing=True)
            if copy_id
            else None
        )
        if found is None or found.status not in ("available", "in-use"):
            unverified.append(f"{volume['name'] or volume['id']}")
    return {"checked": len(selection), "unverified": unverified}


def volume_lines(migration: Migration, selection: Sequence[Mapping[str, Any]]) -> list[ObjectLine]:
    """The report lines of the selected volumes' passes, from the journal."""
    scope = volume_copy.scope_of(
        migration.request.source_cloud, migration.request.destination_cloud
    )
    wanted = {str(v["id"]) for v in selection}
    return [
        line_of(r)
        for r in migration.journal.operations(scope=scope, kind=volume_copy.KIND)
        if r.source_id in wanted
    ]


def plan_rows(migration: Migration, gathered: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dry-run rows of the volume copies."""
    rows: list[dict[str, Any]] = []
    project_id = gathered["project"]["id"]
    for method, ids in _groups(gathered["volumes"]).items():
        for planned in _copier(migration, project_id, method, ids, dry_run=True).prepare():
            rows.append(
                {
                    "phase": "import",
                    "action": planned.action,
                    "object": f"volume {planned.volume.name or planned.volume.id}",
                    "detail": f"{planned.volume.size_gib} GiB by {method}: {planned.reason}",
                }
            )
    return rows
