"""The engine: applies a plan's operations, recording everything in the journal.

Order: an operation starts once the operations of the plan it refers to have
an outcome (a security group's rules after that group and every group a rule
names); apart from that, operations run on a bounded pool of ``workers``
threads, shared among the services they talk to (by the work each has left),
so that Nova, Neutron and Cinder work side by side. Within one service
referenced kinds go first. With one worker the order is the plan's, kind by
kind.

Per operation the journal row goes ``pending`` before the API call and
``done`` (with the destination ID, which also enters the ID map) or
``failed`` (with the error) after it. The engine's dispatcher writes those
rows in batches: each step commits, in one transaction, the outcomes of the
calls that finished and the ``pending`` rows of the calls about to start,
and only then starts them. Transient failures (5xx, 429, dropped
connections) are retried with exponential backoff and full jitter, honouring
``Retry-After``. A create whose outcome is unknown (a row left ``pending`` or
``failed`` by an earlier attempt, or a connection error or 5xx during the call)
is never sent again before ``Kind.find`` has looked for it on the destination;
if it is there it is adopted.

A rollback is a run of the same engine: its :class:`~stackhop.plan.Delete` and
:class:`~stackhop.plan.Restore` operations are journaled, retried and ordered
like any other, and when one is ``done`` the row it undid moves to
``rolled_back`` (and a deleted object's ID mapping is dropped) in the same
transaction.

Long work that is not a kind's API call (a volume pass, a project phase) is a
:class:`~stackhop.task.Task`: journaled, retried and ordered like the rest,
it runs with a :class:`~stackhop.task.TaskContext` through which it reports
its stage and progress while it runs (events, and the row's ``stage`` and
``progress`` columns); after an unfinished attempt its ``find`` looks on the
destination before its work is done again.

Resume is a re-run of the same command: rows already ``done`` are skipped.
Ctrl-C (KeyboardInterrupt in the calling thread) or setting the ``stop`` event
stops starting new operations; in-flight ones finish and are recorded; then
:class:`~stackhop.errors.Interrupted` is raised.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackhop.errors import (
    ConflictError,
    Interrupted,
    JournalError,
    OperationFailedError,
)
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.executor import Executor, LocalExecutor
from stackhop.journal import (
    DONE,
    FAILED,
    PENDING,
    ROLLED_BACK,
    SKIPPED,
    Change,
    Journal,
    Mapping_,
    OperationRecord,
    Unmapping,
)
from stackhop.kinds.base import Connection, Record
from stackhop.plan import (
    Conflict,
    Create,
    Delete,
    Operation,
    OperationKey,
    Restore,
    Skip,
    Undo,
    Update,
)
from stackhop.resolve import Resolver
from stackhop.retry import RetryPolicy, classify, error_text
from stackhop.schedule import Feed, Schedule
from stackhop.task import Task, TaskContext

#: Makes the executor of one run (given the engine): ``Engine(executor=...)``.
ExecutorFactory = Callable[["Engine"], "Executor[_Started, _Attempt]"]

#: Outcomes an operation can have in one run (the RunResult counts them per kind).
OUTCOMES = ("done", "skipped", "conflict", "failed", "not_started")


# -- results -----------------------------------------------------------------


@dataclass
class RunResult:
    """What a run did: per kind, how many operations had each outcome; and the errors."""

    run_id: str
    outcome: str = "running"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    elapsed: float = 0.0
    #: The exception each failed operation's last attempt raised, by operation key: a
    #: caller whose operations are its own steps (a task) re-raises it, keeping its class
    #: (and exit code). Not in :meth:`as_dict`.
    exceptions: dict[OperationKey, BaseException] = field(default_factory=dict, repr=False)

    def count(self, outcome: str) -> int:
        return sum(per_kind.get(outcome, 0) for per_kind in self.counts.values())

    @property
    def failed(self) -> int:
        return self.count("failed")

    def raise_for_failures(self) -> None:
        """OperationFailedError if any operation failed, ConflictError if any conflicted."""
        if self.failed:
            raise OperationFailedError(failed=self.failed, run=self.run_id)
        conflicts = self.count("conflict")
        if conflicts:
            raise ConflictError(
                f"{conflicts} object(s) differ on the destination; see `stackhop status --run "
                f"{self.run_id}`, then re-run with --overwrite to update them"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "outcome": self.outcome,
            "counts": self.counts,
            "errors": self.errors,
            "elapsed": round(self.elapsed, 3),
        }


# -- scheduling --------------------------------------------------------------

_Settled = tuple[Operation, str, "str | None", "str | None"]
"""An operation that ends in this batch: (operation, outcome, message, destination ID)."""


@dataclass(frozen=True)
class _Started:
    """An operation whose ``pending`` row is written (``row``) and whose API call may go."""

    op: Operation
    resolved: Record
    row: OperationRecord | None
    unknown: bool
    #: The row before this attempt started (a task resumes from it).
    previous: OperationRecord | None = None
    #: Sent to a worker by an earlier coordinator of this run: followed, not sent again.
    follow: bool = False


#: The most creates one bulk request carries, and the fewest worth one when a kind's ready
#: creates are spread over the free workers.
BULK_LIMIT = 100
BULK_MIN = 10


def _dispatched_in(row: OperationRecord | None, run_id: str) -> bool:
    """``row`` was sent to a worker in run ``run_id`` and has no outcome yet."""
    return (
        row is not None
        and row.state == PENDING
        and row.run_id == run_id
        and row.dispatched_at is not None
    )


def _bulk(op: Operation) -> bool:
    return isinstance(op, Create) and op.kind.bulk_create


@dataclass(frozen=True)
class _Attempt:
    """What the API call of one operation came to, for the journal."""

    row: OperationRecord | None
    destination_id: str | None = None
    adopted: bool = False
    error: str | None = None
    #: The error is not the API's (journal, programming error): nothing is journaled.
    raw: bool = False
    #: What the call raised, when it failed.
    exception: BaseException | None = None
    #: The outcome is in the journal already (a worker on another host wrote it).
    recorded: bool = False


@dataclass
class _Batch:
    """The journal writes of one engine step, committed in one transaction."""

    changes: list[Change] = field(default_factory=list)
    #: Per change: the operation it starts, or how the operation ends once it is written
    #: (None: a change with no effect of its own, as marking a row ``rolled_back``).
    effects: list[_Started | _Settled | None] = field(default_factory=list)
    mappings: list[Mapping_] = field(default_factory=list)
    unmappings: list[Unmapping] = field(default_factory=list)
    outcomes: list[_Settled] = field(default_factory=list)
    #: Operations a worker runs already (a reattached run): nothing to write or send.
    follow: list[_Started] = field(default_factory=list)

    def add(self, change: Change, effect: _Started | _Settled | None) -> None:
        self.changes.append(change)
        self.effects.append(effect)

    def settle(self, op: Operation, outcome: str, message: str | None) -> None:
        """``op`` ends without a journal write of its own."""
        self.outcomes.append((op, outcome, message, None))

    def refuse(self, index: int, error: str) -> None:
        """Change ``index`` could not be written: its operation fails, nothing is called."""
        effect = self.effects[index]
        if effect is None:
            return
        op = effect.op if isinstance(effect, _Started) else effect[0]
        self.outcomes.append((op, "failed", error, None))


# -- the engine --------------------------------------------------------------


class Engine:
    """Applies operations to the destination cloud ``destination``.

    ``scope`` names the destination in the journal (default: the resolver's
    scope). ``sleep``, ``clock`` and ``rng`` are injectable for tests; the
    default sleep wakes up early when ``stop`` is set.
    """

    def __init__(
        self,
        journal: Journal,
        destination: Connection,
        resolver: Resolver,
        *,
        scope: str | None = None,
        workers: int = 4,
        retry: RetryPolicy | None = None,
        events: EventSink | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        executor: ExecutorFactory | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.journal = journal
        self.destination = destination
        self.resolver = resolver
        self.scope = scope or resolver.scope
        self.workers = workers
        self.retry = retry or RetryPolicy()
        self.events: EventSink = events or NullSink()
        self.stop = stop or threading.Event()
        self.sleep = sleep or self._interruptible_sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self._outcomes: dict[OperationKey, str] = {}
        self._lock = threading.Lock()
        #: Notified whenever an operation gets its outcome (see :meth:`outcome`).
        self._settled = threading.Condition(self._lock)
        self._run_id = ""
        self._make_executor = executor
        #: The executor of the run in progress (whose workers may count attempts).
        self._running: Executor[_Started, _Attempt] | None = None
        #: A worker's engine: its tasks stop when their lease is lost (TaskContext.fenced).
        self.fenced = False

    @property
    def run_id(self) -> str:
        """The journal ID of the run in progress (or of the last one); "" before any."""
        return self._run_id

    def outcome(self, ref: OperationKey, *, wait: bool = False) -> str | None:
        """The outcome of operation ``ref`` in the run in progress (None: none yet).

        With ``wait``, wait until it has one or the run is asked to stop. A
        planner feeding :meth:`run_planned` uses it to hand over a step only
        once the step before it is ``done`` (so a step after a failed one is
        never journaled, not even as "not attempted").
        """
        with self._settled:
            while wait and ref not in self._outcomes and not self.stop.is_set():
                self._settled.wait(0.2)
            return self._outcomes.get(ref)

    def _interruptible_sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    # -- the run ---------------------------------------------------------------

    def run(
        self,
        operations: Sequence[Operation],
        *,
        command: str,
        source_cloud: str | None = None,
        destination_cloud: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Apply ``operations``; return the RunResult (raise Interrupted on Ctrl-C).

        Failed operations do not raise: the caller decides, usually with
        :meth:`RunResult.raise_for_failures`.
        """
        return self.run_planned(
            [operations],
            total=len(operations),
            command=command,
            source_cloud=source_cloud,
            destination_cloud=destination_cloud,
            args=args,
        )

    def run_planned(
        self,
        batches: Iterable[Sequence[Operation]],
        *,
        total: int | None,
        command: str,
        source_cloud: str | None = None,
        destination_cloud: str | None = None,
        args: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Apply operations as the planner hands them over, batch by batch (see :meth:`run`).

        ``batches`` is consumed in a thread of its own, so the destination is
        read for later kinds while earlier ones are applied. A batch may refer
        only to operations of earlier batches (the planner yields referenced
        kinds first). ``total`` is the expected number of operations, for
        progress. If the planner raises, nothing more starts, what is in flight
        is recorded, the run ends ``failed`` and the planner's error is raised.
        ``run_id`` names a run the caller started already (whose ID its operations needed
        before they were planned: a project migration's sub-runs name it); the caller
        finishes it too (its outcome may depend on more than these operations).
        """
        owned = run_id is None
        if run_id is None:
            run_id = self.journal.start_run(
                command,
                source_cloud=source_cloud,
                destination_cloud=destination_cloud or self.scope,
                args=args,
            ).id
        self._run_id = run_id
        self._outcomes = {}
        result = RunResult(run_id=run_id)
        started = self.clock()
        self._emit(EventType.RUN_STARTED, total=total)
        feed = Feed(batches, self.stop)
        interrupted = False
        try:
            self._apply_all(feed, result)
        except KeyboardInterrupt:
            interrupted = True
        interrupted = interrupted or (self.stop.is_set() and feed.error is None)
        for op in feed.seen:
            outcome = self._outcomes.get(op.ref, "not_started")
            per_kind = result.counts.setdefault(op.kind.name, dict.fromkeys(OUTCOMES, 0))
            per_kind[outcome] += 1
        result.elapsed = self.clock() - started
        if interrupted:
            result.outcome = "interrupted"
        elif result.failed or feed.error is not None:
            result.outcome = "failed"
        elif result.count("conflict"):
            result.outcome = "conflicts"
        else:
            result.outcome = "succeeded"
        if owned:
            self.journal.finish_run(run_id, result.outcome)
        self._emit(EventType.RUN_FINISHED, outcome=result.outcome, detail=result.as_dict())
        if feed.error is not None:
            raise feed.error
        if interrupted:
            raise Interrupted(run=run_id, result=result)
        return result

    def _apply_all(self, feed: Feed, result: RunResult) -> None:
        schedule = Schedule(sequential=self.workers == 1)
        kinds_started: set[str] = set()
        self.resolver.forget_remembered()
        executor = self._executor()
        self._running = executor
        try:
            finished: list[tuple[_Started, _Attempt]] = []
            while True:
                for operations in feed.take(block=False):
                    self.resolver.preload(schedule.add(operations))
                if feed.error is not None:
                    self.stop.set()
                free = executor.capacity - executor.in_flight()
                batch = [] if self.stop.is_set() else schedule.take(free)
                batch += self._bulk_companions(batch, schedule)
                for op in batch:
                    if op.kind.name not in kinds_started:
                        kinds_started.add(op.kind.name)
                        total = schedule.per_kind[op.kind.name]
                        self._emit(EventType.KIND_STARTED, kind=op.kind.name, total=total)
                started = self._settle(finished, batch, schedule, result)
                finished = []
                for group in self._groups(started, free):
                    executor.submit(group)
                if executor.in_flight():
                    can_start = (
                        not self.stop.is_set()
                        and schedule.ready
                        and executor.in_flight() < executor.capacity
                    )
                    finished = executor.collect(block=not can_start)
                elif self.stop.is_set() or feed.done and not schedule.ready:
                    return
                elif not schedule.ready:
                    for operations in feed.take(block=True):
                        self.resolver.preload(schedule.add(operations))
        except KeyboardInterrupt:
            # Queued operations are never started; in-flight ones finish and
            # are recorded before Interrupted is raised.
            self.stop.set()
            while executor.in_flight():
                finished.extend(executor.collect(block=True))
            self._settle(finished, [], schedule, result)
            raise
        finally:
            executor.close()
            self.resolver.forget_remembered()

    def _executor(self) -> Executor[_Started, _Attempt]:
        """Where this run's calls go: threads of this process (``workers`` of them), or the
        executor the caller chose (``executor``: made for this run)."""
        if self._make_executor is not None:
            return self._make_executor(self)

        def failed(item: _Started, exc: Exception) -> _Attempt:
            return _Attempt(row=item.row, error=error_text(exc), raw=True, exception=exc)

        return LocalExecutor(self._attempt_group, failed, workers=self.workers)

    # -- bulk creates --------------------------------------------------------------

    def _bulk_companions(self, batch: list[Operation], schedule: Schedule) -> list[Operation]:
        """More ready creates of the bulk kinds in ``batch`` (``Kind.bulk_create``): they go
        to the API in the same requests, so they take no worker of their own."""
        extra: list[Operation] = []
        for name in {op.kind.name for op in batch if _bulk(op)}:
            extra += schedule.take_kind(name, BULK_LIMIT * self.workers)
        return extra

    def _groups(self, started: list[_Started], free: int) -> list[list[_Started]]:
        """The calls to make: one per operation, except first attempts of bulk creates,
        which go per kind in up to ``free`` requests of at most :data:`BULK_LIMIT`."""
        groups: list[list[_Started]] = []
        bulk: dict[str, list[_Started]] = {}
        for item in started:
            if _bulk(item.op) and not item.unknown:
                bulk.setdefault(item.op.kind.name, []).append(item)
            else:
                groups.append([item])
        for items in bulk.values():
            size = min(BULK_LIMIT, max(BULK_MIN, -(-len(items) // max(1, free))))
            groups += [items[i : i + size] for i in range(0, len(items), size)]
        return groups

    def _attempt_group(self, group: list[_Started]) -> list[_Attempt]:
        """One call for ``group``: its one operation, or its creates in one bulk request.

        A bulk request is all or nothing (Neutron's guarantee). When it fails, each
        create is attempted on its own, as if it had been alone: after a lookup when the
        request's outcome is unknown (a lost answer), so nothing is created twice, and
        with its own error when the destination refuses one of them.
        """
        if len(group) == 1:
            return [self._attempt(group[0])]
        kind = group[0].op.kind
        try:
            ids = kind.create_many(self.destination, [item.resolved for item in group])
        except Exception as exc:
            failure = classify(exc)
            self._emit(
                EventType.RETRY,
                kind=kind.name,
                identity=f"{len(group)} objects",
                operation="create",
                message=f"bulk request failed, one by one now: {error_text(exc)}",
            )
            unknown = not failure.outcome_known
            return [self._attempt(dataclasses.replace(item, unknown=unknown)) for item in group]
        return [_Attempt(item.row, made) for item, made in zip(group, ids, strict=True)]

    # -- recording, in batches -----------------------------------------------------

    def _settle(
        self,
        finished: list[tuple[_Started, _Attempt]],
        batch: list[Operation],
        schedule: Schedule,
        result: RunResult,
    ) -> list[_Started]:
        """Journal what finished and what starts now, in one transaction; return what to call.

        Finished operations go ``done`` (with their ID mappings) or ``failed``;
        the dependents they release are in the next batch, so they see the
        mappings. Starting operations go ``pending`` before their API call.
        Operations that need no call (skips, conflicts, work done in an earlier
        run, blocked ones) are recorded and finished right here.
        """
        plan = _Batch()
        for item, attempt in finished:
            if attempt.exception is not None:
                result.exceptions[item.op.ref] = attempt.exception
            if attempt.raw:
                plan.settle(item.op, "failed", attempt.error)
            elif attempt.recorded:
                self._learned(plan, item.op, attempt)
            elif attempt.error is not None:
                self._fail(plan, item.op, attempt.row, attempt.error)
            else:
                message = (
                    "adopted the object an earlier attempt created" if attempt.adopted else None
                )
                self._done(plan, item.op, attempt.row, attempt.destination_id, message)
        keys = [(op.kind.name, op.key) for op in batch]
        rows = self.journal.rows(self.scope, keys) if keys else {}
        for op in batch:
            try:
                self._start(op, rows.get((op.kind.name, op.key)), plan)
            except Exception as exc:  # a programming error in a kind: report, never swallow
                plan.settle(op, "failed", error_text(exc))
        calls = self._write(plan) + plan.follow
        for op, outcome, message, destination_id in plan.outcomes:
            self._finish(op, outcome, message, destination_id, result, schedule)
        return calls

    def _learned(self, plan: _Batch, op: Operation, attempt: _Attempt) -> None:
        """An outcome a worker journaled: the run counts it, nothing is written again."""
        if attempt.error is not None:
            plan.outcomes.append((op, "failed", attempt.error, None))
            return
        destination_id = attempt.destination_id
        if op.source_id is not None and destination_id is not None and not isinstance(op, Undo):
            self.resolver.remember(op.kind.name, op.source_id, destination_id)
        message = "adopted the object an earlier attempt created" if attempt.adopted else None
        plan.outcomes.append((op, "done", message, destination_id))

    def _start(self, op: Operation, row: OperationRecord | None, plan: _Batch) -> None:
        kind = op.kind
        if isinstance(op, Skip | Conflict):
            self._unapplied(op, row, plan)
            return
        if row is not None and row.state == DONE:
            self._map(plan, op, row.destination_id)
            plan.settle(op, "done", "already done in an earlier run")
            return
        self._emit(
            EventType.OPERATION_STARTED, kind=kind.name, identity=op.identity, operation=op.action
        )
        blocked = self._failed_dependency(op)
        if blocked is not None:
            self._fail(plan, op, row, f"not attempted: it depends on {blocked}, which failed")
            return
        # Where a worker takes a lease, its take counts the attempt.
        leased = self._running is not None and self._running.leases(op)
        counted = not leased
        if self._held_elsewhere(row):
            assert row is not None
            if leased:  # a worker of an earlier run has it: follow it, never send it again
                unknown = row.attempts > 0
                plan.follow.append(_Started(op, {}, row, unknown, previous=row, follow=True))
                return
            held = (f"a worker holds it for run {row.run_id} (--executor celery): re-run "
                    "that command to follow it, or wait for its outcome")  # fmt: skip
            plan.settle(op, "failed", held)  # the row stays the worker's to end
            return
        if isinstance(op, Undo):
            change = self._change(op, row, PENDING, attempt=counted)
            plan.add(change, _Started(op, {}, None, False))
            return
        if isinstance(op, Task):
            # An earlier attempt may have done (part of) the work: the task looks first.
            unknown = row is not None and row.attempts > 0
            if leased and _dispatched_in(row, self._run_id):
                assert row is not None
                plan.follow.append(_Started(op, {}, row, unknown, previous=row, follow=True))
                return
            change = self._change(op, row, PENDING, attempt=counted)
            plan.add(change, _Started(op, {}, None, unknown, previous=row))
            return
        try:
            resolved = self.resolver.resolve(kind, op.source)
        except ConflictError as exc:
            self._fail(plan, op, row, exc.message)
            return
        # A create tried before (this row has attempts) may have happened.
        unknown = isinstance(op, Create) and row is not None and row.attempts > 0
        before = kind.before(op.existing) if isinstance(op, Update) and op.existing else None
        change = self._change(op, row, PENDING, before=before, attempt=counted)
        plan.add(change, _Started(op, resolved, None, unknown))

    def _held_elsewhere(self, row: OperationRecord | None) -> bool:
        """``row`` went to a worker in another run and a worker's lease on it runs still:
        doing it here too would do it twice."""
        if row is None or row.state != PENDING or row.dispatched_at is None:
            return False
        if row.run_id == self._run_id:
            return False
        lease = self.journal.lease(row.id)
        return lease is not None and not lease.expired

    def _unapplied(self, op: Skip | Conflict, row: OperationRecord | None, plan: _Batch) -> None:
        outcome = "skipped" if isinstance(op, Skip) else "conflict"
        if row is not None and row.state == DONE:
            self._map(plan, op, row.destination_id)
            plan.settle(op, outcome, "done in an earlier run")
            return
        if isinstance(op, Skip) and row is not None and row.state == PENDING:
            # An earlier attempt did create it after all: that attempt is done.
            message = "adopted the object an earlier attempt created"
            self._done(plan, op, row, op.destination_id, message, action=row.action)
            return
        reason = op.reason if isinstance(op, Conflict) else None
        change = self._change(op, row, SKIPPED, destination_id=op.destination_id, error=reason)
        plan.add(change, (op, outcome, reason, None))
        if isinstance(op, Skip):
            self._map(plan, op, op.destination_id)

    def _done(
        self,
        plan: _Batch,
        op: Operation,
        row: OperationRecord | None,
        destination_id: str | None,
        message: str | None,
        *,
        action: str | None = None,
    ) -> None:
        change = self._change(op, row, DONE, action=action, destination_id=destination_id)
        plan.add(change, (op, "done", message, destination_id))
        if isinstance(op, Undo):
            self._undone(plan, op)
            return
        self._map(plan, op, destination_id)

    def _undone(self, plan: _Batch, op: Undo) -> None:
        """Mark the row ``op`` undid ``rolled_back`` (it keeps its run), in the same batch."""
        undone = op.undoes
        plan.add(
            Change(
                run_id=undone.run_id,
                scope=undone.scope,
                kind=undone.kind,
                identity=undone.identity,
                state=ROLLED_BACK,
                action=undone.action,
                expected=undone,
                undone_by=self._run_id,
            ),
            None,
        )
        if isinstance(op, Delete) and undone.source_id is not None:
            plan.unmappings.append((undone.scope, undone.kind, undone.source_id))
            if op.kind.alias_kind is not None:
                plan.unmappings.append((undone.scope, op.kind.alias_kind, undone.source_id))

    def _fail(self, plan: _Batch, op: Operation, row: OperationRecord | None, error: str) -> None:
        plan.add(self._change(op, row, FAILED, error=error), (op, "failed", error, None))

    def _map(self, plan: _Batch, op: Operation, destination_id: str | None) -> None:
        source_id = op.source_id
        if isinstance(op, Undo) or destination_id is None or source_id is None:
            return
        plan.mappings.append((self.scope, op.kind.name, source_id, destination_id))

    def _change(
        self,
        op: Operation,
        row: OperationRecord | None,
        state: str,
        *,
        action: str | None = None,
        destination_id: str | None = None,
        error: str | None = None,
        before: Any = None,
        attempt: bool = False,
    ) -> Change:
        return Change(
            run_id=self._run_id,
            scope=self.scope,
            kind=op.kind.name,
            identity=op.key,
            state=state,
            action=action or op.action,
            expected=row,
            source_id=op.source_id if state != DONE else None,
            destination_id=destination_id,
            error=error,
            before=before,
            attempt=attempt,
        )

    def _write(self, plan: _Batch) -> list[_Started]:
        """Commit the batch in one transaction; the operations whose API call may start.

        If some row moved under us (another process works on the same
        journal), the changes are written one at a time and the refused ones
        fail by name, without their call.
        """
        if not plan.changes and not plan.mappings and not plan.unmappings:
            return []
        try:
            rows: list[OperationRecord | None] = list(
                self.journal.apply(plan.changes, plan.mappings, plan.unmappings)
            )
        except JournalError:
            rows = []
            for index, change in enumerate(plan.changes):
                try:
                    rows.append(self.journal.apply([change])[0])
                except JournalError as exc:
                    rows.append(None)
                    plan.refuse(index, exc.message)
            for mapping in plan.mappings:
                self.journal.map_id(*mapping)
            if plan.unmappings:
                self.journal.apply([], unmappings=plan.unmappings)
        for mapping in plan.mappings:
            self.resolver.remember(mapping[1], mapping[2], mapping[3])
        calls = []
        for row, effect in zip(rows, plan.effects, strict=True):
            if row is None or effect is None:
                continue
            if isinstance(effect, _Started):
                calls.append(dataclasses.replace(effect, row=row))
            else:
                plan.outcomes.append(effect)
        return calls

    def _finish(
        self,
        op: Operation,
        outcome: str,
        message: str | None,
        destination_id: str | None,
        result: RunResult,
        schedule: Schedule,
    ) -> None:
        if outcome == "failed":
            self._note_error(op, message or "failed", result)
        self._emit_finished(op, outcome, message, destination_id=destination_id)
        with self._settled:
            self._outcomes[op.ref] = outcome
            self._settled.notify_all()
        schedule.finished(op)

    # -- one operation, in a worker thread -------------------------------------------

    def work(
        self,
        op: Operation,
        row: OperationRecord,
        previous: OperationRecord | None,
        resolved: Record | None = None,
    ) -> _Attempt:
        """Run one operation whose ``pending`` row a worker took the lease of, and journal
        its outcome (``done`` with its ID mapping, or ``failed``) as a local run would.

        ``row`` is the row as taken (its attempt counted); ``previous`` the row before
        the take; ``resolved`` the record the coordinator resolved (None: resolve here).
        A create or task with an earlier attempt looks first (``find``).
        """
        return self.work_group([(op, row, previous, resolved)])[0]

    def work_group(
        self,
        items: Sequence[tuple[Operation, OperationRecord, OperationRecord | None, Record | None]],
    ) -> list[_Attempt]:
        """:meth:`work` for the operations of one message: first attempts of creates of one
        bulk kind go in one request, as :meth:`_attempt_group` sends them in a local run."""
        started = []
        for op, row, previous, resolved in items:
            self._run_id = row.run_id
            unknown = previous is not None and previous.attempts > 0
            if resolved is None:
                resolved = self.resolver.resolve(op.kind, op.source) if op.source else {}
            unknown = unknown and isinstance(op, Create | Task)
            started.append(_Started(op, resolved, row, unknown, previous=previous))
        together = len(started) > 1 and all(_bulk(s.op) and not s.unknown for s in started)
        if together and len({s.op.kind.name for s in started}) == 1:
            attempts = self._attempt_group(started)
        else:
            attempts = [self._attempt(item) for item in started]
        plan = _Batch()
        for item, attempt in zip(started, attempts, strict=True):
            if attempt.raw:
                continue
            if attempt.error is not None:
                self._fail(plan, item.op, attempt.row, attempt.error)
            else:
                adopted = "adopted the object an earlier attempt created"
                message = adopted if attempt.adopted else None
                self._done(plan, item.op, attempt.row, attempt.destination_id, message)
        self._write(plan)
        return attempts

    def _attempt(self, item: _Started) -> _Attempt:
        """The API call of one started operation, retried while the failure is transient.

        The row is already ``pending``; each retry counts one more attempt on
        it first. A create whose outcome is unknown is looked up before it is
        sent (again).
        """
        op, kind, row, unknown = item.op, item.op.kind, item.row, item.unknown
        attempt = 1
        while True:
            try:
                if isinstance(op, Task):
                    assert row is not None
                    return self._run_task(op, row, item.previous, unknown)
                if unknown:
                    found = kind.find(self.destination, item.resolved)
                    if found is not None:
                        return _Attempt(row, kind.destination_id(found), adopted=True)
                return _Attempt(row, self._call(op, item.resolved))
            except Exception as exc:
                failure = classify(exc)
                unknown = unknown or isinstance(op, Task)
                unknown = unknown or (isinstance(op, Create) and not failure.outcome_known)
                if not failure.transient or attempt >= self.retry.max_attempts:
                    return _Attempt(row, error=error_text(exc), exception=exc)
                delay = self.retry.delay(attempt, failure.retry_after, self.rng)
                self._emit(
                    EventType.RETRY,
                    kind=kind.name,
                    identity=op.identity,
                    operation=op.action,
                    message=error_text(exc),
                    detail={"attempt": attempt, "delay": round(delay, 3)},
                )
                self.sleep(delay)
                if self.stop.is_set():
                    return _Attempt(
                        row, error=f"interrupted before retrying: {error_text(exc)}", exception=exc
                    )
                attempt += 1
                row = self.journal.apply([self._change(op, row, PENDING, attempt=True)])[0]

    def _run_task(
        self, op: Task, row: OperationRecord, previous: OperationRecord | None, unknown: bool
    ) -> _Attempt:
        """Call a task; after an unfinished earlier attempt, its ``find`` first.

        The task's context carries the row as the earlier attempts left it,
        read afresh, so it holds what they reported (stage, progress, resume state).
        """
        if unknown:
            previous = self.journal.operation(row.scope, row.kind, row.identity) or previous
        ctx = TaskContext(
            op,
            journal=self.journal,
            row=row,
            previous=previous,
            destination=self.destination,
            events=self.events,
            stop=self.stop,
            run_id=self._run_id,
            clock=self.clock,
            fenced=self.fenced,
        )
        if unknown:
            found = op.find(ctx)
            if found is not None:
                return _Attempt(row, found, adopted=True)
        return _Attempt(row, op.call(ctx))

    def _call(self, op: Operation, resolved: Record) -> str:
        kind = op.kind
        if isinstance(op, Create):
            return kind.create(self.destination, resolved)
        if isinstance(op, Update):
            assert op.existing is not None
            kind.update(self.destination, resolved, op.existing)
            return kind.destination_id(op.existing)
        if isinstance(op, Delete):
            target = op.destination_id
            if not op.with_parent and target:
                kind.delete(self.destination, target)
            return target or ""
        if isinstance(op, Restore):
            if op.undoes.before is None:
                raise ConflictError(f"{kind.name} {op.identity!r}: no previous state journaled")
            kind.restore(self.destination, op.undoes.before)
            return op.destination_id or ""
        raise TypeError(f"the engine cannot apply {type(op).__name__}")

    def _failed_dependency(self, op: Operation) -> str | None:
        with self._lock:
            for ref in op.depends_on:
                if self._outcomes.get(ref) in ("failed", "conflict"):
                    return f"{ref[0]} {ref[1]!r}"
        return None

    def _note_error(self, op: Operation, error: str, result: RunResult) -> None:
        with self._lock:
            result.errors.append({"kind": op.kind.name, "identity": op.identity, "error": error})

    # -- events ----------------------------------------------------------------

    def _emit(self, type_: EventType, **fields: Any) -> None:
        self.events.emit(Event(type_, run_id=self._run_id, **fields))

    def _emit_finished(
        self, op: Operation, outcome: str, message: str | None, destination_id: str | None = None
    ) -> None:
        self._emit(
            EventType.OPERATION_FINISHED,
            kind=op.kind.name,
            identity=op.identity,
            operation=op.action,
            outcome=outcome,
            message=message,
            detail={"destination_id": destination_id} if destination_id else {},
        )
