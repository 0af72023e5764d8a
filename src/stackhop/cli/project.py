"""``stackhop project migrate``: one project, all phases, resumable.

Thin: parse, open the journal, call :mod:`stackhop.project.migrate`, render a
summary line per phase and the final report. Behaviour: ``docs/project.md``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackhop.cli.options import (
    add_clouds,
    add_dry_run,
    add_executor,
    add_format_options,
    add_kind_options,
    add_maps,
    add_selection,
    add_workers,
    chosen_options,
)
from stackhop.cli.output import dump, render_table
from stackhop.cli.volumes_backup import (
    add_grant_option,
    add_reshape_options,
    backup_target,
    reshape_of,
)
from stackhop.errors import ConflictError, UsageError
from stackhop.journal import Journal
from stackhop.kinds.identity import parse_domain_map
from stackhop.project import migrate
from stackhop.project.phases import PHASES
from stackhop.project.report import MigrationReport
from stackhop.servers.migrate import CUTOVERS

PHASE_COLUMNS = ("Phase", "Status", "Summary")
PLAN_COLUMNS = ("Phase", "Action", "Object", "Detail")
OBJECT_COLUMNS = ("Kind", "Identity", "Outcome", "Source ID", "Destination ID")
STYLES = {"failed": "bold red", "done": "green", "moved": "green"}
METHODS = ("auto", "rbd", "stream", "image")


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``project`` command group."""
    project = subparsers.add_parser(
        "project",
        help="migrate one project with everything it has, phase by phase",
        description="One project at a time: resources, images, volumes, usage; resumable.",
    )
    sub = project.add_subparsers(
        title="project commands", dest="project_command", metavar="COMMAND", required=True
    )
    p = sub.add_parser(
        "migrate",
        help="move a project from one cloud to another, all phases",
        description=(
            "Run the phases " + ", ".join(PHASES) + " for one project: gather (inventory, "
            "volume and server selection, preflight), export (keypairs of its members, quotas, "
            "security groups, networking, images into the run's archive), import (resources, "
            "images, volumes with their backups), servers (pre-copy, cutover, verify), usage "
            "(archive and report), cleanup (temporaries, final verify). "
            "A re-run continues at the first phase not finished."
        ),
    )
    add_clouds(p)
    p.add_argument("--project", required=True, metavar="ID_OR_NAME")
    which = add_selection(
        p,
        "volume",
        title="which volumes (default: none)",
        every="every volume of the project",
        aliases_one=("--volumes",),
    )
    which.add_argument(
        "--interactive", action="store_true", help="list the project's volumes and let me pick"
    )
    servers = add_selection(
        p,
        "server",
        title="which servers (default: none): their volumes pre-copied while they run, then "
        "the cutover, as `servers migrate` does",
        every="every server of the project",
    )
    servers.add_argument(
        "--cutover",
        choices=CUTOVERS,
        default="stop",
        help="how each source server is taken down for its last pass (default stop; none: a "
        "test copy, the source keeps running)",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="volume copy method (default auto: rbd between Ceph backends, stream "
        "between file backends with an ssh host, else image)",
    )
    p.add_argument(
        "--backup-to",
        type=backup_target,
        metavar="DIR|cmd:COMMAND",
        help="also write each volume's backup to DIR or pipe it to COMMAND, from the same read",
    )
    p.add_argument(
        "--trust-writes",
        action="store_true",
        help="volumes the rbd method copies: verify a full pass from the writes librbd "
        "confirmed instead of reading the whole destination back (faster)",
    )
    add_reshape_options(p)
    add_kind_options(p)
    add_grant_option(p)
    p.add_argument(
        "--allow-in-use",
        action="store_true",
        help="copy attached volumes too (data may change during the copy)",
    )
    p.add_argument(
        "--usage-start",
        type=_date,
        metavar="DATE",
        help="usage archive start (default: the project's first server)",
    )
    p.add_argument(
        "--usage-end", type=_date, metavar="DATE", help="usage archive end (default: now)"
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="DIR",
        help="where the archive, usage report and final report go "
        "(default: ./stackhop-project-<project>)",
    )
    add_workers(p, 2, "objects and volumes handled")
    add_executor(p)
    p.add_argument(
        "--storage-map",
        metavar="FILE",
        help="how volume backends are reached (default: $STACKHOP_STORAGE_MAP)",
    )
    add_maps(p)
    add_dry_run(p, "show what every phase would do")
    add_format_options(p, columns=False)
    p.set_defaults(func=migrate_command)


def _choose_from_stdin(volumes: list[Any]) -> list[Any]:
    """Interactive selection: list the volumes, read the numbers to take from stdin."""
    print("Volumes of the project:", file=sys.stderr)
    for n, volume in enumerate(volumes, 1):
        attached = ", ".join(volume.attachments) or "-"
        print(
            f"  {n:>3}  {volume.name or volume.id:<30} {volume.size_gib:>5} GiB  "
            f"{volume.volume_type or '-':<10} {volume.status:<10} attached: {attached}",
            file=sys.stderr,
        )
    print("Numbers to copy (e.g. 1 3 4, 'all', or empty for none): ", end="", file=sys.stderr)
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer == "all":
        return list(volumes)
    chosen: list[Any] = []
    for word in answer.replace(",", " ").split():
        if not word.isdigit() or not 1 <= int(word) <= len(volumes):
            raise UsageError(f"{word!r} is not one of the numbers 1-{len(volumes)}; run again")
        chosen.append(volumes[int(word) - 1])
    return chosen


def _request(args: argparse.Namespace) -> migrate.MigrationRequest:
    picked = sum(bool(x) for x in (args.volumes, args.all_volumes, args.interactive))
    if picked > 1:
        raise UsageError("use one of --volume, --all-volumes and --interactive")
    if args.servers and args.all_servers:
        raise UsageError("use one of --server and --all-servers")
    if args.usage_start and args.usage_end and args.usage_end <= args.usage_start:
        raise UsageError("--usage-end must be after --usage-start")
    if args.broker and args.executor != "celery":
        raise UsageError("--broker goes with --executor celery")
    output = args.output or Path(f"stackhop-project-{args.project}")
    return migrate.MigrationRequest(
        source_cloud=args.source,
        destination_cloud=args.destination,
        project=args.project,
        output_dir=output,
        volumes=tuple(args.volumes),
        all_volumes=args.all_volumes,
        method=args.method,
        backup_to=args.backup_to,
        trust_writes=args.trust_writes,
        reshape=reshape_of(args),
        kind_options=chosen_options(args),
        grant_role=args.grant_role,
        usage_start=args.usage_start,
        usage_end=args.usage_end,
        workers=args.workers,
        allow_in_use=args.allow_in_use,
        storage_map=args.storage_map,
        user_map=args.user_map,
        domain_map=parse_domain_map(args.domain_map),
        disabled_users=args.disabled_users,
        project_map=args.project_map,
        choose_volumes=_choose_from_stdin if args.interactive else None,
        servers=tuple(args.servers),
        all_servers=args.all_servers,
        cutover=args.cutover,
        executor=args.executor,
        broker=args.broker,
    )


def migrate_command(args: argparse.Namespace) -> int:
    request = _request(args)
    with Journal(args.journal) as journal:
        if args.dry_run:
            migration = migrate.Migration(request, journal, "dry-run", args.events)
            rows = migrate.dry_run_plan(migration)
            if args.format != "table":
                dump({"plan": rows}, args.format, sys.stdout)
            else:
                render_table(
                    [
                        {
                            "Phase": r["phase"],
                            "Action": r["action"],
                            "Object": r["object"],
                            "Detail": r["detail"],
                        }
                        for r in rows
                    ],
                    PLAN_COLUMNS,
                    "table",
                    title="Plan (nothing changed)",
                )
            return 0
        report = migrate.migrate_project(request, journal, args.events)
    if args.format != "table":
        dump(report.as_dict(), args.format, sys.stdout)
    else:
        _print_report(report, request.output_dir)
    conflicts = report.counts()["conflict"]
    if conflicts:
        raise ConflictError(
            f"{conflicts} object(s) were left alone as conflicts (listed in "
            f"{request.output_dir / 'report.json'}); map their users or projects and import "
            f"the run's archive again: stackhop import --to {request.destination_cloud} "
            f"{request.output_dir / migrate.ARCHIVE_NAME} --user-map FILE"
        )
    return 0


def _print_report(report: MigrationReport, output: Path) -> None:
    render_table(
        [
            {
                "Kind": o.kind,
                "Identity": o.identity,
                "Outcome": o.outcome,
                "Source ID": o.source_id or "",
                "Destination ID": o.destination_id or "",
            }
            for o in report.objects
        ],
        OBJECT_COLUMNS,
        "table",
        title="Objects",
        styles=STYLES,
    )
    render_table(
        [{"Phase": p.name, "Status": p.status, "Summary": p.summary} for p in report.phases],
        PHASE_COLUMNS,
        "table",
        title=f"Project {report.project['name']}: phases",
        styles=STYLES,
    )
    counts = report.counts()
    print(
        f"{counts['moved']} moved, {counts['skipped']} skipped, {counts['conflict']} "
        f"conflict(s), {counts['failed']} failed"
    )
    print(f"report: {output / 'report.json'}, usage report: {output / 'usage' / 'report.html'}")
