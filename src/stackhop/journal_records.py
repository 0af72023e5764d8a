"""The journal's records: what :class:`~stackhop.journal.Journal` reads and writes.

Plain frozen dataclasses (a run, an operation row, a chunk, one state change)
and the functions that build them from database rows. Imported through
:mod:`stackhop.journal`, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


def utc(value: datetime | None) -> datetime | None:
    """``value`` with UTC attached (SQLite drops the timezone; everything is written in UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


# -- records -----------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """One invocation of a stackhop command."""

    id: str
    command: str
    source_cloud: str | None
    destination_cloud: str | None
    args: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    #: ``celery`` when workers run its operations (schema 5), else None (this process).
    executor: str | None = None
    #: The process following a celery run (``host:pid``).
    coordinator: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "command": self.command,
            "source_cloud": self.source_cloud,
            "destination_cloud": self.destination_cloud,
            "args": self.args,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class OperationRecord:
    """The journaled state of one object: what was done to it and what came of it."""

    id: int
    run_id: str
    scope: str
    kind: str
    identity: str
    source_id: str | None
    action: str
    state: str
    destination_id: str | None
    error: str | None
    attempts: int
    before: Any
    created_at: datetime
    updated_at: datetime
    #: The rollback run that undid this operation (state ``rolled_back``).
    undone_by: str | None = None
    #: The stage a task reported last (:meth:`Journal.report`), e.g. ``exported``.
    stage: str | None = None
    #: How far a task got: ``{"done": n, "total": n, "unit": "bytes"}``.
    progress: dict[str, Any] | None = None
    #: While the operation is dispatched to a worker (schema 5): what it rebuilds it from.
    payload: Any = None
    #: When the operation was sent to a worker (schema 5), None if it never was.
    dispatched_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "scope": self.scope,
            "kind": self.kind,
            "identity": self.identity,
            "source_id": self.source_id,
            "action": self.action,
            "state": self.state,
            "destination_id": self.destination_id,
            "error": self.error,
            "attempts": self.attempts,
            "before": self.before,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "undone_by": self.undone_by,
            "stage": self.stage,
            "progress": self.progress,
        }


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk of a data transfer."""

    object: str
    offset: int
    length: int
    digest: str
    state: str


Mapping_ = tuple[str, str, str, str]
"""An ID mapping to record: ``(scope, kind, source id, destination id)``."""

Unmapping = tuple[str, str, str]
"""An ID mapping to drop (its destination object was deleted): ``(scope, kind, source id)``."""

#: Keys per ``IN (...)`` list, well under SQLite's limit on bound parameters.
IN_CHUNK = 500


@dataclass(frozen=True)
class Change:
    """One state change of one operation row (see :meth:`Journal.transition`)."""

    run_id: str
    scope: str
    kind: str
    identity: str
    state: str
    action: str
    expected: OperationRecord | None
    source_id: str | None = None
    destination_id: str | None = None
    error: str | None = None
    before: Any = None
    attempt: bool = False
    #: For a move to ``rolled_back``: the rollback run that undid the operation.
    undone_by: str | None = None


def run_record(row: sa.Row[Any]) -> RunRecord:
    started = utc(row.started_at)
    assert started is not None
    return RunRecord(
        id=row.id,
        command=row.command,
        source_cloud=row.source_cloud,
        destination_cloud=row.destination_cloud,
        args=dict(row.args or {}),
        started_at=started,
        finished_at=utc(row.finished_at),
        outcome=row.outcome,
        executor=getattr(row, "executor", None),
        coordinator=getattr(row, "coordinator", None),
    )


def operation_record(row: sa.Row[Any]) -> OperationRecord:
    created, updated = utc(row.created_at), utc(row.updated_at)
    assert created is not None and updated is not None
    return OperationRecord(
        id=int(row.id),
        run_id=row.run_id,
        scope=row.scope,
        kind=row.kind,
        identity=row.identity,
        source_id=row.source_id,
        action=row.action,
        state=row.state,
        destination_id=row.destination_id,
        error=row.error,
        attempts=int(row.attempts),
        before=row.before_state,
        created_at=created,
        updated_at=updated,
        undone_by=row.undone_by,
        stage=row.stage,
        progress=dict(row.progress) if row.progress else None,
        payload=getattr(row, "payload", None),
        dispatched_at=utc(getattr(row, "dispatched_at", None)),
    )
