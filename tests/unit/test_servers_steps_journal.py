"""The server steps as journaled phases: a step's partial facts survive a failure (what a
rollback and a re-run read), and ``status`` names a source stopped with its cutover
unfinished until the run that verifies it, and not after a rollback.

The step functions here are plain functions (the steps' cloud work is tested end to end
by tests/functional/test_servers_migrate.py); the journal is a real SQLite one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from stackhop.errors import ConflictError
from stackhop.events import CollectingSink
from stackhop.journal import FAILED, ROLLED_BACK, Journal
from stackhop.project.phases import PhaseOutcome, PhaseResult, PhaseRunner
from stackhop.servers.migrate import COMMAND, STEP, STEP_KIND, STEPS, scope_of
from stackhop.servers.rollback import _mark, unfinished_cutovers

SCOPE = scope_of("src", "dst")
SERVER = "5e1f0000-0000-4000-8000-000000000001"


def _steps(runner: PhaseRunner, fail_at: str | None) -> dict[str, Callable[..., PhaseResult]]:
    def step(name: str) -> Callable[[Mapping[str, Any]], PhaseResult]:
        def run(facts: Mapping[str, Any]) -> PhaseResult:
            if name == "stop":
                assert runner.ctx is not None
                runner.ctx.stage("partial", {"facts": {"was": "ACTIVE", "cutover": "stop"}})
                result = {"was": "ACTIVE", "stopped": True, "cutover": "stop"}
                return PhaseResult("stopped", result)
            if name == "ports" and name == fail_at:
                assert runner.ctx is not None
                runner.ctx.stage("partial", {"facts": {"created": ["port-1"]}})
                raise ConflictError("Neutron refused the second port")
            if name == fail_at:
                raise ConflictError(f"{name} failed")
            return PhaseResult(f"{name} ok", {})

        return run

    return {name: step(name) for name in STEPS}


def _run(journal: Journal, fail_at: str | None = None) -> tuple[str, list[PhaseOutcome]]:
    run = journal.start_run(COMMAND, source_cloud="src", destination_cloud="dst")
    runner = PhaseRunner(journal, run.id, SCOPE, SERVER, CollectingSink(), phases=STEPS,
                         kind=STEP, command=COMMAND)
    outcomes: list[PhaseOutcome] = []
    try:
        runner.run(_steps(runner, fail_at), outcomes)
    except ConflictError:
        journal.finish_run(run.id, "failed")
    else:
        journal.finish_run(run.id, "succeeded")
    return run.id, outcomes


def test_a_failed_step_keeps_what_it_made_and_status_warns_until_verified(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        first, outcomes = _run(journal, fail_at="ports")
        assert [(o.name, o.status) for o in outcomes][-1] == ("ports", "failed")
        ports = journal.operation(SCOPE, STEP_KIND, f"{SERVER}/ports")
        assert ports is not None and ports.state == FAILED
        assert (ports.before or {}).get("facts") == {"created": ["port-1"]}
        (warning,) = unfinished_cutovers(journal)
        assert warning.startswith(f"server {SERVER}: source stopped, cutover unfinished")
        assert unfinished_cutovers(journal, first) == [warning]

        second, outcomes = _run(journal)
        statuses = {o.name: o.status for o in outcomes}
        assert statuses["precopy"] == statuses["stop"] == "done earlier"
        assert statuses["verify"] == "done"
        assert unfinished_cutovers(journal) == []
        assert unfinished_cutovers(journal, first) == []  # a later run verified it


def test_a_rolled_back_stop_is_no_longer_an_unfinished_cutover(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        first, _ = _run(journal, fail_at="boot")
        assert unfinished_cutovers(journal)
        undo = journal.start_run("rollback", destination_cloud="dst")
        for row in journal.operations(run_id=first, kind=STEP_KIND):
            _mark(journal, undo.id, row)
        stop = journal.operation(SCOPE, STEP_KIND, f"{SERVER}/stop")
        assert stop is not None and stop.state == ROLLED_BACK
        assert unfinished_cutovers(journal) == []


def test_a_test_copy_never_warns(tmp_path: Path) -> None:
    """``--cutover none`` stops nothing: its stop step journals no cutover."""
    with Journal(tmp_path / "j.sqlite") as journal:
        run = journal.start_run(COMMAND, source_cloud="src", destination_cloud="dst")
        runner = PhaseRunner(journal, run.id, SCOPE, SERVER, CollectingSink(), phases=STEPS,
                             kind=STEP, command=COMMAND)
        steps = _steps(runner, fail_at="boot")
        steps["stop"] = lambda facts: PhaseResult("left running", {"was": "ACTIVE",
                                                                   "stopped": False})
        with pytest.raises(ConflictError):
            runner.run(steps, [])
        assert unfinished_cutovers(journal) == []


def test_a_released_floating_ip_mark_round_trips_and_comes_off_whole() -> None:
    """The mark a cutover adds to a source floating IP's description names its port and
    fixed address; the rollback's removal leaves the operator's description as it was."""
    from stackhop.servers.gather import released_from, released_mark, without_released_mark

    marked = released_mark("web tier [x]", "port-1", "10.0.0.5")
    assert released_from(marked) == ("port-1", "10.0.0.5")
    assert without_released_mark(marked) == "web tier [x]"
    bare = released_mark("", "port-2", None)
    assert released_from(bare) == ("port-2", None)
    assert without_released_mark(bare) == ""
    assert released_from("web tier [stackhop-source:abc]") is None
