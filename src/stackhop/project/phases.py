"""Running a project migration's phases in order, each journaled, a re-run resuming.

A project migration (``stackhop project migrate``) is five phases (see
:data:`PHASES`). Each is one journal operation, kind ``project.phase``,
scope ``project <src>-><dst>``, identity ``<source project ID>/<phase>``:
``pending`` while it runs, ``done`` when it finished, with the phase's
*facts* (what later phases and the final report need, JSON) kept in the
row's ``before`` column. A re-run reads the rows: a ``done`` phase is not run
again, its facts are taken from the journal, and work resumes at the first
phase not finished. Inside a phase, every step is itself idempotent and
journaled by the library it calls (resources, images, volumes), so a phase
cut short by a kill is simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stackhop.errors import StackhopError
from stackhop.events import Event, EventSink, EventType
from stackhop.journal import DONE, FAILED, PENDING, Journal, OperationRecord

PHASES = ("gather", "export", "import", "usage", "cleanup")
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


@dataclass
class PhaseRunner:
    """Runs the phases of one project migration against one journal."""

    journal: Journal
    run_id: str
    scope: str
    project_id: str
    events: EventSink

    def identity(self, phase: str) -> str:
        return f"{self.project_id}/{phase}"

    def record(self, phase: str) -> OperationRecord | None:
        """The journal row of ``phase`` for this project, if any run touched it."""
        return self.journal.operation(self.scope, PHASE_KIND, self.identity(phase))

    def finished(self) -> dict[str, Facts]:
        """Facts of every phase a run has finished, by phase name."""
        done: dict[str, Facts] = {}
        for phase in PHASES:
            row = self.record(phase)
            if row is not None and row.state == DONE:
                done[phase] = dict(row.before or {}).get("facts", {})
        return done

    def run(
        self, steps: Mapping[str, PhaseFunction], outcomes: list[PhaseOutcome]
    ) -> list[PhaseOutcome]:
        """Run the phases not yet done, in order, appending to ``outcomes``.

        Stops at the first phase that fails and re-raises its error; ``outcomes``
        then holds what happened so far (the caller reports it).
        """
        facts = self.finished()
        for phase in PHASES:
            row = self.record(phase)
            if phase in facts and row is not None:
                summary = str(dict(row.before or {}).get("summary", ""))
                outcomes.append(PhaseOutcome(phase, "done earlier", summary, facts=facts[phase]))
                self._announce(phase, "done earlier", summary)
                continue
            row = self.journal.transition(
                self.run_id,
                self.scope,
                PHASE_KIND,
                self.identity(phase),
                PENDING,
                action="run",
                expected=row,
                source_id=self.project_id,
                attempt=True,
            )
            self.events.emit(
                Event(
                    EventType.INFO,
                    kind=PHASE_KIND,
                    identity=phase,
                    message=f"phase {phase}: started",
                    run_id=self.run_id,
                )
            )
            started = time.monotonic()
            try:
                result = steps[phase](facts)
            except BaseException as exc:
                message = exc.message if isinstance(exc, StackhopError) else repr(exc)
                self.journal.transition(
                    self.run_id,
                    self.scope,
                    PHASE_KIND,
                    self.identity(phase),
                    FAILED,
                    action="run",
                    expected=row,
                    error=message[:2000],
                )
                outcomes.append(PhaseOutcome(phase, "failed", message, time.monotonic() - started))
                self._announce(phase, "failed", message)
                raise
            elapsed = time.monotonic() - started
            self.journal.transition(
                self.run_id,
                self.scope,
                PHASE_KIND,
                self.identity(phase),
                DONE,
                action="run",
                expected=row,
                before={"summary": result.summary, "facts": result.facts},
            )
            facts[phase] = result.facts
            outcomes.append(PhaseOutcome(phase, "done", result.summary, elapsed, result.facts))
            self._announce(phase, "done", result.summary)
        return outcomes

    def _announce(self, phase: str, status: str, summary: str) -> None:
        self.events.emit(
            Event(
                EventType.INFO,
                kind=PHASE_KIND,
                identity=phase,
                outcome=status,
                message=f"phase {phase}: {status}: {summary}",
                run_id=self.run_id,
            )
        )
