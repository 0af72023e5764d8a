"""``stackhop servers plan``: what moving a project's servers needs, checked on the destination.

Thin: parse, open the clouds and the journal, call :mod:`stackhop.servers` (gather, then
preflight), render. Reads only; changes nothing on either cloud. The migration itself
(``servers migrate``) is being built on these steps: ``docs/design/servers.md``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from stackhop.cli.options import add_clouds, add_network_map
from stackhop.cli.output import add_format_options, dump, render_table
from stackhop.clouds import connect
from stackhop.errors import ConflictError
from stackhop.journal import Journal
from stackhop.kinds.identity import load_operator_map
from stackhop.mapfile import parse_pairs
from stackhop.resolve import Resolver, load_network_map
from stackhop.servers.gather import ServerRecord, find_server, gather
from stackhop.servers.preflight import Preflight, preflight
from stackhop.volumes.inventory import map_project, project_record

COLUMNS = ("Server", "Name", "Boot", "Flavor", "Ports", "Volumes", "Problems")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``servers`` command group."""
    servers = subparsers.add_parser(
        "servers", help="a project's servers: what moving them needs (plan)",
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
    add_clouds(p)
    p.add_argument("--project", required=True, help="the source project (name or ID)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--server", action="append", metavar="NAME_OR_ID",
                       help="a server of the project (repeatable)")
    which.add_argument("--all", action="store_true", help="every server of the project")
    p.add_argument("--flavor-map", action="append", default=[], metavar="SRC=DST",
                   help="run a source flavor's servers on the destination flavor DST "
                   "(names; repeatable; its shape must still be the same)")
    p.add_argument("--project-map", metavar="FILE",
                   help="source project ID: destination project ID (else same ID, or same "
                   "domain and name)")
    add_network_map(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=plan_command)


def plan_command(args: argparse.Namespace) -> int:
    flavor_map = dict(parse_pairs(args.flavor_map, "--flavor-map"))
    src, dst = connect(args.source), connect(args.destination)
    project = project_record(src, args.project)
    dst_project = map_project(project, dst, load_operator_map(args.project_map))
    if args.all:
        found = list(src.compute.servers(all_projects=True, project_id=project["id"]))
        servers = [src.compute.get_server(s.id) for s in sorted(found, key=lambda s: s.name)]
    else:
        servers = [find_server(src.compute, project["id"], s) for s in args.server]
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
