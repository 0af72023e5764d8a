"""Leases taken by several processes at once on one journal (any backend).

Shared by the unit test (SQLite) and the functional one (the testbed's PostgreSQL and
MariaDB): :func:`race` starts ``processes`` processes that each try to take the lease of
every ``pending`` row of a run, finish what they took, and report it; every row must be
taken, and finished, exactly once.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from stackhop.journal import DONE, PENDING, Journal

RUN = "r-lease-race"
SCOPE = "race"
KIND = "race.item"


def fill(location: str, rows: int) -> None:
    """``rows`` pending operations of run :data:`RUN`, as a coordinator leaves them."""
    with Journal(location) as journal:
        for n in range(rows):
            journal.transition(RUN, SCOPE, KIND, f"item-{n:04d}", PENDING, action="copy",
                               expected=None)


def _worker(location: str, owner: str, out: Any, start: Any) -> None:
    taken: list[str] = []
    with Journal(location) as journal:
        rows = journal.operations(run_id=RUN, scope=SCOPE, kind=KIND, state=PENDING)
        start.wait(timeout=120)  # every process has listed the rows: they race from here
        for row in rows:
            mine = journal.take_lease(row, owner, ttl=60)
            if mine is None:
                continue
            journal.transition(RUN, SCOPE, KIND, mine.identity, DONE, action="copy",
                               expected=mine, destination_id=owner)
            taken.append(mine.identity)
    out.put((owner, taken))


def race(location: str, processes: int, rows: int) -> dict[str, list[str]]:
    """Run the race; what each process took, by owner."""
    fill(location, rows)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(processes)
    workers = [ctx.Process(target=_worker, args=(location, f"w{n}", out, start))
               for n in range(processes)]
    for w in workers:
        w.start()
    results = dict(out.get(timeout=300) for _ in workers)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0, f"a racing process ended with {w.exitcode}"
    return results
