"""The worker side of the Celery executor: one message, its operations, their leases.

A message (``{"v": 1, "journal": ID, "run": ID, "ops": [row ID, ...]}``) may come
twice (a redelivery after a worker was lost, a re-published orphan): the journal
decides. Per operation row the worker

1. reads the row; anything but ``pending`` in the message's run is done already, or
   belongs to a newer run: nothing to do;
2. takes the row's lease (:meth:`~stackhop.journal.Journal.take_lease`, counting the
   attempt; ``attempts`` fences every earlier holder). A lease another holds that has
   not run out: on a redelivery the worker waits for it to end (its holder finishes,
   or it runs out and is stolen); a first delivery is a duplicate and is dropped;
3. rebuilds the operation from the run's arguments and the row's payload
   (:func:`job_for`, the command's own code), runs it through the engine
   (:meth:`~stackhop.engine.Engine.work`: retries, ``find`` after an unfinished
   attempt, the outcome and its ID mapping journaled), renewing the lease meanwhile.

Everything comes from the worker's environment, never from the message: the journal
(``--journal`` / ``$STACKHOP_JOURNAL``), the clouds (clouds.yaml), the storage map
(``$STACKHOP_STORAGE_MAP``). The worker prints one JSON line per event on stdout.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from stackhop.engine import Engine
from stackhop.errors import ConfigError
from stackhop.events import Event, EventType
from stackhop.executor.names import MESSAGE_VERSION, lease_ttl, process_gone
from stackhop.journal import FAILED, PENDING, Journal, OperationRecord, RunRecord
from stackhop.kinds.base import Connection, Record
from stackhop.plan import Operation
from stackhop.resolve import Resolver
from stackhop.retry import RetryPolicy, classify, error_text

#: The journal a worker opens (``stackhop worker`` sets it from ``--journal``).
JOURNAL_ENV = "STACKHOP_JOURNAL"
#: How often a redelivered message looks whether the lease it waits for ended (s).
LEASE_POLL = 2.0
#: Attempts of one row since it was dispatched past which a take fails it instead of
#: running it again (a poison message: a pass that kills its worker every time). Each
#: take may retry up to the engine's own bound, so this allows about three takes.
MAX_ATTEMPTS_DISPATCHED = 3 * RetryPolicy().max_attempts


class Job(Protocol):
    """What a worker needs of one run to rebuild and run its operations."""

    #: The destination connection the engine works on.
    destination: Connection

    def operation(self, row: OperationRecord) -> tuple[Operation, Record | None]:
        """The operation of ``row`` (its payload and the run's arguments), and the record
        the coordinator resolved for it (None: resolve here)."""


#: Per command: the function making its :class:`Job` from ``(run, journal, events)``.
JOBS: dict[str, str] = {
    "volumes copy": "stackhop.volumes.copy:worker_job",
    "import": "stackhop.executor.jobs:resources_job",
    "migrate": "stackhop.executor.jobs:resources_job",
    "project migrate: import": "stackhop.executor.jobs:resources_job",
    "images copy": "stackhop.images.copy:worker_job",
    "images move-store": "stackhop.images.move_store:worker_job",
}


def say(event: str, **fields: Any) -> None:
    """One JSON line on the worker's stdout."""
    line = json.dumps({"event": event, "pid": os.getpid(), **fields}, default=str)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _LineSink:
    """The worker's events: warnings and retries as JSON lines, the rest dropped (the
    coordinator reads stages and progress from the journal)."""

    def emit(self, event: Event) -> None:
        if event.type in (EventType.WARNING, EventType.RETRY):
            say(str(event.type), **{k: v for k, v in event.as_dict().items() if k != "type"})


class _Process:
    """What one worker process keeps between messages: its journal and jobs per run."""

    def __init__(self) -> None:
        self.pid = 0
        self.journal: Journal | None = None
        self.journal_id = ""
        self.jobs: dict[str, Job] = {}
        self.connections: dict[str, Any] = {}
        #: Pool processes run one task at a time; threads (tests) share this object.
        self.lock = threading.RLock()

    def opened(self) -> Journal:
        with self.lock:
            return self._opened()

    def _opened(self) -> Journal:
        # A pool child forks from the parent: what the parent opened is not shared.
        if self.pid != os.getpid() or self.journal is None:
            location = os.environ.get(JOURNAL_ENV)
            if not location:
                raise ConfigError(f"the worker has no journal: set ${JOURNAL_ENV} or --journal")
            self.pid, self.jobs, self.connections = os.getpid(), {}, {}
            self.journal = Journal(location)
            self.journal_id = self.journal.journal_id()
        return self.journal

    def connection(self, cloud: str) -> Any:
        """A connection to ``cloud`` kept for the process's life: runs after the first
        reuse its session (keystoneauth renews the token when it runs out)."""
        self.opened()
        with self.lock:
            return self._connection(cloud)

    def _connection(self, cloud: str) -> Any:
        if cloud not in self.connections:
            from stackhop.clouds import connect

            self.connections[cloud] = connect(cloud)
        return self.connections[cloud]

    def job(self, run: RunRecord) -> Job:
        journal = self.opened()
        with self.lock:
            return self._job(run, journal)

    def _job(self, run: RunRecord, journal: Journal) -> Job:
        if run.id not in self.jobs:
            target = JOBS.get(run.command)
            if target is None:
                raise ConfigError(f"the worker cannot run operations of {run.command!r}")
            module, _, name = target.partition(":")
            make = getattr(importlib.import_module(module), name)
            self.jobs = {run.id: make(run, journal, _LineSink())}  # one run at a time
        return self.jobs[run.id]


_process = _Process()


def connection(cloud: str) -> Any:
    """This worker process's connection to ``cloud`` (jobs use it)."""
    return _process.connection(cloud)


def run_message(message: Mapping[str, Any], *, redelivered: bool, queue: str) -> None:
    """Run the operations of one message (see the module docstring)."""
    if message.get("v") != MESSAGE_VERSION:
        say("refused", reason=f"message version {message.get('v')!r}", queue=queue)
        return
    journal = _process.opened()
    if message.get("journal") != _process.journal_id:
        say("refused", reason="the message names another journal", queue=queue)
        return
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    run_id = str(message["run"])
    ids = [int(i) for i in message.get("ops", ())]
    taken: list[tuple[OperationRecord, OperationRecord]] = []
    if len(ids) > 1 and not redelivered:  # a bulk message on its first delivery
        got = {row.id: row for row in journal.take_leases(run_id, ids, owner, lease_ttl())}
        for row_id in ids:
            row = got.get(row_id)
            if row is None:
                say("skipped", row=row_id, queue=queue, reason="done, or held by another")
            elif not _poisoned(journal, row, queue):
                say("started", row=row_id, queue=queue, attempt=row.attempts, redelivered=False)
                # As it was before the take (an attempt less): what ``unknown`` is judged on.
                taken.append((row, dataclasses.replace(row, attempts=row.attempts - 1)))
    else:
        for row_id in ids:
            one = _take(journal, run_id, row_id, owner, redelivered, queue)
            if one is not None:
                taken.append(one)
    if not taken:
        return
    stop = threading.Event()
    heartbeat = _Heartbeat(journal, [row for row, _ in taken], owner, lease_ttl(), stop)
    heartbeat.start()
    try:
        job = _process.job(journal.run(run_id))
        engine = Engine(
            journal,
            job.destination,
            Resolver(taken[0][0].scope, journal=journal),
            scope=taken[0][0].scope,
            workers=1,
            events=_LineSink(),
            stop=stop,
        )
        engine.fenced = True
        work = []
        for row, before in taken:
            op, resolved = job.operation(row)
            work.append((op, row, before, resolved))
        attempts = engine.work_group(work)
    except Exception as exc:
        _worker_failed(journal, taken, owner, exc, queue)
        if classify(exc).transient:
            raise  # logged by Celery; the coordinator sends the rows again
        return
    finally:
        heartbeat.stop()
    for (row, _), attempt in zip(taken, attempts, strict=True):
        outcome = "failed" if attempt.error is not None else "done"
        say("finished", row=row.id, queue=queue, outcome=outcome, error=attempt.error)


def _worker_failed(
    journal: Journal,
    taken: list[tuple[OperationRecord, OperationRecord]],
    owner: str,
    exc: Exception,
    queue: str,
) -> None:
    """The worker itself failed (its configuration, the source or journal away), not an
    operation (the engine journals those). A transient failure gives the leases up, so
    another take may come at once; any other fails the rows with its one line, as a local
    run would (a worker missing a cloud or the storage map must not loop)."""
    error = error_text(exc)
    say("error", rows=[row.id for row, _ in taken], queue=queue, error=error)
    for row, _ in taken:
        try:
            if classify(exc).transient:
                journal.release_lease(row, owner)
            else:
                journal.transition(row.run_id, row.scope, row.kind, row.identity, FAILED,
                                   action=row.action, expected=row,
                                   error=f"on worker {owner.rsplit(':', 1)[0]}: {error}",
                                   )  # fmt: skip
        except Exception as problem:  # the lease runs out instead; said in the log
            say("warning", row=row.id, message=f"could not record the failure: {problem}")


def _take(
    journal: Journal, run_id: str, row_id: int, owner: str, redelivered: bool, queue: str
) -> tuple[OperationRecord, OperationRecord] | None:
    """The lease of row ``row_id``: the row as taken and as it was before, or None when
    there is nothing to do (done already, another run's, held by a live worker)."""
    ttl = lease_ttl()
    deadline = time.monotonic() + ttl + 10
    while True:
        row = journal.operations_by_id([row_id]).get(row_id)
        if row is None or row.run_id != run_id or row.state != PENDING:
            say("skipped", row=row_id, queue=queue, state=row.state if row else None)
            return None
        lease = journal.lease(row_id) if redelivered else None
        dead = lease.owner if lease is not None and process_gone(lease.owner) else None
        taken = journal.take_lease(row, owner, ttl, steal_from=dead)
        if taken is not None:
            break
        if not redelivered or time.monotonic() > deadline:
            say("skipped", row=row_id, queue=queue, reason="another worker holds its lease")
            return None
        time.sleep(LEASE_POLL)
    if _poisoned(journal, taken, queue):
        return None
    say("started", row=row_id, queue=queue, attempt=taken.attempts, redelivered=redelivered)
    return taken, row


def _poisoned(journal: Journal, taken: OperationRecord, queue: str) -> bool:
    """Whether the row just taken had too many attempts since its dispatch: then it is
    failed here instead of run again (a pass that kills its worker every time)."""
    row_id = taken.id
    since = taken.attempts - int((taken.payload or {}).get("_attempts") or 0)
    if since > MAX_ATTEMPTS_DISPATCHED:
        error = (f"{since - 1} attempts since it was sent to the workers, none finished "
                 "(a worker lost each time?); see the workers' logs, then re-run the "
                 "command")  # fmt: skip
        journal.transition(taken.run_id, taken.scope, taken.kind, taken.identity, FAILED,
                           action=taken.action, expected=taken, error=error)  # fmt: skip
        say("finished", row=row_id, queue=queue, outcome="failed", error=error)
        return True
    return False


class _Heartbeat(threading.Thread):
    """Renews the leases of ``rows`` every third of their term; sets ``lost`` when one
    cannot be (another worker took it over: this attempt must stop)."""

    def __init__(
        self,
        journal: Journal,
        rows: list[OperationRecord],
        owner: str,
        ttl: float,
        lost: threading.Event,
    ) -> None:
        super().__init__(name="stackhop-lease", daemon=True)
        self.journal, self.rows, self.owner, self.ttl, self.lost = journal, rows, owner, ttl, lost
        self._done = threading.Event()

    def run(self) -> None:
        renewed = time.monotonic()
        while not self._done.wait(self.ttl / 3):
            for row in self.rows:
                try:
                    if self.journal.renew_lease(row, self.owner, self.ttl):
                        renewed = time.monotonic()
                        continue
                    now = self.journal.operations_by_id([row.id]).get(row.id)
                    if now is not None and now.state == PENDING:
                        say("warning", row=row.id, message="lease lost: another worker took over")
                        self.lost.set()  # the others' leases are still renewed
                except Exception as exc:  # the journal is away: try again, up to the term
                    say("warning", row=row.id, message=f"lease not renewed: {exc}")
                    if time.monotonic() - renewed > self.ttl:
                        self.lost.set()

    def stop(self) -> None:
        self._done.set()
        self.join()
