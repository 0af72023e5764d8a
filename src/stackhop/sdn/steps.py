"""Journaled steps and site hooks: what makes an SDN command resumable.

A command is a sequence of named steps inside a *cycle*, a journal scope
``sdn.midonet.<command>:<key>#<n>``; each invocation is one run of the engine
and each step one of its tasks (:class:`Step`). A step is ``pending`` in the
journal before it acts and ``done`` (with a short result) after; a re-run of the same
command finds the unfinished cycle and skips its ``done`` steps. The last
step of every cycle is ``complete``; once it is done, the next invocation
starts cycle ``n + 1`` (each step is idempotent, so a fresh cycle over a
finished job changes nothing).

Hooks (``--pre-hook`` / ``--post-hook``) are the site's commands, e.g.
installing packages or restarting the cluster: run with ``sh -c`` before and
after the command's steps, with ``STACKHOP_SDN_STEP`` and ``STACKHOP_SDN_PHASE``
in the environment.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stackhop.engine import Engine
from stackhop.errors import StackhopError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import DONE, PENDING, Journal
from stackhop.plan import Operation, Skip
from stackhop.resolve import Resolver
from stackhop.retry import RetryPolicy
from stackhop.sdn.errors import HookFailedError
from stackhop.task import Task, TaskContext, TaskKind

STEP_KIND = "sdn.midonet.step"
COMPLETE = "complete"


def _cycle_scope(journal: Journal, command: str, key: str) -> str:
    n = 0
    while True:
        scope = f"sdn.midonet.{command}:{key}#{n}"
        op = journal.operation(scope, STEP_KIND, COMPLETE)
        if op is None or op.state != DONE:
            return scope
        n += 1


def close_open_cycle(journal: Journal, command: str, key: str, run_id: str, outcome: str) -> bool:
    """Close an unfinished cycle of ``command`` (its done steps no longer hold); True if one was.

    A rollback removes what an interrupted ``prepare`` queued: that prepare's
    resume must not skip the groups it had queued, so its cycle is closed.
    """
    scope = _cycle_scope(journal, command, key)
    if not journal.operations(scope=scope, kind=STEP_KIND):
        return False
    op = journal.operation(scope, STEP_KIND, COMPLETE)
    for state in (PENDING, DONE):
        op = journal.transition(run_id, scope, STEP_KIND, COMPLETE, state, action=command,
                                expected=op, destination_id=outcome if state == DONE else None)
    return True


class StepKind(TaskKind):
    """The journal kind of an SDN command's step (a task: the engine calls Step.call)."""

    name = STEP_KIND
    service = "sdn"


STEP = StepKind()

#: A step runs once per invocation: a failed one is the operator's to look at and re-run
#: (every step is idempotent), never repeated behind their back.
ONCE = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, kw_only=True)
class Step(Task):
    """One step of an SDN command: its call is the step's action, whose one-line result
    becomes the row's ``destination_id`` (what a resumed cycle reads back)."""

    action: ClassVar[str] = "run"

    work: Callable[[], str] = field(compare=False, repr=False)
    #: What the action raised, for the caller's thread (the engine runs it in its own).
    raised: list[BaseException] = field(default_factory=list, compare=False, repr=False)

    def call(self, ctx: TaskContext) -> str | None:
        try:
            return self.work()
        except BaseException as exc:
            self.raised.append(exc)
            raise


_END = object()


@dataclass
class StepRunner:
    """Runs the steps of one command invocation: one run of the engine, a task per step.

    The command's code calls :meth:`step` in order, as before; each call hands one
    :class:`Step` to the engine (journaled ``pending``, then ``done`` with its result or
    ``failed``, events as every job's) and waits for it; a step this cycle already did
    is a ``skip`` whose result comes from the journal. :meth:`finish` ends the run.
    """

    journal: Journal
    command: str
    key: str
    args: Mapping[str, Any] = field(default_factory=dict)
    events: EventSink = field(default_factory=NullSink)

    def __post_init__(self) -> None:
        self.scope = _cycle_scope(self.journal, self.command, self.key)
        self.run_id = self.journal.start_run(
            f"sdn midonet {self.command}", args={"key": self.key, **self.args}
        ).id
        self.results: dict[str, str] = {}
        self._emit(EventType.INFO, message=f"{self.command}: journal scope {self.scope}")
        #: Set when the engine's run has ended: a step waiting for an outcome stops waiting.
        self._ended = threading.Event()
        self._engine = Engine(
            self.journal,
            None,  # a step reaches ZooKeeper, SQL or the site's commands itself
            Resolver(self.scope, journal=self.journal),
            scope=self.scope,
            workers=1,
            retry=ONCE,
            events=self.events,
            stop=self._ended,
        )
        self._queue: queue.Queue[Any] = queue.Queue()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, name="stackhop-sdn", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        def batches() -> Iterator[list[Operation]]:
            while (op := self._queue.get()) is not _END:
                yield [op]

        try:
            self._engine.run_planned(
                batches(), total=None, command=f"sdn midonet {self.command}", run_id=self.run_id
            )
        except BaseException as exc:  # a journal error: the caller's next step raises it
            self._failure.append(exc)
        finally:
            self._ended.set()

    def _emit(self, type_: EventType, **fields: Any) -> None:
        self.events.emit(Event(type_, kind=STEP_KIND, run_id=self.run_id, **fields))

    def previous(self, name: str) -> str | None:
        """The recorded result of a step done in this cycle (None: not done)."""
        op = self.journal.operation(self.scope, STEP_KIND, name)
        return op.destination_id if op is not None and op.state == DONE else None

    def step(self, name: str, action: Callable[[], str]) -> str:
        """Run ``action`` unless this cycle already did; journal it; return its result."""
        op = self.journal.operation(self.scope, STEP_KIND, name)
        if op is not None and op.state == DONE:
            task: Operation = Skip(kind=STEP, identity=name, source={}, resolved={})
        else:
            task = Step(kind=STEP, identity=name, work=action)
        self._queue.put(task)
        outcome = self._engine.outcome(task.ref, wait=True)
        if self._failure:
            raise self._failure[0]
        if isinstance(task, Step) and outcome != "done":
            if task.raised:
                raise task.raised[0]
            raise StackhopError(f"step {name!r} of {self.command} did not run ({outcome})")
        done = self.journal.operation(self.scope, STEP_KIND, name)
        result = (done.destination_id if done is not None else None) or ""
        self.results[name] = result
        return result

    def complete(self, outcome: str = "ok") -> None:
        """Close the cycle: the next invocation starts afresh."""
        self.step(COMPLETE, lambda: outcome)

    def finish(self, outcome: str) -> None:
        """End the engine's run (what was handed over has finished by now) as ``outcome``."""
        self._queue.put(_END)
        self._thread.join()
        self.journal.finish_run(self.run_id, outcome)


def run_hook(
    command: str | None, *, which: str, step: str, changed: bool, events: EventSink | None = None
) -> None:
    """Run one site hook with ``sh -c``; :class:`HookFailedError` on a non-zero exit.

    Its output becomes an info event (stdout stays the command's data).
    """
    if not command:
        return
    env = {**os.environ, "STACKHOP_SDN_STEP": step, "STACKHOP_SDN_PHASE": which}
    proc = subprocess.run(
        ["sh", "-c", command], env=env, check=False, capture_output=True, text=True
    )
    code = proc.returncode
    output = (proc.stdout + proc.stderr).strip()
    if output and events is not None:
        events.emit(Event(EventType.INFO, kind=STEP_KIND, identity=f"{which}-hook",
                          message=output[-2000:]))
    if code != 0:
        state = (
            " (the step's changes are in place; re-run to repeat the hook)"
            if changed
            else "; nothing was changed"
        )
        raise HookFailedError(which=f"--{which}-hook", command=command, code=code,
                              step=step, state=state)
