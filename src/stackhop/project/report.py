"""The final report of a project migration: every object moved, skipped or failed.

The report is built from the journal, not from memory, so a migration that
took several runs (a kill, a re-run) reports every object once, with the
state its last run left it in, its source ID and its destination ID. It is
written as ``<output>/report.json``; the CLI prints it as a table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackhop.journal import DONE, FAILED, SKIPPED, Journal, OperationRecord
from stackhop.project.phases import PhaseOutcome

REPORT_NAME = "report.json"

CONFLICT = "conflict"

#: Journal states as the report words them.
OUTCOMES = {DONE: "moved", SKIPPED: "skipped", FAILED: "failed"}


@dataclass
class ObjectLine:
    """One object of the migration."""

    kind: str
    identity: str
    outcome: str
    source_id: str | None
    destination_id: str | None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "identity": self.identity,
            "outcome": self.outcome,
            "source_id": self.source_id,
            "destination_id": self.destination_id,
            "detail": self.detail,
        }


@dataclass
class MigrationReport:
    """Phases and objects of one project migration."""

    project: Mapping[str, Any]
    source_cloud: str
    destination_cloud: str
    run_id: str
    phases: list[PhaseOutcome]
    objects: list[ObjectLine] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        totals = {"moved": 0, "skipped": 0, CONFLICT: 0, "failed": 0}
        for line in self.objects:
            totals[line.outcome] = totals.get(line.outcome, 0) + 1
        return totals

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": dict(self.project),
            "source_cloud": self.source_cloud,
            "destination_cloud": self.destination_cloud,
            "run_id": self.run_id,
            "phases": [p.as_dict() for p in self.phases],
            "counts": self.counts(),
            "objects": [o.as_dict() for o in self.objects],
        }

    def write(self, directory: Path) -> Path:
        """Write ``report.json`` into ``directory`` atomically; return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / REPORT_NAME
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.as_dict(), fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, path)
        return path


def line_of(row: OperationRecord) -> ObjectLine:
    """The report line of a journal row."""
    detail = row.error or ""
    outcome = OUTCOMES.get(row.state, row.state)
    if row.state == SKIPPED and detail:
        outcome = CONFLICT  # the engine journals a conflict as skipped, with its reason
    elif row.state == SKIPPED:
        detail = "already on the destination"
    return ObjectLine(
        kind=row.kind,
        identity=row.identity,
        outcome=outcome,
        source_id=row.source_id,
        destination_id=row.destination_id,
        detail=detail,
    )


def objects_of_runs(
    journal: Journal, run_ids: Iterable[str], kinds_excluded: Sequence[str] = ()
) -> list[ObjectLine]:
    """Every object the runs touched, once each, in the state the journal holds now.

    An object's row moves to the run that last touched it, so the rows are
    read by (scope, kind, identity) across the runs and de-duplicated.
    """
    seen: dict[tuple[str, str, str], ObjectLine] = {}
    for run_id in run_ids:
        for row in journal.operations(run_id=run_id):
            if row.kind in kinds_excluded:
                continue
            seen[(row.scope, row.kind, row.identity)] = line_of(row)
    return sorted(seen.values(), key=lambda o: (o.kind, o.identity))
