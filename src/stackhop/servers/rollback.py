"""Undoing a ``servers migrate`` run: ``stackhop rollback --to DST --run ID`` on its runs.

From the facts the steps journaled (done, or noted while a step ran and was cut short),
for each server of the run, in this order:

1. the destination server is deleted, its volumes' ``delete_on_termination`` first set
   False (the copies stay: a rollback keeps copied volumes), then the image an
   image-booted server's root disk was copied into;
2. each floating IP made on the destination is deleted (one that was there before is
   only disassociated), and the source's is given back to its source port;
3. the destination ports the run made are deleted (Nova keeps ports it was given);
4. a keypair made for the boot and left behind by a kill is deleted;
5. the source server is started (or unshelved) if the run stopped it;
6. with ``delete_volumes`` (``rollback --delete-volumes``), the copies of its volumes:
   each volume's incremental chain ended (the snapshots a next pass would start from),
   each destination volume carrying the source's marker deleted, and the passes that
   made it marked ``rolled_back`` (a re-run then copies that volume anew).

Then the step rows are marked: ``done`` ones ``rolled_back`` (the same command may do
them again), unfinished ones ``failed`` with what undid them. Each action looks first, so
a rollback cut short is run again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from openstack import exceptions as sdk_exceptions

from stackhop.journal import DONE, FAILED, ROLLED_BACK, Journal, OperationRecord
from stackhop.kinds.base import Kind
from stackhop.kinds.port import FLOATING_IP, PORT
from stackhop.kinds.rest import call
from stackhop.servers import steps
from stackhop.servers.gather import SOURCE_MARKS, without_released_mark
from stackhop.servers.migrate import COMMAND, SERVER_KIND, STEP_KIND
from stackhop.servers.root_disk import SOURCE_PROPERTY
from stackhop.volumes import copy as volume_copy
from stackhop.volumes.cinder_adopt import MARKER
from stackhop.volumes.inventory import wait_volume
from stackhop.volumes.methods import get_method
from stackhop.volumes.passes import KIND as PASS_KIND
from stackhop.volumes.passes import pass_number
from stackhop.volumes.storage import StorageMap
from stackhop.volumes.temporaries import TemporaryLedger

ROLLBACK_COMMAND = "rollback"


@dataclass
class ServerRollback:
    """What the rollback of one server did, one line each."""

    server_id: str
    actions: list[str] = field(default_factory=list)
    #: ``(kind, source ID)`` of the ID map entries whose destination object is gone.
    unmap: list[tuple[str, str]] = field(default_factory=list)


def is_servers_run(journal: Journal, run_id: str) -> bool:
    return journal.run(run_id).command == COMMAND


def _facts(row: OperationRecord) -> dict[str, Any]:
    return dict((row.before or {}).get("facts") or {})


def rollback_servers(journal: Journal, src: Any, dst: Any, run_ids: Sequence[str],
                     destination_cloud: str, *, delete_volumes: bool = False,
                     storage: StorageMap | None = None) -> tuple[str, list[ServerRollback]]:
    """Undo the server runs ``run_ids`` (see the module docstring); the rollback run's ID.
    ``delete_volumes`` needs the ``storage`` map (an rbd chain's snapshots end there)."""
    runs = [journal.run(r) for r in run_ids]
    rows = [row for run in runs for row in journal.operations(run_id=run.id, kind=STEP_KIND)
            if row.state != ROLLED_BACK]
    by_server: dict[str, dict[str, OperationRecord]] = defaultdict(dict)
    for row in rows:
        server, _, step = row.identity.rpartition("/")
        by_server[server][step] = row
    run = journal.start_run(ROLLBACK_COMMAND, source_cloud=runs[0].source_cloud if runs else None,
                            destination_cloud=destination_cloud,
                            args={"runs": list(run_ids), "servers": sorted(by_server)})
    done: list[ServerRollback] = []
    try:
        for server_id, server_rows in sorted(by_server.items()):
            undone = ServerRollback(server_id)
            facts = {step: _facts(row) for step, row in server_rows.items()}
            _undo_server(dst, server_id, facts, undone)
            _undo_root_image(dst, facts.get("final", {}), undone)
            _undo_floating(src, dst, facts.get("floating", {}), undone)
            _undo_ports(dst, facts.get("ports", {}), undone)
            _undo_keypair(dst, facts.get("boot", {}), undone)
            _undo_stop(src, server_id, facts.get("stop", {}), undone)
            if delete_volumes:
                assert storage is not None, "deleting the copies needs the storage map"
                volumes = list(facts.get("precopy", {}).get("volumes") or facts.get(
                    "final", {}).get("volumes") or [])
                scope = volume_copy.scope_of(runs[0].source_cloud or "", destination_cloud)
                _undo_volumes(journal, run.id, scope, volume_copy.Clouds(src, dst), storage,
                              volumes, undone)
            journal.apply([], unmappings=[(destination_cloud, kind, source)
                                          for kind, source in undone.unmap])
            for row in server_rows.values():
                _mark(journal, run.id, row)
            done.append(undone)
    except BaseException:
        journal.finish_run(run.id, "failed")
        raise
    journal.finish_run(run.id, "succeeded")
    return run.id, done


def _undo_server(dst: Any, source_id: str, facts: Mapping[str, Mapping[str, Any]],
                 out: ServerRollback) -> None:
    server_id = facts.get("verify", {}).get("server") or facts.get("boot", {}).get("server")
    if not server_id:
        return
    out.unmap.append((SERVER_KIND, source_id))
    try:
        server = dst.compute.get_server(server_id)
    except sdk_exceptions.NotFoundException:
        return
    if (server.metadata or {}).get(steps.SOURCE_KEY) is None:
        out.actions.append(f"destination server {server_id} carries no {steps.SOURCE_KEY}: "
                           "left in place")
        return
    kept = steps.delete_keeping_volumes(dst, server)
    out.actions.append(f"deleted destination server {server_id} (its {kept} volume(s) kept)")


def _undo_root_image(dst: Any, facts: Mapping[str, Any], out: ServerRollback) -> None:
    image_id = (facts.get("root") or {}).get("image") or facts.get("image")
    if not image_id:
        return
    image = call(dst.image, "GET", f"/images/{image_id}", missing_ok=True)
    if image is None:
        return
    if image.get(SOURCE_PROPERTY) is None:
        out.actions.append(f"image {image_id} carries no {SOURCE_PROPERTY}: left in place")
        return
    call(dst.image, "DELETE", f"/images/{image_id}", missing_ok=True)
    out.actions.append(f"deleted the root disk's image {image_id}")


def _undo_floating(src: Any, dst: Any, facts: Mapping[str, Any], out: ServerRollback) -> None:
    for entry in facts.get("floating_ips") or []:
        target = entry.get("destination")
        if target and entry.get("created"):
            out.unmap.append((FLOATING_IP, entry["source"]))
            call(dst.network, "DELETE", f"/floatingips/{target}", missing_ok=True)
            out.actions.append("deleted destination floating IP "
                               f"{entry.get('destination_address')}")
        elif target:
            call(dst.network, "PUT", f"/floatingips/{target}",
                 json={"floatingip": {"port_id": None}}, missing_ok=True)
            out.actions.append(f"disassociated destination floating IP {target}")
        if entry.get("released"):
            found = call(src.network, "GET", f"/floatingips/{entry['source']}")["floatingip"]
            call(src.network, "PUT", f"/floatingips/{entry['source']}", json={"floatingip": {
                "port_id": entry["source_port"],
                "description": without_released_mark(found.get("description"))}})
            out.actions.append(f"gave {entry['address']} back to source port "
                               f"{entry['source_port']}")


def _undo_ports(dst: Any, facts: Mapping[str, Any], out: ServerRollback) -> None:
    made = {d: s for s, d in (facts.get("ports") or {}).items()}
    created = list(facts.get("created") or [])
    if facts.get("creating"):  # a kill cut the step between a port's create and its note
        wanted = steps.mark("", str(facts["creating"]))
        listed = call(dst.network, "GET", f"/ports?{urlencode({'description': wanted})}")
        created += [p["id"] for p in listed["ports"]  # (filtered here too: a Neutron
                    if p.get("description") == wanted and p["id"] not in created]  # may not)
    for port_id in created:
        if port_id in made:
            out.unmap.append((PORT, made[port_id]))
        found = call(dst.network, "GET", f"/ports/{port_id}", missing_ok=True)
        if found is None:
            continue
        if Kind.marked_source_id(found["port"].get("description")) is None:
            out.actions.append(f"destination port {port_id} carries no marker: left in place")
            continue
        call(dst.network, "DELETE", f"/ports/{port_id}", missing_ok=True)
        out.actions.append(f"deleted destination port {port_id}")


def _undo_volumes(journal: Journal, run_id: str, scope: str, clouds: volume_copy.Clouds,
                  storage: StorageMap, volumes: Sequence[str], out: ServerRollback) -> None:
    """The copies of ``volumes`` (source IDs) deleted, see the module docstring."""
    dst = clouds.destination
    for source_id in volumes:
        rows = [r for r in journal.operations(scope=scope, kind=PASS_KIND, state=DONE)
                if r.source_id == source_id]
        if not rows:
            continue
        last = max(rows, key=lambda r: pass_number(r.identity))
        state = (last.before or {}).get("state")
        if state:  # the chain ends before its destination goes
            get_method(str(last.before["method"])).forget_incremental(
                state, clouds.source, dst, storage)
        TemporaryLedger(journal, scope).forget_kept(run_id, source_id)
        for copy_id in sorted({r.destination_id for r in rows if r.destination_id}):
            try:
                copy = dst.block_storage.get_volume(copy_id)
            except sdk_exceptions.NotFoundException:
                continue
            if (copy.metadata or {}).get(MARKER) != source_id:
                out.actions.append(f"destination volume {copy_id} does not carry "
                                   f"{MARKER}={source_id}: left in place")
                continue
            wait_volume(dst, copy_id, ("available", "error"))  # detached with its server
            dst.block_storage.delete_volume(copy_id)
            dst.block_storage.wait_for_delete(copy, interval=1, wait=600)
            out.actions.append(f"deleted copied volume {copy_id}")
        for row in rows:
            _mark(journal, run_id, row)


def _undo_keypair(dst: Any, facts: Mapping[str, Any], out: ServerRollback) -> None:
    if facts.get("keypair_made") and facts.get("keypair"):
        dst.compute.delete_keypair(facts["keypair"], ignore_missing=True)
        out.actions.append(f"deleted the boot's keypair {facts['keypair']}")


def _undo_stop(src: Any, server_id: str, facts: Mapping[str, Any], out: ServerRollback) -> None:
    if facts.get("was") != "ACTIVE" or facts.get("cutover") is None:
        return
    try:
        server = src.compute.get_server(server_id)
    except sdk_exceptions.NotFoundException:
        out.actions.append(f"source server {server_id} is gone: nothing to start")
        return
    if server.status == "SHUTOFF":
        src.compute.start_server(server)
    elif server.status in ("SHELVED", "SHELVED_OFFLOADED"):
        src.compute.unshelve_server(server)
    if server.status != "ACTIVE":
        steps.wait_for(f"source server {server_id} starting", lambda: src.compute.get_server(
            server_id), lambda s: s.status == "ACTIVE",
            lambda s: "Nova put it in ERROR" if s.status == "ERROR" else None)
        out.actions.append(f"started source server {server_id} again")
    marks = [k for k in SOURCE_MARKS if k in (server.metadata or {})]
    if marks:  # last: a rollback cut short starts it again
        src.compute.delete_server_metadata(server, marks)


def _mark(journal: Journal, run_id: str, row: OperationRecord) -> None:
    if row.state == DONE:
        journal.transition(run_id, row.scope, row.kind, row.identity, ROLLED_BACK,
                           action=row.action, expected=row, undone_by=run_id,
                           before=row.before)
    elif row.state != FAILED:
        journal.transition(run_id, row.scope, row.kind, row.identity, FAILED,
                           action=row.action, expected=row,
                           error=f"undone by rollback run {run_id}")


def unfinished_cutovers(journal: Journal, run_id: str | None = None) -> list[str]:
    """One line per server whose source a run stopped and whose cutover is not verified
    (``stackhop status`` shows them: the workload is down until a re-run or a rollback)."""
    rows = journal.operations(run_id=run_id, kind=STEP_KIND)
    if run_id is not None:  # the verify of a later run counts too
        rows += [r for r in journal.operations(kind=STEP_KIND) if r.run_id != run_id]
    steps_of: dict[tuple[str, str], dict[str, OperationRecord]] = defaultdict(dict)
    for row in rows:
        server, _, step = row.identity.rpartition("/")
        steps_of[(row.scope, server)][step] = row
    lines = []
    for (_, server), found in sorted(steps_of.items()):
        stop, verify = found.get("stop"), found.get("verify")
        if stop is None or stop.state == ROLLED_BACK or (run_id and stop.run_id != run_id):
            continue
        facts = _facts(stop)
        if facts.get("cutover") is None or facts.get("was") != "ACTIVE":
            continue
        if stop.state == FAILED and (stop.error or "").startswith("undone by rollback"):
            continue
        if verify is None or verify.state != DONE:
            lines.append(f"server {server}: source stopped, cutover unfinished (run "
                         f"{stop.run_id}): re-run servers migrate, or roll the run back")
    return lines
