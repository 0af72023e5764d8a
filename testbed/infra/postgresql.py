"""PostgreSQL (Debian's 15) on loopback: where the DB export meets its second dialect.

Nothing of the live clouds runs on it. It holds copies of src's service
databases (``python -m testbed mirror-pg``, :mod:`testbed.legacy_db.mirror`)
and the Liberty-shaped databases, so stackhop's ``--via db`` can be tested
against PostgreSQL as SOC6's clouds ran it.

The server refuses to run as root: it runs as Debian's ``postgres`` user
(``setpriv``, still our process group, stopped by its PID), from a cluster
initialised once under ``shared/postgresql/data``. The socket lives beside
the data (``run/`` is root's); the services' user ``openstack`` logs in over
TCP with its password (scram-sha-256) and owns what it creates.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from testbed import layout
from testbed.component import Component
from testbed.infra.locked import LockedComponent
from testbed.process import Daemon, TestbedError, run

NAME = "postgresql"
BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
BASE_DIR = layout.SHARED_DIR / "postgresql"
DATA_DIR = BASE_DIR / "data"
SOCKET_DIR = BASE_DIR / "socket"

_DB_NAME = re.compile(r"^[A-Za-z0-9_]{1,63}$")
_AS_POSTGRES = ["setpriv", f"--reuid={OS_USER}", f"--regid={OS_USER}", "--init-groups"]


def _chown(path: Path) -> None:
    user = pwd.getpwnam(OS_USER)
    os.chown(path, user.pw_uid, user.pw_gid)


def _initialise() -> None:
    """Create the cluster once; a half-done attempt is never left in place."""
    if (DATA_DIR / "PG_VERSION").exists():
        return
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    staging = BASE_DIR / "data.init"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _chown(staging)
    run(
        [*_AS_POSTGRES, str(BIN / "initdb"), "-D", str(staging), "-U", OS_USER,
         "--encoding=UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
         "--no-sync"],
        cwd=Path("/"),
        log=layout.LOG_DIR / "postgresql-initdb.log",
    )
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    staging.rename(DATA_DIR)


def _setup() -> None:
    layout.LOG_DIR.mkdir(parents=True, exist_ok=True)
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    SOCKET_DIR.mkdir(exist_ok=True)
    _chown(SOCKET_DIR)
    _initialise()


def psql(statement: str, database: str = "postgres", *, stdin: str | None = None) -> str:
    """Run SQL as the superuser ``postgres`` over the socket; return unaligned rows.

    ``statement`` goes on the command line: put anything secret in ``stdin``.
    """
    argv = [*_AS_POSTGRES, str(BIN / "psql"), "-h", str(SOCKET_DIR), "-p",
            str(layout.POSTGRES_PORT), "-d", database, "-X", "-q", "-A", "-t",
            "-v", "ON_ERROR_STOP=1"]
    argv += ["-c", statement] if stdin is None else ["-f", "-"]
    return run(argv, cwd=Path("/"), input=stdin, timeout=300).stdout


def create_database(name: str) -> bool:
    """Create database ``name`` owned by the services' user unless it exists; True if made."""
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}: use letters, digits and _")
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip():
        return False
    psql(f'CREATE DATABASE "{name}" OWNER "{layout.DB_USER}" ENCODING \'UTF8\' TEMPLATE template0')
    return True


def drop_database(name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}: use letters, digits and _")
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _grant_service_user() -> None:
    user, pw = layout.DB_USER, layout.DB_PASSWORD.replace("'", "''")
    # Superuser: the mirror loads rows with triggers (foreign keys) off, as a restore does.
    psql("", stdin=(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{user}') THEN "
        f"CREATE ROLE \"{user}\"; END IF; END $$;\n"
        f"ALTER ROLE \"{user}\" WITH LOGIN SUPERUSER PASSWORD '{pw}';\n"
    ))


def _answers() -> bool:
    try:
        proc = subprocess.run(
            [str(BIN / "pg_isready"), "-q", "-h", layout.HOST, "-p", str(layout.POSTGRES_PORT),
             "-t", "2"],
            capture_output=True, timeout=10,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def daemon() -> Daemon:
    settings = {
        "listen_addresses": layout.HOST,
        "port": layout.POSTGRES_PORT,
        "unix_socket_directories": SOCKET_DIR,
        "max_connections": 100,
        "shared_buffers": "64MB",
        # A testbed: durability across a machine crash is not worth the fsyncs.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "log_min_messages": "warning",
    }
    argv = [str(BIN / "postgres"), "-D", str(DATA_DIR)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    return Daemon(
        name=NAME,
        argv=argv,
        check=_answers,
        cwd=Path("/"),
        wrapper=_AS_POSTGRES,
        ready_timeout=60,
        stop_timeout=20,
    )


def component() -> Component:
    """PostgreSQL on ``127.0.0.1:POSTGRES_PORT``, the services' user made superuser."""
    return LockedComponent(
        name=NAME,
        daemons=[daemon()],
        setup=_setup,
        after_start=_grant_service_user,
        checks={"postgresql tcp": _tcp_login_works},
    )


def _tcp_login_works() -> bool:
    """The services' user logs in over TCP with its password (what the DB export does)."""
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(url(), connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def url(database: str = "postgres") -> str:
    return (f"postgresql://{layout.DB_USER}:{layout.DB_PASSWORD}@{layout.HOST}:"
            f"{layout.POSTGRES_PORT}/{database}")


def require() -> None:
    """Fail with the fix when PostgreSQL is not up (commands that need it call this)."""
    if not _answers():
        raise TestbedError(
            f"PostgreSQL does not answer on {layout.HOST}:{layout.POSTGRES_PORT}; "
            "run: python -m testbed up --only postgresql"
        )
