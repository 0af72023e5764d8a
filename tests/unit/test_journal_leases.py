"""Schema 5's leases on a SQLite journal: take, fence, renew, release, expire, race."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests import journal_leases

from stackhop.errors import JournalError
from stackhop.journal import DONE, PENDING, Journal, OperationRecord
from stackhop.journal_schema import operations, upgrade


def _pending(journal: Journal, identity: str = "v1") -> OperationRecord:
    return journal.transition("r1", "s", "volume", identity, PENDING, action="copy",
                              expected=None, attempt=True)


def test_a_lease_is_taken_once_and_counts_an_attempt(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        row = _pending(journal)
        taken = journal.take_lease(row, "host-a:1", ttl=60)
        assert taken is not None and taken.attempts == row.attempts + 1
        assert journal.take_lease(row, "host-b:2", ttl=60) is None  # seen attempts moved
        assert journal.take_lease(taken, "host-b:2", ttl=60) is None  # held, not run out
        lease = journal.lease(row.id)
        assert lease is not None and lease.owner == "host-a:1" and not lease.expired
        assert journal.renew_lease(taken, "host-a:1", ttl=60)
        assert not journal.renew_lease(taken, "host-b:2", ttl=60)


def test_a_renewed_lease_outlives_its_first_term(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        taken = journal.take_lease(_pending(journal), "host-a:1", ttl=0.3)
        assert taken is not None and journal.renew_lease(taken, "host-a:1", ttl=60)
        time.sleep(0.5)
        lease = journal.lease(taken.id)
        assert lease is not None and not lease.expired
        assert journal.take_lease(taken, "host-b:2", ttl=60) is None


def test_a_stolen_lease_hands_over_what_the_first_holder_reported(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        row = _pending(journal)  # as the coordinator sent it
        first = journal.take_lease(row, "host-a:1", ttl=0.2)
        assert first is not None
        assert journal.report(first, stage="exported", destination_id="vol-x")
        time.sleep(0.4)
        stolen = journal.take_lease(first, "host-b:2", ttl=60)
        assert stolen is not None
        assert (stolen.stage, stolen.destination_id) == ("exported", "vol-x")


def test_an_expired_lease_is_stolen_and_fences_the_first_holder(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        first = journal.take_lease(_pending(journal), "host-a:1", ttl=0.2)
        assert first is not None
        time.sleep(0.4)
        lease = journal.lease(first.id)
        assert lease is not None and lease.expired
        second = journal.take_lease(first, "host-b:2", ttl=60)
        assert second is not None and second.attempts == first.attempts + 1
        # Every write of the first holder now changes nothing.
        assert not journal.report(first, stage="exported")
        assert not journal.renew_lease(first, "host-a:1", ttl=60)
        with pytest.raises(JournalError):
            journal.transition("r1", "s", "volume", "v1", DONE, action="copy", expected=first)
        assert journal.report(second, stage="exported")
        done = journal.transition("r1", "s", "volume", "v1", DONE, action="copy",
                                  expected=second, destination_id="d1")
        assert done.state == DONE and journal.lease(done.id) is None  # the outcome ends it
        with journal.engine.connect() as conn:
            left = conn.execute(sa.select(operations.c.lease_owner, operations.c.lease_expires,
                                          operations.c.payload)
                                .where(operations.c.id == done.id)).one()
        assert tuple(left) == (None, None, None)


def test_a_released_lease_is_free_at_once(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        taken = journal.take_lease(_pending(journal), "host-a:1", ttl=60)
        assert taken is not None
        assert not journal.release_lease(taken, "host-b:2")
        assert journal.release_lease(taken, "host-a:1")
        assert journal.lease(taken.id) is None
        assert journal.take_lease(taken, "host-b:2", ttl=60) is not None


def test_a_version_4_journal_gains_leases_and_an_id_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v4.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    assert upgrade(engine, target=4) == 4
    now = "2026-12-01 10:00:00.000000"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO operations (run_id, scope, kind, identity, action, state, attempts, "
            f"created_at, updated_at) VALUES ('r-4', 's', 'volume', 'v9', 'copy', 'pending', 1, "
            f"'{now}', '{now}')"
        )
    engine.dispose()
    with Journal(path) as journal:
        assert journal.schema_version == 5
        row = journal.operation("s", "volume", "v9")
        assert row is not None and journal.lease(row.id) is None  # old rows: no lease
        assert journal.take_lease(row, "host-a:1", ttl=60) is not None
        ident = journal.journal_id()
    with Journal(path) as journal:
        assert journal.journal_id() == ident and len(ident) == 36
    assert Journal(tmp_path / "other.sqlite").journal_id() != ident


def test_a_version_5_migration_cut_short_is_taken_up_again(tmp_path: Path) -> None:
    """As MariaDB leaves it when a kill comes between two of its DDL statements."""
    path = tmp_path / "cut.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    assert upgrade(engine, target=4) == 4
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE operations ADD COLUMN lease_owner VARCHAR(255)")
        conn.exec_driver_sql("CREATE INDEX ix_operations_run_state ON operations (run_id, state)")
    engine.dispose()
    with Journal(path) as journal:
        assert journal.schema_version == 5
        assert journal.take_lease(_pending(journal), "host-a:1", ttl=60) is not None


def test_four_processes_take_every_lease_exactly_once(tmp_path: Path) -> None:
    location = str(tmp_path / "race.sqlite")
    taken = journal_leases.race(location, processes=4, rows=60)
    every = [identity for got in taken.values() for identity in got]
    assert sorted(every) == sorted(set(every)) and len(every) == 60
    assert sum(1 for got in taken.values() if got) >= 2  # they did race
    with Journal(location) as journal:
        rows = journal.operations(run_id=journal_leases.RUN)
        assert {r.state for r in rows} == {DONE}
        assert {r.attempts for r in rows} == {1}  # one take each, nothing stolen
