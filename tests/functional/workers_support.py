"""Real ``stackhop worker`` processes for the executor tests, and journals of their own.

A worker is started as the operator would (``python -m stackhop worker --queue ...``)
with the journal URL and broker in its environment, never on its command line; the
test waits for its ``worker_ready`` line. Stopping sends SIGTERM to that process (a
warm shutdown: the tasks in flight finish), then SIGKILL to the same PID after 30 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import layout
from testbed.infra import mariadb, postgresql


@dataclass
class Worker:
    """One ``stackhop worker`` process and the JSON lines it printed."""

    proc: subprocess.Popen[str]
    queues: list[str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    log: list[str] = field(default_factory=list)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            self.log.append(text)
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict):
                self.lines.append(line)
                if line.get("event") == "worker_ready":
                    self.ready.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our own child, by its handle
                self.proc.wait()
        return self.proc.returncode


def worker_env(journal: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STACKHOP_JOURNAL=journal,
        STACKHOP_BROKER_URL=layout.stackhop_broker_url(),
        PYTHONPATH=os.pathsep.join([str(layout.REPO_DIR / "src"), str(layout.REPO_DIR)]),
        **extra,
    )
    return env


@contextmanager
def workers(
    journal: str, *queue_sets: list[str], concurrency: int = 1, **env: str
) -> Iterator[list[Worker]]:
    """One worker per queue set, each ready before this yields; all stopped after."""
    started: list[Worker] = []
    try:
        for queues in queue_sets:
            argv = [sys.executable, "-m", "stackhop", "worker", "--concurrency", str(concurrency)]
            for queue in queues:
                argv += ["--queue", queue]
            proc = subprocess.Popen(
                argv,
                env=worker_env(journal, **env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            worker = Worker(proc, list(queues))
            threading.Thread(target=worker._read, daemon=True).start()
            started.append(worker)
        deadline = time.monotonic() + 120
        for worker in started:
            while not worker.ready.wait(0.5):
                if worker.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"worker on {worker.queues} did not start:\n{''.join(worker.log)}"
                    )
        yield started
    finally:
        for worker in started:
            worker.stop()


@contextmanager
def server_journal(kind: str, database: str) -> Iterator[str]:
    """A fresh journal database on the testbed's ``postgresql`` or ``mariadb``; its URL
    (PostgreSQL's password in ``PGPASSWORD``, as an operator's ``~/.pgpass`` would hold it)."""
    if kind == "postgresql":
        postgresql.require()
        postgresql.drop_database(database)
        postgresql.create_database(database)
        previous = os.environ.get("PGPASSWORD")
        os.environ["PGPASSWORD"] = layout.DB_PASSWORD
        try:
            yield f"postgresql://{layout.DB_USER}@{layout.HOST}:{layout.POSTGRES_PORT}/{database}"
        finally:
            if previous is None:
                os.environ.pop("PGPASSWORD", None)
            else:
                os.environ["PGPASSWORD"] = previous
            postgresql.drop_database(database)
    else:
        mariadb.sql(f"DROP DATABASE IF EXISTS `{database}`")
        mariadb.create_database(database)
        try:
            yield (f"mysql://{layout.DB_USER}:{layout.DB_PASSWORD}@{layout.HOST}:"
                   f"{layout.MARIADB_PORT}/{database}")
        finally:
            mariadb.sql(f"DROP DATABASE IF EXISTS `{database}`")


def run_cli(journal: str, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``stackhop ARGV`` as a process of its own (a coordinator), with the journal and broker
    in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "stackhop", *argv],
        env=worker_env(journal),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(layout.REPO_DIR),
    )
