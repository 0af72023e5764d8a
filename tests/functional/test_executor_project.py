"""``project migrate --executor celery``: the seeded project ``beta`` moved with its import
and its volume passes on two workers (the Ceph pair's also serving API-only work), the
journal a SQLite file the workers share on this host. Undone after (testbed.undo)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testbed.undo import undo_migration
from tests.functional.test_executor_celery import CEPH_QUEUE, FILE_QUEUE
from tests.functional.test_project_migrate import (
    PROJECT,
    VOLUMES,
    _connect,
    _dst_state,
    _project_id,
)
from tests.functional.workers_support import run_cli, workers
from tests.support.beta import admin_role_in

from stackhop.errors import ConflictError
from stackhop.journal import DONE, Journal
from stackhop.volumes.passes import KIND

pytestmark = pytest.mark.functional


# A whole project migration (about three minutes): make test keeps its parts on workers,
# the import (test_executor_import.py) and the volume passes (test_executor_celery.py).
# make test-long.
@pytest.mark.long
def test_project_migrate_runs_its_import_and_volume_passes_on_workers(
    seeded: Any, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    src_project = _project_id(_connect("src"))
    with admin_role_in(_connect("dst"), PROJECT):
        before = _dst_state(src_project)
        try:
            with workers(str(journal), [FILE_QUEUE], [CEPH_QUEUE, "stackhop"]) as pool:
                done = run_cli(str(journal), "project", "migrate", "--from", "src",
                               "--to", "dst", "--project", PROJECT, "--all-volumes",
                               "-o", str(tmp_path / "beta"), "--executor", "celery",
                               "-f", "json")  # fmt: skip
            assert done.returncode == ConflictError.exit_code, done.stderr[-3000:]  # frank
            report = json.loads(done.stdout)
            assert {p["phase"]: p["status"] for p in report["phases"]}["import"] == "done"
            on_files, on_ceph = pool
            with Journal(journal) as j:
                passes = {r.identity: r for r in j.operations(kind=KIND)}
                imported = [r for r in j.operations() if r.kind.startswith("neutron.")
                            and r.action == "create" and r.state == DONE]  # fmt: skip
            assert {r.state for r in passes.values()} == {DONE} and len(passes) == len(VOLUMES)
            ran = {line["row"]: line["queue"] for w in pool for line in w.events("finished")}
            # Each pass on the worker of its storage pair, the creates on the default queue.
            assert sorted(ran[r.id] for r in passes.values()) == sorted([CEPH_QUEUE, FILE_QUEUE])
            assert imported and {ran[r.id] for r in imported} == {"stackhop"}
            assert {line["row"] for line in on_files.events("finished")} <= {
                r.id for r in passes.values()
            }
        finally:
            undo_migration(journal)
        assert _dst_state(src_project) == before
