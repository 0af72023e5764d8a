"""The coordinator side of the Celery executor: publish each call, follow it in the journal.

:class:`CeleryExecutor` is the engine's :class:`~stackhop.executor.Executor` for
``--executor celery``. The engine plans, orders and journals ``pending`` as in a
local run; :meth:`CeleryExecutor.submit` then records each row's payload (what
the worker rebuilds the operation from) and publishes one message per group to
the queue ``route`` names for it, and :meth:`CeleryExecutor.collect` polls the
rows in flight: a stage or progress a worker reported becomes the same event a
local run emits, and a ``done``/``failed`` row the outcome the engine counts (the
worker journaled it already). The engine never starts an operation before those
it depends on are done, so the plan's order holds across workers.

The engine keeps up to ``capacity`` (the run's ``--workers``) times
:data:`DISPATCH_DEPTH` operations in flight: the workers' processes still run
``--workers`` calls at once at most (one message each, prefetch 1), and a worker
process that finishes one takes the next from the queue at once instead of
waiting for this coordinator to notice the outcome (a poll away) and publish it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from stackhop.engine import Engine, _Attempt, _Started
from stackhop.errors import ConflictError, TransientError
from stackhop.events import Event, EventType
from stackhop.executor import LocalExecutor
from stackhop.executor.names import DEFAULT_QUEUE, MESSAGE_VERSION, TASK, lease_ttl, this_process
from stackhop.executor.reattach import COORDINATOR_STALE
from stackhop.journal import DONE, PENDING, OperationRecord
from stackhop.plan import Create, Operation, Update
from stackhop.retry import error_text
from stackhop.task import Task

#: Seconds between two reads of the rows in flight while they change, and once nothing
#: changed for :data:`QUIET_POLLS` reads (a read is one indexed SELECT).
POLL_FAST = 0.1
POLL_SLOW = 0.5
QUIET_POLLS = 20
#: Seconds past a lease term after which a row nobody holds is sent again.
ORPHAN_MARGIN = 10.0
#: Operations in flight per unit of concurrency: queued ones keep the workers busy while
#: the coordinator learns what finished. With the capacity alone (1), an import of 200
#: security groups through 4 worker processes ran 15-25 % slower than in threads here:
#: every wave of operations waited a poll for the next one to be sent.
DISPATCH_DEPTH = 2

Route = Callable[[Operation], str]


def default_route(op: Operation) -> str:
    return DEFAULT_QUEUE


def _failed(item: _Started, exc: Exception) -> _Attempt:
    return _Attempt(row=item.row, error=error_text(exc), raw=True, exception=exc)


class CeleryExecutor:
    """Publishes the engine's calls to Celery queues; learns their outcomes from the journal."""

    def __init__(
        self, engine: Engine, app: Celery, *, route: Route = default_route, capacity: int
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.engine = engine
        self.journal = engine.journal
        self.app = app
        self.route = route
        #: How many operations the engine keeps in flight (see :data:`DISPATCH_DEPTH`).
        self.capacity = capacity * DISPATCH_DEPTH
        #: Operations that must run here (coordinator-only kinds, rollbacks): threads.
        self._local: LocalExecutor[_Started, _Attempt] = LocalExecutor(
            engine._attempt_group, _failed, workers=capacity
        )
        self._journal_id = self.journal.journal_id()
        self.coordinator = this_process()
        if not self.journal.claim_run(
            engine.run_id, self.coordinator, stale_after=COORDINATOR_STALE
        ):
            raise ConflictError(f"run {engine.run_id} is followed by another coordinator")
        self._touched = time.monotonic()
        #: Row ID -> (the started call, the row as last seen).
        self._flight: dict[int, tuple[_Started, OperationRecord]] = {}
        self._quiet = 0
        #: Row ID -> when its message was last published (monotonic).
        self._sent_at: dict[int, float] = {}
        self._orphans_seen = time.monotonic()
        self.orphan_after = lease_ttl() + ORPHAN_MARGIN
        #: The queue each row went to (tests and the summary read it).
        self.queues: dict[int, str] = {}

    def leases(self, op: Operation) -> bool:
        """Whether ``op`` goes to a worker: a task that says how to rebuild it, a create or
        update of a kind that may run anywhere. The rest runs on the coordinator."""
        if isinstance(op, Task):
            return op.to_payload() is not None
        return isinstance(op, Create | Update) and not op.kind.coordinator_only

    @staticmethod
    def payload(item: _Started) -> dict[str, Any]:
        """What the worker rebuilds ``item`` from: IDs and records (no secret by contract)."""
        op = item.op
        if isinstance(op, Task):
            made = op.to_payload()
            assert made is not None
            return made
        return json.loads(json.dumps({
            "action": op.action, "kind": op.kind.name, "identity": op.identity,
            "source": op.source, "resolved": item.resolved, "existing": op.existing,
        }, default=str))  # fmt: skip

    def submit(self, group: list[_Started]) -> None:
        if not self.leases(group[0].op):  # the coordinator's own lane
            self._local.submit(group)
            return
        if all(item.follow for item in group):  # a worker has it already (reattached run)
            for item in group:
                assert item.row is not None
                self._flight[item.row.id] = (item, item.row)
                self.queues[item.row.id] = self.route(item.op)
                self._sent_at[item.row.id] = time.monotonic()
            return
        rows = []
        for item in group:
            assert item.row is not None
            # The attempts at dispatch: a worker's poison bound counts from there.
            rows.append((item.row, {**self.payload(item), "_attempts": item.row.attempts}))
        sent = set(self.journal.dispatch(rows))
        queue = self.route(group[0].op)
        ids = [row.id for row, _ in rows if row.id in sent]
        for item in group:
            assert item.row is not None
            self._flight[item.row.id] = (item, item.row)
            self.queues[item.row.id] = queue
        if ids:
            self._publish(ids, queue)

    def _publish(self, ids: list[int], queue: str) -> None:
        message = {"v": MESSAGE_VERSION, "journal": self._journal_id,
                   "run": self.engine.run_id, "ops": ids}  # fmt: skip
        try:
            self.app.send_task(TASK, args=[message], queue=queue, routing_key=queue)
        except Exception as exc:  # kombu's OperationalError after its retries, and the like
            raise TransientError(
                f"the message broker did not take the work of run {self.engine.run_id} "
                f"({exc}); when it answers again, re-run the same command"
            ) from exc
        now = time.monotonic()
        for row_id in ids:
            self._sent_at[row_id] = now

    def in_flight(self) -> int:
        return len(self._flight) + self._local.in_flight()

    def collect(self, *, block: bool) -> list[tuple[_Started, _Attempt]]:
        while True:
            self._touch()
            finished = self._local.collect(block=False)
            finished += self._poll() if self._flight else []
            if finished or not block or not self.in_flight():
                return finished
            time.sleep(
                POLL_FAST if self._quiet < QUIET_POLLS or self._local.in_flight() else POLL_SLOW
            )

    def _poll(self) -> list[tuple[_Started, _Attempt]]:
        rows = self.journal.operations_by_id(list(self._flight))
        finished: list[tuple[_Started, _Attempt]] = []
        changed = False
        for row_id, (item, seen) in list(self._flight.items()):
            row = rows.get(row_id)
            if row is None:  # removed under us: the journal was edited by hand
                del self._flight[row_id]
                finished.append((item, _Attempt(seen, error="its journal row vanished",
                                                 recorded=True)))  # fmt: skip
                continue
            changed |= self._report(item, seen, row)
            self._flight[row_id] = (item, row)
            if row.state == PENDING:
                continue
            del self._flight[row_id]
            changed = True
            if row.state == DONE:
                finished.append((item, _Attempt(row, row.destination_id, recorded=True)))
            else:
                error = row.error or f"the worker left it {row.state}"
                finished.append((item, _Attempt(row, error=error, recorded=True)))
        self._quiet = 0 if changed else self._quiet + 1
        if time.monotonic() - self._orphans_seen > self.orphan_after / 2:
            self._orphans_seen = time.monotonic()
            self._resend_orphans()
        return finished

    def _touch(self) -> None:
        """Say in the journal that this coordinator lives (a re-run then does not take the
        run over); ConflictError if another took it over meanwhile."""
        if time.monotonic() - self._touched <= COORDINATOR_STALE / 3:
            return
        self._touched = time.monotonic()
        if not self.journal.touch_run(self.engine.run_id, self.coordinator):
            raise ConflictError(
                f"run {self.engine.run_id} was taken over by another coordinator: this one "
                "stops following it"
            )

    def _resend_orphans(self) -> None:
        """Publish again the rows nobody works on: no lease (or one run out) well after
        their message went, while their queue holds nothing. Their message was lost: a
        duplicate acknowledged while the original's worker later died, or the broker lost
        a message it had not written. The lease makes a second copy harmless."""
        now = time.monotonic()
        for row_id, (item, row) in list(self._flight.items()):
            if row.state != PENDING or now - self._sent_at.get(row_id, now) < self.orphan_after:
                continue
            lease = self.journal.lease(row_id)
            queue = self.queues[row_id]
            if lease is not None and not lease.expired or self._waiting(queue):
                continue
            self.engine.events.emit(
                Event(EventType.RETRY, kind=item.op.kind.name, identity=item.op.identity,
                      operation=item.op.action, run_id=self.engine.run_id,
                      message=f"no worker holds it: sent again to {queue}")  # fmt: skip
            )
            self._publish([row_id], queue)

    def _waiting(self, queue: str) -> bool:
        """Whether ``queue`` holds messages no worker took yet (a passive declare)."""
        try:
            with self.app.connection_for_write() as conn:
                _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
        except Exception:  # the queue is gone or the broker away: judge it empty
            return False
        return bool(count)

    def _report(self, item: _Started, seen: OperationRecord, row: OperationRecord) -> bool:
        """The events a local run would have emitted for what the worker reported."""
        op = item.op
        fields: dict[str, Any] = {"kind": op.kind.name, "identity": op.identity,
                                  "operation": op.action, "run_id": self.engine.run_id}  # fmt: skip
        changed = False
        if row.stage and row.stage != seen.stage:
            self.engine.events.emit(Event(EventType.STAGE, message=row.stage, **fields))
            changed = True
        if row.progress and row.progress != seen.progress:
            progress = row.progress
            self.engine.events.emit(
                Event(
                    EventType.PROGRESS,
                    done=int(progress.get("done") or 0),
                    total=progress.get("total"),
                    unit=str(progress.get("unit") or "bytes"),
                    **fields,
                )
            )
            changed = True
        if row.attempts > max(seen.attempts, 1) and row.state == PENDING:
            message = f"attempt {row.attempts} (a worker took it over, or retried)"
            self.engine.events.emit(Event(EventType.RETRY, message=message, **fields))
            changed = True
        return changed

    def close(self) -> None:
        self._local.close()
        self._flight.clear()


def celery_executor(app: Celery, route: Route, capacity: int) -> Callable[[Engine], CeleryExecutor]:
    """An ``Engine(executor=...)`` factory publishing to ``app``."""

    def make(engine: Engine) -> CeleryExecutor:
        return CeleryExecutor(engine, app, route=route, capacity=capacity)

    return make
