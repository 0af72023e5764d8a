"""``project migrate``'s phases as engine tasks: order, facts, one row per phase reached,
the failing phase's own error, and a re-run that resumes at the phase that failed.

The phase functions here are plain functions (the phases' cloud work is tested end to
end by tests/functional/test_project_migrate.py); the journal is a real SQLite one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from stackhop.errors import ConflictError
from stackhop.events import CollectingSink
from stackhop.journal import DONE, FAILED, Journal
from stackhop.project.phases import PHASE_KIND, PHASES, PhaseOutcome, PhaseResult, PhaseRunner

SCOPE = "project src->dst"


class Phases:
    """Phase functions that record their calls and what facts they were given."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.calls: list[str] = []
        self.seen: dict[str, dict[str, Any]] = {}

    def steps(self) -> dict[str, Any]:
        def step(phase: str) -> Any:
            def run(facts: Mapping[str, Any]) -> PhaseResult:
                self.calls.append(phase)
                self.seen[phase] = {k: dict(v) for k, v in facts.items()}
                if phase == self.fail:
                    raise ConflictError(f"{phase} found a conflict")
                return PhaseResult(f"{phase} ok", {"n": len(self.calls), "phase": phase})

            return run

        return {phase: step(phase) for phase in PHASES}


def _run(journal: Journal, phases: Phases) -> tuple[list[PhaseOutcome], str]:
    run = journal.start_run("project migrate", source_cloud="src", destination_cloud="dst")
    runner = PhaseRunner(journal, run.id, SCOPE, "p1", CollectingSink())
    outcomes: list[PhaseOutcome] = []
    runner.run(phases.steps(), outcomes)
    return outcomes, run.id


def _rows(journal: Journal) -> dict[str, Any]:
    return {op.identity.split("/")[-1]: op for op in journal.operations(kind=PHASE_KIND)}


def test_phases_run_in_order_each_given_the_facts_before_it(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        phases = Phases()
        outcomes, run_id = _run(journal, phases)
        assert phases.calls == list(PHASES)
        assert phases.seen["cleanup"] == {
            p: {"n": i + 1, "phase": p} for i, p in enumerate(PHASES[:-1])
        }
        assert [(o.name, o.status) for o in outcomes] == [(p, "done") for p in PHASES]
        rows = _rows(journal)
        assert {p: r.state for p, r in rows.items()} == dict.fromkeys(PHASES, DONE)
        assert rows["usage"].before["facts"] == {"n": 5, "phase": "usage"}
        assert {r.run_id for r in rows.values()} == {run_id}  # the caller's run


def test_a_failing_phase_raises_its_own_error_and_a_rerun_resumes_there(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        failing = Phases(fail="import")
        with pytest.raises(ConflictError, match="import found a conflict"):
            _run(journal, failing)
        assert failing.calls == ["gather", "export", "import"]
        rows = _rows(journal)
        # Only the phases reached have rows: nothing is journaled as "not attempted".
        assert {p: r.state for p, r in rows.items()} == {
            "gather": DONE, "export": DONE, "import": FAILED}

        again = Phases()
        outcomes, _ = _run(journal, again)
        assert again.calls == ["import", "servers", "usage", "cleanup"]
        # The phases done earlier were not run; their facts came from the journal.
        assert again.seen["import"] == {"gather": {"n": 1, "phase": "gather"},
                                        "export": {"n": 2, "phase": "export"}}
        assert [o.status for o in outcomes] == ["done earlier"] * 2 + ["done"] * 4
        assert {r.state for r in _rows(journal).values()} == {DONE}
