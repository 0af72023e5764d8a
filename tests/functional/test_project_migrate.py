"""``stackhop project migrate`` on the testbed: the seeded project ``beta`` moved end to end.

``beta`` has a dense 1 GiB Ceph volume (copied by the rbd method), a sparse
file-backed volume (the stream method), security groups ``ssh`` and ``mgmt``
(``mgmt`` refers to ``ssh``), quotas, the keypairs of its members (one of
them, frank's, belongs to a user who does not exist on dst: a conflict the
exit code reports) and an image. The migration is killed with SIGKILL in
phase 3 while a volume is being copied, then run again: it completes with
nothing duplicated; a third run is a no-op. Everything the test moved is
removed from dst afterwards (:mod:`testbed.undo`), so dst is as the seed left
it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openstack
import pytest
from testbed.undo import undo_migration
from tests.support.beta import admin_role_in, dst_state

from stackhop.errors import ConflictError
from stackhop.journal import Journal

if TYPE_CHECKING:
    from tests.functional.conftest import CliResult, Testbed

PROJECT = "beta"
#: What the seed gives beta on src (docs/seed.md).
VOLUMES = {"beta-archive": "rbd", "beta-logs": "stream"}
GROUPS = ("ssh", "mgmt")
KILL_TIMEOUT = 900


def _connect(cloud: str) -> Any:
    return openstack.connect(cloud=cloud)


def _project_id(conn: Any) -> str:
    return str(conn.identity.find_project(PROJECT, domain_id="default").id)


@pytest.fixture
def admin_in_beta(seeded: Testbed) -> Iterator[None]:
    """The operator's admin user holds the admin role in dst's beta, as a migration needs
    (:func:`tests.support.beta.admin_role_in`)."""
    with admin_role_in(_connect("dst"), PROJECT):
        yield


def _dst_state(project_id: str) -> dict[str, list[str]]:
    return dst_state(_connect("dst"), project_id)


def _volume_pending(journal_path: Path) -> bool:
    """A volume copy of phase 3 has started (read the journal without locking it)."""
    if not journal_path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "select count(*) from operations where kind = 'volume' and state = 'pending'"
            ).fetchone()
    except sqlite3.Error:
        return False
    return bool(row and row[0])


# About 70 s; make test keeps the whole project migrate in test_servers_migrate.py's servers
# phase test, and the phase resume in tests/unit/test_project_phases.py; the kill trials
# are bench/chaos_kills.py --commands project-migrate.
@pytest.mark.long
def test_project_migrate_killed_in_phase_3_then_resumed_then_no_op(
    admin_in_beta: None, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    journal_path = tmp_path / "journal.sqlite"
    out, backups = tmp_path / "beta", tmp_path / "backups"
    src_project = _project_id(_connect("src"))
    before = _dst_state(src_project)
    assert not set(GROUPS) & set(before["groups"]), "dst beta already holds migrated groups"
    argv = [
        "--journal",
        str(journal_path),
        "project",
        "migrate",
        "--from",
        "src",
        "--to",
        "dst",
        "--project",
        PROJECT,
        "--all-volumes",
        "-o",
        str(out),
        "--backup-to",
        str(backups),
    ]
    try:
        # 1. Run in a child process and kill it while phase 3 copies a volume.
        child = subprocess.Popen(
            [sys.executable, "-m", "stackhop.cli.main", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ),
        )
        deadline = time.monotonic() + KILL_TIMEOUT
        while not _volume_pending(journal_path):
            assert child.poll() is None, "the migration ended before a volume copy started"
            assert time.monotonic() < deadline, "no volume copy started in time"
            time.sleep(0.5)
        child.send_signal(signal.SIGKILL)
        child.wait()
        with Journal(journal_path) as journal:
            phases = {
                op.identity.split("/")[-1]: op.state
                for op in journal.operations(kind="project.phase")
            }
        assert phases == {"gather": "done", "export": "done", "import": "pending"}

        # 2. The same command again: continues at phase 3 and completes.
        result = cli(*argv, "-f", "json")
        assert result.code == ConflictError.exit_code, result.err  # frank has no dst user
        report = result.json()
        assert [p["phase"] for p in report["phases"]] == [
            "gather",
            "export",
            "import",
            "servers",
            "usage",
            "cleanup",
        ]
        assert [p["status"] for p in report["phases"][:2]] == ["done earlier"] * 2
        assert [p["status"] for p in report["phases"][2:]] == ["done"] * 4
        assert report == json.loads((out / "report.json").read_text())
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for line in report["objects"]:
            by_kind.setdefault(line["kind"], []).append(line)
        conflicts = [o for o in report["objects"] if o["outcome"] == "conflict"]
        assert [o["identity"] for o in conflicts] == ["Default/frank/frank-deploy"]
        assert len(by_kind["volume"]) == 2
        assert {o["outcome"] for o in by_kind["volume"]} == {"moved"}
        assert all(o["destination_id"] for o in by_kind["volume"])

        # Nothing twice on dst: one copy of each volume and group.
        after = _dst_state(src_project)
        assert after["volumes"] == sorted(before["volumes"] + list(VOLUMES))
        assert sorted(after["groups"]) == sorted(before["groups"] + list(GROUPS))
        dst = _connect("dst")
        for line in by_kind["volume"]:
            volume = dst.block_storage.get_volume(line["destination_id"])
            assert volume.status == "available"
            assert volume.project_id == src_project
        assert (out / "resources.tar.zst").exists()
        # One complete backup per volume, from the same read (the killed pass's part is gone).
        assert sorted(p.name for p in backups.iterdir()) == sorted(
            f"{o['source_id']}.tar" for o in by_kind["volume"]
        )
        with Journal(journal_path) as journal:
            copied = {
                op.source_id: op.before for op in journal.operations(kind="volume")
                if op.state == "done"
            }
        for line in by_kind["volume"]:
            checked = cli("volumes", "backup", "verify", str(backups / f"{line['source_id']}.tar"),
                          "-f", "json")  # fmt: skip
            assert checked.code == 0, checked.err
            facts = copied[line["source_id"]]
            assert checked.json()["content_digest"] == facts["content_digest"]
            assert facts["backup_stream"]["bytes"] == (
                backups / f"{line['source_id']}.tar"
            ).stat().st_size
        usage = out / "usage"
        assert (usage / "report.html").stat().st_size > 0
        assert (usage / "summary.csv").read_text().count("\n") > 1

        # 3. A third run is a no-op: every phase done earlier, the journal unchanged.
        with Journal(journal_path) as journal:
            operations_before = [op.as_dict() for op in journal.operations()]
        again = cli(*argv, "-f", "json")
        assert again.code == ConflictError.exit_code, again.err
        assert {p["status"] for p in again.json()["phases"]} == {"done earlier"}
        with Journal(journal_path) as journal:
            phase_rows = [op for op in journal.operations() if op.kind != "project.phase"]
            assert [op.as_dict() for op in phase_rows] == [
                op for op in operations_before if op["kind"] != "project.phase"
            ]
        assert _dst_state(src_project) == after
    finally:
        undo_migration(journal_path)
    assert _dst_state(src_project) == before


def test_project_migrate_dry_run_changes_nothing(
    admin_in_beta: None, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    src_project = _project_id(_connect("src"))
    before = _dst_state(src_project)
    result = cli(
        "--journal",
        str(tmp_path / "j.sqlite"),
        "project",
        "migrate",
        "--from",
        "src",
        "--to",
        "dst",
        "--project",
        PROJECT,
        "--all-volumes",
        "--dry-run",
        "-o",
        str(tmp_path / "out"),
        "-f",
        "json",
    )
    assert result.code == 0, result.err
    rows = result.json()["plan"]
    assert {r["phase"] for r in rows} == {"gather", "import", "usage", "cleanup"}
    volume_rows = {r["object"]: r for r in rows if r["object"].startswith("volume ")}
    assert set(volume_rows) == {f"volume {name}" for name in VOLUMES}
    for name, method in VOLUMES.items():
        assert f"by {method}" in volume_rows[f"volume {name}"]["detail"]
    assert any(r["action"] == "conflict" and "frank" in r["object"] for r in rows)
    assert _dst_state(src_project) == before
    assert not (tmp_path / "out").exists()


def test_project_migrate_bad_input(
    cli: Callable[..., CliResult], tmp_path: Path, seeded: Testbed
) -> None:
    base = ["--journal", str(tmp_path / "j.sqlite"), "project", "migrate"]
    same = cli(*base, "--from", "src", "--to", "src", "--project", PROJECT)
    assert same.code == 2 and "same cloud" in same.err
    unknown = cli(
        *base,
        "--from",
        "src",
        "--to",
        "dst",
        "--project",
        "no-such-project",
        "-o",
        str(tmp_path / "o"),
    )
    assert unknown.code == 2 and "no-such-project" in unknown.err
    assert len(unknown.err.strip().splitlines()) == 1
    both = cli(
        *base,
        "--from",
        "src",
        "--to",
        "dst",
        "--project",
        PROJECT,
        "--all-volumes",
        "--volumes",
        "x",
    )
    assert both.code == 2 and "one of" in both.err
