"""The short form of ``bench/chaos_volumes.py``: one ``kill -9`` per copy method, journal lost.

Runs the bench script itself (its own project on both clouds, one 1 GiB volume per method,
everything removed after): per method a ``volumes copy`` killed at a random moment (seed
17), its journal deleted, then re-run until it exits 0. The stream method runs in
``make test``; the rbd and image methods' trials in ``make test-long``. The script's goal is the
test's: no second copy, none missing, every digest read back from the backend equal to
the source's, nothing left that cleanup does not find. ``make chaos`` runs 20 per method.
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


def _killed_and_rerun(methods: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos_volumes.py"), "--kills", "1", "--volumes",
         "1", "--journal", "deleted", "--no-save", "--methods", ",".join(methods)],
        capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["method"] for r in rows] == methods, proc.stdout + proc.stderr
    for row in rows:
        assert row["journal"] == "deleted" and row["rerun"]["completed"], row
        assert (row["duplicates"], row["missing"], row["digest_mismatches"]) == (0, 0, 0), row
        assert row["cleanup_failed"] == 0 and row["stale_images"] == 0, row
        assert row["stale_source_snapshots"] == 0, row  # the re-run's full pass swept them
    assert proc.returncode == 0 and "goal met" in proc.stdout, proc.stdout[-2000:] + proc.stderr


def test_killed_copies_rerun_without_journal_make_one_equal_copy_each(seeded: Any) -> None:
    _killed_and_rerun(["stream"])


@pytest.mark.long  # about a minute; rbd kills are also in test_project_migrate.py's
def test_killed_rbd_method_copy_rerun_without_journal(seeded: Any) -> None:
    _killed_and_rerun(["rbd"])


@pytest.mark.long  # about two minutes (a 1 GiB volume through two images, twice)
def test_killed_image_method_copy_rerun_without_journal(seeded: Any) -> None:
    _killed_and_rerun(["image"])
