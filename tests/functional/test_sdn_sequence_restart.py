"""After a rollback *and a database restart*, the next task ID is above every ID ever issued.

The shared testbed MariaDB serves every engineer's clouds and must not be
restarted, so this test boots its own ``mariadbd`` (same Debian package,
private data directory, a free loopback port), copies the src Neutron
topology into it, runs prepare / backup / rollback through the CLI, restarts
the server and inserts a task the way the Neutron plugin would.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.functional.test_sdn_support import ZK, copy_database, rows, server_engine, zk_client

pytestmark = pytest.mark.functional

USER, PASSWORD = "sdntest", "sdntestpw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateMariaDB:
    """A mariadbd this test starts and stops itself, by its own process handle."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.socket = base / "mysqld.sock"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--skip-test-db", "--auth-root-authentication-method=socket"],
            check=True, capture_output=True, timeout=120,
        )

    @property
    def prefix(self) -> str:
        return f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.base / "mariadbd.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.data}",
             f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
             "--user=root", "--skip-log-bin", f"--pid-file={self.base / 'mariadbd.pid'}",
             "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M",
             "--performance-schema=OFF", "--skip-name-resolve"],
            stdout=log, stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mariadbd exited: {(self.base / 'mariadbd.log').read_text()[-2000:]}")
            ping = subprocess.run(["mariadb-admin", "--no-defaults", f"--socket={self.socket}",
                                   "-uroot", "ping"], capture_output=True)
            if ping.returncode == 0:
                return
            time.sleep(0.2)
        pytest.fail("the private mariadbd did not answer within 60 s")

    def sql_as_root(self, statement: str) -> None:
        subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                        "-e", statement], check=True, capture_output=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # SIGTERM: a clean InnoDB shutdown, as a service restart does
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def private_mariadb(tmp_path: Path) -> Iterator[PrivateMariaDB]:
    server = PrivateMariaDB(tmp_path / "mariadb")
    server.start()
    try:
        server.sql_as_root(
            f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
            f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'"
        )
        yield server
    finally:
        server.stop()


def test_next_task_id_after_rollback_and_restart_is_above_every_issued(
    cli: Callable[..., Any], tmp_path: Path, testbed: Any, private_mariadb: PrivateMariaDB
) -> None:
    journal, backup = tmp_path / "j.sqlite", tmp_path / "zk.backup"
    root = f"/stackhop-test-{uuid.uuid4().hex[:10]}/midonet"
    source = server_engine()
    try:
        with copy_database(private_mariadb.prefix, source_engine=source) as url, zk_client() as zk:
            zk.create(root, b"legacy", makepath=True)

            def sdn(*args: str) -> Any:
                result = cli("--journal", str(journal), "sdn", "midonet", *args)
                assert result.code == 0, result.err
                return result

            sdn("backup", "--zk", ZK, "--root", root, "-o", str(backup), "--neutron-db", url)
            sdn("prepare", "--neutron-db", url, "--data-dir", str(tmp_path / "d"))
            highest = rows(url, "SELECT MAX(id) FROM midonet_tasks")[0][0]
            assert highest > 10
            sdn("rollback", "--zk", ZK, "--backup", str(backup), "--neutron-db", url)
            assert rows(url, "SELECT COUNT(*) FROM midonet_tasks")[0][0] == 0
            # The state row the migration inserted is back as backed up (nothing processed).
            assert [r[0] for r in rows(url, "SELECT last_processed_task_id "
                                            "FROM midonet_data_state")] == [None]

            sa.create_engine(url).dispose()
            private_mariadb.stop()
            private_mariadb.start()

            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.execute(sa.text(
                    "INSERT INTO midonet_tasks (type, data_type, data, resource_id, "
                    "transaction_id, created_at) VALUES ('CREATE', 'NETWORK', '{}', 'r', "
                    "'neutron', NOW())"))
                new_id = conn.execute(sa.text("SELECT LAST_INSERT_ID()")).scalar_one()
            engine.dispose()
            assert new_id > highest
    finally:
        source.dispose()
        with zk_client() as zk:
            zk.delete(root.rsplit("/", 1)[0], recursive=True)
