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
import socket
import subprocess
import sys
import threading
import time
import uuid
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
        STACKHOP_BROKER_URL=extra.pop("STACKHOP_BROKER_URL", layout.stackhop_broker_url()),
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((layout.HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateBroker:
    """A RabbitMQ node of the test's own (its dirs under ``base``, its ports), so that
    restarting it disturbs no cloud: the testbed's shared broker carries their RPC."""

    base: Path
    port: int = field(default_factory=_free_port)
    dist_port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://stackhop:brokerpw@{layout.HOST}:{self.port}/stackhop"

    def _env(self) -> dict[str, str]:
        home = self.base / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(uuid.uuid4().hex)
            cookie.chmod(0o600)
        config = self.base / "rabbitmq.conf"
        config.write_text("\n".join([
            f"listeners.tcp.1 = {layout.HOST}:{self.port}",
            "default_user = stackhop",
            "default_pass = brokerpw",
            "default_vhost = stackhop",
            "log.console = false",
            "",
        ]))  # fmt: skip
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "advanced.config").write_text("[].\n")
        dist = "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "RABBITMQ_NODENAME": f"stackhop-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": layout.HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "beam.pid"),
            "ERL_EPMD_PORT": str(layout.EPMD_PORT),  # the testbed's own epmd
            "ERL_EPMD_ADDRESS": layout.HOST,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"+S 1:1 +sbwt none {dist}",
            "RABBITMQ_CTL_ERL_ARGS": dist,
        }

    def start(self, timeout: float = 120) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq-env.conf").write_text("# all set through the environment\n")
        self.proc = subprocess.Popen(
            ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=self._env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not _amqp_answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the private broker did not start (logs in {self.base})")
            time.sleep(0.5)

    def stop(self) -> None:
        """Kill the node (its whole process group: ours), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def _amqp_answers(port: int) -> bool:
    try:
        with socket.create_connection((layout.HOST, port), timeout=2) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            head = s.recv(7)
    except OSError:
        return False
    return len(head) == 7 and head[0] == 1


@contextmanager
def private_broker(base: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(base)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
