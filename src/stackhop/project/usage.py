"""The usage phase of a project migration: the project's usage archive and report.

The archive is written by :func:`stackhop.usage.writer.archive_usage` (the
library of ``stackhop usage archive``) into ``<output>/usage``. That writer
refuses a non-empty output directory; a usage phase cut short after the
archive was complete (before the journal said so) is run again, so an archive
this phase wrote earlier is replaced rather than refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stackhop.project.phases import PhaseResult
from stackhop.usage.writer import ArchiveRequest, archive_usage

if TYPE_CHECKING:
    from stackhop.project.migrate import Migration

USAGE_DIR = "usage"


def archive_project_usage(migration: Migration, project: Mapping[str, Any]) -> PhaseResult:
    """Archive the usage of ``project`` on the source cloud; summary and facts for the report."""
    request = migration.request
    output = request.output_dir / USAGE_DIR
    if output.is_dir() and (output / "report.html").exists():
        shutil.rmtree(output)  # our own complete archive from an interrupted phase
    result = archive_usage(
        migration.source,
        ArchiveRequest(
            cloud=request.source_cloud,
            output=output,
            projects=(str(project["id"]),),
            start=request.usage_start,
            end=request.usage_end,
        ),
        events=migration.events,
    )
    totals = result.projects[0].breakdown.total if result.projects else None
    facts: dict[str, Any] = {
        "output": str(output),
        "report": str(output / "report.html"),
        "months": result.months,
    }
    if totals is None:
        return PhaseResult(f"no usage recorded; archive in {output}", facts)
    facts["total"] = {
        "vcpu_hours": str(totals.vcpu_hours),
        "ram_gb_hours": str(totals.ram_gb_hours),
        "disk_gb_hours": str(totals.disk_gb_hours),
        "servers": totals.servers,
    }
    return PhaseResult(
        f"{len(result.months)} month(s), {totals.vcpu_hours} vCPU-hours, {totals.servers} "
        f"server(s); report {output / 'report.html'}",
        facts,
    )
