"""``--executor celery`` on the testbed: real RabbitMQ (vhost ``stackhop``), real
``stackhop worker`` processes, the journal on the testbed's PostgreSQL or MariaDB.

Six volumes, two workers on two queues: the file volumes' passes go to the queue of
the file storage hosts, the Ceph volumes' to that of the two clusters, each worker
serving one. A run has one method and the testbed's file and Ceph backends need
different ones (stream, rbd), so the six volumes are two coordinators side by side
sharing the workers and the journal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.functional.volumes_support import (
    MIB,
    Sandbox,
    digest_of,
    file_backend_path,
    write_pattern,
)
from tests.functional.workers_support import (
    private_broker,
    server_journal,
    worker_env,
    workers,
)

from stackhop.journal import DONE, PENDING, Journal
from stackhop.volumes.passes import KIND

pytestmark = pytest.mark.functional

FILE_QUEUE = "stackhop.volumes.src-storage.dst-storage"
CEPH_QUEUE = "stackhop.volumes.src-ceph.dst-ceph"
PIECES = [0, 3, 200, 511, 1023]


def _copy(
    journal: str, box: Sandbox, method: str, volumes: list[Any], *extra: str, **env: str
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "stackhop", "--log-json", "volumes", "copy",
            "--from", "src", "--to", "dst", "--project", box.name, "--method", method,
            "--executor", "celery", "--workers", "3", "-f", "json", *extra]  # fmt: skip
    for volume in volumes:
        argv += ["--volume", volume.id]
    return subprocess.Popen(argv, env=worker_env(journal, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.parametrize("database", ["postgresql"])
def test_six_volumes_on_two_queues_each_pass_on_the_worker_of_its_storage(
    seeded: Any, database: str
) -> None:
    with Sandbox.create("voltest-celery") as box, \
            server_journal(database, "shjournal_celery") as journal:  # fmt: skip
        files = []
        for n in range(3):
            volume = box.volume(f"voltest-cf{n}", volume_type="file")
            write_pattern(file_backend_path("src", volume.id), f"celery-{n}", PIECES)
            files.append(volume)
        cephs = [box.volume(f"voltest-cc{n}", volume_type="ceph") for n in range(3)]
        with workers(journal, [FILE_QUEUE], [CEPH_QUEUE, "stackhop"]) as (on_files, on_ceph):
            runs = [_copy(journal, box, "stream", files), _copy(journal, box, "rbd", cephs)]
            outputs = [proc.communicate(timeout=900) for proc in runs]
        for proc, (_, err) in zip(runs, outputs, strict=True):
            assert proc.returncode == 0, err[-3000:]
        results = [json.loads(out) for out, _ in outputs]
        # Every pass ran once, on the worker serving the queue of its storage hosts.
        with Journal(journal) as j:
            for result, volumes, worker, queue in (
                (results[0], files, on_files, FILE_QUEUE),
                (results[1], cephs, on_ceph, CEPH_QUEUE),
            ):
                rows = [r for r in j.operations(run_id=result["run_id"], kind=KIND)]
                assert sorted(r.source_id or "" for r in rows) == sorted(v.id for v in volumes)
                assert {r.state for r in rows} == {DONE}
                assert {r.attempts for r in rows} == {1}
                finished = {line["row"]: line for line in worker.events("finished")}
                assert {r.id for r in rows} <= set(finished)
                assert {finished[r.id]["queue"] for r in rows} == {queue}
                assert {finished[r.id]["outcome"] for r in rows} == {"done"}
                assert j.run(result["run_id"]).outcome == "succeeded"
        # The other worker ran none of them; each source has one verified copy.
        assert not {line["row"] for line in on_ceph.events("started")} & {
            line["row"] for line in on_files.events("started")
        }
        copies = {v.name: v for v in box.volumes("dst")}
        assert len(copies) == 6
        for outcome in results[0]["volumes"] + results[1]["volumes"]:
            assert outcome["outcome"] == "done"
            assert digest_of("dst", outcome["destination_id"]) == digest_of(
                "src", outcome["volume_id"]
            )


def _pending_row(journal: str, run_outcome: Callable[[], int | None], at_least: float) -> Any:
    """The first ``volume`` row of the journal once a pass reported ``at_least`` of its
    bytes (polled while the coordinator runs)."""
    deadline = time.monotonic() + 600
    with Journal(journal) as j:
        while time.monotonic() < deadline:
            assert run_outcome() is None, "the copy ended before the moment the test waits for"
            for row in j.operations(kind=KIND):
                progress = row.progress or {}
                if row.state == PENDING and progress.get("total") and (
                    progress.get("done", 0) >= at_least * progress["total"]
                ):
                    return row
            time.sleep(0.2)
    raise AssertionError("no pass reached the point the test waits for")


def _stream_agents() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "stream_agent" in cmdline:
                found.append(cmdline)
    return found


def _random_volume(box: Sandbox, name: str, gib: int) -> Any:
    """A file volume full of incompressible data (a random MiB, numbered per MiB)."""
    volume = box.volume(name, size=gib, volume_type="file")
    block = os.urandom(MIB)
    with file_backend_path("src", volume.id).open("r+b") as f:
        for mib in range(gib * 1024):
            f.write(mib.to_bytes(8, "big") + block[8:])
    return volume


def test_a_worker_killed_mid_copy_is_replaced_and_the_copy_resumes(seeded: Any) -> None:
    with Sandbox.create("voltest-celkill") as box, \
            server_journal("mariadb", "shjournal_celkill") as journal:  # fmt: skip
        volume = _random_volume(box, "voltest-ck", 2)
        with workers(journal, [FILE_QUEUE], [FILE_QUEUE], STACKHOP_LEASE_TTL="10") as pool:
            proc = _copy(journal, box, "stream", [volume], "--codec", "raw")
            row = _pending_row(journal, proc.poll, 0.3)
            with Journal(journal) as j:
                lease = j.lease(row.id)
            assert lease is not None
            victim = int(lease.owner.split(":")[1])  # the pool process running the pass
            os.kill(victim, signal.SIGKILL)
            out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        outcome = json.loads(out)["volumes"][0]
        with Journal(journal) as j:
            done = j.operation(row.scope, KIND, row.identity)
        assert done is not None and done.state == DONE
        # Taken twice: the killed attempt, then the redelivery's steal, which resumed from
        # the chunks the first confirmed instead of sending them all again.
        assert done.attempts == 2
        assert done.before["details"]["resumed_chunks"] > 0
        assert outcome["bytes_sent"] < 2 * 1024 * MIB
        redelivered = [line for w in pool for line in w.events("started") if line["redelivered"]]
        assert [line["row"] for line in redelivered] == [row.id]
        assert [v.id for v in box.volumes("dst")] == [outcome["destination_id"]]
        assert digest_of("dst", outcome["destination_id"]) == digest_of("src", volume.id)
        assert _stream_agents() == []


def test_a_killed_coordinator_is_reattached_by_the_rerun_and_nothing_is_sent_twice(
    seeded: Any,
) -> None:
    with Sandbox.create("voltest-celcoord") as box, \
            server_journal("postgresql", "shjournal_celcoord") as journal:  # fmt: skip
        volumes = [_random_volume(box, f"voltest-cr{n}", 1) for n in range(3)]
        with workers(journal, [FILE_QUEUE]) as (worker,):
            first = _copy(journal, box, "stream", volumes, "--codec", "raw")
            row = _pending_row(journal, first.poll, 0.2)
            first.kill()  # our own child, by its handle: kill -9 of the coordinator
            first.wait()
            with Journal(journal) as j:
                (run,) = [r for r in j.runs() if r.command == "volumes copy"]
                assert run.outcome == "running"
            second = _copy(journal, box, "stream", volumes, "--codec", "raw")
            out, err = second.communicate(timeout=900)
        assert second.returncode == 0, err[-3000:]
        assert f"reattached to run {run.id}" in err
        with Journal(journal) as j:
            assert [r.id for r in j.runs() if r.command == "volumes copy"] == [run.id]
            assert j.run(run.id).outcome == "succeeded"
            rows = j.operations(run_id=run.id, kind=KIND)
        assert len(rows) == 3 and {r.state for r in rows} == {DONE}
        assert {r.attempts for r in rows} == {1}  # each pass ran once
        assert sorted(line["row"] for line in worker.events("started")) == sorted(
            r.id for r in rows
        )
        assert row.id in {r.id for r in rows}
        copies = box.volumes("dst")
        assert len(copies) == 3
        for volume in volumes:
            (copy,) = [c for c in copies if c.name == volume.name]
            assert digest_of("dst", copy.id) == digest_of("src", volume.id)


def test_the_broker_restarted_mid_run_loses_no_work(seeded: Any, tmp_path: Path) -> None:
    with Sandbox.create("voltest-celbroker") as box, \
            server_journal("postgresql", "shjournal_celbroker") as journal, \
            private_broker(tmp_path / "broker") as broker:  # fmt: skip
        volumes = [_random_volume(box, f"voltest-cb{n}", 1) for n in range(3)]
        env = {"STACKHOP_BROKER_URL": broker.url, "STACKHOP_LEASE_TTL": "10"}
        # One process: two of the three messages wait in the queue while the first runs.
        with workers(journal, [FILE_QUEUE], **env) as (worker,):
            proc = _copy(journal, box, "stream", volumes, "--codec", "raw", **env)
            _pending_row(journal, proc.poll, 0.2)
            broker.stop()  # kill -9 of the node, mid-copy
            time.sleep(5)
            broker.start()  # the same node and data: durable queues, persistent messages
            out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        run_id = json.loads(out)["run_id"]
        with Journal(journal) as j:
            rows = j.operations(run_id=run_id, kind=KIND)
        assert len(rows) == 3 and {r.state for r in rows} == {DONE}
        assert {r.attempts for r in rows} == {1}  # no pass ran twice
        started = sorted(line["row"] for line in worker.events("started"))
        assert started == sorted(r.id for r in rows)
        copies = box.volumes("dst")
        assert len(copies) == 3
        for volume in volumes:
            (copy,) = [c for c in copies if c.name == volume.name]
            assert digest_of("dst", copy.id) == digest_of("src", volume.id)
