"""The engine: order, retries, resume, adoption of unknown outcomes, Ctrl-C.

The kinds here live on an in-memory fake cloud (tests/unit/memory_cloud.py)
that fails exactly when a test says so; the real kinds are tested against the
testbed clouds in their own issues.
"""

from __future__ import annotations

import _thread
import json
import random
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import exceptions as sdk_exceptions
from tests.unit.memory_cloud import BulkWidget, Gadget, MemoryCloud, Widget, gadget, widget

from stackhop.engine import Engine, RunResult
from stackhop.errors import ConflictError, Interrupted, OperationFailedError, TransientError
from stackhop.events import CollectingSink, EventType
from stackhop.journal import DONE, FAILED, PENDING, ROLLED_BACK, SKIPPED, Journal
from stackhop.plan import Conflict, Create, Operation, Skip, Update, plan
from stackhop.resolve import USER, Resolver
from stackhop.retry import RetryPolicy, classify
from stackhop.rollback import plan_rollback

WIDGET, GADGET = Widget(), Gadget()
USERS = {"u-src-1": "u-dst-1"}


def http_error(status: int, retry_after: str | None = None) -> sdk_exceptions.HttpException:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return sdk_exceptions.HttpException(message=f"HTTP {status}", response=response)


class Harness:
    """A journal, a fake destination cloud, and engines wired to them."""

    def __init__(self, path: Path) -> None:
        self.journal = Journal(path)
        self.cloud = MemoryCloud()
        self.sleeps: list[float] = []
        self.events = CollectingSink()
        self.resolver = Resolver("dst", maps={USER: USERS}, journal=self.journal)

    def engine(self, workers: int = 4, max_attempts: int = 4) -> Engine:
        return Engine(
            self.journal,
            self.cloud,
            self.resolver,
            workers=workers,
            retry=RetryPolicy(max_attempts=max_attempts, base_delay=0.5, max_delay=4.0),
            events=self.events,
            sleep=self.sleeps.append,
            rng=random.Random(7),
        )

    def plan(self, records: Mapping[Any, list[dict]], overwrite: bool = False) -> list[Operation]:
        ops = plan(records, lambda k, r: k.find(self.cloud, r), self.resolver, overwrite)
        self.cloud.calls.clear()  # count only what the engine does
        return ops

    def run(self, ops: list[Operation], **kw: Any) -> RunResult:
        return self.engine(**kw).run(ops, command="test import", source_cloud="src")

    def row(self, kind: str, identity: str):
        return self.journal.operation("dst", kind, identity)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path / "journal.sqlite")
    yield harness
    harness.journal.close()


def test_applies_kinds_in_dependency_order_and_maps_ids(h: Harness) -> None:
    widgets = [widget(i) for i in range(5)]
    gadgets = [gadget(i, w["id"]) for i, w in enumerate(widgets)]
    ops = h.plan({GADGET: gadgets, WIDGET: widgets})

    result = h.run(ops)

    assert result.outcome == "succeeded"
    assert result.counts["test.widget"]["done"] == 5 and result.counts["test.gadget"]["done"] == 5
    creates = [name for call, _, name in h.cloud.calls if call == "create"]
    for i in range(5):  # each gadget after the widget it refers to
        assert creates.index(f"w{i}") < creates.index(f"g{i}")
    widget_ids = h.journal.id_map("dst", "test.widget")
    for g in h.cloud.objects["test.gadget"].values():
        source_widget = "widget-src-" + g["name"][1:]
        assert g["widget_id"] == widget_ids[source_widget]  # resolved when applied
    assert len(h.journal.id_map("dst", "test.gadget")) == 5
    types = [e.type for e in h.events.events]
    assert types[0] is EventType.RUN_STARTED and types[-1] is EventType.RUN_FINISHED
    kinds_started = [e.kind for e in h.events.of_type(EventType.KIND_STARTED)]
    assert kinds_started == ["test.widget", "test.gadget"]
    assert len(h.events.of_type(EventType.OPERATION_STARTED)) == 10
    assert h.journal.run(result.run_id).outcome == "succeeded"


def test_503_is_retried_with_jittered_backoff(h: Harness) -> None:
    h.cloud.fail("test.widget", "create", lambda: http_error(503), lambda: http_error(503))
    ops = h.plan({WIDGET: [widget(1)]})

    result = h.run(ops)

    assert result.counts["test.widget"]["done"] == 1
    assert len(h.cloud.objects["test.widget"]) == 1
    assert len(h.sleeps) == 2
    assert 0 <= h.sleeps[0] <= 0.5 and 0 <= h.sleeps[1] <= 1.0
    retries = h.events.of_type(EventType.RETRY)
    assert [e.detail["attempt"] for e in retries] == [1, 2] and "503" in retries[0].message
    assert h.row("test.widget", "p-1/w1").attempts == 3
    # A 503 during a create may hide a success: looked up before each retry.
    assert h.cloud.count("find") == 2


def test_429_waits_for_retry_after(h: Harness) -> None:
    h.cloud.fail("test.widget", "create", lambda: http_error(429, retry_after="7"))
    ops = h.plan({WIDGET: [widget(1)]})

    result = h.run(ops)

    assert result.outcome == "succeeded"
    assert h.sleeps == [7.0]
    assert h.cloud.count("find") == 0  # a 429 changed nothing: no lookup needed


def test_gives_up_after_max_attempts(h: Harness) -> None:
    h.cloud.fail("test.widget", "create", *[lambda: TransientError("flaky")] * 10)
    ops = h.plan({WIDGET: [widget(1)]})

    result = h.run(ops, max_attempts=3)

    assert result.outcome == "failed" and result.failed == 1
    row = h.row("test.widget", "p-1/w1")
    assert (row.state, row.attempts) == (FAILED, 3) and "flaky" in row.error
    assert result.errors == [
        {"kind": "test.widget", "identity": "p-1/w1", "error": "TransientError: flaky"}
    ]
    with pytest.raises(OperationFailedError, match=f"stackhop status --run {result.run_id}"):
        result.raise_for_failures()


def test_a_client_error_is_not_retried(h: Harness) -> None:
    h.cloud.fail("test.widget", "create", lambda: http_error(400))
    result = h.run(h.plan({WIDGET: [widget(1)]}))
    assert result.failed == 1 and h.sleeps == []
    assert h.row("test.widget", "p-1/w1").attempts == 1


def test_resume_skips_done_work_and_completes(h: Harness) -> None:
    ops = h.plan({WIDGET: [widget(i) for i in range(6)]})
    h.cloud.fail("test.widget", "create", lambda: RuntimeError("disk full"))  # the first create

    first = h.run(ops, workers=1)

    assert first.counts["test.widget"] == {
        "done": 5, "skipped": 0, "conflict": 0, "failed": 1, "not_started": 0
    }
    assert h.row("test.widget", "p-1/w0").error == "RuntimeError: disk full"
    h.cloud.calls.clear()

    second = h.run(ops)  # the same command again, with the same plan

    assert second.outcome == "succeeded" and second.counts["test.widget"]["done"] == 6
    assert h.cloud.count("create") == 1  # only the failed one
    assert len(h.cloud.objects["test.widget"]) == 6
    assert {o.state for o in h.journal.operations()} == {DONE}
    assert h.row("test.widget", "p-1/w0").run_id == second.run_id
    assert h.row("test.widget", "p-1/w1").run_id == first.run_id


def test_create_with_unknown_outcome_is_adopted_not_duplicated(h: Harness) -> None:
    # The connection drops after the cloud created the widget.
    h.cloud.fail("test.widget", "create", lambda: ConnectionResetError("reset"), after_commit=True)
    ops = h.plan({WIDGET: [widget(1)]})

    result = h.run(ops)

    assert result.outcome == "succeeded"
    assert h.cloud.count("create") == 1 and len(h.cloud.objects["test.widget"]) == 1
    (created,) = h.cloud.objects["test.widget"]
    assert h.row("test.widget", "p-1/w1").destination_id == created
    assert h.journal.mapped_id("dst", "test.widget", "widget-src-1") == created
    finished = h.events.of_type(EventType.OPERATION_FINISHED)
    assert "adopted" in finished[0].message


def test_pending_row_from_a_crashed_run_is_looked_up_before_creating(h: Harness) -> None:
    w1, w2 = widget(1), widget(2)
    ops = h.plan({WIDGET: [w1, w2]})
    crashed = h.journal.start_run("test import").id
    for record in (w1, w2):  # both were being created when the process died ...
        h.journal.transition(crashed, "dst", "test.widget", WIDGET.identity(record), PENDING,
                             action="create", expected=None, attempt=True)
    there = WIDGET.create(h.cloud, h.resolver.resolve(WIDGET, w1))  # ... and only w1 made it
    h.cloud.calls.clear()

    result = h.run(ops)

    assert result.outcome == "succeeded"
    assert [c for c in h.cloud.calls if c[0] == "create"] == [("create", "test.widget", "w2")]
    assert h.row("test.widget", "p-1/w1").destination_id == there
    assert len(h.cloud.objects["test.widget"]) == 2


@pytest.mark.parametrize("left", [PENDING, FAILED])
def test_identical_object_after_an_unfinished_create_is_recorded(h: Harness, left) -> None:
    record = widget(1)
    crashed = h.journal.start_run("test import").id
    row = h.journal.transition(crashed, "dst", "test.widget", "p-1/w1", PENDING,
                               action="create", expected=None, attempt=True)
    if left == FAILED:
        h.journal.transition(crashed, "dst", "test.widget", "p-1/w1", FAILED,
                             action="create", expected=row, error="HttpException: HTTP 500")
    there = WIDGET.create(h.cloud, h.resolver.resolve(WIDGET, record))
    ops = h.plan({WIDGET: [record]})
    assert isinstance(ops[0], Skip)

    result = h.run(ops)

    assert result.outcome == "succeeded" and result.errors == []
    row = h.row("test.widget", "p-1/w1")
    assert row.destination_id == there and row.state == (DONE if left == PENDING else SKIPPED)
    assert h.journal.mapped_id("dst", "test.widget", "widget-src-1") == there


def _interrupt_on(h: Harness, engine: Engine, name: str, *, ctrl_c: bool) -> None:

    def press() -> None:
        if ctrl_c:
            _thread.interrupt_main()  # what Ctrl-C does to the main thread
        else:
            engine.stop.set()
        # Keep this call in flight until the engine has seen the stop, so the
        # test knows which operations were in flight (generous: CI's machine is loaded).
        assert engine.stop.wait(60)

    h.cloud.on("test.widget", "create", name, press)


@pytest.fixture
def terminal_sigint() -> Any:
    """SIGINT handled as at a terminal: Python's handler raises KeyboardInterrupt.

    A process started in the background by a non-interactive shell (``make test &``)
    inherits SIGINT ignored, and then ``_thread.interrupt_main`` does nothing.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("ctrl_c", [True, False], ids=["ctrl-c", "stop-event"])
def test_interrupt_finishes_in_flight_work_then_resume_completes(
    h: Harness, ctrl_c: bool, terminal_sigint: None
) -> None:
    ops = h.plan({WIDGET: [widget(i) for i in range(6)], GADGET: [gadget(1, "widget-src-0")]})
    engine = h.engine(workers=1)
    _interrupt_on(h, engine, "w2", ctrl_c=ctrl_c)

    with pytest.raises(Interrupted) as caught:
        engine.run(ops, command="test import")

    result = caught.value.fields["result"]
    assert result.outcome == "interrupted"
    assert result.counts["test.widget"]["done"] == 3  # w0, w1 and the in-flight w2
    assert result.counts["test.widget"]["not_started"] == 3
    assert result.counts["test.gadget"]["not_started"] == 1
    assert h.row("test.widget", "p-1/w2").state == DONE
    assert h.row("test.widget", "p-1/w3") is None
    assert h.journal.run(result.run_id).outcome == "interrupted"
    assert f"run {result.run_id}" in caught.value.message

    h.cloud.on("test.widget", "create", "w2", lambda: None)
    resumed = h.run(ops)
    assert resumed.outcome == "succeeded"
    assert len(h.cloud.objects["test.widget"]) == 6 and len(h.cloud.objects["test.gadget"]) == 1


def test_dependents_of_a_failed_create_are_not_attempted(h: Harness) -> None:
    h.cloud.fail("test.widget", "create", lambda: http_error(409))
    ops = h.plan({WIDGET: [widget(1)], GADGET: [gadget(1, "widget-src-1")]})

    result = h.run(ops)

    assert result.counts["test.gadget"]["failed"] == 1
    row = h.row("test.gadget", "p-1/g1")
    assert (row.state, row.attempts) == (FAILED, 0)
    assert "depends on test.widget 'p-1/w1', which failed" in row.error
    assert h.cloud.count("create", "test.gadget") == 0


def test_skips_and_conflicts_are_journaled(h: Harness) -> None:
    same, different = widget(1), widget(2)
    kept = WIDGET.create(h.cloud, h.resolver.resolve(WIDGET, same))
    WIDGET.create(h.cloud, {**h.resolver.resolve(WIDGET, different), "size": 9})
    ops = h.plan({WIDGET: [same, different, widget(3, owner="stranger")]})
    assert [type(o) for o in ops] == [Skip, Conflict, Conflict]

    result = h.run(ops)

    assert result.outcome == "conflicts"
    assert result.counts["test.widget"] == {
        "done": 0, "skipped": 1, "conflict": 2, "failed": 0, "not_started": 0
    }
    skip = h.row("test.widget", "p-1/w1")
    assert (skip.state, skip.action, skip.destination_id) == (SKIPPED, "skip", kept)
    assert h.journal.mapped_id("dst", "test.widget", "widget-src-1") == kept
    conflict = h.row("test.widget", "p-1/w2")
    assert (conflict.state, conflict.action) == (SKIPPED, "conflict")
    assert "size" in conflict.error
    assert h.cloud.count("create") == 0 and h.cloud.count("update") == 0
    with pytest.raises(ConflictError, match="--overwrite"):
        result.raise_for_failures()


def test_update_keeps_the_before_state(h: Harness) -> None:
    dst_id = WIDGET.create(h.cloud, {**h.resolver.resolve(WIDGET, widget(1)), "size": 5})
    ops = h.plan({WIDGET: [widget(1, size=1)]}, overwrite=True)
    assert isinstance(ops[0], Update)

    result = h.run(ops)

    assert result.counts["test.widget"]["done"] == 1
    assert h.cloud.objects["test.widget"][dst_id]["size"] == 1
    row = h.row("test.widget", "p-1/w1")
    assert (row.action, row.destination_id) == ("update", dst_id)
    assert row.before["size"] == 5 and row.before["id"] == dst_id


def _rollback(h: Harness, *run_ids: str, workers: int = 4) -> tuple[list[Any], RunResult]:
    kinds = {k.name: k for k in (WIDGET, GADGET)}
    undos = plan_rollback(h.journal, run_ids, "dst", lookup=kinds.__getitem__)
    result = h.engine(workers=workers).run(undos, command="rollback", destination_cloud="dst")
    return undos, result


@pytest.mark.parametrize("workers", [1, 4])
def test_rollback_is_a_run_that_marks_what_it_undid(h: Harness, workers: int) -> None:
    h.cloud.objects["test.widget"] = {
        "w-old": {"id": "w-old", "name": "w2", "size": 9, "owner_id": "u-dst-1",
                  "project_id": "p-1", "description": ""},
    }
    records = {WIDGET: [widget(1), widget(2, size=3)], GADGET: [gadget(1, "widget-src-1")]}
    imported = h.run(h.plan(records, overwrite=True))
    assert imported.outcome == "succeeded"
    w1 = h.row("test.widget", "p-1/w1").destination_id
    assert h.journal.mapped_id("dst", "test.widget", "widget-src-1") == w1

    undos, result = _rollback(h, imported.run_id, workers=workers)

    assert [(u.action, u.kind.name) for u in undos] == [
        ("delete", "test.gadget"), ("delete", "test.widget"), ("restore", "test.widget")
    ]
    assert result.outcome == "succeeded" and result.count("done") == 3
    assert h.cloud.objects["test.widget"] == {
        "w-old": {"id": "w-old", "name": "w2", "size": 9, "owner_id": "u-dst-1",
                  "project_id": "p-1", "description": ""},
    }
    assert h.cloud.objects["test.gadget"] == {}
    deletes = [name for call, kind, name in h.cloud.calls if call == "delete"]
    assert deletes.index(h.row("test.gadget", "p-1/g1").destination_id) < deletes.index(w1)
    # The import's rows are kept, marked, still belonging to the import run.
    for kind, identity in (("test.widget", "p-1/w1"), ("test.widget", "p-1/w2"),
                           ("test.gadget", "p-1/g1")):
        row = h.row(kind, identity)
        assert (row.state, row.run_id, row.undone_by) == (
            ROLLED_BACK, imported.run_id, result.run_id
        )
    # The rollback's own operations are rows of its run.
    own = h.journal.operations(run_id=result.run_id)
    assert sorted((op.action, op.state) for op in own) == [
        ("delete", DONE), ("delete", DONE), ("restore", DONE)
    ]
    assert h.journal.mapped_id("dst", "test.widget", "widget-src-1") is None
    assert h.journal.mapped_id("dst", "test.widget", "widget-src-2") == "w-old"
    assert h.journal.counts(run_id=imported.run_id)["test.widget"][ROLLED_BACK] == 2
    from stackhop.cli.status import collect

    report = collect(h.journal).as_dict()
    assert report["rolled_back"] == [
        {"run_id": imported.run_id, "rolled_back_by": result.run_id, "operations": 3}
    ]
    assert [r["command"] for r in report["runs"]] == ["test import", "rollback"]
    # Nothing is left to undo; the same import can run again and creates anew.
    assert _rollback(h, imported.run_id)[0] == []
    again = h.run(h.plan(records, overwrite=True))
    assert again.outcome == "succeeded" and h.row("test.widget", "p-1/w1").state == DONE
    assert len(h.cloud.objects["test.widget"]) == 2


def test_rollback_retries_and_resumes(h: Harness) -> None:
    records = {WIDGET: [widget(1)], GADGET: [gadget(1, "widget-src-1")]}
    imported = h.run(h.plan(records))
    h.cloud.fail("test.gadget", "delete", lambda: http_error(503))
    h.cloud.fail("test.widget", "delete", lambda: ConflictError("not ours"))

    _, first = _rollback(h, imported.run_id)

    assert first.outcome == "failed"
    assert h.row("test.gadget", "p-1/g1").state == ROLLED_BACK  # retried after the 503
    assert h.row("test.widget", "p-1/w1").state == DONE  # its undo failed: still done
    assert len(h.sleeps) == 1
    undo_row = h.journal.operations(run_id=first.run_id, kind="test.widget")[0]
    assert undo_row.state == FAILED and "not ours" in (undo_row.error or "")

    undos, second = _rollback(h, imported.run_id)

    assert [(u.action, u.kind.name) for u in undos] == [("delete", "test.widget")]
    assert second.outcome == "succeeded"
    assert h.row("test.widget", "p-1/w1").state == ROLLED_BACK
    assert h.cloud.objects["test.widget"] == {}


def test_classify_maps_client_library_errors() -> None:
    assert classify(http_error(503)).transient and not classify(http_error(503)).outcome_known
    too_many = classify(http_error(429, retry_after="12"))
    assert too_many.transient and too_many.outcome_known and too_many.retry_after == 12.0
    dated = classify(http_error(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
    assert dated.retry_after == 0.0  # a date in the past: retry now
    assert not classify(http_error(404)).transient
    assert classify(ksa_exceptions.ServiceUnavailable()).transient
    assert classify(ksa_exceptions.ConnectFailure("refused")).transient
    assert classify(ksa_exceptions.ConnectTimeout("slow")).outcome_known
    assert classify(requests.ConnectionError("reset")).transient
    assert classify(TransientError("x", retry_after=3)).retry_after == 3
    assert not classify(ValueError("bug")).transient


def test_retry_policy_is_full_jitter_with_a_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, max_retry_after=30.0)
    rng = random.Random(3)
    for attempt in range(1, 10):
        bound = min(8.0, 2 ** (attempt - 1))
        delays = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > bound / 2  # jitter spans the range, not a constant
    assert policy.delay(1, 5.0, rng) == 5.0
    assert policy.delay(1, 3600.0, rng) == 30.0


def test_operations_with_create_type_only_reach_create(h: Harness) -> None:
    ops = h.plan({WIDGET: [widget(1)]})
    assert isinstance(ops[0], Create)
    h.run(ops)
    assert h.cloud.count("update") == 0 and h.cloud.count("create") == 1


def test_status_command_shows_runs_counts_and_failures(h: Harness, capsys) -> None:
    from stackhop.cli.main import main

    h.cloud.fail("test.widget", "create", lambda: http_error(400))
    result = h.run(h.plan({WIDGET: [widget(1), widget(2)]}), workers=1)
    journal = str(h.journal.url.database)

    assert main(["status", "--journal", journal, "-f", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in shown["runs"]] == [result.run_id]
    assert shown["runs"][0]["outcome"] == "failed"
    assert shown["kinds"] == [
        {"kind": "test.widget", "pending": 0, "done": 1, "failed": 1, "skipped": 0,
         "rolled_back": 0}
    ]
    assert shown["failed"][0]["identity"] == "p-1/w1" and "400" in shown["failed"][0]["error"]

    assert main(["status", "--journal", journal, "--run", result.run_id[:8]]) == 0
    table = capsys.readouterr().out
    assert result.run_id in table and "Failed operations" in table and "p-1/w1" in table

    assert main(["status", "--journal", journal + ".missing"]) == 3
    assert "no journal at" in capsys.readouterr().err


class NetworkWidget(Widget):
    """A widget on another API service than the gadgets'."""

    name = "test.network_widget"
    service = "network"


class ComputeGadget(Gadget):
    """A gadget on its own service that refers to no widget."""

    name = "test.compute_gadget"
    service = "compute"
    references = {"project_id": "identity.project"}


def test_a_dependent_starts_when_its_own_dependency_is_done(h: Harness) -> None:
    # w0's create waits until g1 exists: g1 must start as soon as w1 is done,
    # not after every widget (that would never finish).
    widgets = [widget(i) for i in range(2)]
    ops = h.plan({GADGET: [gadget(1, "widget-src-1")], WIDGET: widgets})
    created = threading.Event()
    waited: list[bool] = []
    h.cloud.on("test.gadget", "create", "g1", created.set)
    h.cloud.on("test.widget", "create", "w0", lambda: waited.append(created.wait(10)))

    result = h.run(ops, workers=2)

    assert result.outcome == "succeeded"
    assert waited == [True]  # g1 was created while w0 was still in flight


def test_work_is_shared_among_services(h: Harness) -> None:
    network, compute = NetworkWidget(), ComputeGadget()
    widgets = [widget(i) for i in range(6)]
    others = [gadget(i, "none") for i in range(6)]
    ops = h.plan({network: widgets, compute: others})
    # With no reference between them, both services are busy from the start.
    seen = []
    lock = threading.Lock()

    def note(name: str) -> None:
        with lock:
            seen.append(name)

    for i in range(6):
        h.cloud.on(network.name, "create", f"w{i}", lambda i=i: note(f"w{i}"))
        h.cloud.on(compute.name, "create", f"g{i}", lambda i=i: note(f"g{i}"))

    result = h.run(ops, workers=2)

    assert result.outcome == "succeeded"
    assert {name[0] for name in seen[:2]} == {"w", "g"}


def test_run_planned_applies_batches_as_they_come_and_raises_a_planner_error(
    h: Harness,
) -> None:
    widgets = [widget(i) for i in range(3)]
    ops = h.plan({WIDGET: widgets, GADGET: [gadget(0, "widget-src-0")]})
    wid, gad = [o for o in ops if o.kind is WIDGET], [o for o in ops if o.kind is GADGET]
    applying = threading.Event()
    h.cloud.on("test.widget", "create", "w0", applying.set)

    def batches():
        yield wid
        # The first batch is being applied while the planner still works.
        assert applying.wait(10)
        raise ConflictError("the planner failed")
        yield gad

    engine = h.engine(workers=1)
    with pytest.raises(ConflictError, match="the planner failed"):
        engine.run_planned(batches(), total=4, command="test import")
    assert h.journal.runs()[-1].outcome == "failed"
    # The call in flight when the planner failed is journaled; nothing started after it.
    assert h.row("test.widget", "p-1/w0").state == DONE
    states = [h.row("test.widget", f"p-1/w{i}") for i in (1, 2)]
    assert all(row is None or row.state == DONE for row in states)
    assert h.row("test.gadget", "p-1/g0") is None


# -- bulk creates (Kind.bulk_create: one request, all or none) ------------------------

BULK = BulkWidget()


def test_bulk_creates_go_in_few_requests_and_each_gets_its_id(h: Harness) -> None:
    ops = h.plan({BULK: [widget(i) for i in range(40)]})

    result = h.run(ops, workers=4)

    assert result.outcome == "succeeded" and result.counts["test.bulk_widget"]["done"] == 40
    assert h.cloud.count("create") == 0 and 1 <= h.cloud.count("create_many") <= 4
    ids = h.journal.id_map("dst", "test.bulk_widget")
    assert len(ids) == 40 and set(ids.values()) == set(h.cloud.objects["test.bulk_widget"])
    for source_id, destination_id in ids.items():  # each row got its own object's ID
        made = h.cloud.objects["test.bulk_widget"][destination_id]
        assert h.row("test.bulk_widget", f"p-1/{made['name']}").destination_id == destination_id
        assert made["description"].endswith(f"[stackhop-source:{source_id}]")


def test_a_refused_bulk_request_falls_back_to_one_by_one_and_only_the_bad_one_fails(
    h: Harness,
) -> None:
    h.cloud.refused_name = "w7"
    h.cloud.refusal = lambda: http_error(409)
    # A bulk request naming w7 is refused whole; alone, w7 is refused too.

    def refuse() -> None:
        raise http_error(409)

    h.cloud.on("test.bulk_widget", "create", "w7", refuse)
    ops = h.plan({BULK: [widget(i) for i in range(20)]})

    result = h.run(ops, workers=2)

    assert result.counts["test.bulk_widget"]["done"] == 19
    assert result.counts["test.bulk_widget"]["failed"] == 1
    assert h.row("test.bulk_widget", "p-1/w7").state == FAILED
    assert len(h.cloud.objects["test.bulk_widget"]) == 19
    assert h.cloud.count("find") == 0  # the refusal's outcome was known: no lookups


def test_a_bulk_request_whose_answer_is_lost_is_adopted_not_duplicated(h: Harness) -> None:
    h.cloud.fail("test.bulk_widget", "create_many", lambda: ConnectionResetError("reset"),
                 after_commit=True)
    ops = h.plan({BULK: [widget(i) for i in range(12)]})

    result = h.run(ops, workers=1)

    assert result.outcome == "succeeded"
    assert len(h.cloud.objects["test.bulk_widget"]) == 12  # made once, found by marker
    assert h.cloud.count("find") >= 12 and h.cloud.count("create") == 0
    assert len(set(h.journal.id_map("dst", "test.bulk_widget").values())) == 12
