"""Long operations for the engine: tasks that report stages and progress while they run.

A :class:`Task` is an :class:`~stackhop.plan.Operation` whose step is code of
its own (:meth:`Task.call`) instead of a kind's ``create``: one pass of one
volume, one phase of ``project migrate``. The engine journals it like any
operation (``pending`` before, ``done``/``failed`` after, retries of
transient failures, resume by re-running), and gives it a
:class:`TaskContext` through which it reports, while it runs:

- its *stage* (``exported``, ``imported``...): written to the row's
  ``stage`` column at once, with an optional resume state in
  ``before_state``, and sent as a ``stage`` event;
- its *progress* (done/total units): sent as a ``progress`` event each time,
  written to the row's ``progress`` column at most every
  ``TaskContext.interval`` seconds (and always at the end), so the journal
  is not hammered by a byte counter.

Resume: a task whose row an earlier attempt left ``pending`` or ``failed``
first gets :meth:`Task.find` (the task's "look on the destination before
redoing"): a result there is adopted without calling :meth:`Task.call`
again. The context also carries that earlier row (``ctx.previous``: its stage,
progress and ``before_state``) for a call that resumes where it stopped.

A task's kind is a :class:`TaskKind`: a name for the journal and the ID map,
and a service for the engine's fair share of workers; it has no API of its
own. ``stackhop rollback`` undoes only ``create``/``update`` rows, so a task's
action must be another word (``run``, ``copy``...): its undo is a task of its
own, planned from the journal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stackhop.errors import StackhopError
from stackhop.events import Event, EventSink, EventType
from stackhop.journal import Journal, OperationRecord
from stackhop.kinds.base import Connection, Kind, Record
from stackhop.plan import Operation


class TaskKind(Kind):
    """The journal name of a kind of task; subclasses set ``name`` (and ``service``)."""

    def identity(self, record: Mapping[str, Any]) -> str:
        return str(record.get("identity", ""))

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        return iter(())

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return None

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        raise TypeError(f"{self.name} is a task: the engine calls Task.call, not create")

    def delete(self, conn: Connection, destination_id: str) -> None:
        raise TypeError(f"{self.name} is a task: undo it with a task of its own")


class LeaseLost(StackhopError):
    """A worker's operation was taken over by another: the attempt stops, writes nothing
    more and leaves its temporaries to the one that took over (and to the ledger)."""

    exit_code = 1


class TaskContext:
    """What a running task may use: the destination, the stop flag, and stage/progress reports."""

    #: Seconds between two progress writes to the journal (events go every time).
    interval: ClassVar[float] = 1.0

    def __init__(
        self,
        task: Task,
        *,
        journal: Journal,
        row: OperationRecord,
        previous: OperationRecord | None,
        destination: Connection,
        events: EventSink,
        stop: threading.Event,
        run_id: str,
        clock: Callable[[], float] = time.monotonic,
        fenced: bool = False,
    ) -> None:
        self.task = task
        #: A worker's attempt under a lease: a report the journal refuses (another worker
        #: took the operation over) or the stop flag raises :class:`LeaseLost`.
        self.fenced = fenced
        self.journal = journal
        self.row = row
        #: After an unfinished earlier attempt: the row with what it reported (stage,
        #: progress, ``before`` resume state); None on a first attempt.
        self.previous = previous
        self.destination = destination
        self.events = events
        self.stop = stop
        self.run_id = run_id
        self.clock = clock
        self._written_at: float | None = None
        self.stages: list[str] = []

    @property
    def stopping(self) -> bool:
        """True once the run is asked to stop: a long task should return or raise soon."""
        return self.stop.is_set()

    def stage(self, name: str, state: Any = None, *, destination_id: str | None = None) -> None:
        """The task reached stage ``name``; ``state`` (JSON-able) is what its resume needs.

        ``destination_id``: the object the task made, recorded as soon as it exists (a
        resumed attempt and ``testbed undo`` find it even when the task never finishes).
        """
        self.stages.append(name)
        self._check(
            self.journal.report(self.row, stage=name, before=state, destination_id=destination_id)
        )
        self._emit(EventType.STAGE, message=name)

    def progress(self, done: int, total: int | None, unit: str = "bytes") -> None:
        """``done`` of ``total`` units are through; journaled at most every ``interval`` s."""
        self._emit(EventType.PROGRESS, done=done, total=total, unit=unit)
        now = self.clock()
        final = total is not None and done >= total
        if final or self._written_at is None or now - self._written_at >= self.interval:
            self._written_at = now
            progress = {"done": done, "total": total, "unit": unit}
            self._check(self.journal.report(self.row, progress=progress))
        elif self.fenced and self.stop.is_set():
            raise LeaseLost(f"{self.task.kind.name} {self.task.identity!r}: stopped")

    def _check(self, reported: bool) -> None:
        if self.fenced and (not reported or self.stop.is_set()):
            raise LeaseLost(
                f"{self.task.kind.name} {self.task.identity!r}: another worker took it over "
                "(or this one lost the journal longer than its lease); this attempt stops"
            )

    def _emit(self, type_: EventType, **fields: Any) -> None:
        self.events.emit(
            Event(
                type_,
                kind=self.task.kind.name,
                identity=self.task.identity,
                operation=self.task.action,
                run_id=self.run_id,
                **fields,
            )
        )


@dataclass(frozen=True, kw_only=True)
class Task(Operation):
    """A long operation: the engine journals it and calls :meth:`call` with a TaskContext.

    ``source`` and ``resolved`` default to empty (a task works from its own
    fields); ``of`` is the source object's ID, for the journal row and the ID
    map (the destination ID :meth:`call` returns is mapped to it).
    """

    action: ClassVar[str] = "run"

    source: Record = field(default_factory=dict)
    resolved: Record = field(default_factory=dict)
    of: str | None = None

    @property
    def source_id(self) -> str | None:
        return self.of

    def call(self, ctx: TaskContext) -> str | None:
        """Do the work; return the destination ID it produced (None: nothing to map)."""
        raise NotImplementedError(f"{type(self).__name__} does not define call()")

    def find(self, ctx: TaskContext) -> str | None:
        """After an unfinished earlier attempt: the destination ID if its work is already
        complete on the destination (adopted, :meth:`call` is skipped), else None."""
        return None

    def to_payload(self) -> dict[str, Any] | None:
        """What a worker on another host rebuilds this task from, with the run's arguments
        (JSON; IDs, never a secret), or None: the task runs only where it was planned."""
        return None
