"""Renderers: what the operator (or a program) reads for a stream of events."""

from __future__ import annotations

import io
import json

from rich.console import Console

from stackhop.cli.render import (
    JsonRenderer,
    PlainRenderer,
    ProgressRenderer,
    make_renderer,
    scrub,
)
from stackhop.events import Event, EventBus, EventType

T0 = 1_700_000_000.0


def run_events() -> list[Event]:
    """A small run: two kinds, a retry, a warning, a failure and a data transfer."""
    return [
        Event(EventType.RUN_STARTED, run_id="r1", total=4, timestamp=T0),
        Event(EventType.KIND_STARTED, kind="nova.keypair", total=2, run_id="r1", timestamp=T0),
        Event(
            EventType.OPERATION_FINISHED,
            kind="nova.keypair",
            identity="alice/key1",
            operation="create",
            outcome="done",
            run_id="r1",
            detail={"destination_id": "key1"},
            timestamp=T0 + 1,
        ),
        Event(
            EventType.RETRY,
            kind="nova.keypair",
            identity="bob/key2",
            operation="create",
            message="HTTP 503 from http://nova:s3cr3t@127.0.0.1:8774/v2.1",
            detail={"attempt": 1, "delay": 0.5},
            run_id="r1",
            timestamp=T0 + 2,
        ),
        Event(
            EventType.OPERATION_FINISHED,
            kind="nova.keypair",
            identity="bob/key2",
            operation="create",
            outcome="failed",
            message="HTTP 503 twice",
            run_id="r1",
            timestamp=T0 + 3,
        ),
        Event(EventType.WARNING, message="quota for project p1 is below usage", timestamp=T0 + 3),
        Event(EventType.KIND_STARTED, kind="cinder.volume", total=2, run_id="r1", timestamp=T0 + 4),
        *[
            Event(
                EventType.PROGRESS,
                kind="cinder.volume",
                identity="vol-a",
                operation="copy",
                done=done,
                total=4_000_000_000,
                unit="bytes",
                run_id="r1",
                timestamp=T0 + 5 + i,
            )
            for i, done in enumerate((0, 1_000_000_000, 2_000_000_000, 4_000_000_000))
        ],
        Event(
            EventType.OPERATION_FINISHED,
            kind="cinder.volume",
            identity="vol-a",
            operation="copy",
            outcome="done",
            run_id="r1",
            timestamp=T0 + 9,
        ),
        Event(
            EventType.OPERATION_FINISHED,
            kind="cinder.volume",
            identity="vol-b",
            operation="skip",
            outcome="skipped",
            run_id="r1",
            timestamp=T0 + 9,
        ),
        Event(EventType.RUN_FINISHED, outcome="failed", run_id="r1", timestamp=T0 + 75),
    ]


class FakeClock:
    """Steps through the seconds the plain renderer asks for (its progress throttle)."""

    def __init__(self, times: list[float]) -> None:
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


def test_plain_renderer_prints_one_line_per_outcome_and_a_summary() -> None:
    out = io.StringIO()
    # Progress at t=0 (first: printed), 10 (throttled), 20 (throttled), 31 (printed).
    renderer = PlainRenderer(out, progress_interval=30, clock=FakeClock([0, 10, 20, 31]))
    for event in run_events():
        renderer.emit(event)
    renderer.close()
    assert out.getvalue().splitlines() == [
        "run r1: 4 operation(s)",
        "done: nova.keypair alice/key1 (create)",
        "retry: nova.keypair bob/key2 (create): HTTP 503 from "
        "http://nova:***@127.0.0.1:8774/v2.1 (retrying in 0.5s)",
        "failed: nova.keypair bob/key2 (create): HTTP 503 twice",
        "warning: quota for project p1 is below usage",
        "progress: cinder.volume vol-a (copy): 0 bytes of 4.0 GB (0%)",
        "progress: cinder.volume vol-a (copy): 4.0 GB of 4.0 GB (100%)",
        "done: cinder.volume vol-a (copy)",
        "skipped: cinder.volume vol-b (skip)",
        "run failed (run r1): 2 done, 1 skipped, 1 failed; 1 warning(s); 1 retry in 1m15s",
    ]


def test_plain_renderer_summary_for_an_empty_run() -> None:
    out = io.StringIO()
    renderer = PlainRenderer(out)
    renderer.emit(Event(EventType.RUN_STARTED, run_id="r2", total=0, timestamp=T0))
    renderer.emit(Event(EventType.RUN_FINISHED, outcome="done", run_id="r2", timestamp=T0 + 0.25))
    assert out.getvalue().splitlines() == [
        "run r2: 0 operation(s)",
        "run done (run r2): nothing to do in 0.2s",
    ]


def test_json_renderer_writes_one_object_per_event() -> None:
    out = io.StringIO()
    bus = EventBus()
    renderer = JsonRenderer(out)
    bus.subscribe(renderer)
    events = run_events()
    for event in events:
        bus.emit(event)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(events)
    decoded = [json.loads(line) for line in lines]
    assert decoded[0] == {"type": "run_started", "run_id": "r1", "total": 4, "unit": "items",
                          "timestamp": T0}  # fmt: skip
    assert decoded[2]["detail"] == {"destination_id": "key1"}
    assert decoded[3]["message"] == "HTTP 503 from http://nova:***@127.0.0.1:8774/v2.1"
    assert [d["type"] for d in decoded] == [e.type.value for e in events]
    # Everything but the scrubbed URL is exactly the event's own dict.
    for event, line in zip(events[4:], decoded[4:], strict=True):
        assert line == event.as_dict()


def test_no_renderer_prints_a_secret_detail() -> None:
    event = Event(
        EventType.INFO,
        message="connected to mysql+pymysql://nova:hunter2@127.0.0.1/nova",
        detail={"user": "nova", "password": "hunter2", "auth": {"token": "gAAAA"}},
    )
    json_out, plain_out = io.StringIO(), io.StringIO()
    JsonRenderer(json_out).emit(event)
    PlainRenderer(plain_out).emit(event)
    assert "hunter2" not in json_out.getvalue() and "gAAAA" not in json_out.getvalue()
    assert json.loads(json_out.getvalue())["detail"] == {
        "user": "nova",
        "password": "***",
        "auth": {"token": "***"},
    }
    assert plain_out.getvalue() == "connected to mysql+pymysql://nova:***@127.0.0.1/nova\n"
    assert scrub({"password_expires_at": "2026-01-01", "token": None}) == {
        "password_expires_at": "2026-01-01",
        "token": None,
    }


def test_progress_renderer_draws_bars_per_kind_and_prints_problems() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    transfers = []
    with ProgressRenderer(console) as renderer:
        for event in run_events():
            renderer.emit(event)
            transfers.append(
                [(t.description.strip(), t.completed, t.total, t.fields["unit"])
                 for t in renderer.progress.tasks if t.fields["unit"] == "bytes"]
            )  # fmt: skip
    text = out.getvalue()
    # A data transfer gets its own bar in bytes while it runs, gone once it finished.
    assert transfers[8] == [("vol-a", 1_000_000_000, 4_000_000_000, "bytes")]
    assert transfers[-1] == []
    assert "retry: nova.keypair bob/key2 (create): HTTP 503 from http://nova:***@" in text
    assert "failed: nova.keypair bob/key2 (create): HTTP 503 twice" in text
    assert "warning: quota for project p1 is below usage" in text
    assert "s3cr3t" not in text
    # The final frame of the bars: both kinds complete, counts shown.
    final = text[text.rindex("\r") :].splitlines()
    bars = {line.split()[0].split("K")[-1]: line for line in final if "━" in line}
    assert set(bars) == {"nova.keypair", "cinder.volume"}
    assert all(" 2/2 " in line for line in bars.values())
    assert (
        "run failed (run r1): 2 done, 1 skipped, 1 failed; 1 warning(s); 1 retry in 1m15s" in text
    )


def test_make_renderer_chooses_by_flag_and_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_renderer(True, io.StringIO()), JsonRenderer)
    assert isinstance(make_renderer(True, Terminal()), JsonRenderer)
    assert isinstance(make_renderer(False, io.StringIO()), PlainRenderer)
    assert isinstance(make_renderer(False, Terminal()), ProgressRenderer)
