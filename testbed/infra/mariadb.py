"""MariaDB shared by both clouds: ``mariadbd`` started by hand, data in the state dir.

One server on ``127.0.0.1:MARIADB_PORT`` holds every service database of both
clouds (``src_nova``, ``dst_keystone``, ...). Root logs in over the unix socket
(Debian's default ``unix_socket`` authentication: we run as root); the
services use ``DB_USER`` over TCP.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from testbed import layout
from testbed.component import Component
from testbed.infra.files import ini, write_file
from testbed.infra.locked import LockedComponent
from testbed.process import Daemon, run

NAME = "mariadb"
BASE_DIR = layout.SHARED_DIR / "mariadb"
DATA_DIR = BASE_DIR / "data"
CONFIG = BASE_DIR / "my.cnf"
SOCKET = layout.RUN_DIR / "mariadb.sock"

_DB_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _config() -> str:
    return ini({
        "client": {"socket": SOCKET, "user": "root"},
        "mysqld": {
            "datadir": DATA_DIR,
            "socket": SOCKET,
            "port": layout.MARIADB_PORT,
            "bind-address": layout.HOST,
            # Not the Daemon's pid file (run/mariadb.pid): mariadbd writes its own.
            "pid-file": layout.RUN_DIR / "mariadbd.pid",
            "user": "root",
            "skip-name-resolve": "ON",
            "skip-log-bin": "ON",
            # Two clouds of OpenStack services each hold connection pools.
            "max_connections": 1000,
            "innodb_buffer_pool_size": "128M",
            "innodb_log_file_size": "32M",
            # A testbed: durability across a machine crash is not worth the fsyncs.
            "innodb_flush_log_at_trx_commit": 0,
            "innodb_doublewrite": 0,
            "performance_schema": "OFF",
            "table_open_cache": 1000,
            "character-set-server": "utf8mb4",
            "collation-server": "utf8mb4_general_ci",
        },
    })


def _initialise() -> None:
    """Create the system tables once; a half-done attempt is never left in place."""
    if (DATA_DIR / "mysql").is_dir():
        return
    staging = BASE_DIR / "data.init"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    run(
        ["mariadb-install-db", f"--defaults-file={CONFIG}", f"--datadir={staging}",
         "--skip-test-db", "--user=root"],
        log=layout.LOG_DIR / "mariadb-install.log",
    )
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    staging.rename(DATA_DIR)


def _setup() -> None:
    layout.LOG_DIR.mkdir(parents=True, exist_ok=True)
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    write_file(CONFIG, _config())
    _initialise()


def _succeeds(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _answers() -> bool:
    return _succeeds(["mariadb-admin", f"--defaults-file={CONFIG}", "--connect-timeout=2", "ping"])


def sql(statement: str, database: str | None = None) -> str:
    """Run SQL as root through the client on the socket; return its tab-separated rows.

    Column names are not printed (``--batch --skip-column-names``).
    """
    argv = ["mariadb", f"--defaults-file={CONFIG}", "--batch", "--skip-column-names",
            "-e", statement]
    if database is not None:
        argv.append(database)
    return run(argv, timeout=120).stdout


def create_database(name: str) -> None:
    """Create database ``name`` (utf8mb4) unless it exists."""
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}: use letters, digits and _")
    sql(f"CREATE DATABASE IF NOT EXISTS `{name}` "
        "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")


def _grant_service_user() -> None:
    user, pw = layout.DB_USER, layout.DB_PASSWORD.replace("'", "''")
    statements = []
    for host in (layout.HOST, "localhost"):
        statements += [
            f"CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{pw}'",
            # Keeps the password in step with layout.py if it ever changes.
            f"ALTER USER '{user}'@'{host}' IDENTIFIED BY '{pw}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'{host}' WITH GRANT OPTION",
        ]
    sql("; ".join(statements))


def daemon() -> Daemon:
    return Daemon(
        name=NAME,
        argv=["/usr/sbin/mariadbd", f"--defaults-file={CONFIG}"],
        check=_answers,
        ready_timeout=60,
        stop_timeout=30,
    )


def component() -> Component:
    """MariaDB: initialised once, started by hand, the services' user granted."""
    return LockedComponent(
        name=NAME,
        daemons=[daemon()],
        setup=_setup,
        after_start=_grant_service_user,
        checks={"mariadb tcp": _tcp_login_works},
    )


def _tcp_login_works() -> bool:
    """The services' user logs in over TCP (what every OpenStack service does)."""
    return _succeeds(
        ["mariadb", "--no-defaults", "-h", layout.HOST, "-P", str(layout.MARIADB_PORT),
         "-u", layout.DB_USER, f"-p{layout.DB_PASSWORD}", "--connect-timeout=2",
         "-e", "SELECT 1"]
    )


def socket_path() -> Path:
    """The server's unix socket (root logs in there without a password)."""
    return SOCKET


