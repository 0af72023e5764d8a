"""``stackhop servers plan|migrate``: a project's servers between clouds.

Thin: parse, open the clouds, the journal and the storage map, call
:mod:`stackhop.servers` (``plan``: gather, then preflight, no change; ``migrate``: the
steps of :mod:`stackhop.servers.migrate`), render. docs/servers.md says what is carried.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from stackhop.cli.options import add_clouds, add_dry_run, add_network_map
from stackhop.cli.output import add_format_options, dump, render_table
from stackhop.cli.volumes import ask
from stackhop.clouds import connect
from stackhop.errors import ConflictError, UsageError
from stackhop.journal import Journal
from stackhop.kinds.identity import load_operator_map
from stackhop.mapfile import parse_pairs
from stackhop.resolve import Resolver, load_network_map
from stackhop.servers.gather import ServerRecord, find_server, gather
from stackhop.servers.migrate import (
    CUTOVERS,
    METHODS,
    SETTLE_BYTES,
    PreflightFailed,
    ServerMigration,
    ServerRequest,
    migrate_servers,
)
from stackhop.servers.preflight import Preflight, preflight
from stackhop.volumes.inventory import map_project, project_record
from stackhop.volumes.storage import load_storage_map

COLUMNS = ("Server", "Name", "Boot", "Flavor", "Ports", "Volumes", "Problems")
STEP_COLUMNS = ("Server", "Name", "Step", "Status", "Summary")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``servers`` command group."""
    servers = subparsers.add_parser(
        "servers", help="a project's servers: what moving them needs (plan), moving them",
        description="Servers between clouds (issue 19; docs/design/servers.md).",
    )
    sub = servers.add_subparsers(
        title="server commands", dest="servers_command", metavar="COMMAND", required=True
    )
    p = sub.add_parser(
        "plan",
        help="read the selected servers and check them against the destination (no change)",
        description="Gather each selected server of --project (flavor, boot source, volumes "
        "in device order, ports with fixed IPs and MACs, floating IPs, groups, metadata) and "
        "check the destination: flavor of the same shape, networks, subnets, security "
        "groups and server groups mapped (the journal's ID map, --network-map), fixed IPs "
        "free, quotas. Exit 10 when something would stop the migration.",
    )
    _selection(p)
    p.set_defaults(func=plan_command)
    m = sub.add_parser(
        "migrate",
        help="move the selected servers: pre-copy while running, cut over, verify",
        description="For each selected server of --project: its volumes copied while it "
        "runs (incremental passes until one is small), the source stopped, the last changed "
        "chunks sent, the destination ports made with the same fixed IPs and MACs, the "
        "server booted from its copied boot volume, data volumes attached in order, floating "
        "IPs moved, everything verified. Gather and preflight come first: a problem stops "
        "there with nothing stopped or created (exit 10). Every step is journaled: a re-run "
        "carries on where a run stopped; `stackhop rollback --run ID` undoes a run.",
    )
    _selection(m)
    m.add_argument("--cutover", choices=CUTOVERS, default="stop",
                   help="how the source is quiesced for the last pass (default stop; none: "
                   "a test copy, the source keeps running and its floating IPs)")
    m.add_argument("--method", choices=METHODS, default="auto",
                   help="how the volumes are copied (default auto: rbd, else stream, else "
                   "image)")
    m.add_argument("--settle", type=int, default=SETTLE_BYTES, metavar="BYTES",
                   help="pre-copy passes go on while a pass sends more than this (default "
                   f"{SETTLE_BYTES // 2**20} MiB)")
    m.add_argument("--max-passes", type=int, default=4, metavar="N",
                   help="pre-copy passes at most (default 4; 0: no pre-copy, the whole "
                   "copy with the source stopped)")
    m.add_argument("--storage-map", metavar="FILE",
                   help="how each cloud's backends are reached (default: $STACKHOP_STORAGE_MAP)")
    add_dry_run(m, "print the plan per server")
    m.set_defaults(func=migrate_command)


def _selection(p: argparse.ArgumentParser) -> None:
    add_clouds(p)
    p.add_argument("--project", required=True, help="the source project (name or ID)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--server", action="append", metavar="NAME_OR_ID",
                       help="a server of the project (repeatable)")
    which.add_argument("--all", action="store_true", help="every server of the project")
    which.add_argument("--interactive", action="store_true",
                       help="list the project's servers and let me pick")
    p.add_argument("--flavor-map", action="append", default=[], metavar="SRC=DST",
                   help="run a source flavor's servers on the destination flavor DST "
                   "(names; repeatable; its shape must still be the same)")
    p.add_argument("--project-map", metavar="FILE",
                   help="source project ID: destination project ID (else same ID, or same "
                   "domain and name)")
    add_network_map(p)
    add_format_options(p, columns=False)


def _picked(args: argparse.Namespace, src: Any) -> tuple[str, ...]:
    """``--server`` as given, or the servers picked from a numbered list (``--interactive``)."""
    if not args.interactive:
        return tuple(args.server or ())
    project = project_record(src, args.project)
    servers = sorted(src.compute.servers(all_projects=True, project_id=project["id"]),
                     key=lambda s: s.name)
    if not servers:
        raise UsageError(f"--interactive: project {project['name']} has no servers")
    for i, server in enumerate(servers, 1):
        sys.stderr.write(f"{i:3}  {server.name:24} {server.status:8} {server.id}\n")
    answer = ask("servers to move (numbers separated by spaces or commas, or 'all'): ",
                 sys.stdin)
    if answer.lower() == "all":
        return tuple(s.id for s in servers)
    chosen: list[str] = []
    for word in answer.replace(",", " ").split():
        if not word.isdigit() or not 1 <= int(word) <= len(servers):
            raise UsageError(f"--interactive: {word!r} is not a number from 1 to {len(servers)}")
        if servers[int(word) - 1].id not in chosen:
            chosen.append(servers[int(word) - 1].id)
    if not chosen:
        raise UsageError("--interactive: no server chosen")
    return tuple(chosen)


def migrate_command(args: argparse.Namespace) -> int:
    src, dst = connect(args.source), connect(args.destination)
    request = ServerRequest(
        source_cloud=args.source, destination_cloud=args.destination, project=args.project,
        servers=_picked(args, src), all=args.all, cutover=args.cutover,
        method=args.method, flavor_map=dict(parse_pairs(args.flavor_map, "--flavor-map")),
        settle=args.settle, max_passes=args.max_passes, dry_run=args.dry_run,
    )
    with Journal(args.journal) as journal:
        resolver = Resolver(args.destination, maps=load_network_map(args.network_map),
                            journal=journal)
        try:
            migration = migrate_servers(
                request, src, dst, journal, load_storage_map(args.storage_map), resolver,
                project_map=load_operator_map(args.project_map), events=args.events)
        except PreflightFailed as failed:
            _print(failed.migration.records, failed.migration.checked, args.format)
            raise
    if args.dry_run:
        _print(migration.records, migration.checked, args.format)
        return 0
    _print_steps(migration, args.format)
    return 0


def _print_steps(migration: ServerMigration, fmt: str) -> None:
    if fmt != "table":
        dump({"run": migration.run_id, "servers": [
            {"id": o.server_id, "name": o.name, "destination_id": o.destination_id,
             "downtime_s": o.downtime, "steps": [s.as_dict() for s in o.steps]}
            for o in migration.outcomes]},
            fmt, sys.stdout)
        return
    rows = [{"Server": o.server_id, "Name": o.name, "Step": s.name, "Status": s.status,
             "Summary": s.summary} for o in migration.outcomes for s in o.steps]
    render_table(rows, STEP_COLUMNS, fmt)
    for o in migration.outcomes:
        if o.downtime is not None:
            print(f"server {o.name} ({o.server_id}): down {o.downtime:.1f} s, from the "
                  "source's stop to the destination ACTIVE")
    print(f"run {migration.run_id}: {len(migration.outcomes)} server(s) migrated; undo with "
          f"`stackhop rollback --to {migration.request.destination_cloud} --run "
          f"{migration.run_id}`")


def plan_command(args: argparse.Namespace) -> int:
    flavor_map = dict(parse_pairs(args.flavor_map, "--flavor-map"))
    src, dst = connect(args.source), connect(args.destination)
    project = project_record(src, args.project)
    dst_project = map_project(project, dst, load_operator_map(args.project_map))
    if args.all:
        found = list(src.compute.servers(all_projects=True, project_id=project["id"]))
        servers = [src.compute.get_server(s.id) for s in sorted(found, key=lambda s: s.name)]
    else:
        servers = [find_server(src.compute, project["id"], s) for s in _picked(args, src)]
    records = [gather(src, s) for s in servers]
    with Journal(args.journal) as journal:
        resolver = Resolver(args.destination, maps=load_network_map(args.network_map),
                            journal=journal)
        checked = preflight(dst, dst_project, records, resolver, flavor_map)
    _print(records, checked, args.format)
    if not checked.ok:
        raise ConflictError(f"{len(checked.all_problems)} problem(s) would stop the migration "
                            "of these servers; nothing was changed (see above)")
    return 0


def _print(records: list[ServerRecord], checked: Preflight, fmt: str) -> None:
    if fmt != "table":
        dump({"servers": [{**r.as_dict(), "preflight": asdict(c)}
                          for r, c in zip(records, checked.servers, strict=True)],
              "problems": checked.problems}, fmt, sys.stdout)
        return
    rows: list[dict[str, Any]] = []
    for record, check in zip(records, checked.servers, strict=True):
        rows.append({
            "Server": record.id, "Name": record.name,
            "Boot": record.boot if record.boot == "image" else
            f"volume {record.boot_volume.volume_id if record.boot_volume else '?'}",
            "Flavor": f"{record.flavor.get('original_name')} -> {check.flavor_id or '?'}",
            "Ports": ", ".join(f"{ip.ip_address}" for p in record.ports for ip in p.fixed_ips)
            or "none",
            "Volumes": len(record.attachments),
            "Problems": "; ".join(check.problems) or "none",
        })
    render_table(rows, COLUMNS, fmt)
    for problem in checked.problems:
        print(f"problem: {problem}")
    for record in records:
        for line in record.not_carried:
            print(f"not carried, {record.name}: {line}")
