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
import subprocess
import sys
from typing import Any

import pytest
from tests.functional.volumes_support import (
    Sandbox,
    digest_of,
    file_backend_path,
    write_pattern,
)
from tests.functional.workers_support import server_journal, worker_env, workers

from stackhop.journal import DONE, Journal
from stackhop.volumes.passes import KIND

pytestmark = pytest.mark.functional

FILE_QUEUE = "stackhop.volumes.src-storage.dst-storage"
CEPH_QUEUE = "stackhop.volumes.src-ceph.dst-ceph"
PIECES = [0, 3, 200, 511, 1023]


def _copy(journal: str, box: Sandbox, method: str, volumes: list[Any]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "stackhop", "--log-json", "volumes", "copy",
            "--from", "src", "--to", "dst", "--project", box.name, "--method", method,
            "--executor", "celery", "--workers", "3", "-f", "json"]  # fmt: skip
    for volume in volumes:
        argv += ["--volume", volume.id]
    return subprocess.Popen(argv, env=worker_env(journal), stdout=subprocess.PIPE,
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
