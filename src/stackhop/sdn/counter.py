"""Keeping ``midonet_tasks``' ID counter above every issued ID, on every server generation.

InnoDB on MariaDB >= 10.2.4 and MySQL >= 8.0 persists ``AUTO_INCREMENT``; on
MySQL 5.5-5.7 and MariaDB 10.0-10.1 (what MidoNet deployments ran) a restart
recomputes it as ``MAX(id)+1``, so deleting the highest tasks could hand their
IDs out again, and the importer (reading ``id > last_processed_task_id``)
would skip the new tasks. A sentinel row at the highest ID was rejected: the
importer reads every row above its cursor and stops on a type it does not
know, so any row it reads must be a real task.

The hook used instead: the server's own ``init_file`` (executed at every
start) holds one line per Neutron database,
``ALTER TABLE `db`.`midonet_tasks` AUTO_INCREMENT = N``, N above every ID
stackhop ever saw issued. Raising the counter is a no-op when it is already
higher, so the line stays valid for ever. Rollback on such a server needs
``--counter-init-file FILE`` naming the file the server's ``init_file`` points
to (checked with ``@@init_file`` before anything changes).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from stackhop.errors import ConfigError

#: Treat the server as one that recomputes the counter (tests on a modern server).
FORCE_LEGACY_ENV = "STACKHOP_SDN_ASSUME_LEGACY_COUNTER"
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def server(conn: Connection) -> tuple[str, bool]:
    """The server's version string and whether InnoDB keeps the counter across a restart."""
    version = str(conn.execute(sa.text("SELECT VERSION()")).scalar_one())
    match = _VERSION.match(version)
    numbers = tuple(int(x) for x in match.groups()) if match else (0, 0, 0)
    maria = "mariadb" in version.lower()
    persistent = numbers >= (10, 2, 4) if maria else numbers >= (8, 0, 0)
    if os.environ.get(FORCE_LEGACY_ENV) == "1":
        persistent = False
    return version, persistent


def check_init_file(conn: Connection, init_file: Path | None, version: str) -> Path:
    """The init file to keep the counter in; a one-line error unless the server runs it."""
    configured = str(conn.execute(sa.text("SELECT @@GLOBAL.init_file")).scalar() or "")
    if init_file is None:
        raise ConfigError(
            f"server {version} recomputes AUTO_INCREMENT as MAX(id)+1 at restart, so removed "
            "task IDs could be reissued: set init_file=FILE under [mysqld] on it and pass "
            "--counter-init-file FILE (see docs/sdn.md)"
        )
    wanted = init_file.resolve()
    if not configured or Path(configured).resolve() != wanted:
        raise ConfigError(
            f"the server's init_file is {configured or 'not set'}, not {init_file}: set "
            f"init_file={wanted} under [mysqld] so that the counter is raised at every start"
        )
    if not os.access(wanted.parent, os.W_OK) or (wanted.exists() and
                                                 not os.access(wanted, os.W_OK)):
        raise ConfigError(f"--counter-init-file {init_file} is not writable by this user")
    return wanted


def statement(database: str, next_id: int) -> str:
    return f"ALTER TABLE `{database}`.`midonet_tasks` AUTO_INCREMENT = {int(next_id)};"


def keep_in_init_file(path: Path, database: str, next_id: int) -> str:
    """Make ``path`` raise ``database``'s counter to at least ``next_id`` at every start.

    Other lines are kept byte for byte; this database's line is replaced only
    by a higher value. Written to a temporary file and renamed into place.
    """
    prefix = f"ALTER TABLE `{database}`.`midonet_tasks` AUTO_INCREMENT = "
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    kept: list[str] = []
    for line in lines:
        if line.startswith(prefix):
            match = re.match(r"(\d+);", line[len(prefix):])
            if match:
                next_id = max(next_id, int(match.group(1)))
            continue
        kept.append(line if line.endswith("\n") else line + "\n")
    kept.append(statement(database, next_id) + "\n")
    temp = path.with_name(f".{path.name}.stackhop-partial")
    temp.write_text("".join(kept), encoding="utf-8")
    if path.exists():
        stat = path.stat()
        os.chmod(temp, stat.st_mode & 0o7777)
    os.replace(temp, path)
    return f"{path} raises the counter to {next_id} at every start"
