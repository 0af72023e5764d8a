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
from stackhop.retry import RetryPolicy

#: The journal a worker opens (``stackhop worker`` sets it from ``--journal``).
JOURNAL_ENV = "STACKHOP_JOURNAL"
#: How often a redelivered message looks whether the lease it waits for ended (s).
LEASE_POLL = 2.0
#: Takes of one row past which it fails instead of running again (a poison message:
#: a pass that kills its worker every time). Above the engine's own retries.
MAX_TAKES = RetryPolicy().max_attempts + 3


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

    def opened(self) -> Journal:
        # A pool child forks from the parent: what the parent opened is not shared.
        if self.pid != os.getpid() or self.journal is None:
            location = os.environ.get(JOURNAL_ENV)
            if not location:
                raise ConfigError(f"the worker has no journal: set ${JOURNAL_ENV} or --journal")
            self.pid, self.jobs = os.getpid(), {}
            self.journal = Journal(location)
            self.journal_id = self.journal.journal_id()
        return self.journal

    def job(self, run: RunRecord) -> Job:
        if run.id not in self.jobs:
            target = JOBS.get(run.command)
            if target is None:
                raise ConfigError(f"the worker cannot run operations of {run.command!r}")
            module, _, name = target.partition(":")
            make = getattr(importlib.import_module(module), name)
            self.jobs = {run.id: make(run, self.opened(), _LineSink())}  # one run at a time
        return self.jobs[run.id]


_process = _Process()


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
    for row_id in message.get("ops", ()):
        _run_row(journal, str(message["run"]), int(row_id), owner, redelivered, queue)


def _run_row(
    journal: Journal, run_id: str, row_id: int, owner: str, redelivered: bool, queue: str
) -> None:
    ttl = lease_ttl()
    deadline = time.monotonic() + ttl + 10
    while True:
        row = journal.operations_by_id([row_id]).get(row_id)
        if row is None or row.run_id != run_id or row.state != PENDING:
            say("skipped", row=row_id, queue=queue, state=row.state if row else None)
            return
        lease = journal.lease(row_id) if redelivered else None
        dead = lease.owner if lease is not None and process_gone(lease.owner) else None
        taken = journal.take_lease(row, owner, ttl, steal_from=dead)
        if taken is not None:
            break
        if not redelivered or time.monotonic() > deadline:
            say("skipped", row=row_id, queue=queue, reason="another worker holds its lease")
            return
        time.sleep(LEASE_POLL)
    if taken.attempts > MAX_TAKES:
        error = (f"its worker was lost {taken.attempts - 1} times; see the workers' logs, "
                 "then re-run the command")  # fmt: skip
        journal.transition(taken.run_id, taken.scope, taken.kind, taken.identity, FAILED,
                           action=taken.action, expected=taken, error=error)  # fmt: skip
        say("finished", row=row_id, queue=queue, outcome="failed", error=error)
        return
    say("started", row=row_id, queue=queue, attempt=taken.attempts, redelivered=redelivered)
    job = _process.job(journal.run(run_id))
    stop = threading.Event()
    engine = Engine(
        journal,
        job.destination,
        Resolver(taken.scope, journal=journal),
        scope=taken.scope,
        workers=1,
        events=_LineSink(),
        stop=stop,
    )
    heartbeat = _Heartbeat(journal, taken, owner, ttl, stop)
    heartbeat.start()
    try:
        op, resolved = job.operation(taken)
        attempt = engine.work(op, taken, row, resolved)
    except Exception as exc:
        # Not the operation's failure (the engine journals those) but the worker's: the
        # lease is given up, so another take (a re-run) may retry at once.
        journal.release_lease(taken, owner)
        say("error", row=row_id, queue=queue, error=str(exc))
        raise
    finally:
        heartbeat.stop()
    outcome = "failed" if attempt.error is not None else "done"
    say("finished", row=row_id, queue=queue, outcome=outcome, error=attempt.error)


class _Heartbeat(threading.Thread):
    """Renews a lease every third of its term; sets ``lost`` when it cannot."""

    def __init__(
        self, journal: Journal, row: OperationRecord, owner: str, ttl: float, lost: threading.Event
    ) -> None:
        super().__init__(name="stackhop-lease", daemon=True)
        self.journal, self.row, self.owner, self.ttl, self.lost = journal, row, owner, ttl, lost
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.ttl / 3):
            try:
                held = self.journal.renew_lease(self.row, self.owner, self.ttl)
            except Exception as exc:  # the journal is unreachable: keep trying until the term
                say("warning", row=self.row.id, message=f"lease not renewed: {exc}")
                continue
            if not held:
                say("warning", row=self.row.id, message="lease lost: another worker took over")
                self.lost.set()
                return

    def stop(self) -> None:
        self._done.set()
        self.join()
