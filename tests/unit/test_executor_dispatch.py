"""The Celery executor's two halves on a SQLite journal, the broker left out.

The coordinator (:class:`CeleryExecutor` inside the engine) and the worker's message
handler (:func:`stackhop.executor.worker.run_message`) are the real code; only the
publish is replaced: ``send_task`` hands the message to the handler on a thread of
this process, once or twice (a redelivery), as RabbitMQ would to a worker. The real
broker and worker processes are in tests/functional/test_executor_celery.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from stackhop.engine import Engine
from stackhop.errors import ConfigError, UsageError
from stackhop.events import CollectingSink, EventType
from stackhop.executor import dispatch, worker
from stackhop.executor.dispatch import celery_executor
from stackhop.executor.names import broker_url
from stackhop.executor.reattach import reattach
from stackhop.journal import DONE, FAILED, PENDING, Journal, OperationRecord, RunRecord
from stackhop.plan import Operation
from stackhop.resolve import Resolver
from stackhop.task import Task, TaskContext, TaskKind
from stackhop.volumes.copy import CopyRequest
from stackhop.volumes.reshape import Reshape

COMMAND = "test dispatch"


class Copy(TaskKind):
    name: ClassVar[str] = "test.copy"
    service: ClassVar[str] = "test"


#: What the worker side did, per source ID (tasks are rebuilt there from payloads).
CALLS: dict[str, int] = {}


@dataclass(frozen=True, kw_only=True)
class Pass(Task):
    action: ClassVar[str] = "copy"

    def call(self, ctx: TaskContext) -> str:
        CALLS[str(self.of)] = CALLS.get(str(self.of), 0) + 1
        ctx.stage("exported")
        ctx.progress(10, 10, "bytes")
        return f"dst-{self.of}"

    def to_payload(self) -> dict[str, Any]:
        return {"of": self.of}


class _Job:
    destination = object()

    def operation(self, row: OperationRecord) -> tuple[Operation, None]:
        of = str(row.payload["of"])
        return Pass(kind=Copy(), identity=of, of=of), None


def job(run: RunRecord, journal: Journal, events: Any) -> _Job:
    return _Job()


class _App:
    """Stands in for the Celery app: each publish is delivered ``deliveries`` times."""

    def __init__(self, deliveries: int = 1, lose_first: bool = False) -> None:
        self.deliveries = deliveries
        self.lose_first = lose_first
        self.sent: list[tuple[dict[str, Any], str]] = []
        self.threads: list[threading.Thread] = []

    def send_task(self, name: str, args: list[Any], queue: str, routing_key: str) -> None:
        message = args[0]
        self.sent.append((message, queue))
        if self.lose_first and len(self.sent) == 1:
            return  # the broker lost it

        def deliver() -> None:
            for n in range(self.deliveries):
                worker.run_message(message, redelivered=n > 0, queue=queue)

        thread = threading.Thread(target=deliver)
        thread.start()
        self.threads.append(thread)


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Journal]:
    path = tmp_path / "journal.sqlite"
    monkeypatch.setenv(worker.JOURNAL_ENV, str(path))
    monkeypatch.setitem(worker.JOBS, COMMAND, f"{__name__}:job")
    monkeypatch.setattr(worker, "_process", worker._Process())
    CALLS.clear()
    with Journal(path) as j:
        yield j


def _coordinator(
    journal: Journal,
    app: _App,
    workers: int,
    events: CollectingSink | None = None,
    route: Any = lambda op: "q",
) -> Engine:
    """An engine publishing to ``app`` (the broker replaced, see the module docstring)."""
    return Engine(
        journal, object(), Resolver("dst", journal=journal), workers=workers, events=events,
        executor=celery_executor(app, route, workers),  # type: ignore[arg-type]
    )  # fmt: skip


def _run(journal: Journal, app: _App, names: list[str]) -> tuple[Any, CollectingSink]:
    events = CollectingSink()
    engine = _coordinator(journal, app, 2, events, lambda op: f"q-{op.identity}")
    ops = [Pass(kind=Copy(), identity=n, of=n) for n in names]
    result = engine.run(ops, command=COMMAND, source_cloud="src")
    for thread in app.threads:
        thread.join()
    return result, events


def test_a_worker_runs_each_pass_once_and_the_coordinator_learns_it(journal: Journal) -> None:
    app = _App()
    result, events = _run(journal, app, ["a", "b", "c"])
    assert result.outcome == "succeeded" and result.count("done") == 3
    assert CALLS == {"a": 1, "b": 1, "c": 1}
    rows = journal.operations(run_id=result.run_id)
    # The worker's take counted the one attempt; its outcome cleared lease and payload.
    assert [(r.identity, r.state, r.attempts) for r in rows] == [
        ("a", DONE, 1), ("b", DONE, 1), ("c", DONE, 1),
    ]
    assert all(journal.lease(r.id) is None and r.payload is None for r in rows)
    assert journal.id_map("dst", "test.copy") == {n: f"dst-{n}" for n in "abc"}
    # Messages carry IDs only, each to the queue its route named.
    assert sorted(q for _, q in app.sent) == ["q-a", "q-b", "q-c"]
    assert all(set(m) == {"v", "journal", "run", "ops"} for m, _ in app.sent)
    # What the worker reported reached the coordinator's events, as in a local run.
    assert {e.identity for e in events.of_type(EventType.STAGE)} == {"a", "b", "c"}
    finished = events.of_type(EventType.OPERATION_FINISHED)
    assert sorted((e.identity, e.outcome) for e in finished) == [
        ("a", "done"), ("b", "done"), ("c", "done"),
    ]


def test_a_redelivered_message_finds_the_work_done_and_does_nothing(journal: Journal) -> None:
    app = _App(deliveries=2)
    result, _ = _run(journal, app, ["a", "b"])
    assert result.outcome == "succeeded"
    assert CALLS == {"a": 1, "b": 1}
    assert {r.attempts for r in journal.operations(run_id=result.run_id)} == {1}


def test_a_lost_message_is_sent_again_once_nobody_holds_its_row(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKHOP_LEASE_TTL", "0.3")
    monkeypatch.setattr(dispatch, "ORPHAN_MARGIN", 0.2)
    app = _App(lose_first=True)
    result, events = _run(journal, app, ["a"])
    assert result.outcome == "succeeded" and CALLS == {"a": 1}
    assert len(app.sent) == 2 and app.sent[0][0]["ops"] == app.sent[1][0]["ops"]
    assert any("sent again" in (e.message or "") for e in events.of_type(EventType.RETRY))


def test_a_message_naming_another_journal_is_refused(
    journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    worker.run_message({"v": 1, "journal": "elsewhere", "run": "r", "ops": [1]},
                       redelivered=False, queue="q")  # fmt: skip
    assert '"event": "refused"' in capsys.readouterr().out and CALLS == {}


def test_a_copy_request_survives_the_journal_args_round_trip() -> None:
    request = CopyRequest(
        source_cloud="src", destination_cloud="dst", project="p", volumes=("v1", "v2"),
        method="stream", incremental=True, backup_to="cmd:cat >/dev/null", workers=3,
        reshape=Reshape(type_map={"old": "new"}, min_size_gib=2, grow_to={"v1": 5}),
        grant_role="member", method_options={"codec": "raw"}, executor="celery",
    )  # fmt: skip
    assert CopyRequest.from_args(request.args()) == request


def test_the_broker_url_never_comes_with_a_password_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(UsageError, match="STACKHOP_BROKER_URL"):
        broker_url("amqp://u:secret@host/stackhop")
    assert broker_url("amqp://u@host/stackhop") == "amqp://u@host/stackhop"
    monkeypatch.delenv("STACKHOP_BROKER_URL", raising=False)
    with pytest.raises(ConfigError, match="STACKHOP_BROKER_URL"):
        broker_url(None)
    monkeypatch.setenv("STACKHOP_BROKER_URL", "amqp://u:pw@host/stackhop")
    assert broker_url(None) == "amqp://u:pw@host/stackhop"


def test_a_rerun_reattaches_to_the_run_of_a_dead_coordinator_and_sends_nothing_again(
    journal: Journal,
) -> None:
    # What a coordinator killed after sending its messages leaves: the run `running`,
    # claimed by a process of this host that is gone, its rows pending and dispatched.
    args = {"what": "abc"}
    run = journal.start_run(COMMAND, source_cloud="src", destination_cloud="dst", args=args)
    assert journal.claim_run(run.id, f"{socket.gethostname()}:999999999", stale_after=15)
    rows = [journal.transition(run.id, "dst", "test.copy", n, PENDING, action="copy",
                               expected=None, source_id=n) for n in "abc"]  # fmt: skip
    assert len(journal.dispatch([(r, {"of": r.identity}) for r in rows])) == 3
    sent_before = {"v": 1, "journal": journal.journal_id(), "run": run.id,
                   "ops": [r.id for r in rows]}  # fmt: skip
    # Another run, or other arguments, is not this one.
    assert reattach(journal, COMMAND, source_cloud="src", destination_cloud="dst",
                    args={"what": "xyz"}) is None  # fmt: skip
    found = reattach(journal, COMMAND, source_cloud="src", destination_cloud="dst",
                     args={**args, "workers": 8})  # fmt: skip
    assert found == run.id
    app = _App()
    engine = _coordinator(journal, app, 2)
    # The messages the dead coordinator sent are still in the queue: a worker runs them.
    late = threading.Timer(0.5, worker.run_message, [sent_before],
                           {"redelivered": False, "queue": "q"})  # fmt: skip
    late.start()
    ops = [Pass(kind=Copy(), identity=n, of=n) for n in "abc"]
    result = engine.run_planned([ops], total=3, command=COMMAND, run_id=found)
    late.join()
    assert result.outcome == "succeeded" and app.sent == []  # followed, never sent again
    assert CALLS == {"a": 1, "b": 1, "c": 1}
    assert {r.attempts for r in journal.operations(run_id=run.id)} == {1}
    # While this coordinator is seen, one on another host is refused the run.
    assert not journal.claim_run(run.id, "elsewhere:1", stale_after=15)
    journal.finish_run(run.id, result.outcome)
    assert reattach(journal, COMMAND, source_cloud="src", destination_cloud="dst",
                    args=args) is None  # fmt: skip


def test_a_row_that_lost_its_worker_too_often_fails_instead_of_running_again(
    journal: Journal,
) -> None:
    run, row = _sent(journal, "a")
    for n in range(worker.MAX_ATTEMPTS_DISPATCHED):  # each take a worker lost at once
        taken = journal.take_lease(row, f"gone:{n}", ttl=60)
        assert taken is not None and journal.release_lease(taken, f"gone:{n}")
        row = taken
    message = {"v": 1, "journal": journal.journal_id(), "run": run.id, "ops": [row.id]}
    worker.run_message(message, redelivered=True, queue="q")
    failed = journal.operation("dst", "test.copy", "a")
    assert failed is not None and failed.state == FAILED and CALLS == {}
    assert "attempts since it was sent to the workers" in (failed.error or "")


def test_a_local_run_leaves_alone_a_row_a_worker_holds_for_another_run(
    journal: Journal,
) -> None:
    first, row = _sent(journal, "a")
    assert journal.take_lease(row, "elsewhere:1:x", ttl=60) is not None
    engine = Engine(journal, object(), Resolver("dst", journal=journal), workers=1)
    result = engine.run([Pass(kind=Copy(), identity="a", of="a")], command=COMMAND)
    assert result.outcome == "failed" and CALLS == {}
    assert "a worker holds it" in result.errors[0]["error"]
    still = journal.operation("dst", "test.copy", "a")  # untouched: the worker's to end
    assert still is not None and still.state == PENDING and still.run_id == first.id


def _sent(journal: Journal, name: str) -> tuple[RunRecord, OperationRecord]:
    """A run whose one pass ``name`` a coordinator journaled ``pending`` and sent."""
    run = journal.start_run(COMMAND, source_cloud="src", destination_cloud="dst")
    row = journal.transition(run.id, "dst", "test.copy", name, PENDING, action="copy",
                             expected=None, source_id=name)  # fmt: skip
    journal.dispatch([(row, {"of": name, "_attempts": row.attempts})])
    return run, row


def broken_job(run: RunRecord, journal: Journal, events: Any) -> _Job:
    raise ConfigError("cloud 'dst' is not in this worker's clouds.yaml")


def test_a_worker_that_cannot_run_the_job_fails_the_row_at_once(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(worker.JOBS, COMMAND, f"{__name__}:broken_job")
    result, _ = _run(journal, _App(), ["a"])
    assert result.outcome == "failed" and CALLS == {}
    (row,) = journal.operations(run_id=result.run_id)
    assert row.state == FAILED and "not in this worker's clouds.yaml" in (row.error or "")
    assert journal.lease(row.id) is None


def test_a_new_run_follows_a_row_a_live_worker_of_an_earlier_run_holds(
    journal: Journal,
) -> None:
    first, row = _sent(journal, "a")
    taken = journal.take_lease(row, "elsewhere:1:x", ttl=60)
    assert taken is not None
    app = _App()
    engine = _coordinator(journal, app, 1)

    def finish() -> None:  # the earlier run's worker ends its pass
        journal.transition(first.id, "dst", "test.copy", "a", DONE, action="copy",
                           expected=taken, destination_id="dst-a")  # fmt: skip

    threading.Timer(0.5, finish).start()
    result = engine.run([Pass(kind=Copy(), identity="a", of="a")], command=COMMAND)
    assert result.outcome == "succeeded" and result.count("done") == 1
    assert app.sent == [] and CALLS == {}  # followed: neither sent again nor re-pended
    done = journal.operation("dst", "test.copy", "a")
    assert done is not None and done.run_id == first.id and done.attempts == 1


@dataclass(frozen=True, kw_only=True)
class StolenPass(Pass):
    """A pass whose lease another worker steals while it runs."""

    def call(self, ctx: TaskContext) -> str:
        CALLS[str(self.of)] = CALLS.get(str(self.of), 0) + 1
        ctx.stage("exported")
        lease = ctx.journal.lease(ctx.row.id)
        assert lease is not None
        assert ctx.journal.take_lease(ctx.row, "thief:1:x", ttl=60, steal_from=lease.owner)
        ctx.stage("imported")  # refused: this attempt must stop here
        CALLS["went on"] = 1
        return "never"


class _StolenJob(_Job):
    def operation(self, row: OperationRecord) -> tuple[Operation, None]:
        return StolenPass(kind=Copy(), identity="a", of="a"), None


def stolen_job(run: RunRecord, journal: Journal, events: Any) -> _Job:
    return _StolenJob()


def test_an_attempt_whose_lease_was_taken_over_stops_and_writes_nothing(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(worker.JOBS, COMMAND, f"{__name__}:stolen_job")
    run, row = _sent(journal, "a")
    message = {"v": 1, "journal": journal.journal_id(), "run": run.id, "ops": [row.id]}
    worker.run_message(message, redelivered=False, queue="q")
    after = journal.operation("dst", "test.copy", "a")
    # The thief's attempt holds the row: the first neither finished nor failed it.
    assert after is not None and after.state == PENDING and after.stage == "exported"
    assert after.attempts == 2 and journal.lease(after.id).owner == "thief:1:x"  # type: ignore[union-attr]
    assert CALLS == {"a": 1}


def test_a_message_of_several_rows_takes_their_leases_at_once(journal: Journal) -> None:
    run, a = _sent(journal, "a")
    b = journal.transition(run.id, "dst", "test.copy", "b", PENDING, action="copy",
                           expected=None, source_id="b")  # fmt: skip
    journal.dispatch([(b, {"of": "b", "_attempts": 0})])
    held = journal.take_lease(b, "elsewhere:1:x", ttl=60)  # b: another worker has it
    assert held is not None
    message = {"v": 1, "journal": journal.journal_id(), "run": run.id, "ops": [a.id, b.id]}
    worker.run_message(message, redelivered=False, queue="q")
    assert CALLS == {"a": 1}
    done = journal.operation("dst", "test.copy", "a")
    assert done is not None and done.state == DONE and done.attempts == 1
    still = journal.operation("dst", "test.copy", "b")
    assert still is not None and still.state == PENDING and still.attempts == 1
