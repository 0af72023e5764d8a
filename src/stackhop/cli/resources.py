"""``stackhop export|plan|import|verify|rollback|migrate``: keypairs, quotas, security groups.

Thin: parse, open the clouds, archive and journal, call :mod:`stackhop.resources`,
render. The behaviour is documented in ``docs/resources.md``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stackhop import dbexport, resources, user_passwords
from stackhop import rollback as undo
from stackhop.archive import ArchiveReader, ArchiveWriter
from stackhop.cli.options import (
    add_clouds,
    add_dry_run,
    add_executor,
    add_format_options,
    add_kind_options,
    add_kind_selectors,
    add_maps,
    add_network_map,
    add_type_map,
    add_workers,
    chosen_options,
    chosen_selectors,
    executor_app,
)
from stackhop.cli.output import dump, render_table
from stackhop.clouds import cloud_config, connect
from stackhop.engine import Engine, RunResult
from stackhop.errors import UsageError, VerificationError
from stackhop.events import Event, EventType
from stackhop.images import archive as image_archive
from stackhop.images import common as image_selection
from stackhop.journal import Journal
from stackhop.kinds.identity import load_operator_map, parse_domain_map
from stackhop.kinds.volume_type import VOLUME_TYPE_NAME
from stackhop.plan import Operation, summarize
from stackhop.resolve import load_network_map
from stackhop.servers import rollback as server_rollback
from stackhop.volumes.reshape import parse_type_map
from stackhop.volumes.storage import load_storage_map

PLAN_COLUMNS = ("Action", "Kind", "Identity", "Detail")
RESULT_COLUMNS = ("Kind", "Done", "Skipped", "Conflict", "Failed", "Not started")
MISMATCH_COLUMNS = ("Kind", "Identity", "Problem")
ACTION_STYLES = {
    "create": "green",
    "update": "yellow",
    "delete": "red",
    "restore": "yellow",
    "conflict": "bold red",
    "failed": "bold red",
}


def _import_options(p: argparse.ArgumentParser) -> None:
    add_kind_options(p)
    add_workers(p, 8, "concurrent API requests")
    add_executor(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="update objects that differ on the destination (default: report conflict)",
    )
    p.add_argument(
        "--user-passwords",
        choices=user_passwords.MODES,
        default="none",
        help="what a user keystone.user creates gets: none (cannot log in until the operator "
        "sets one; the default), random (written to a 0600 file to hand out) or file "
        "(a YAML map name or domain/name: password)",
    )
    p.add_argument(
        "--user-passwords-file",
        metavar="FILE",
        help="random: where the generated passwords go (default: next to the journal, "
        "<journal>.user-passwords.yaml); file: the operator's password map",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the resource transfer commands."""
    p = subparsers.add_parser("export", help="export keypairs, quotas, security groups to a file")
    add_clouds(p, destination=False)
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument(
        "--via",
        choices=("api", "db"),
        default="api",
        help="read the APIs, or the services' databases (default: api)",
    )
    p.add_argument(
        "--db-config-dir",
        default="/etc",
        metavar="DIR",
        help="holds nova/nova.conf, neutron/neutron.conf, cinder/cinder.conf",
    )
    p.add_argument("--project", action="append", metavar="ID_OR_NAME", help="only this project")
    p.add_argument("--compression", choices=("zstd", "bz2"), default="zstd")
    add_kind_selectors(p)
    p.add_argument(
        "--images",
        action="store_true",
        help="also the images (of --project, else all): metadata, and their data with "
        "--with-image-data; `stackhop images import` uploads them",
    )
    p.add_argument("--with-image-data", action="store_true", help="put image data in too")
    p.set_defaults(func=export_command)

    p = subparsers.add_parser("plan", help="show what an import would do, changing nothing")
    add_clouds(p, source=False)
    p.add_argument("archive", metavar="FILE")
    p.add_argument("--overwrite", action="store_true", help="plan updates instead of conflicts")
    add_kind_selectors(p)
    add_maps(p)
    add_network_map(p)
    add_type_map(p)
    add_kind_options(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=plan_command)

    p = subparsers.add_parser("import", help="apply an archive to the destination (resumable)")
    add_clouds(p, source=False)
    p.add_argument("archive", metavar="FILE")
    add_kind_selectors(p)
    add_maps(p)
    add_network_map(p)
    add_type_map(p)
    _import_options(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=import_command)

    p = subparsers.add_parser("verify", help="compare the destination with an archive")
    add_clouds(p, source=False)
    p.add_argument("archive", metavar="FILE")
    add_kind_selectors(p)
    add_maps(p)
    add_network_map(p)
    add_type_map(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=verify_command)

    p = subparsers.add_parser(
        "rollback",
        help="undo what an import run did on the destination (a journaled run of its own)",
    )
    add_clouds(p, source=False)
    p.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="RUN_ID",
        help="the run to undo (repeat for several; see `stackhop status`)",
    )
    add_dry_run(p, "list the undo operations")
    p.add_argument(
        "--delete-volumes",
        action="store_true",
        help="servers migrate runs: delete the copies of the servers' volumes too "
        "(kept by default)",
    )
    p.add_argument(
        "--storage-map",
        metavar="FILE",
        help="with --delete-volumes: how each cloud's backends are reached "
        "(default: $STACKHOP_STORAGE_MAP)",
    )
    add_workers(p, 8, "concurrent API requests")
    add_format_options(p, columns=False)
    p.set_defaults(func=rollback_command)

    p = subparsers.add_parser("migrate", help="export, import and verify in one go, no file")
    add_clouds(p)
    p.add_argument("--project", action="append", metavar="ID_OR_NAME", help="only this project")
    add_kind_selectors(p)
    add_maps(p)
    add_network_map(p)
    add_type_map(p)
    _import_options(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=migrate_command)


# -- helpers ---------------------------------------------------------------------


def _chosen(args: argparse.Namespace) -> list[str]:
    return chosen_selectors(args)


def _prepare(
    args: argparse.Namespace,
    source: Any,
    conn: Any,
    journal: Journal | None,
) -> resources.Prepared:
    chosen = _chosen(args)
    selected = resources.selected_kinds(chosen, archive=True)
    kinds = resources.check_selection(source, selected, bool(chosen))
    prepared = resources.prepare(
        source,
        kinds,
        conn,
        args.destination,
        user_map=load_operator_map(args.user_map)
        .with_domains(parse_domain_map(args.domain_map))
        .with_disabled_users(args.disabled_users),
        project_map=load_operator_map(args.project_map),
        journal=journal,
        options=chosen_options(args),
    )
    prepared.resolver.maps.update(load_network_map(getattr(args, "network_map", None)))
    prepared.resolver.maps[VOLUME_TYPE_NAME] = parse_type_map(getattr(args, "type_map", []))
    warning = resources.unmapped_warning(prepared.identities, prepared)
    if warning:
        args.events.emit(warning)
    return prepared


def _print_plan(operations: list[Operation], fmt: str) -> None:
    if fmt != "table":
        dump(
            {"operations": [op.as_dict() for op in operations], "summary": summarize(operations)},
            fmt,
            sys.stdout,
        )
        return
    rows = [
        dict(
            zip(
                PLAN_COLUMNS,
                (op.action, op.kind.name, op.identity, op.as_dict()["detail"] or ""),
                strict=True,
            )
        )
        for op in operations
    ]
    render_table(rows, PLAN_COLUMNS, "table", title="Plan", styles=ACTION_STYLES)


def _print_result(result: RunResult, fmt: str) -> None:
    if fmt != "table":
        dump(result.as_dict(), fmt, sys.stdout)
        return
    rows = [
        dict(
            zip(
                RESULT_COLUMNS,
                (kind, c["done"], c["skipped"], c["conflict"], c["failed"], c["not_started"]),
                strict=True,
            )
        )
        for kind, c in result.counts.items()
    ]
    render_table(rows, RESULT_COLUMNS, "table", title=f"Run {result.run_id}: {result.outcome}")
    if result.errors:
        render_table(
            [
                {"Kind": e["kind"], "Identity": e["identity"], "Problem": e["error"]}
                for e in result.errors
            ],
            MISMATCH_COLUMNS,
            "table",
            title="Failed",
        )


def _apply(
    args: argparse.Namespace,
    source: Any,
    command: str,
    source_cloud: str | None,
) -> RunResult:
    conn = connect(args.destination)
    issuer = user_passwords.issuer_for(
        args.user_passwords, args.user_passwords_file, str(args.journal)
    )
    with Journal(args.journal) as journal, user_passwords.issuing(issuer):
        prepared = _prepare(args, source, conn, journal)
        resources.check_counterparts(prepared, conn, args.destination, args.workers)
        app = executor_app(args)
        executor = None
        if app is not None:  # creates and updates on the workers (users' stay here)
            from stackhop.executor.dispatch import celery_executor, default_route

            executor = celery_executor(app, default_route, args.workers)
        engine = Engine(journal, conn, prepared.resolver, workers=args.workers,
                        events=args.events, executor=executor)  # fmt: skip
        # The destination is read kind by kind while the kinds read first are applied.
        result = engine.run_planned(
            resources.plan_stream(prepared, conn, args.overwrite, args.workers),
            total=sum(len(records) for records in prepared.records.values()),
            command=command,
            source_cloud=source_cloud,
            destination_cloud=args.destination,
            args={
                "archive": getattr(args, "archive", None),
                "kinds": _chosen(args),
                "overwrite": args.overwrite,
                "options": sorted(k for k, on in chosen_options(args).items() if on),
            },
        )
        resources.record_aliases(journal, conn, args.destination, prepared.records)
        return result


# -- commands --------------------------------------------------------------------


def export_command(args: argparse.Namespace) -> int:
    kinds = resources.selected_kinds(_chosen(args))
    config = cloud_config(args.source)
    with ArchiveWriter(
        args.output,
        source_cloud=args.source,
        source_auth_url=config.auth_url or "",
        compression=args.compression,
    ) as writer:
        conn = connect(args.source)
        database = dbexport.DatabaseReader(args.db_config_dir) if args.via == "db" else None
        try:
            counts = resources.export(
                conn,
                writer,
                kinds,
                projects=args.project,
                database=database,
                events=args.events,
            )
        finally:
            if database is not None:
                database.close()
        if args.images or args.with_image_data:
            counts.update(
                image_archive.export_images(
                    conn,
                    writer,
                    image_selection.images_of_projects(conn, args.project),
                    with_data=args.with_image_data,
                    events=args.events,
                    write_projects=False,
                )
            )
    for kind, count in counts.items():
        args.events.emit(Event(EventType.INFO, kind=kind, message=f"exported {count} records"))
    return 0


def plan_command(args: argparse.Namespace) -> int:
    conn = connect(args.destination)
    with ArchiveReader(args.archive) as reader:
        prepared = _prepare(args, reader, conn, None)
        resources.check_counterparts(prepared, conn, args.destination)
        operations = resources.plan_import(prepared, conn, args.overwrite)
    _print_plan(operations, args.format)
    return 0


def import_command(args: argparse.Namespace) -> int:
    with ArchiveReader(args.archive) as reader:
        result = _apply(args, reader, "import", reader.manifest.source_cloud)
    _print_result(result, args.format)
    result.raise_for_failures()
    return 0


def _verify(args: argparse.Namespace, source: Any, run: RunResult | None = None) -> None:
    """Compare and print; with ``run`` (migrate) its result goes into the same document."""
    conn = connect(args.destination)
    prepared = _prepare(args, source, conn, None)
    checked, mismatches = resources.verify(prepared, conn)
    if args.format != "table":
        document: dict[str, Any] = {
            "checked": checked,
            "mismatches": [m.as_dict() for m in mismatches],
        }
        if run is not None:
            document = {"run": run.as_dict(), "verify": document}
        dump(document, args.format, sys.stdout)
    else:
        if run is not None:
            _print_result(run, "table")
        if mismatches:
            render_table(
                [
                    dict(zip(MISMATCH_COLUMNS, (m.kind, m.identity, m.problem), strict=True))
                    for m in mismatches
                ],
                MISMATCH_COLUMNS,
                "table",
                title=f"{len(mismatches)} of {checked} objects differ",
            )
        else:
            print(f"all {checked} objects match")
    if mismatches:
        raise VerificationError(
            f"{len(mismatches)} of {checked} objects differ on {args.destination}; "
            "import again (with --overwrite to update them) or map the missing users"
        )


def verify_command(args: argparse.Namespace) -> int:
    with ArchiveReader(args.archive) as reader:
        _verify(args, reader)
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    with Journal(args.journal) as journal:
        servers = [r for r in args.run if server_rollback.is_servers_run(journal, r)]
        if servers:
            return _rollback_servers(args, journal, servers)
    if args.delete_volumes:
        raise UsageError("--delete-volumes is for servers migrate runs; drop it to roll "
                         "back these runs")
    conn = None if args.dry_run else connect(args.destination)
    with Journal(args.journal) as journal:
        if args.dry_run:
            planned = undo.plan_rollback(journal, args.run, args.destination)
            result = None
        else:
            planned, result = undo.rollback(
                journal, conn, args.destination, args.run, workers=args.workers,
                events=args.events,
            )
    if args.format != "table":
        document: dict[str, Any] = {"steps": [op.as_dict() for op in planned]}
        if result is not None:
            document["run"] = result.as_dict()
        dump(document, args.format, sys.stdout)
    elif result is None:
        _print_plan(list(planned), "table")
    else:
        _print_result(result, "table")
    if result is not None:
        result.raise_for_failures()
    return 0


def _rollback_servers(args: argparse.Namespace, journal: Journal, runs: list[str]) -> int:
    """``servers migrate`` runs: their own undo (stackhop.servers.rollback)."""
    if len(runs) != len(args.run):
        raise UsageError("roll back servers migrate runs on their own (without other runs)")
    if args.dry_run:
        raise UsageError("--dry-run is not offered for servers migrate runs yet; "
                         "`stackhop status --run ID` shows what the run did")
    run_id, undone = server_rollback.rollback_servers(
        journal, connect(journal.run(runs[0]).source_cloud or ""), connect(args.destination),
        runs, args.destination, delete_volumes=args.delete_volumes,
        storage=load_storage_map(args.storage_map) if args.delete_volumes else None)
    if args.format != "table":
        dump({"run": run_id, "servers": [{"id": u.server_id, "actions": u.actions}
                                         for u in undone]}, args.format, sys.stdout)
        return 0
    for u in undone:
        for action in u.actions or ["nothing to undo"]:
            print(f"{u.server_id}: {action}")
    print(f"rollback run {run_id}: {len(undone)} server(s) undone")
    return 0


def migrate_command(args: argparse.Namespace) -> int:
    if args.source == args.destination:
        raise UsageError("--from and --to name the same cloud; migrate moves between two clouds")
    records = resources.RecordSet()
    resources.export(
        connect(args.source),
        records,
        resources.selected_kinds(_chosen(args)),
        projects=args.project,
        events=args.events,
    )
    result = _apply(args, records, "migrate", args.source)
    if result.failed:
        _print_result(result, args.format)
        result.raise_for_failures()
    # Conflicts (objects kept as they are on dst) show again as verify's mismatches.
    _verify(args, records, run=result)
    return 0
