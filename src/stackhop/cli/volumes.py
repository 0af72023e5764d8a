"""``stackhop volumes copy|status|cleanup|restore-backup|backup``: volumes between clouds.

Thin: parse, open the clouds, the journal and the storage map, call
:mod:`stackhop.volumes`, render. Behaviour, methods and formats: ``docs/volumes.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from stackhop.cli import volumes_backup
from stackhop.cli.options import (
    add_clouds,
    add_dry_run,
    add_executor,
    add_format_options,
    add_maps,
    add_selection,
    add_workers,
    executor_app,
)
from stackhop.cli.output import dump, render_table
from stackhop.clouds import connect
from stackhop.errors import OperationFailedError, UsageError
from stackhop.journal import Journal
from stackhop.kinds.identity import load_operator_map
from stackhop.volumes import copy as volume_copy
from stackhop.volumes.inventory import list_projects, list_volumes
from stackhop.volumes.methods import METHODS
from stackhop.volumes.model import VolumeRef
from stackhop.volumes.restore import COMMAND as RESTORE_COMMAND
from stackhop.volumes.restore import restore_backup
from stackhop.volumes.restore import scope_of as restore_scope
from stackhop.volumes.storage import load_storage_map
from stackhop.volumes.temporaries import KIND as TEMPORARY_KIND

PLAN_COLUMNS = ("Volume", "Name", "Size", "Method", "Destination project", "Action", "Reason")
RESULT_COLUMNS = ("Volume", "Name", "Outcome", "Pass", "Destination", "Sent", "Detail")
STATUS_COLUMNS = ("Volume", "Pass", "Method", "Stage", "State", "Destination", "Sent", "Error")
STYLES = {"failed": "bold red", "done": "green", "copy": "green", "incremental": "cyan"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``volumes`` command group."""
    volumes = subparsers.add_parser(
        "volumes",
        help="copy a project's Cinder volumes to another cloud, verified",
        description="Cinder volumes between clouds by RBD, ssh stream or image; resumable, "
        "incremental, verified, with a backup from the same read.",
    )
    sub = volumes.add_subparsers(
        title="volume commands", dest="volumes_command", metavar="COMMAND", required=True
    )

    p = sub.add_parser(
        "copy",
        help="copy volumes of a project to another cloud",
        description="Copy the selected volumes of --project from --from to --to with --method. "
        "Preflight first (project, credentials, quota, in-use, method, storage hosts); a re-run "
        "skips verified volumes; --incremental sends only what changed since the last pass.",
    )
    add_clouds(p)
    p.add_argument("--project", metavar="ID_OR_NAME", help="the source project")
    which = add_selection(
        p,
        "volume",
        title="which volumes (one of)",
        every="every volume of the project (also spelled --all)",
        aliases_all=("--all",),
    )
    which.add_argument(
        "--interactive",
        action="store_true",
        help="pick the project and the volumes from lists (reads stdin)",
    )
    p.add_argument("--method", choices=tuple(METHODS), required=True)
    p.add_argument(
        "--incremental",
        action="store_true",
        help="send only what changed since the last verified pass",
    )
    p.add_argument(
        "--final",
        action="store_true",
        help="the cutover pass: an incremental pass on detached volumes that ends their "
        "incremental chains (kept snapshots removed)",
    )
    p.add_argument(
        "--backup-to",
        metavar="DIR|cmd:COMMAND",
        type=volumes_backup.backup_target,
        help="also write each volume's backup (a tar of zstd pieces and their digests) to "
        "DIR, or pipe it to COMMAND (e.g. 'cmd:dd of=/dev/nst0 bs=1M'), from the same read",
    )
    volumes_backup.add_reshape_options(p)
    volumes_backup.add_grant_option(p)
    p.add_argument(
        "--codec",
        choices=("auto", "raw", "zstd", "zlib"),
        help="stream method: how chunks travel (default auto: zstd where both storage hosts "
        "have it, else raw with a warning; zlib pays on slow links)",
    )
    p.add_argument(
        "--trust-writes",
        action="store_true",
        help="rbd method: verify a full pass from the writes librbd confirmed instead of "
        "reading the whole destination back (faster; does not re-check what Ceph stored)",
    )
    add_workers(p, 1, "volumes copied")
    add_executor(p)
    p.add_argument(
        "--allow-in-use",
        action="store_true",
        help="copy attached volumes (with --incremental; the final pass detached)",
    )
    add_dry_run(p, "print the plan")
    p.add_argument(
        "--storage-map",
        metavar="FILE",
        help="how each cloud's backends are reached (default: $STACKHOP_STORAGE_MAP)",
    )
    add_maps(p, users=False)
    add_format_options(p, columns=False)
    p.set_defaults(func=copy_command)

    p = sub.add_parser("status", help="the volume copies in the journal, with their stages")
    p.add_argument("--run", metavar="ID", help="only this run (an ID prefix is enough)")
    add_format_options(p, columns=False)
    p.set_defaults(func=status_command)

    p = sub.add_parser("cleanup", help="remove the temporaries a crashed run left")
    p.add_argument("--run", required=True, metavar="ID")
    p.add_argument(
        "--end-chains",
        action="store_true",
        help="also end the incremental chains of the volumes that run verified",
    )
    p.add_argument("--storage-map", metavar="FILE")
    add_format_options(p, columns=False)
    p.set_defaults(func=cleanup_command)

    p = sub.add_parser("restore-backup", help="create a volume from a --backup-to file")
    add_clouds(p, source=False)
    p.add_argument("--project", required=True, metavar="ID_OR_NAME")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", help="the new volume's name (default: the backed-up volume's)")
    p.add_argument("--method", choices=("image",), default="image")
    p.add_argument("--storage-map", metavar="FILE")
    add_format_options(p, columns=False)
    p.set_defaults(func=restore_command)

    volumes_backup.register(sub)


def _print(rows: list[dict[str, Any]], columns: Sequence[str], fmt: str, data: Any) -> None:
    if fmt == "table":
        render_table(rows, columns, fmt, styles=STYLES)
    else:
        dump(data, fmt, sys.stdout)


def ask(prompt: str, stdin: TextIO) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = stdin.readline()
    if not line:
        raise UsageError("--interactive: no answer on stdin")
    return line.strip()


def _pick_project(conn: Any, stdin: TextIO) -> str:
    projects = list_projects(conn)
    for i, project in enumerate(projects, 1):
        sys.stderr.write(f"{i:3}  {project['domain_name']}/{project['name']}  {project['id']}\n")
    answer = ask("project (number, name or ID): ", stdin)
    if answer.isdigit() and 1 <= int(answer) <= len(projects):
        return str(projects[int(answer) - 1]["id"])
    return answer


def _pick_volumes(volumes: list[VolumeRef], stdin: TextIO) -> list[VolumeRef]:
    if not volumes:
        raise UsageError("--interactive: the project has no volumes")
    for i, v in enumerate(volumes, 1):
        attached = ",".join(v.attachments) or "-"
        sys.stderr.write(
            f"{i:3}  {v.name or '-':24} {v.size_gib:>4} GiB  "
            f"{v.volume_type or '-':10} {v.status:10} attached: {attached}\n"
        )
    answer = ask("volumes to copy (numbers separated by spaces or commas, or 'all'): ", stdin)
    if answer.lower() == "all":
        return volumes
    chosen: list[VolumeRef] = []
    for word in answer.replace(",", " ").split():
        if not word.isdigit() or not 1 <= int(word) <= len(volumes):
            raise UsageError(f"--interactive: {word!r} is not a number from 1 to {len(volumes)}")
        if volumes[int(word) - 1] not in chosen:
            chosen.append(volumes[int(word) - 1])
    if not chosen:
        raise UsageError("--interactive: no volume chosen")
    return chosen


def _method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the chosen method given on the command line (checked above)."""
    options: dict[str, Any] = {}
    if args.codec:
        options["codec"] = args.codec
    if args.trust_writes:
        options["reread"] = False
    return options


def copy_command(args: argparse.Namespace) -> int:
    if args.codec and args.method != "stream":
        raise UsageError(f"--codec is an option of the stream method, not of {args.method}")
    if args.trust_writes and args.method != "rbd":
        raise UsageError(f"--trust-writes is an option of the rbd method, not of {args.method}")
    if args.interactive and (args.volumes or args.all_volumes):
        raise UsageError("--interactive picks the volumes: leave out --volume and --all-volumes")
    if not args.interactive and not args.project:
        raise UsageError("name the source project with --project (or use --interactive)")
    storage = load_storage_map(args.storage_map)
    project_map = load_operator_map(args.project_map)
    clouds = volume_copy.Clouds(connect(args.source), connect(args.destination))
    project, selected = args.project, None
    if args.interactive:
        project = project or _pick_project(clouds.source, sys.stdin)
        from stackhop.volumes.inventory import project_record

        record = project_record(clouds.source, project)
        selected = _pick_volumes(list_volumes(clouds.source, args.source, record["id"]), sys.stdin)
    request = volume_copy.CopyRequest(
        source_cloud=args.source,
        destination_cloud=args.destination,
        project=project,
        volumes=tuple(args.volumes),
        all=args.all_volumes,
        method=args.method,
        incremental=args.incremental or args.final,
        final=args.final,
        backup_to=args.backup_to,
        reshape=volumes_backup.reshape_of(args),
        grant_role=args.grant_role,
        method_options=_method_options(args),
        workers=args.workers,
        allow_in_use=args.allow_in_use,
        dry_run=args.dry_run,
        executor=args.executor,
    )
    app = executor_app(args)
    with Journal(args.journal) as journal:
        result = volume_copy.copy_volumes(
            request,
            clouds,
            journal,
            storage,
            events=args.events,
            project_map=project_map,
            selected=selected,
            app=app,
        )
    if args.dry_run:
        rows = [
            {
                "Volume": p.volume.id,
                "Name": p.volume.name,
                "Size": f"{p.volume.size_gib} GiB",
                "Method": result.method,
                "Destination project": p.destination_project_id,
                "Action": p.action,
                "Reason": p.reason,
            }
            for p in result.plan
        ]
        _print(rows, PLAN_COLUMNS, args.format, [p.as_dict() for p in result.plan])
        return 0
    rows = [
        {
            "Volume": o.volume_id,
            "Name": o.name,
            "Outcome": o.outcome,
            "Pass": str(o.pass_number),
            "Destination": o.destination_id or "",
            "Sent": str(o.bytes_sent),
            "Detail": o.error or o.backup or "",
        }
        for o in result.outcomes
    ]
    _print(
        rows,
        RESULT_COLUMNS,
        args.format,
        {
            "run_id": result.run_id,
            "method": result.method,
            "volumes": [o.__dict__ for o in result.outcomes],
        },
    )
    if result.failed:
        raise OperationFailedError(failed=len(result.failed), run=result.run_id)
    return 0


def status_command(args: argparse.Namespace) -> int:
    with Journal(args.journal) as journal:
        run_id = journal.run(args.run).id if args.run else None
        rows = journal.operations(run_id=run_id, kind=volume_copy.KIND)
        leftovers = journal.operations(run_id=run_id, kind=TEMPORARY_KIND, state="pending")
    table = []
    for row in rows:
        before = row.before or {}
        table.append(
            {
                "Volume": row.source_id,
                "Pass": before.get("pass"),
                "Method": before.get("method"),
                "Stage": before.get("stage"),
                "State": row.state,
                "Destination": row.destination_id or "",
                "Sent": before.get("bytes_sent", ""),
                "Error": row.error or "",
            }
        )
    data = {"volumes": [r.as_dict() for r in rows], "temporaries": [r.as_dict() for r in leftovers]}
    _print(table, STATUS_COLUMNS, args.format, data)
    if args.format == "table" and leftovers:
        print(
            f"{len(leftovers)} temporary object(s) may still exist; "
            "`stackhop volumes cleanup --run ID` removes a crashed run's"
        )
    return 0


def cleanup_command(args: argparse.Namespace) -> int:
    storage = load_storage_map(args.storage_map)
    with Journal(args.journal) as journal:
        run = journal.run(args.run)
        if run.command == RESTORE_COMMAND and run.destination_cloud:
            conn = connect(run.destination_cloud)
            clouds, scope = volume_copy.Clouds(conn, conn), restore_scope(run.destination_cloud)
        elif run.source_cloud and run.destination_cloud:
            clouds = volume_copy.Clouds(connect(run.source_cloud), connect(run.destination_cloud))
            scope = volume_copy.scope_of(run.source_cloud, run.destination_cloud)
        else:
            raise UsageError(f"run {run.id} is not a `volumes copy` or `restore-backup` run")
        report = volume_copy.cleanup_run(
            run.id, scope, clouds, journal, storage, end_chains=args.end_chains,
            events=args.events,
        )  # fmt: skip
    rows = [
        {"Temporary": r["temporary"], "Outcome": r["outcome"], "Error": r.get("error", "")}
        for r in report
    ]
    _print(
        rows,
        ("Temporary", "Outcome", "Error"),
        args.format,
        {"run_id": run.id, "temporaries": report},
    )
    failed = sum(r["outcome"] == "failed" for r in report)
    if failed:
        raise OperationFailedError(failed=failed, run=run.id)
    return 0


def restore_command(args: argparse.Namespace) -> int:
    storage = load_storage_map(args.storage_map)
    conn = connect(args.destination)
    with Journal(args.journal) as journal:
        result = restore_backup(
            args.file,
            args.destination,
            args.project,
            conn,
            journal,
            storage,
            name=args.name,
            method=args.method,
            events=args.events,
        )
    row = {
        "Volume": result.volume_id,
        "Name": result.name,
        "Project": result.project_id,
        "Digest": result.content_digest[:16],
        "Verified by": result.verified_by,
    }
    _print([row], tuple(row), args.format, result.__dict__)
    return 0
