"""The engine's long operations (tasks): stages and progress while they run, resume, status."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from openstack import exceptions as sdk_exceptions

from stackhop.cli.main import main
from stackhop.engine import Engine, RunResult
from stackhop.events import CollectingSink, EventType
from stackhop.journal import DONE, FAILED, Journal
from stackhop.resolve import Resolver
from stackhop.retry import RetryPolicy
from stackhop.task import Task, TaskContext, TaskKind


class Copy(TaskKind):
    name: ClassVar[str] = "test.copy"
    service: ClassVar[str] = "test"


COPY = Copy()


@dataclass
class Script:
    """What a test task does, shared by its instances (tasks are frozen dataclasses)."""

    steps: list[Callable[[TaskContext], None]] = field(default_factory=list)
    calls: int = 0
    finds: list[Any] = field(default_factory=list)
    found: str | None = None
    seen_previous: list[Any] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Pass(Task):
    action: ClassVar[str] = "copy"
    script: Script

    def call(self, ctx: TaskContext) -> str | None:
        self.script.calls += 1
        self.script.seen_previous.append(ctx.previous)
        for step in self.script.steps:
            step(ctx)
        return f"dst-{self.of}"

    def find(self, ctx: TaskContext) -> str | None:
        previous = ctx.previous
        self.script.finds.append(None if previous is None else (previous.stage, previous.before))
        return self.script.found


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def http_error(status: int) -> sdk_exceptions.HttpException:
    response = requests.Response()
    response.status_code = status
    return sdk_exceptions.HttpException(message=f"HTTP {status}", response=response)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def run(journal: Journal, ops: list[Task], *, events: CollectingSink | None = None,
        clock: Clock | None = None) -> RunResult:
    engine = Engine(
        journal,
        object(),  # a task talks to its own ends; the destination is only handed over
        Resolver("dst", journal=journal),
        workers=2,
        retry=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=0.2),
        events=events,
        sleep=lambda _s: None,
        clock=clock or Clock(),
        rng=random.Random(1),
    )
    return engine.run(ops, command="test copy", source_cloud="src")


def test_a_task_reports_stages_and_progress_to_events_and_journal(journal: Journal) -> None:
    clock = Clock()
    written: list[Any] = []

    def look(ctx: TaskContext) -> None:
        row = journal.operation("dst", "test.copy", "vol-a")
        assert row is not None
        written.append((row.stage, row.progress and row.progress["done"]))

    def work(ctx: TaskContext) -> None:
        ctx.stage("exported", {"snapshot": "snap-1"})
        look(ctx)
        ctx.progress(1, 4)  # first report: written
        clock.now += 0.5
        ctx.progress(2, 4)  # within the interval: an event only
        look(ctx)
        clock.now += 0.6
        ctx.progress(3, 4)  # interval passed: written
        look(ctx)
        ctx.progress(4, 4)  # the end: always written
        ctx.stage("imported")

    script = Script(steps=[work])
    events = CollectingSink()
    result = run(journal, [Pass(kind=COPY, identity="vol-a", of="vol-a", script=script)],
                 events=events, clock=clock)

    assert result.outcome == "succeeded" and result.count("done") == 1
    assert written == [("exported", None), ("exported", 1), ("exported", 3)]
    row = journal.operation("dst", "test.copy", "vol-a")
    assert row is not None and row.state == DONE and row.action == "copy"
    assert row.stage == "imported" and row.before == {"snapshot": "snap-1"}
    assert row.progress == {"done": 4, "total": 4, "unit": "bytes"}
    assert journal.mapped_id("dst", "test.copy", "vol-a") == "dst-vol-a"
    assert [e.message for e in events.of_type(EventType.STAGE)] == ["exported", "imported"]
    assert [e.done for e in events.of_type(EventType.PROGRESS)] == [1, 2, 3, 4]
    assert all(e.kind == "test.copy" and e.identity == "vol-a" for e in events.events
               if e.type in (EventType.STAGE, EventType.PROGRESS))


def test_resume_asks_find_with_what_the_failed_attempt_reported(journal: Journal) -> None:
    def fail_after_export(ctx: TaskContext) -> None:
        ctx.stage("exported", {"snapshot": "snap-1"})
        ctx.progress(5, 10)
        raise ValueError("the import broke")

    script = Script(steps=[fail_after_export])
    op = Pass(kind=COPY, identity="vol-b", of="vol-b", script=script)
    first = run(journal, [op])
    assert first.failed == 1 and script.finds == [] and script.seen_previous == [None]
    row = journal.operation("dst", "test.copy", "vol-b")
    assert row is not None and row.state == FAILED and "the import broke" in (row.error or "")
    assert row.stage == "exported" and row.progress == {"done": 5, "total": 10, "unit": "bytes"}

    # Re-run: find sees the earlier stage; nothing found, so the call resumes from it.
    script.steps = [lambda ctx: ctx.stage("imported")]
    second = run(journal, [op])
    assert second.outcome == "succeeded"
    assert script.finds == [("exported", {"snapshot": "snap-1"})]
    previous = script.seen_previous[-1]
    assert previous is not None and previous.stage == "exported"
    assert journal.operation("dst", "test.copy", "vol-b").stage == "imported"  # type: ignore[union-attr]

    # Done rows are skipped on the next re-run: neither find nor call.
    calls = script.calls
    third = run(journal, [op])
    assert third.count("done") == 1 and script.calls == calls and len(script.finds) == 1


def test_find_adopts_work_an_earlier_attempt_finished(journal: Journal) -> None:
    def crash(ctx: TaskContext) -> None:
        ctx.stage("verified")
        raise ValueError("lost the connection to the journal host")

    script = Script(steps=[crash])
    op = Pass(kind=COPY, identity="vol-c", of="vol-c", script=script)
    assert run(journal, [op]).failed == 1
    script.found = "dst-found"
    events = CollectingSink()
    result = run(journal, [op], events=events)
    assert result.outcome == "succeeded" and script.calls == 1  # not called again
    row = journal.operation("dst", "test.copy", "vol-c")
    assert row is not None and row.state == DONE and row.destination_id == "dst-found"
    assert journal.mapped_id("dst", "test.copy", "vol-c") == "dst-found"
    finished = events.of_type(EventType.OPERATION_FINISHED)
    assert finished[0].message == "adopted the object an earlier attempt created"


def test_a_transient_failure_is_retried_and_the_retry_looks_first(journal: Journal) -> None:
    failures = [http_error(503)]

    def flaky(ctx: TaskContext) -> None:
        ctx.stage("exported")
        if failures:
            raise failures.pop()

    script = Script(steps=[flaky])
    result = run(journal, [Pass(kind=COPY, identity="vol-d", of="vol-d", script=script)])
    assert result.outcome == "succeeded" and script.calls == 2
    assert script.finds == [("exported", None)]
    row = journal.operation("dst", "test.copy", "vol-d")
    assert row is not None and row.state == DONE and row.attempts == 2


def test_a_late_report_does_not_touch_a_finished_row(journal: Journal) -> None:
    kept: list[TaskContext] = []
    script = Script(steps=[kept.append])
    run(journal, [Pass(kind=COPY, identity="vol-e", of="vol-e", script=script)])
    kept[0].stage("late")
    kept[0].progress(9, 9)
    row = journal.operation("dst", "test.copy", "vol-e")
    assert row is not None and row.state == DONE and row.stage is None and row.progress is None


def test_status_shows_the_stage_and_progress_of_unfinished_tasks(
    journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    def half(ctx: TaskContext) -> None:
        ctx.stage("exported")
        ctx.progress(512, 2048)
        raise ValueError("destination full")

    run(journal, [Pass(kind=COPY, identity="vol-f", of="vol-f", script=Script(steps=[half]))])
    location = str(journal.url.database)
    assert main(["--journal", location, "status", "-f", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (failed,) = report["failed"]
    assert failed["stage"] == "exported"
    assert failed["progress"] == {"done": 512, "total": 2048, "unit": "bytes"}
    assert main(["--journal", location, "status"]) == 0
    out = capsys.readouterr().out
    assert "exported" in out and "512/2048" in out


def test_status_lists_a_task_a_crash_left_pending(
    journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    run_row = journal.start_run("test copy", destination_cloud="dst")
    row = journal.transition(run_row.id, "dst", "test.copy", "vol-g", "pending", action="copy",
                             expected=None, source_id="vol-g", attempt=True)
    assert journal.report(row, stage="imported", progress={"done": 3, "total": 4, "unit": "bytes"})
    location = str(journal.url.database)
    assert main(["--journal", location, "status", "--run", run_row.id[:8], "-f", "json"]) == 0
    (pending,) = json.loads(capsys.readouterr().out)["pending"]
    assert (pending["identity"], pending["stage"]) == ("vol-g", "imported")
    assert main(["--journal", location, "status"]) == 0
    out = capsys.readouterr().out
    assert "In progress" in out and "3/4 bytes (75%)" in out


class PhaseBroke(Exception):
    """A step's own error class (its exit code must survive the engine)."""


def test_steps_fed_one_after_another_stop_at_the_failing_one_with_its_own_error(
    journal: Journal,
) -> None:
    """The hooks `project migrate` needs: only the failing step gets a row, its exception
    is kept, and the stop event the steps see is the engine's (Ctrl-C reaches sub-runs)."""
    seen_stop: list[Any] = []

    def broke(ctx: TaskContext) -> None:
        seen_stop.append(ctx.stop)
        raise PhaseBroke("step two broke")

    steps = [
        Pass(kind=COPY, identity="p/one", of="one", script=Script()),
        Pass(kind=COPY, identity="p/two", of="two", script=Script(steps=[broke])),
        Pass(kind=COPY, identity="p/three", of="three", script=Script()),
    ]
    engine = Engine(journal, object(), Resolver("dst", journal=journal), workers=1,
                    sleep=lambda _s: None)  # fmt: skip
    fed: list[str] = []

    def one_at_a_time() -> Any:
        for step in steps:
            fed.append(step.identity)
            yield [step]
            if engine.outcome(step.ref, wait=True) != "done":
                return

    result = engine.run_planned(one_at_a_time(), total=len(steps), command="test steps")
    assert fed == ["p/one", "p/two"]
    assert [(r.identity, r.state) for r in journal.operations(kind="test.copy")] == [
        ("p/one", DONE), ("p/two", FAILED)], "no row for the step after the failed one"
    caught = result.exceptions[("test.copy", "p/two")]
    assert isinstance(caught, PhaseBroke) and str(caught) == "step two broke"
    assert seen_stop == [engine.stop]
    assert result.outcome == "failed" and result.failed == 1
