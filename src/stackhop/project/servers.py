"""The servers phase of a project migration: ``servers migrate`` for the selected servers.

The gather phase selects the servers (``--server``, ``--all-servers``) and leaves their
volumes out of the import phase's volume copies: the servers phase copies them itself,
while each server runs, then once more after it stops (:mod:`stackhop.servers.migrate`).
The phase runs after the import, so the networks, subnets, security groups and server
groups it needs are in the journal's ID map. ``servers migrate``'s own preflight runs at
the start of the phase, for every selected server, before any is stopped.

The phase is resumable as the command is: its steps are journaled rows of kind
``server.step`` (scope ``servers <src>-><dst>``), so a re-run continues at the first
step not done, server by server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stackhop.project.phases import PhaseResult
from stackhop.project.report import ObjectLine
from stackhop.resolve import Resolver
from stackhop.servers.gather import find_server
from stackhop.servers.migrate import ServerRequest, migrate_servers
from stackhop.volumes.storage import load_storage_map

if TYPE_CHECKING:
    from stackhop.project.migrate import Migration


def select(migration: Migration, project_id: str) -> list[dict[str, Any]]:
    """The selected servers of the source project: ID, name and attached volume IDs."""
    request, compute = migration.request, migration.source.compute
    if request.all_servers:
        listed = compute.servers(all_projects=True, project_id=project_id)
        found = sorted((s for s in listed if s.project_id == project_id), key=lambda s: s.name)
    else:
        found = [find_server(compute, project_id, wanted) for wanted in request.servers]
    return [
        {"id": s.id, "name": s.name,
         "volumes": sorted(a.volume_id for a in compute.volume_attachments(s.id))}
        for s in found
    ]


def attached(servers: Sequence[Mapping[str, Any]]) -> set[str]:
    """The volumes of the selected servers (the servers phase copies them)."""
    return {v for s in servers for v in s["volumes"]}


def migrate(migration: Migration, gathered: Mapping[str, Any]) -> PhaseResult:
    """``servers migrate`` of the gathered servers; its run and each server's downtime."""
    chosen = gathered.get("servers") or []
    if not chosen:
        return PhaseResult("no servers selected", {"servers": []})
    request = migration.request
    servers_request = ServerRequest(
        request.source_cloud, request.destination_cloud, gathered["project"]["id"],
        servers=tuple(s["id"] for s in chosen), cutover=request.cutover, method=request.method)
    done = migrate_servers(
        servers_request, migration.source, migration.destination, migration.journal,
        load_storage_map(request.storage_map),
        Resolver(request.destination_cloud, journal=migration.journal),
        project_map=migration.project_map, events=migration.events)
    moved = [{"id": o.server_id, "name": o.name, "destination_id": o.destination_id,
              "downtime_s": o.downtime} for o in done.outcomes]
    downtimes = ", ".join(f"{m['name']} {m['downtime_s']} s" for m in moved
                          if m["downtime_s"] is not None)
    return PhaseResult(
        f"{len(moved)} server(s) moved (run {done.run_id})"
        + (f"; down: {downtimes}" if downtimes else ""),
        {"run": done.run_id, "servers": moved})


def server_lines(outcome: Mapping[str, Any]) -> list[ObjectLine]:
    """The report lines of the servers the phase moved."""
    return [
        ObjectLine("server", str(s["name"]), "moved", str(s["id"]), s.get("destination_id"),
                   f"down {s['downtime_s']} s" if s.get("downtime_s") is not None else "")
        for s in outcome.get("servers") or []
    ]
