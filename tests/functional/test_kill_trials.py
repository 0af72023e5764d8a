"""The short form of ``bench/chaos_kills.py``: one ``kill -9`` per command, journal lost.

Runs the bench script itself, one command at a time: an uninterrupted run measures how
long a run takes, then the command is killed at a random moment within that (seed 17),
its journal deleted, and re-run until it completes. ``images copy`` and ``images
move-store`` (three images of 24-56 MiB each, on src, removed after) run in ``make test``;
``project migrate`` of the seeded ``beta`` (minutes: the uninterrupted run, the trial and
two undos) in ``make test-long``. The script's goal is the test's: one copy per source (none
missing), data equal to the source's, nothing left over, every stop one line, and the
cloud as before once the trial is undone. ``bench/chaos_kills.py --kills 6`` runs the
journal kept and deleted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]


def _killed_and_rerun(command: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos_kills.py"), "--kills", "1", "--journal",
         "deleted", "--no-save", "--commands", command],
        capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = [line for line in lines if "uninterrupted" not in line]
    assert [r["command"] for r in rows] == [command], proc.stdout + proc.stderr
    (row,) = rows
    assert row["journal"] == "deleted" and row["rerun"]["completed"], row
    assert not [s for s in row["rerun"]["stops"] if s.startswith("NOT ONE LINE")], row
    assert (row["duplicates"], row["missing"], row["data_mismatches"]) == (0, 0, 0), row
    assert row["leftovers"] == 0 and row["findings"] == [], row
    assert row["as_before"], row
    assert proc.returncode == 0 and "goal met" in proc.stdout, proc.stdout[-2000:] + proc.stderr
    return row


def test_killed_images_copy_rerun_without_journal_makes_one_equal_copy_each(seeded: Any) -> None:
    row = _killed_and_rerun("images-copy")
    assert row["orphan_files"] == [], row  # no upload's data left in dst's Glance stores


def test_killed_move_store_rerun_without_journal_finishes_every_move(seeded: Any) -> None:
    row = _killed_and_rerun("move-store")
    assert row["orphan_files"] == [], row


@pytest.mark.long  # minutes: beta migrated twice (uninterrupted, then killed and re-run)
def test_killed_project_migrate_rerun_without_journal_then_undone(seeded: Any) -> None:
    row = _killed_and_rerun("project-migrate")
    assert row["undo_error"] == "" and row["stale_source_snapshots"] == [], row
