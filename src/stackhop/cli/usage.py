"""``stackhop usage archive``: a cloud's usage history as JSON, CSV, charts and an HTML report.

Thin: parse, open the cloud, call :mod:`stackhop.usage.writer`, print a summary.
What is written and how figures are rounded: ``docs/usage.md``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from stackhop.cli.options import add_clouds, add_format_options, positive_int
from stackhop.cli.output import dump, render_table
from stackhop.clouds import cloud_config, connect
from stackhop.errors import UsageError
from stackhop.usage.months import utc
from stackhop.usage.writer import ArchiveRequest, archive_usage, check_request

COLUMNS = (
    "Project",
    "ID",
    "Start",
    "End",
    "Months",
    "vCPU-hours",
    "RAM GB-hours",
    "Disk GB-hours",
    "Servers",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``usage`` command group."""
    usage = subparsers.add_parser(
        "usage",
        help="archive a cloud's compute usage history (JSON, CSV, charts, HTML)",
        description="The compute usage history (os-simple-tenant-usage) of a cloud.",
    )
    sub = usage.add_subparsers(
        title="usage commands", dest="usage_command", metavar="COMMAND", required=True
    )
    p = sub.add_parser(
        "archive",
        help="write the usage history of projects to a directory",
        description=(
            "Read every server's usage of the projects from --from (every page of the API), "
            "and write DIR/detailed.json (the whole period), DIR/months/YYYY-MM.json, "
            "DIR/summary.csv, DIR/report.html (self-contained, charts embedded) and "
            "DIR/charts/PROJECT.png. A project's period starts at its first server "
            "(or --start) and ends at --end (default: now). Months are calendar months in "
            "UTC and add up exactly to the total (rounding rule: docs/usage.md)."
        ),
    )
    add_clouds(p, destination=False)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="ID_OR_NAME",
        help="this project (repeat for several)",
    )
    which.add_argument(
        "--all-projects", action="store_true", help="every project that has had a server"
    )
    p.add_argument(
        "--start",
        metavar="DATE",
        help="start of the period (YYYY-MM-DD or ISO 8601 time, UTC unless it says "
        "otherwise; default: each project's first server)",
    )
    p.add_argument("--end", metavar="DATE", help="end of the period (default: now)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DIR",
        help="directory to create (must not exist, or be empty)",
    )
    p.add_argument(
        "--page-size",
        type=positive_int,
        metavar="N",
        help="servers per API page (default: the cloud's limit, usually 1000)",
    )
    add_format_options(p, columns=False)
    p.set_defaults(func=archive_command)


def parse_date(text: str | None, option: str) -> datetime | None:
    """``2026-03-01`` or an ISO 8601 time as aware UTC; UsageError naming the option if not."""
    if text is None:
        return None
    try:
        return utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a date; write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS (UTC)"
        ) from None


def archive_command(args: argparse.Namespace) -> int:
    request = ArchiveRequest(
        cloud=args.source,
        output=Path(args.output),
        projects=tuple(args.project),
        start=parse_date(args.start, "--start"),
        end=parse_date(args.end, "--end"),
        page_size=args.page_size,
    )
    cloud_config(args.source)  # an unknown cloud fails before anything else
    check_request(request)  # a bad period fails before the cloud is contacted
    conn = connect(args.source)
    result = archive_usage(conn, request, events=args.events)
    rows = [
        {
            "Project": r.label,
            "ID": r.project_id,
            "Start": r.breakdown.start.isoformat(timespec="seconds"),
            "End": r.breakdown.end.isoformat(timespec="seconds"),
            "Months": len(r.breakdown.months),
            "vCPU-hours": r.breakdown.total.vcpu_hours,
            "RAM GB-hours": r.breakdown.total.ram_gb_hours,
            "Disk GB-hours": r.breakdown.total.disk_gb_hours,
            "Servers": r.breakdown.total.servers,
        }
        for r in result.projects
    ]
    if args.format == "table":
        render_table(rows, COLUMNS, "table", title=f"usage archived to {result.output}")
        print(f"report: {result.output / 'report.html'}")
    else:
        dump(
            {
                "output": str(result.output),
                "report": str(result.output / "report.html"),
                "pages": result.pages,
                "months": result.months,
                "projects": rows,
            },
            args.format,
            sys.stdout,
        )
    return 0
