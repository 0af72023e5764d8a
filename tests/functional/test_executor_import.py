"""An import through ``--executor celery`` gives the destination and the journal a local
import gives: keypairs, quotas, security groups and rules of the seed's projects, each
import rolled back after. Four workers (two processes each) write the journal at once,
on the testbed's PostgreSQL and on its MariaDB."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.functional.test_resources_roundtrip import DOMAIN_MAP, dst_state
from tests.functional.workers_support import server_journal, worker_env, workers

from stackhop.clouds import connect
from stackhop.journal import Journal

pytestmark = pytest.mark.functional

PROJECTS = [a for p in ("alpha", "beta", "gamma", "delta") for a in ("--project", p)]


def _comparable(state: dict[str, Any]) -> dict[str, Any]:
    """dst's state with the IDs of objects an import made replaced by what names them."""
    names = {g[3]: (g[0], g[1]) for g in state["groups"]}
    groups = sorted(g[:3] for g in state["groups"])
    rules = sorted(
        (names.get(r[0], r[0]), *r[1:7], str(names.get(r[7], r[7])), r[8])
        for r in state["rules"]
    )
    return {**state, "groups": groups, "rules": rules}


def _journal_view(location: str, run_id: str) -> tuple[list[Any], list[Any]]:
    """A run's rows and ID mappings, without IDs, times or run IDs."""
    with Journal(location) as journal:
        rows = sorted(
            (r.kind, r.identity, r.action, r.state, r.attempts, r.error)
            for r in journal.operations(run_id=run_id)
        )
        mapped = sorted((kind, source) for _, kind, source, _ in journal.mappings(scope="dst"))
    return rows, mapped


def _import(journal: str, archive: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "stackhop", "--journal", journal, "import", "--to", "dst",
            str(archive), *DOMAIN_MAP, "-f", "json", *extra]  # fmt: skip
    return subprocess.run(argv, env=worker_env(journal), capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def _rollback(journal: str, run_id: str) -> None:
    argv = [sys.executable, "-m", "stackhop", "--journal", journal, "rollback", "--to", "dst",
            "--run", run_id]  # fmt: skip
    done = subprocess.run(argv, env=worker_env(journal), capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize(
    "database",
    [
        "postgresql",
        # About two minutes; make test keeps PostgreSQL here and MariaDB's lease race in
        # test_journal_leases_on_servers.py. make test-long.
        pytest.param("mariadb", marks=pytest.mark.long),
    ],
)
def test_an_import_on_four_workers_gives_what_a_local_import_gives(
    seeded: Any, database: str, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    archive = tmp_path / "src.tar.zst"
    exported = cli("export", "--from", "src", "-o", str(archive), *PROJECTS)
    assert exported.code == 0, exported.err
    dst = connect("dst")
    before = dst_state(dst)
    local_journal = str(tmp_path / "local.sqlite")
    local = _import(local_journal, archive)
    assert local.returncode == 10, local.stderr[-3000:]  # the seed's known conflicts
    local_run = _run_id(local.stdout)
    local_view = _journal_view(local_journal, local_run)
    try:
        after_local = _comparable(dst_state(dst))
    finally:
        _rollback(local_journal, local_run)
    assert dst_state(dst) == before
    with server_journal(database, "shjournal_celimport") as journal:
        with workers(journal, ["stackhop"], ["stackhop"], ["stackhop"], ["stackhop"],
                     concurrency=2) as pool:  # fmt: skip
            remote = _import(journal, archive, "--executor", "celery")
        assert remote.returncode == 10, remote.stderr[-3000:]
        remote_run = _run_id(remote.stdout)
        try:
            after_remote = _comparable(dst_state(dst))
            assert after_remote == after_local
            assert _journal_view(journal, remote_run) == local_view
            # The workers did the creates, several of them at once.
            ran = [line for w in pool for line in w.events("finished")]
            assert len({line["pid"] for line in ran}) > 1
            with Journal(journal) as j:
                assert j.run(remote_run).executor == "celery"
                assert len(ran) == sum(1 for r in j.operations(run_id=remote_run)
                                       if r.action in ("create", "update"))  # fmt: skip
        finally:
            _rollback(journal, remote_run)
    assert dst_state(dst) == before


def _run_id(stdout: str) -> str:
    return str(json.loads(stdout)["run_id"])
