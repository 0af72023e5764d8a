"""The engine: applies a plan's operations, recording everything in the journal.

Order: kinds in dependency order (referenced kinds first); within a kind, the
operations run in parallel on a bounded pool of ``workers`` threads, object
operations first, then data copies.

Per operation the journal row goes ``pending`` before the API call and
``done`` (with the destination ID, which also enters the ID map) or
``failed`` (with the error) after it. Transient failures (5xx, 429, dropped
connections) are retried with exponential backoff and full jitter, honouring
``Retry-After``. A create whose outcome is unknown (a row left ``pending`` or
``failed`` by an earlier attempt, or a connection error or 5xx during the call)
is never sent again before ``Kind.find`` has looked for it on the destination;
if it is there it is adopted.

Resume is a re-run of the same command: rows already ``done`` are skipped.
Ctrl-C (KeyboardInterrupt in the calling thread) or setting the ``stop`` event
stops starting new operations; in-flight ones finish and are recorded; then
:class:`~stackhop.errors.Interrupted` is raised.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import exceptions as sdk_exceptions

from stackhop.errors import ConflictError, Interrupted, OperationFailedError, TransientError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import DONE, FAILED, PENDING, SKIPPED, Journal, OperationRecord
from stackhop.kinds import dependency_levels
from stackhop.kinds.base import Connection, DataKind, Kind, Record
from stackhop.plan import Conflict, CopyData, Create, Operation, OperationKey, Skip, Update
from stackhop.resolve import Resolver

#: Outcomes an operation can have in one run (the RunResult counts them per kind).
OUTCOMES = ("done", "skipped", "conflict", "failed", "not_started")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


# -- failures ----------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """What an exception from a cloud call means for retrying it."""

    transient: bool
    #: The request certainly changed nothing (429, never connected): no lookup needed.
    outcome_known: bool
    retry_after: float | None = None


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _http_failure(status: int | None, response: Any) -> Failure:
    headers = getattr(response, "headers", None) or {}
    retry_after = _parse_retry_after(headers.get("Retry-After"))
    return Failure(
        transient=status in RETRYABLE_STATUS,
        outcome_known=status == 429 or (status is not None and status < 500),
        retry_after=retry_after,
    )


def classify(exc: BaseException) -> Failure:
    """Whether ``exc`` is worth retrying, and whether the call may have had an effect.

    Understands stackhop's TransientError, openstacksdk's HttpException (by
    status code), keystoneauth1's HTTP and connection errors, requests'
    connection errors and Python's ConnectionError / TimeoutError.
    """
    if isinstance(exc, TransientError):
        return Failure(transient=True, outcome_known=False, retry_after=exc.retry_after)
    if isinstance(exc, sdk_exceptions.HttpException):
        return _http_failure(exc.status_code, exc.response)
    if isinstance(exc, ksa_exceptions.HttpError):
        return _http_failure(exc.http_status, exc.response)
    if isinstance(exc, ksa_exceptions.ConnectTimeout):
        return Failure(transient=True, outcome_known=True)  # never connected
    if isinstance(
        exc,
        ksa_exceptions.RetriableConnectionFailure
        | ksa_exceptions.ConnectionError
        | requests.ConnectionError
        | requests.Timeout
        | ConnectionError
        | TimeoutError,
    ):
        return Failure(transient=True, outcome_known=False)
    return Failure(transient=False, outcome_known=True)


def _error_text(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {message}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    #: A server's Retry-After beyond this is capped (a broken header must not stall a run).
    max_retry_after: float = 600.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        The server's Retry-After when it gave one, else "full jitter":
        uniform between 0 and ``base_delay * 2**(attempt-1)``, capped.
        """
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


# -- results -----------------------------------------------------------------


@dataclass
class RunResult:
    """What a run did: per kind, how many operations had each outcome; and the errors."""

    run_id: str
    outcome: str = "running"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    elapsed: float = 0.0

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
        self._run_id = ""

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
        run = self.journal.start_run(
            command,
            source_cloud=source_cloud,
            destination_cloud=destination_cloud or self.scope,
            args=args,
        )
        self._run_id = run.id
        self._outcomes = {}
        result = RunResult(run_id=run.id)
        started = self.clock()
        self._emit(EventType.RUN_STARTED, total=len(operations))
        interrupted = False
        try:
            self._apply_all(operations, result)
        except KeyboardInterrupt:
            interrupted = True
        interrupted = interrupted or self.stop.is_set()
        for op in operations:
            outcome = self._outcomes.get(op.ref, "not_started")
            per_kind = result.counts.setdefault(op.kind.name, dict.fromkeys(OUTCOMES, 0))
            per_kind[outcome] += 1
        result.elapsed = self.clock() - started
        if interrupted:
            result.outcome = "interrupted"
        elif result.failed:
            result.outcome = "failed"
        elif result.count("conflict"):
            result.outcome = "conflicts"
        else:
            result.outcome = "succeeded"
        self.journal.finish_run(run.id, result.outcome)
        self._emit(EventType.RUN_FINISHED, outcome=result.outcome, detail=result.as_dict())
        if interrupted:
            raise Interrupted(run=run.id, result=result)
        return result

    def _apply_all(self, operations: Sequence[Operation], result: RunResult) -> None:
        by_kind: dict[Kind, list[Operation]] = {}
        for op in operations:
            by_kind.setdefault(op.kind, []).append(op)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="stackhop") as pool:
            try:
                for level in dependency_levels(by_kind):
                    for kind in level:
                        if self.stop.is_set():
                            return
                        kind_ops = by_kind[kind]
                        self._emit(EventType.KIND_STARTED, kind=kind.name, total=len(kind_ops))
                        objects = [op for op in kind_ops if not isinstance(op, CopyData)]
                        copies = [op for op in kind_ops if isinstance(op, CopyData)]
                        for phase in (objects, copies):
                            futures = [pool.submit(self._apply_safely, op, result) for op in phase]
                            self._wait(futures)
            except KeyboardInterrupt:
                # Leaving the with-block waits for in-flight operations; queued
                # ones see the stop flag and return without starting.
                self.stop.set()
                raise

    @staticmethod
    def _wait(futures: list[Future[None]]) -> None:
        # Wait in short slices so Ctrl-C reaches this (the main) thread promptly.
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)

    # -- one operation ---------------------------------------------------------

    def _apply_safely(self, op: Operation, result: RunResult) -> None:
        if self.stop.is_set():
            return
        try:
            outcome = self._apply(op, result)
        except Exception as exc:  # a journal or programming error: report, never swallow
            outcome = "failed"
            self._note_error(op, _error_text(exc), result)
            self._emit_finished(op, outcome, _error_text(exc))
        with self._lock:
            self._outcomes[op.ref] = outcome

    def _apply(self, op: Operation, result: RunResult) -> str:
        kind = op.kind
        row = self.journal.operation(self.scope, kind.name, op.key)
        if isinstance(op, Skip | Conflict):
            return self._record_unapplied(op, row)
        if row is not None and row.state == DONE:
            self._map(op, row.destination_id)
            self._emit_finished(op, "done", "already done in an earlier run")
            return "done"
        self._emit(
            EventType.OPERATION_STARTED, kind=kind.name, identity=op.identity, operation=op.action
        )
        blocked = self._failed_dependency(op)
        if blocked is not None:
            error = f"not attempted: it depends on {blocked}, which failed"
            return self._fail(op, row, error, result)
        try:
            resolved = self.resolver.resolve(kind, op.source)
        except ConflictError as exc:
            return self._fail(op, row, exc.message, result)
        # A create tried before (this row has attempts) may have happened.
        unknown = isinstance(op, Create) and row is not None and row.attempts > 0
        before = kind.before(op.existing) if isinstance(op, Update) and op.existing else None
        attempt = 0
        while True:
            attempt += 1
            row = self.journal.transition(
                self._run_id,
                self.scope,
                kind.name,
                op.key,
                PENDING,
                action=op.action,
                expected=row,
                source_id=op.source_id,
                before=before,
                attempt=True,
            )
            try:
                if unknown:
                    found = kind.find(self.destination, resolved)
                    if found is not None:
                        return self._done(op, row, kind.destination_id(found), adopted=True)
                destination_id = self._call(op, resolved)
            except Exception as exc:
                failure = classify(exc)
                unknown = unknown or (isinstance(op, Create) and not failure.outcome_known)
                if not failure.transient or attempt >= self.retry.max_attempts:
                    return self._fail(op, row, _error_text(exc), result)
                delay = self.retry.delay(attempt, failure.retry_after, self.rng)
                self._emit(
                    EventType.RETRY,
                    kind=kind.name,
                    identity=op.identity,
                    operation=op.action,
                    message=_error_text(exc),
                    detail={"attempt": attempt, "delay": round(delay, 3)},
                )
                self.sleep(delay)
                if self.stop.is_set():
                    return self._fail(
                        op, row, f"interrupted before retrying: {_error_text(exc)}", result
                    )
                continue
            return self._done(op, row, destination_id)

    def _call(self, op: Operation, resolved: Record) -> str:
        kind = op.kind
        if isinstance(op, Create):
            return kind.create(self.destination, resolved)
        if isinstance(op, Update):
            assert op.existing is not None
            kind.update(self.destination, resolved, op.existing)
            return kind.destination_id(op.existing)
        if isinstance(op, CopyData):
            if not isinstance(kind, DataKind):
                raise ConflictError(f"{kind.name} carries no data; a copy operation is a bug")
            target = op.destination_id or self.resolver.lookup(kind.name, kind.source_id(op.source))
            if target is None:
                raise ConflictError(
                    f"{kind.name} {op.identity!r} has no destination object to copy data into"
                )

            def progress(done: int, total: int | None) -> None:
                self._emit(
                    EventType.PROGRESS,
                    kind=kind.name,
                    identity=op.identity,
                    operation=op.action,
                    done=done,
                    total=total,
                    unit="bytes",
                )

            kind.copy_data(self.destination, resolved, target, progress)
            return target
        raise TypeError(f"the engine cannot apply {type(op).__name__}")

    def _failed_dependency(self, op: Operation) -> str | None:
        with self._lock:
            for ref in op.depends_on:
                if self._outcomes.get(ref) in ("failed", "conflict"):
                    return f"{ref[0]} {ref[1]!r}"
        return None

    # -- recording -------------------------------------------------------------

    def _record_unapplied(self, op: Skip | Conflict, row: OperationRecord | None) -> str:
        kind, outcome = op.kind, ("skipped" if isinstance(op, Skip) else "conflict")
        if row is not None and row.state == DONE:
            self._map(op, row.destination_id)
            self._emit_finished(op, outcome, "done in an earlier run")
            return outcome
        if isinstance(op, Skip) and row is not None and row.state == PENDING:
            # An earlier attempt did create it after all: that attempt is done.
            return self._done(op, row, op.destination_id, adopted=True, action=row.action)
        reason = op.reason if isinstance(op, Conflict) else None
        self.journal.transition(
            self._run_id,
            self.scope,
            kind.name,
            op.key,
            SKIPPED,
            action=op.action,
            expected=row,
            source_id=op.source_id,
            destination_id=op.destination_id,
            error=reason,
        )
        if isinstance(op, Skip):
            self._map(op, op.destination_id)
        self._emit_finished(op, outcome, reason)
        return outcome

    def _done(
        self,
        op: Operation,
        row: OperationRecord | None,
        destination_id: str | None,
        *,
        adopted: bool = False,
        action: str | None = None,
    ) -> str:
        self.journal.transition(
            self._run_id,
            self.scope,
            op.kind.name,
            op.key,
            DONE,
            action=action or op.action,
            expected=row,
            destination_id=destination_id,
        )
        self._map(op, destination_id)
        message = "adopted the object an earlier attempt created" if adopted else None
        self._emit_finished(op, "done", message, destination_id=destination_id)
        return "done"

    def _fail(
        self, op: Operation, row: OperationRecord | None, error: str, result: RunResult
    ) -> str:
        self.journal.transition(
            self._run_id,
            self.scope,
            op.kind.name,
            op.key,
            FAILED,
            action=op.action,
            expected=row,
            source_id=op.source_id,
            error=error,
        )
        self._note_error(op, error, result)
        self._emit_finished(op, "failed", error)
        return "failed"

    def _note_error(self, op: Operation, error: str, result: RunResult) -> None:
        with self._lock:
            result.errors.append({"kind": op.kind.name, "identity": op.identity, "error": error})

    def _map(self, op: Operation, destination_id: str | None) -> None:
        if isinstance(op, CopyData) or destination_id is None or op.source_id is None:
            return
        if self.journal.mapped_id(self.scope, op.kind.name, op.source_id) != destination_id:
            self.journal.map_id(self.scope, op.kind.name, op.source_id, destination_id)

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
