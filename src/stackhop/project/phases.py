"""Running a project migration's phases in order, each journaled, a re-run resuming.

A project migration (``stackhop project migrate``) is five phases (see
:data:`PHASES`). Each is one task of the engine (:class:`PhaseTask`, kind
``project.phase``, scope ``project <src>-><dst>``, identity
``<source project ID>/<phase>``), journaled as every job's steps are:
``pending`` while it runs, ``done`` when it finished, with the phase's
*facts* (what later phases and the final report need, JSON) kept in the
row's ``before`` column (its last stage report, ``finished``). A re-run
reads the rows: a ``done`` phase is not run again (a ``skip``), its facts
are taken from the journal, and work resumes at the first phase not
finished. Inside a phase, every step is itself idempotent and journaled by
the library it calls (resources, images, volumes), so a phase cut short by
a kill is simply run again. A phase is not retried within a run (what it
calls retries its own API calls); Ctrl-C stops the runs a phase started
(they share the engine's stop event) and the phase ends ``failed``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stackhop.engine import Engine
from stackhop.errors import StackhopError
from stackhop.events import Event, EventSink, EventType
from stackhop.journal import DONE, Journal, OperationRecord
from stackhop.plan import Operation, Skip
from stackhop.resolve import Resolver
from stackhop.retry import RetryPolicy
from stackhop.task import Task, TaskContext, TaskKind

PHASES = ("gather", "export", "import", "servers", "usage", "cleanup")
"""The phases of a project migration, in order."""

PHASE_KIND = "project.phase"

Facts = dict[str, Any]
PhaseFunction = Callable[[Mapping[str, Facts]], "PhaseResult"]


@dataclass
class PhaseResult:
    """What one phase did: a one-line summary for people and facts for later phases."""

    summary: str
    facts: Facts = field(default_factory=dict)


@dataclass
class PhaseOutcome:
    """A phase as this run saw it."""

    name: str
    #: ``done`` (ran now), ``done earlier`` (a previous run finished it), ``failed``.
    status: str
    summary: str
    elapsed: float = 0.0
    facts: Facts = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "status": self.status,
            "summary": self.summary,
            "elapsed": round(self.elapsed, 3),
        }


class PhaseKind(TaskKind):
    """The journal kind of a phase (a task: the engine calls PhaseTask.call)."""

    name = PHASE_KIND
    service = "project"


PHASE = PhaseKind()

#: A phase is run once per run: what it calls retries its own API calls, and a phase
#: repeated by the engine would repeat minutes of work to no end (the operator re-runs).
ONCE = RetryPolicy(max_attempts=1)


@dataclass
class PhaseRunner:
    """Runs the phases of one project migration against one journal, through the engine.

    Each phase is a :class:`PhaseTask` of the run the caller started (``run_id``): the
    engine journals it (``pending`` before, ``done``/``failed`` after) as it does every
    job's steps, so ``stackhop status`` shows a phase in progress like any operation. A
    phase is handed to the engine only once the one before it is ``done``.
    """

    journal: Journal
    run_id: str
    scope: str
    project_id: str
    events: EventSink
    #: The engine's stop event: set by Ctrl-C; the runs a phase starts share it.
    stop: threading.Event = field(default_factory=threading.Event)
    #: The phases in order, their journal kind and the run's command: a project
    #: migration's by default; a server migration's steps are phases of their own kind.
    phases: tuple[str, ...] = PHASES
    kind: TaskKind = field(default_factory=lambda: PHASE)
    command: str = "project migrate"
    #: The running phase's task context (its journal row: ``stage`` reports, and
    #: ``previous``, what an interrupted earlier attempt reported): phases run one at a time.
    ctx: TaskContext | None = field(default=None, init=False, repr=False)

    def identity(self, phase: str) -> str:
        return f"{self.project_id}/{phase}"

    def record(self, phase: str) -> OperationRecord | None:
        """The journal row of ``phase`` for this project, if any run touched it."""
        return self.journal.operation(self.scope, self.kind.name, self.identity(phase))

    def finished(self) -> dict[str, Facts]:
        """Facts of every phase a run has finished, by phase name."""
        done: dict[str, Facts] = {}
        for phase in self.phases:
            row = self.record(phase)
            if row is not None and row.state == DONE:
                done[phase] = dict(row.before or {}).get("facts", {})
        return done

    def run(
        self, steps: Mapping[str, PhaseFunction], outcomes: list[PhaseOutcome]
    ) -> list[PhaseOutcome]:
        """Run the phases not yet done, in order, appending to ``outcomes``.

        Stops at the first phase that fails and re-raises its error (its own class, so
        the exit code is the phase's); ``outcomes`` then holds what happened so far (the
        caller reports it).
        """
        facts = self.finished()
        engine = Engine(
            self.journal,
            None,  # a phase reaches the clouds through the runs it starts
            Resolver(self.scope, journal=self.journal),
            scope=self.scope,
            workers=1,
            retry=ONCE,
            events=self.events,
            stop=self.stop,
        )

        def batches() -> Iterator[list[Operation]]:
            for phase in self.phases:
                row = self.record(phase)
                if phase in facts and row is not None:
                    summary = str(dict(row.before or {}).get("summary", ""))
                    earlier = PhaseOutcome(phase, "done earlier", summary, facts=facts[phase])
                    outcomes.append(earlier)
                    self._announce(phase, "done earlier", summary)
                    yield [Skip(kind=self.kind, identity=self.identity(phase),
                                source={"id": self.project_id}, resolved={})]  # fmt: skip
                    continue
                task = PhaseTask(kind=self.kind, identity=self.identity(phase), of=self.project_id,
                                 phase=phase, step=steps[phase], runner=self, facts=facts,
                                 outcomes=outcomes)  # fmt: skip
                yield [task]
                if engine.outcome(task.ref, wait=True) != "done":
                    return

        result = engine.run_planned(batches(), total=len(self.phases), command=self.command,
                                    run_id=self.run_id)  # fmt: skip
        for exc in result.exceptions.values():
            raise exc
        result.raise_for_failures()
        return outcomes

    def _announce(self, phase: str, status: str, summary: str) -> None:
        self.events.emit(
            Event(
                EventType.INFO,
                kind=self.kind.name,
                identity=phase,
                outcome=status,
                message=f"phase {phase}: {status}: {summary}",
                run_id=self.run_id,
            )
        )


@dataclass(frozen=True, kw_only=True)
class PhaseTask(Task):
    """One phase of one project: its step is the phase's function, its facts its row's."""

    action: ClassVar[str] = "run"

    phase: str
    step: PhaseFunction = field(compare=False, repr=False)
    runner: PhaseRunner = field(compare=False, repr=False)
    #: The facts of the phases done so far (this one's are added when it is done).
    facts: dict[str, Facts] = field(compare=False, repr=False)
    outcomes: list[PhaseOutcome] = field(compare=False, repr=False)

    def call(self, ctx: TaskContext) -> str | None:
        phase, runner = self.phase, self.runner
        runner.events.emit(
            Event(
                EventType.INFO,
                kind=runner.kind.name,
                identity=phase,
                message=f"phase {phase}: started",
                run_id=runner.run_id,
            )
        )
        started = time.monotonic()
        runner.ctx = ctx
        try:
            result = self.step(self.facts)
        except BaseException as exc:
            message = exc.message if isinstance(exc, StackhopError) else repr(exc)
            elapsed = time.monotonic() - started
            self.outcomes.append(PhaseOutcome(phase, "failed", message, elapsed))
            runner._announce(phase, "failed", message)
            raise
        # The facts live in the row's resume state: a later run reads them from there.
        ctx.stage("finished", {"summary": result.summary, "facts": result.facts})
        self.facts[phase] = result.facts
        elapsed = time.monotonic() - started
        self.outcomes.append(PhaseOutcome(phase, "done", result.summary, elapsed, result.facts))
        runner._announce(phase, "done", result.summary)
        return None
