"""``stackhop usage archive``: read the usage, split it into months, write the archive directory.

The directory (``docs/usage.md``)::

    detailed.json          the whole period: every server's usage, as Nova sent it
    months/<YYYY-MM>.json  one calendar month (UTC): figures per project and per server
    summary.csv            project, month, vcpu_hours, ram_gb_hours, disk_gb_hours, servers
    report.html            one self-contained file: a chart and a table per project
    charts/<project>.png   the same charts as files

Everything is written into a hidden sibling directory first and renamed into
place at the end, so a failure leaves either the whole archive or nothing.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from stackhop.errors import UsageError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.usage.fetch import (
    Project,
    ProjectUsage,
    fetch_usage,
    format_time,
    project_names,
    resolve_projects,
)
from stackhop.usage.months import (
    Breakdown,
    Totals,
    breakdown,
    exact_figures,
    months_between,
    round_figure,
    running_us,
    utc,
)
from stackhop.usage.report import ProjectReport, chart_png, report_html

FORMAT = "stackhop-usage/1"
ROUNDING = (
    "Figures have two decimals. A project's total over the period is Nova's own total, "
    "rounded half to even; each month is rounded down and the hundredths still missing "
    "go one each to the months with the largest remainders (earlier month first on a tie), "
    "so the months add up exactly to the total and each is within 0.01 of its exact value. "
    "RAM GB = MB / 1024; disk is the flavor's local disk (root + ephemeral). Servers counts "
    "the servers that ran in the month; it is not additive."
)
SUMMARY_COLUMNS = ("project", "month", "vcpu_hours", "ram_gb_hours", "disk_gb_hours", "servers")
#: Nova's totals are floats: they may miss the exact sum by this much before we warn.
_TOLERANCE = Decimal("0.01")


@dataclass(frozen=True)
class ArchiveRequest:
    """What to archive: which projects (none named: every project), when, and where."""

    cloud: str
    output: Path
    projects: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    page_size: int | None = None


@dataclass
class ArchiveResult:
    """What was written."""

    output: Path
    start: datetime | None
    end: datetime
    pages: int
    projects: list[ProjectReport] = field(default_factory=list)
    months: list[str] = field(default_factory=list)


def check_request(request: ArchiveRequest, now: datetime | None = None) -> None:
    """Refuse a bad period, page size or output directory before anything is read."""
    now = now or datetime.now(UTC)
    end = min(utc(request.end), now) if request.end is not None else now
    if request.start is not None and end <= utc(request.start):
        said = "--end" if request.end is not None and utc(request.end) <= now else "now"
        raise UsageError(
            f"the period is empty: {said} ({format_time(end)}) is not after --start "
            f"({format_time(request.start)}); give an end later than the start"
        )
    if request.page_size is not None and request.page_size < 1:
        raise UsageError("--page-size must be at least 1")
    out = request.output
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            f"output {out} exists and is not an empty directory; give a new directory "
            "(it is created) or remove it"
        )


def _nova_totals(usage: ProjectUsage) -> Totals:
    t = usage.totals
    return Totals(
        round_figure(t["total_vcpus_usage"]),
        round_figure(Decimal(str(t["total_memory_mb_usage"])) / 1024),
        round_figure(t["total_local_gb_usage"]),
    )


def _labels(projects: Sequence[Project]) -> dict[str, str]:
    """A display label per project ID: the name, with the ID where names repeat."""
    names = [p.label for p in projects]
    return {p.id: p.label if names.count(p.label) == 1 else f"{p.label} ({p.id})" for p in projects}


def _file_names(projects: Sequence[Project]) -> dict[str, str]:
    """A PNG file name per project ID, safe on any file system and unique."""
    result: dict[str, str] = {}
    for p in projects:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", p.label).strip("._") or p.id
        if stem in result.values() or f"{stem}.png" in result.values():
            stem = f"{stem}-{p.id[:12]}"
        result[p.id] = f"{stem}.png"
    return result


def _plain(value: Decimal) -> float:
    return float(value)


def _figures(f: Any) -> dict[str, Any]:
    return {
        "vcpu_hours": _plain(f.vcpu_hours),
        "ram_gb_hours": _plain(f.ram_gb_hours),
        "disk_gb_hours": _plain(f.disk_gb_hours),
        "servers": f.servers,
    }


def _breakdown(
    usage: ProjectUsage, start: datetime | None, end: datetime, sink: EventSink, label: str
) -> Breakdown:
    lives = usage.lives()
    first = start if start is not None else (usage.first_start() or end)
    first = min(utc(first), end)
    totals = _nova_totals(usage)
    exact = exact_figures(lives, first, end)
    mine = Totals(
        round_figure(exact.vcpu_hours),
        round_figure(exact.ram_gb_hours),
        round_figure(exact.disk_gb_hours),
    )
    if any(
        abs(a - b) > _TOLERANCE
        for a, b in zip(
            (totals.vcpu_hours, totals.ram_gb_hours, totals.disk_gb_hours),
            (mine.vcpu_hours, mine.ram_gb_hours, mine.disk_gb_hours),
            strict=True,
        )
    ):
        # Nova counted differently from its own server records (e.g. a server that
        # ended before it started): trust the records, which the months are made of.
        sink.emit(
            Event(
                EventType.WARNING,
                kind="compute.usage",
                identity=label,
                message=f"{label}: Nova's totals {totals} differ from its server "
                f"records {mine}; the archive uses the records",
            )
        )
        totals = mine
    return breakdown(usage.project_id, lives, first, end, totals)


def _month_documents(
    reports: Sequence[ProjectReport], usages: dict[str, ProjectUsage]
) -> dict[str, dict[str, Any]]:
    documents: dict[str, dict[str, Any]] = {}
    for report in reports:
        b = report.breakdown
        lives = usages[report.project_id].lives()
        by_label = {m.label: m for m in months_between(b.start, b.end)}
        for figures in b.months:
            month = by_label[figures.month]
            doc = documents.setdefault(figures.month, {"month": figures.month, "projects": []})
            servers = []
            for life in lives:
                us = running_us(life, month.start, month.end)
                if us > 0:
                    servers.append(
                        {
                            "instance_id": life.instance_id,
                            "name": life.name,
                            "vcpus": life.vcpus,
                            "memory_mb": life.memory_mb,
                            "local_gb": life.local_gb,
                            "hours": round(us / 3_600_000_000, 6),
                        }
                    )
            doc["projects"].append(
                {
                    "project_id": report.project_id,
                    "project": report.label,
                    "start": month.start.isoformat(),
                    "end": month.end.isoformat(),
                    **_figures(figures),
                    "server_usages": servers,
                }
            )
    return documents


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _write(
    out: Path,
    result: ArchiveResult,
    cloud: str,
    usages: dict[str, ProjectUsage],
    microversion: str | None,
    generated: datetime,
) -> None:
    reports = result.projects
    _write_json(
        out / "detailed.json",
        {
            "format": FORMAT,
            "cloud": cloud,
            "generated_at": generated.isoformat(),
            "start": result.start.isoformat() if result.start else None,
            "end": result.end.isoformat(),
            "rounding": ROUNDING,
            "api": {
                "service": "os-simple-tenant-usage",
                "microversion": microversion,
                "pages": result.pages,
            },
            "projects": [
                {
                    "project_id": r.project_id,
                    "project": r.label,
                    "start": r.breakdown.start.isoformat(),
                    "end": r.breakdown.end.isoformat(),
                    "total": _figures(r.breakdown.total),
                    "nova_totals": usages[r.project_id].totals,
                    "server_usages": usages[r.project_id].server_usages,
                }
                for r in reports
            ],
        },
    )
    (out / "months").mkdir()
    for label, doc in sorted(_month_documents(reports, usages).items()):
        _write_json(out / "months" / f"{label}.json", {"format": FORMAT, "cloud": cloud, **doc})
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(SUMMARY_COLUMNS)
        for r in reports:
            for m in r.breakdown.months:
                writer.writerow(
                    (r.label, m.month, m.vcpu_hours, m.ram_gb_hours, m.disk_gb_hours, m.servers)
                )
    (out / "charts").mkdir()
    charts = []
    for r in reports:
        png = chart_png(r)
        (out / "charts" / r.chart_file).write_bytes(png)
        charts.append(png)
    (out / "report.html").write_text(
        report_html(cloud, reports, charts, generated_at=generated, rounding=ROUNDING),
        encoding="utf-8",
    )


def archive_usage(
    conn: Any, request: ArchiveRequest, events: EventSink | None = None
) -> ArchiveResult:
    """Read the usage of ``request.projects`` (none: every project) and write the archive.

    Raises UsageError for a bad period or output, ConfigError for an unknown
    project, CapabilityError for a cloud without the usage API; the output
    directory then does not exist (or stays as empty as it was).
    """
    sink = events or NullSink()
    check_request(request)
    wanted = resolve_projects(conn, request.cloud, request.projects) if request.projects else None
    fetched = fetch_usage(
        conn,
        request.cloud,
        projects=wanted,
        start=request.start,
        end=request.end,
        page_size=request.page_size,
        events=sink,
    )
    if wanted is None:
        names = project_names(conn)
        projects = [Project(pid, names.get(pid)) for pid in fetched.usages]
        projects.sort(key=lambda p: (p.label, p.id))
    else:
        projects = wanted
    labels, files = _labels(projects), _file_names(projects)
    result = ArchiveResult(request.output, request.start, fetched.end, fetched.pages)
    for p in projects:
        b = _breakdown(fetched.usages[p.id], request.start, fetched.end, sink, labels[p.id])
        result.projects.append(ProjectReport(p.id, labels[p.id], b, files[p.id]))
    result.months = sorted({m.month for r in result.projects for m in r.breakdown.months})
    sink.emit(
        Event(
            EventType.INFO,
            kind="compute.usage",
            message=f"read {fetched.pages} page(s) of usage: {len(projects)} project(s), "
            f"{len(result.months)} month(s)",
        )
    )

    out = request.output.resolve()  # `-o .` has a parent to write the partial copy in
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _write(
            partial, result, request.cloud, fetched.usages, fetched.microversion, datetime.now(UTC)
        )
        partial.chmod(0o755)
        check_request(request)  # nothing appeared at the output meanwhile
        os.replace(partial, out)  # replaces an empty directory too
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    sink.emit(Event(EventType.INFO, kind="compute.usage", message=f"wrote {out}"))
    return result
