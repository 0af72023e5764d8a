"""Worker jobs of the commands that move resources (``import``, ``migrate``).

The coordinator planned and resolved each create or update (IDs mapped to the
destination's); its payload carries the kind, the source record, the resolved one
and the destination object it updates. The worker rebuilds the operation from that
alone and applies it to the destination cloud of the run, found in its own
clouds.yaml. Creates of coordinator-only kinds (users with issued passwords) never
come here (``Kind.coordinator_only``).
"""

from __future__ import annotations

from typing import Any

from stackhop import kinds
from stackhop.errors import ConfigError
from stackhop.events import EventSink
from stackhop.journal import Journal, OperationRecord, RunRecord
from stackhop.kinds.base import Record
from stackhop.plan import Create, Operation, Update


class ResourcesJob:
    """The creates and updates of one ``import``/``migrate`` run, as a worker runs them."""

    def __init__(self, run: RunRecord) -> None:
        from stackhop.executor.worker import connection

        if not run.destination_cloud:
            raise ConfigError(f"run {run.id} names no destination cloud")
        self.destination: Any = connection(run.destination_cloud)

    def operation(self, row: OperationRecord) -> tuple[Operation, Record | None]:
        payload = row.payload or {}
        kind = kinds.get(str(payload["kind"]))
        cls = Update if payload.get("action") == "update" else Create
        op = cls(
            kind=kind,
            identity=str(payload["identity"]),
            source=dict(payload.get("source") or {}),
            resolved=dict(payload.get("resolved") or {}),
            existing=payload.get("existing"),
        )
        return op, dict(payload.get("resolved") or {})


def resources_job(run: RunRecord, journal: Journal, events: EventSink) -> ResourcesJob:
    return ResourcesJob(run)
