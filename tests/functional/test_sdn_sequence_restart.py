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
from tests.functional.test_sdn_support import (
    ZK,
    copy_database,
    execute,
    rows,
    server_engine,
    zk_client,
)

from stackhop.sdn import counter

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
        self.extra_args: list[str] = []
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
             "--performance-schema=OFF", "--skip-name-resolve", *self.extra_args],
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


@pytest.mark.parametrize("all_tasks", [False, True], ids=["stackhop-tasks", "all-tasks"])
def test_legacy_counter_kept_by_the_init_file_across_a_restart(
    cli: Callable[..., Any], tmp_path: Path, testbed: Any, monkeypatch: pytest.MonkeyPatch,
    all_tasks: bool,
) -> None:
    """A server that would recompute AUTO_INCREMENT (forced): refused without the hook; with it,
    the counter survives a restart above every issued ID, with --all-tasks or without."""
    monkeypatch.setenv(counter.FORCE_LEGACY_ENV, "1")
    server = PrivateMariaDB(tmp_path / "mariadb")
    init_file = tmp_path / "mariadb" / "init.sql"
    init_file.write_text("SET GLOBAL max_connections = 151;\n")
    server.extra_args = [f"--init-file={init_file}"]
    server.start()
    journal, backup = tmp_path / "j.sqlite", tmp_path / "zk.backup"
    root = f"/stackhop-test-{uuid.uuid4().hex[:10]}/midonet"
    source = server_engine()
    try:
        server.sql_as_root(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
                           f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'")
        with copy_database(server.prefix, source_engine=source) as url, zk_client() as zk:
            zk.create(root, b"legacy", makepath=True)
            # A task the plugin wrote and the cluster processed, before stackhop.
            execute(url, NEUTRON_TASK, "UPDATE midonet_data_state SET last_processed_task_id = "
                                       "(SELECT MAX(id) FROM midonet_tasks)")

            def sdn(*args: str) -> Any:
                return cli("--journal", str(journal), "sdn", "midonet", *args)

            assert sdn("backup", "--zk", ZK, "--root", root, "-o", str(backup),
                       "--neutron-db", url).code == 0
            assert sdn("prepare", "--neutron-db", url, "--data-dir", str(tmp_path / "d")).code == 0
            highest = rows(url, "SELECT MAX(id) FROM midonet_tasks")[0][0]
            assert highest > 10
            flags = ["--all-tasks"] if all_tasks else []
            args = ("rollback", "--zk", ZK, "--backup", str(backup), "--neutron-db", url, *flags)

            refused = sdn(*args)
            assert refused.code == 3, refused.err
            lines = [ln for ln in refused.err.splitlines() if ln.startswith("stackhop: ")]
            assert len(lines) == 1 and "--counter-init-file" in lines[0]
            assert rows(url, "SELECT MAX(id) FROM midonet_tasks")[0][0] == highest
            wrong = sdn(*args, "--counter-init-file", str(tmp_path / "other.sql"))
            assert wrong.code == 3 and "init_file is" in wrong.err

            done = sdn(*args, "--counter-init-file", str(init_file))
            assert done.code == 0, done.err
            left = rows(url, "SELECT transaction_id FROM midonet_tasks")
            assert [r[0] for r in left] == ([] if all_tasks else ["neutron"])
            database = url.rsplit("/", 1)[1]
            assert init_file.read_text().splitlines() == [
                "SET GLOBAL max_connections = 151;",
                f"ALTER TABLE `{database}`.`midonet_tasks` AUTO_INCREMENT = {highest + 1};"]

            # What a legacy server does at restart (InnoDB raises a lower value to
            # MAX(id)+1), so that only the init file can bring the counter back up.
            execute(url, "ALTER TABLE midonet_tasks AUTO_INCREMENT = 1")
            assert rows(url, "SELECT auto_increment FROM information_schema.tables WHERE "
                             "table_schema = DATABASE() AND table_name = 'midonet_tasks'"
                        )[0][0] <= highest
            server.stop()
            server.start()
            execute(url, NEUTRON_TASK)
            new_id = rows(url, "SELECT MAX(id) FROM midonet_tasks")[0][0]
            assert new_id > highest
    finally:
        source.dispose()
        server.stop()
        with zk_client() as zk:
            zk.delete(root.rsplit("/", 1)[0], recursive=True)


NEUTRON_TASK = (
    "INSERT INTO midonet_tasks (type, data_type, data, resource_id, transaction_id, created_at) "
    "VALUES ('CREATE', 'NETWORK', '{}', '6f1c1b1e-2a43-4f55-9b7e-5a1c9a0e4d11', 'neutron', NOW())"
)
