"""``stackhop status --run ID --follow``: watch a run from the journal until it ends.

The run may be this host's or another's, local or on workers: what its operations
reported (stages, progress, outcomes) becomes the events a run emits, so the same
progress bars or ``--log-json`` lines show. It ends when the run ends, with the exit
code the run's own command gave. A celery run whose coordinator is gone (a process of
this host that no longer runs, or not seen for a while) is not going to end by itself:
the follow stops then, saying to re-run the command, which takes the run over.
"""

from __future__ import annotations

import threading
from typing import Any

from stackhop.errors import ConflictError, OperationFailedError, TransientError
from stackhop.events import Event, EventSink, EventType
from stackhop.executor.names import process_gone
from stackhop.executor.reattach import COORDINATOR_STALE
from stackhop.journal import DONE, FAILED, PENDING, RUN_RUNNING, Journal, OperationRecord

#: Seconds between two reads of the run's rows.
POLL = 0.5


def follow(
    journal: Journal,
    run_id: str,
    events: EventSink,
    *,
    stop: threading.Event | None = None,
    poll: float = POLL,
) -> int:
    """Follow run ``run_id`` until it ends; 0 if it succeeded, else raise as its command
    would have (OperationFailedError, ConflictError), TransientError if nobody drives it."""
    run = journal.run(run_id)
    stop = stop or threading.Event()
    seen: dict[int, OperationRecord] = {}
    events.emit(Event(EventType.INFO, run_id=run.id,
                      message=f"following run {run.id} ({run.command})"))  # fmt: skip
    while True:
        rows = journal.operations(run_id=run.id)
        for row in rows:
            _report(events, seen.get(row.id), row)
            seen[row.id] = row
        run = journal.run(run.id)
        if run.outcome != RUN_RUNNING:
            break
        if _abandoned(journal, run.id, run.coordinator, rows):
            raise TransientError(
                f"run {run.id} has no coordinator any more ({run.coordinator} is gone) and "
                "its workers hold nothing: re-run the same command, it takes the run over"
            )
        if stop.wait(poll):
            return 130
    failed = sum(1 for row in seen.values() if row.state == FAILED)
    if run.outcome == "succeeded":
        return 0
    if run.outcome == "conflicts":
        raise ConflictError(f"run {run.id} ended with conflicts; see `stackhop status --run "
                            f"{run.id[:8]}`")  # fmt: skip
    raise OperationFailedError(failed=failed, run=run.id)


def _abandoned(
    journal: Journal, run_id: str, coordinator: str | None, rows: list[OperationRecord]
) -> bool:
    """A celery run nobody will finish: its coordinator gone, no worker holding a row."""
    if not coordinator:
        return False  # a local run: its process writes as it goes; nothing says it died
    gone = process_gone(coordinator) or not journal.coordinator_seen(run_id, COORDINATOR_STALE)
    if not gone:
        return False
    for row in rows:
        if row.state == PENDING:
            lease = journal.lease(row.id)
            if lease is not None and not lease.expired:
                return False
    return True


def _report(events: EventSink, before: OperationRecord | None, row: OperationRecord) -> None:
    fields: dict[str, Any] = {"kind": row.kind, "identity": row.identity,
                              "operation": row.action, "run_id": row.run_id}  # fmt: skip
    if before is None and row.state == PENDING:
        events.emit(Event(EventType.OPERATION_STARTED, **fields))
    if row.stage and (before is None or row.stage != before.stage):
        events.emit(Event(EventType.STAGE, message=row.stage, **fields))
    if row.progress and (before is None or row.progress != before.progress):
        progress = row.progress
        events.emit(Event(EventType.PROGRESS, done=int(progress.get("done") or 0),
                          total=progress.get("total"), unit=str(progress.get("unit") or "bytes"),
                          **fields))  # fmt: skip
    if row.state != PENDING and (before is None or before.state == PENDING):
        outcome = {DONE: "done", FAILED: "failed"}.get(row.state, row.state)
        detail = {"destination_id": row.destination_id} if row.destination_id else {}
        events.emit(Event(EventType.OPERATION_FINISHED, outcome=outcome, message=row.error,
                          detail=detail, **fields))  # fmt: skip

