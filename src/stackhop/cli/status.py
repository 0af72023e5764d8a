"""``stackhop status [--run ID]``: what the journal knows of past runs.

Without ``--run``: every run, then per kind the count of operations in each
state (as of the latest run that touched each; ``rolled_back``: undone by a
rollback run), then the failed operations with their errors. With ``--run
ID`` (a unique prefix is enough): that run, and the operations it touched;
for a run that was rolled back, which rollback runs undid its operations.
Long operations (tasks: volume passes, project phases) show the stage and
progress they reported: in "In progress" while their row is ``pending``
(running, or interrupted), and beside their error when they failed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackhop.cli.output import add_format_options, dump, render_table
from stackhop.errors import ConfigError, UsageError
from stackhop.journal import PENDING, ROLLED_BACK, STATES, Journal, OperationRecord, RunRecord
from stackhop.servers.rollback import unfinished_cutovers

RUN_COLUMNS = ("ID", "Command", "From", "To", "Started", "Finished", "Outcome")
COUNT_COLUMNS = ("Kind", *(state.replace("_", " ").capitalize() for state in STATES))
UNDONE_COLUMNS = ("Run", "Rolled back by", "Operations")
FAILED_COLUMNS = ("Kind", "Identity", "Action", "Attempts", "Error")
TASK_COLUMNS = ("Stage", "Progress")
PENDING_COLUMNS = ("Kind", "Identity", "Action", "Run", "Attempts", *TASK_COLUMNS, "Updated")
STATE_STYLES = {"failed": "bold red", "interrupted": "yellow", "succeeded": "green"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``status`` command."""
    p = subparsers.add_parser(
        "status",
        help="show the runs in the journal, per kind what is done, pending, failed, skipped",
        description=(
            "Read the journal (--journal) and show every run (ID, command, clouds, start, "
            "end, outcome), per resource kind the number of operations done, pending, "
            "failed and skipped, and each failed operation with its error. Re-running "
            "the same command resumes: done operations are skipped."
        ),
    )
    p.add_argument(
        "--run",
        metavar="ID",
        help="only this run (an ID prefix is enough) and the operations it touched",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="with --run: show the run's progress until it ends (from any host, local or "
        "celery), and exit with its command's exit code",
    )
    add_format_options(p, columns=False)
    p.set_defaults(func=show_status)


@dataclass(frozen=True)
class StatusReport:
    """What ``stackhop status`` shows, gathered from one journal."""

    runs: list[RunRecord]
    counts: dict[str, dict[str, int]]
    failed: list[OperationRecord]
    #: Operations left ``pending``: running now, or interrupted (a re-run resumes them).
    pending: list[OperationRecord]
    #: (run, rollback run) -> operations of that run the rollback undid.
    undone: dict[tuple[str, str], int]
    #: Servers whose source a run stopped, their cutover unfinished (one line each).
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": [run.as_dict() for run in self.runs],
            "rolled_back": [
                {"run_id": run, "rolled_back_by": by, "operations": count}
                for (run, by), count in self.undone.items()
            ],
            "kinds": [{"kind": kind, **states} for kind, states in self.counts.items()],
            "failed": [{**_brief(op), "error": op.error} for op in self.failed],
            "pending": [
                {**_brief(op), "updated_at": op.updated_at.isoformat()} for op in self.pending
            ],
            "warnings": self.warnings,
        }


def _brief(op: OperationRecord) -> dict[str, Any]:
    return {
        "kind": op.kind,
        "identity": op.identity,
        "action": op.action,
        "attempts": op.attempts,
        "run_id": op.run_id,
        "stage": op.stage,
        "progress": op.progress,
    }


def progress_text(progress: dict[str, Any] | None) -> str:
    """``512/2048 bytes (25%)`` for a task's journaled progress; empty without one."""
    if not progress:
        return ""
    done, total, unit = progress.get("done"), progress.get("total"), progress.get("unit", "")
    if not total:
        return f"{done} {unit}".strip()
    return f"{done}/{total} {unit} ({100 * int(done or 0) // int(total)}%)".replace("  ", " ")


def collect(journal: Journal, run_id: str | None = None) -> StatusReport:
    """The status of the whole journal, or of one run (ID or unique prefix)."""
    run = None if run_id is None else journal.run(run_id)
    undone: dict[tuple[str, str], int] = {}
    for op in journal.operations(run_id=run.id if run else None, state=ROLLED_BACK):
        key = (op.run_id, op.undone_by or "?")
        undone[key] = undone.get(key, 0) + 1
    warnings = unfinished_cutovers(journal, run.id if run else None)
    if run is None:
        return StatusReport(
            runs=journal.runs(),
            counts=journal.counts(),
            failed=journal.operations(state="failed"),
            pending=journal.operations(state=PENDING),
            undone=undone,
            warnings=warnings,
        )
    return StatusReport(
        runs=[run],
        counts=journal.counts(run_id=run.id),
        failed=journal.operations(run_id=run.id, state="failed"),
        pending=journal.operations(run_id=run.id, state=PENDING),
        undone=undone,
        warnings=warnings,
    )


def _when(value: Any) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def open_journal(location: str) -> Journal:
    # Reading status must not create an empty journal where there was none.
    if "://" not in location and not Path(location).expanduser().exists():
        raise ConfigError(
            f"no journal at {location}; run a command first, or name the journal with --journal"
        )
    return Journal(location)


def show_status(args: argparse.Namespace) -> int:
    if getattr(args, "follow", False):
        if not args.run:
            raise UsageError("--follow follows one run: name it with --run ID")
        from stackhop.executor.follow import follow

        with open_journal(args.journal) as journal:
            return follow(journal, args.run, args.events)
    with open_journal(args.journal) as journal:
        report = collect(journal, args.run)
    if args.format != "table":
        dump(report.as_dict(), args.format, sys.stdout)
        return 0
    run_rows = [
        dict(
            zip(
                RUN_COLUMNS,
                (
                    run.id,
                    run.command,
                    run.source_cloud,
                    run.destination_cloud,
                    _when(run.started_at),
                    _when(run.finished_at),
                    run.outcome,
                ),
                strict=True,
            )
        )
        for run in report.runs
    ]
    render_table(run_rows, RUN_COLUMNS, "table", title="Runs", styles=STATE_STYLES)
    count_rows = [
        dict(zip(COUNT_COLUMNS, (kind, *(states[s] for s in STATES)), strict=True))
        for kind, states in report.counts.items()
    ]
    render_table(count_rows, COUNT_COLUMNS, "table", title="Operations per kind")
    if report.undone:
        undone_rows = [
            dict(zip(UNDONE_COLUMNS, (run, by, count), strict=True))
            for (run, by), count in report.undone.items()
        ]
        render_table(undone_rows, UNDONE_COLUMNS, "table", title="Rolled back")
    if report.pending:
        pending_rows = [
            dict(
                zip(
                    PENDING_COLUMNS,
                    (
                        op.kind,
                        op.identity,
                        op.action,
                        op.run_id,
                        op.attempts,
                        op.stage or "",
                        progress_text(op.progress),
                        _when(op.updated_at),
                    ),
                    strict=True,
                )
            )
            for op in report.pending
        ]
        render_table(pending_rows, PENDING_COLUMNS, "table", title="In progress (or interrupted)")
    if report.failed:
        tasks = any(op.stage or op.progress for op in report.failed)
        columns = (*FAILED_COLUMNS[:-1], *TASK_COLUMNS, "Error") if tasks else FAILED_COLUMNS
        failed_rows = []
        for op in report.failed:
            values: tuple[Any, ...] = (op.kind, op.identity, op.action, op.attempts)
            if tasks:
                values += (op.stage or "", progress_text(op.progress))
            failed_rows.append(dict(zip(columns, (*values, op.error), strict=True)))
        render_table(failed_rows, columns, "table", title="Failed operations")
    for line in report.warnings:
        print(f"warning: {line}")
    return 0
