"""The short form of ``bench/chaos_infra.py``: one trial per infrastructure fault mid-copy.

Runs the bench script itself (a project of its own on both clouds, one 1 GiB volume per
method, everything removed after): a ``volumes copy`` whose journal's PostgreSQL is
restarted, one whose destination Ceph OSD is stopped and started again, and one whose ssh
sessions are cut, each at a seeded random moment. The script's goal is the test's: every
copy completes (riding the fault out, or after a one-line stop and re-runs), no second
copy, none missing, every digest read back from the backend equal to the source's, and
``volumes cleanup`` succeeds. A few minutes (a Ceph OSD's restart among them): ``make
test-long``; ``make chaos`` runs three trials per fault. (The ssh cut alone is in
``make test``: ``test_volumes_ssh_cut.py``; the journal's server restart alone too:
``test_journal_server.py``.)
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


@pytest.mark.long
def test_copies_survive_sql_restart_osd_stop_and_ssh_cut(seeded: Any) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos_infra.py"), "--trials", "1", "--no-save"],
        capture_output=True, text=True, timeout=1800, check=False,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["fault"] for r in rows] == ["sql", "osd", "ssh"], proc.stdout + proc.stderr
    for row in rows:
        assert row["hit"] is not None, row  # the fault came mid-copy
        assert row["rerun"]["completed"], row
        assert (row["duplicates"], row["missing"], row["digest_mismatches"]) == (0, 0, 0), row
        assert row["cleanup_failed"] == 0, row
        assert not row.get("first_stop", "").startswith("NOT ONE LINE"), row
    assert proc.returncode == 0 and "goal met" in proc.stdout, proc.stdout[-2000:] + proc.stderr
