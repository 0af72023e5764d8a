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
6. with ``delete_volumes`` (``rollback --delete-volumes``), once every server above is
   done (their sources run again first), the copies of its volumes: the temporaries the
   passes keep or a kill left (snapshots on both sides) removed, each volume's chain
   ended, each destination volume carrying the source's marker deleted (one without it,
   or attached, is named and left with its passes as they are), and the passes marked
   ``rolled_back``/``failed``, so a re-run copies the volume anew. A copy that cannot
   go fails the rollback at the end with one line, after everything else was undone.

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

from stackhop.errors import ConflictError, StackhopError
from stackhop.journal import DONE, FAILED, ROLLED_BACK, Journal, OperationRecord
from stackhop.kinds.base import Kind
from stackhop.kinds.port import FLOATING_IP, PORT
from stackhop.kinds.rest import call
from stackhop.servers import steps
from stackhop.servers.gather import SOURCE_MARKS, without_released_mark
from stackhop.servers.migrate import COMMAND, SERVER_KIND, STEP_KIND
from stackhop.servers.root_disk import SOURCE_PROPERTY
from stackhop.volumes import cinder_adopt
from stackhop.volumes import copy as volume_copy
from stackhop.volumes.cinder_adopt import MARKER
from stackhop.volumes.methods import get_method
from stackhop.volumes.passes import KIND as PASS_KIND
from stackhop.volumes.passes import pass_number
from stackhop.volumes.storage import StorageMap
from stackhop.volumes.temporaries import TemporaryLedger, from_json

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
    copies: list[tuple[ServerRollback, list[str]]] = []
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
            journal.apply([], unmappings=[(destination_cloud, kind, source)
                                          for kind, source in undone.unmap])
            for row in server_rows.values():
                _mark(journal, run.id, row)
            done.append(undone)
            copies.append((undone, list(facts.get("precopy", {}).get("volumes") or facts.get(
                "final", {}).get("volumes") or [])))
        # Every source runs again before the first copy goes (a copy may take minutes).
        failures: list[str] = []
        if delete_volumes:
            assert storage is not None, "deleting the copies needs the storage map"
            scope = volume_copy.scope_of(runs[0].source_cloud or "", destination_cloud)
            for undone, volumes in copies:
                if not volumes:
                    undone.actions.append("no volume copies known to this run")
                for volume_id in volumes:
                    try:
                        _undo_volume(journal, run.id, scope, volume_copy.Clouds(src, dst),
                                     storage, volume_id, undone)
                    except (StackhopError, sdk_exceptions.SDKException) as exc:
                        line = f"the copy of volume {volume_id} is not deleted: {exc}"
                        undone.actions.append(line)
                        failures.append(line)
        if failures:
            raise ConflictError(f"{len(failures)} volume copies are not deleted ({failures[0]}); "
                                "what else the runs did is undone")
    except BaseException:
        journal.finish_run(run.id, "failed")
        raise
    journal.finish_run(run.id, "succeeded")
    return run.id, done


def _undo_server(dst: Any, source_id: str, facts: Mapping[str, Mapping[str, Any]],
                 out: ServerRollback) -> None:
    server_id = facts.get("verify", {}).get("server") or facts.get("boot", {}).get("server")
    booting = facts.get("boot", {}).get("booting")
    if not server_id and booting:  # a kill came between Nova's create and the note
        found = steps.find_booted(dst, str(booting), source_id)
        server_id = found.id if found is not None else None
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
        if entry.get("creating") and not target:  # a kill came between create and note
            listed = call(dst.network, "GET", "/floatingips?" + urlencode({
                "floating_network_id": entry["network"], "project_id": entry["project"]}))
            marked = [f["id"] for f in listed["floatingips"]
                      if Kind.marked_source_id(f.get("description")) == entry["source"]]
            target, entry = (marked[0], {**entry, "created": True}) if marked else (None, entry)
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
    where = dict(facts.get("creating_in") or {})
    if facts.get("creating") and where:  # a kill came between a port's create and its note
        wanted = {"description": steps.mark("", str(facts["creating"])), **where}
        listed = call(dst.network, "GET", f"/ports?{urlencode(wanted)}")["ports"]
        created += [p["id"] for p in listed  # (filtered here too: a Neutron may not)
                    if all(p.get(k) == v for k, v in wanted.items()) and p["id"] not in created]
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


def _undo_volume(journal: Journal, run_id: str, scope: str, clouds: volume_copy.Clouds,
                 storage: StorageMap, source_id: str, out: ServerRollback) -> None:
    """The copies the passes of source volume ``source_id`` made, deleted (see the module
    docstring): every pass of it in ``scope``, whatever its state, names its copy."""
    dst = clouds.destination
    rows = [r for r in journal.operations(scope=scope, kind=PASS_KIND)
            if r.source_id == source_id and r.state != ROLLED_BACK]
    deletable: list[Any] = []
    for copy_id in sorted({r.destination_id for r in rows if r.destination_id}):
        copy = dst.block_storage.find_volume(copy_id, ignore_missing=True, all_projects=True)
        if copy is None:
            continue
        if (copy.metadata or {}).get(MARKER) != source_id:
            out.actions.append(f"destination volume {copy_id} does not carry "
                               f"{MARKER}={source_id}: left in place")
            return  # and its passes as they are: a re-run must not take it for a copy
        if copy.status == "in-use":
            raise ConflictError(f"destination volume {copy_id} is attached to "
                                f"{[a.get('server_id') for a in copy.attachments]}")
        deletable.append(copy)
    # What the passes keep for a next one, and what an interrupted pass left (snapshots
    # on both sides), goes first: Cinder does not delete an RBD image with snapshots.
    ledger = TemporaryLedger(journal, scope)
    for entry in ledger.pending():
        if entry.source_id == source_id:
            temporary = from_json(entry.before)
            get_method(temporary.method).remove_temporary(
                temporary, clouds.source, dst, storage)
            ledger.removed(entry.run_id, temporary)
    done = [r for r in rows if r.state == DONE]
    if done:
        last = max(done, key=lambda r: pass_number(r.identity))
        state = (last.before or {}).get("state")
        if state:
            get_method(str(last.before["method"])).forget_incremental(
                state, clouds.source, dst, storage)
        ledger.forget_kept(run_id, source_id)
    for copy in deletable:
        cinder_adopt.delete_and_wait(dst, copy)
        out.actions.append(f"deleted copied volume {copy.id}")
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
