"""The journal on a database server (the testbed's PostgreSQL) that restarts under it.

The testbed's PostgreSQL holds no live cloud's database, so it can be restarted
here: stopped as ``systemctl restart`` does (fast shutdown, SIGINT: every
session ends at once) while a journal is open and in use, kept down a few
seconds, started again. The journal's next calls wait for it and succeed,
with nothing lost of what was committed before; a journal URL that nothing
answers fails at once, in one line, without waiting. ``bench/chaos_infra.py``
does the same in the middle of a ``volumes copy`` (``make chaos``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from testbed import layout
from testbed.infra import postgresql

from stackhop.errors import JournalError
from stackhop.journal import DONE, PENDING, Journal

pytestmark = pytest.mark.functional

DATABASE = "shjournal_restart"


@pytest.fixture
def server_journal(seeded: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    postgresql.require()
    postgresql.drop_database(DATABASE)
    postgresql.create_database(DATABASE)
    monkeypatch.setenv("PGPASSWORD", layout.DB_PASSWORD)  # never in the URL
    try:
        yield f"postgresql://{layout.DB_USER}@{layout.HOST}:{layout.POSTGRES_PORT}/{DATABASE}"
    finally:
        postgresql.daemon().ensure()
        postgresql.drop_database(DATABASE)


def _restart(down: float) -> None:
    server = postgresql.daemon()
    pid = server.pid()
    assert pid is not None, "the testbed's PostgreSQL is not running"
    os.kill(pid, signal.SIGINT)  # fast shutdown of the postmaster the testbed started
    deadline = time.monotonic() + 30
    while server.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server.running(), "PostgreSQL did not stop"
    time.sleep(down)
    server.ensure()


def test_journal_waits_for_its_restarted_server_and_loses_nothing(server_journal: str) -> None:
    with Journal(server_journal) as journal:
        assert journal.url.drivername == "postgresql+psycopg"  # the driver stackhop ships
        run = journal.start_run("volumes copy", source_cloud="src", destination_cloud="dst")

        def done(identity: str) -> None:
            pending = journal.transition(run.id, "dst", "volume", identity, PENDING,
                                         action="create", expected=None, attempt=True)
            journal.transition(run.id, "dst", "volume", identity, DONE, action="create",
                               expected=pending)

        done("v-before")
        restarting = threading.Thread(target=_restart, args=(4.0,))
        restarting.start()
        time.sleep(1.0)  # the server is going or gone: the pooled connections are dead
        started = time.monotonic()
        done("v-during")
        waited = time.monotonic() - started
        restarting.join()
        done("v-after")
        states = {op.identity: op.state for op in journal.operations(run_id=run.id)}
    assert states == {"v-before": DONE, "v-during": DONE, "v-after": DONE}
    assert waited > 1.0, f"the call took {waited:.1f} s: the server was never away for it"


def test_journal_server_that_does_not_answer_fails_at_once_in_one_line() -> None:
    started = time.monotonic()
    with pytest.raises(JournalError) as caught:
        Journal(f"postgresql://{layout.DB_USER}@{layout.HOST}:1/nothing")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "\n" not in message and "refused the connection" in message and "re-run" in message
