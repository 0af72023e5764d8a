"""``stackhop status --run ID --follow`` on a SQLite journal another thread writes: the
events of what the run's operations report, the run's own exit code at its end, and a
stop with one line when a celery run has nobody to drive it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackhop.errors import OperationFailedError, TransientError
from stackhop.events import CollectingSink, EventType
from stackhop.executor.follow import follow
from stackhop.journal import DONE, FAILED, PENDING, Journal


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "j.sqlite") as j:
        yield j


def test_follow_shows_what_the_run_reports_and_ends_with_it(journal: Journal) -> None:
    run = journal.start_run("volumes copy", source_cloud="src", destination_cloud="dst")
    row = journal.transition(run.id, "s", "volume", "v1", PENDING, action="copy",
                             expected=None, attempt=True)  # fmt: skip

    def elsewhere() -> None:  # the run's own process, on another host for all we know
        journal.report(row, stage="exported", progress={"done": 5, "total": 10})
        journal.transition(run.id, "s", "volume", "v1", DONE, action="copy", expected=row,
                           destination_id="d1")  # fmt: skip
        journal.finish_run(run.id, "succeeded")

    events = CollectingSink()
    threading.Timer(0.3, elsewhere).start()
    assert follow(journal, run.id[:8], events, poll=0.05) == 0
    assert [e.message for e in events.of_type(EventType.STAGE)] == ["exported"]
    assert [e.done for e in events.of_type(EventType.PROGRESS)] == [5]
    (finished,) = events.of_type(EventType.OPERATION_FINISHED)
    assert finished.outcome == "done" and finished.detail == {"destination_id": "d1"}


def test_follow_of_a_failed_run_exits_as_its_command_did(journal: Journal) -> None:
    run = journal.start_run("volumes copy", source_cloud="src", destination_cloud="dst")
    row = journal.transition(run.id, "s", "volume", "v1", PENDING, action="copy",
                             expected=None, attempt=True)  # fmt: skip
    journal.transition(run.id, "s", "volume", "v1", FAILED, action="copy", expected=row,
                       error="boom")  # fmt: skip
    journal.finish_run(run.id, "failed")
    with pytest.raises(OperationFailedError) as caught:
        follow(journal, run.id, CollectingSink(), poll=0.05)
    assert caught.value.exit_code == 12 and "1 operation(s) failed" in caught.value.message


def test_a_celery_run_whose_coordinator_is_gone_is_not_followed_forever(
    journal: Journal,
) -> None:
    run = journal.start_run("volumes copy", source_cloud="src", destination_cloud="dst")
    assert journal.claim_run(run.id, f"{socket.gethostname()}:999999999", stale_after=15)
    journal.transition(run.id, "s", "volume", "v1", PENDING, action="copy", expected=None)
    with pytest.raises(TransientError, match="re-run the same command"):
        follow(journal, run.id, CollectingSink(), poll=0.05)
