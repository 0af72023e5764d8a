"""How the kill -9 tests stop ``stackhop import`` at a chosen point: by watching its journal.

The import runs as a child process (one worker, so it goes through the kinds in
plan order); :func:`import_killed_when` reads the journal's operation counts
every few milliseconds and sends ``SIGKILL`` as soon as the test's predicate
holds. Used by ``test_resources_resume.py`` (security groups) and
``test_networking_resume.py`` (networks, subnets, routers).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

#: How long an import may take to reach its kill point (or to finish a re-run).
KILL_TIMEOUT = 240

States = Counter[tuple[str, str]]
"""Operation rows per (kind, state) in a journal."""


def states(journal: Path) -> States:
    """The journal's rows counted by (kind, state); empty while it does not exist yet."""
    if not journal.exists():
        return Counter()
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as db:
            rows = db.execute(
                "SELECT kind, state, count(*) FROM operations GROUP BY kind, state"
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet, or busy: look again
        return Counter()
    return Counter({(k, s): n for k, s, n in rows})


def finished(seen: States, kind: str) -> int:
    """Operations of ``kind`` done or skipped."""
    return seen[(kind, "done")] + seen[(kind, "skipped")]


def import_command(
    archive: Path, journal: Path, selectors: Sequence[str], workers: int = 1
) -> list[str]:
    """``stackhop import`` of ``archive`` into dst as a child process; one worker (the
    default) goes through the kinds in plan order, so a kill point is a place in it."""
    return [
        sys.executable,
        "-m",
        "stackhop.cli.main",
        "--journal",
        str(journal),
        "import",
        "--to",
        "dst",
        str(archive),
        *selectors,
        "--workers",
        str(workers),
    ]


def import_killed_when(
    command: Sequence[str], journal: Path, point: Callable[[States], bool]
) -> States:
    """Run ``command`` and ``kill -9`` it as soon as ``point(journal counts)`` holds."""
    with subprocess.Popen(
        list(command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as proc:
        deadline = time.monotonic() + KILL_TIMEOUT
        while time.monotonic() < deadline:
            seen = states(journal)
            if point(seen):
                proc.send_signal(signal.SIGKILL)  # our own child, by its handle
                proc.wait()
                assert proc.returncode == -signal.SIGKILL, "the import ended before the kill"
                return seen
            if proc.poll() is not None:
                pytest.fail(f"the import finished (exit {proc.returncode}) before the kill point")
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        pytest.fail("the kill point was never reached")


def run_to_the_end(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (a re-run after a kill) to its end."""
    return subprocess.run(list(command), capture_output=True, text=True, timeout=KILL_TIMEOUT)
