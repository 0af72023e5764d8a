"""Schema 5's leases on the journal servers an operator shares between hosts: the
testbed's PostgreSQL and MariaDB. Four processes take the leases of one run at once
(each row taken and finished exactly once); a lease runs out by the server's clock and
its steal fences the first holder."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests import journal_leases
from tests.functional import workers_support

from stackhop.errors import JournalError
from stackhop.journal import DONE, PENDING, Journal

pytestmark = pytest.mark.functional

DATABASE = "shjournal_leases"


@pytest.fixture(params=["postgresql", "mariadb"])
def server_journal(request: pytest.FixtureRequest, seeded: Any) -> Iterator[str]:
    with workers_support.server_journal(request.param, DATABASE) as url:
        yield url


def test_four_processes_take_every_lease_exactly_once(server_journal: str) -> None:
    taken = journal_leases.race(server_journal, processes=4, rows=80)
    every = [identity for got in taken.values() for identity in got]
    assert len(every) == 80 and len(set(every)) == 80
    with Journal(server_journal) as journal:
        rows = journal.operations(run_id=journal_leases.RUN)
        assert len(rows) == 80 and {r.state for r in rows} == {DONE}
        assert {r.attempts for r in rows} == {1}
        assert {r.destination_id for r in rows} <= set(taken)
        assert all(journal.lease(r.id) is None for r in rows)


def test_a_lease_runs_out_by_the_servers_clock_and_its_steal_fences(server_journal: str) -> None:
    with Journal(server_journal) as journal:
        row = journal.transition("r1", "s", "volume", "v1", PENDING, action="copy",
                                 expected=None)
        first = journal.take_lease(row, "host-a:1", ttl=1.0)
        assert first is not None
        assert journal.take_lease(first, "host-b:2", ttl=60) is None
        lease = journal.lease(first.id)
        assert lease is not None and not lease.expired
        time.sleep(1.5)
        lease = journal.lease(first.id)
        assert lease is not None and lease.expired
        second = journal.take_lease(first, "host-b:2", ttl=60)
        assert second is not None
        assert not journal.report(first, stage="exported")
        with pytest.raises(JournalError):
            journal.transition("r1", "s", "volume", "v1", DONE, action="copy", expected=first)
        done = journal.transition("r1", "s", "volume", "v1", DONE, action="copy",
                                  expected=second)
        assert journal.lease(done.id) is None and len(journal.journal_id()) == 36
