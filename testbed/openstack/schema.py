"""Service database schemas: migrated once per service version, then copied.

Running a service's migrations is the slowest part of a first ``up`` (Neutron
alone runs hundreds of alembic steps), and both clouds need the same schema.
The first cloud to get there migrates its empty databases with the service's
own tool and dumps them as a template; the other cloud loads the dump in a
second instead of migrating beside it on the same two cores. Templates live
in the state directory under ``shared/openstack/schemas/<service>-<version>/``
(gone with ``down --purge``), so a new service version migrates again.

Only schema-and-seed-data is templated: anything that differs per cloud
(Nova's cell mappings, Keystone's bootstrap) is done per cloud afterwards.
Rows a migration creates with random IDs (Cinder's ``__DEFAULT__`` volume
type, Neutron's default security-group rule templates) therefore carry the
same IDs on both clouds.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from testbed import layout
from testbed.openstack import runtime
from testbed.process import TestbedError

SCHEMA_DIR = layout.OPENSTACK_SHARED_DIR / "schemas"


def _client_args() -> list[str]:
    # The services' account over TCP; the password goes through the environment, not argv.
    port = str(layout.MARIADB_PORT)
    return ["--no-defaults", "-h", layout.HOST, "-P", port, "-u", layout.DB_USER]


def _client_env() -> dict[str, str]:
    return {**os.environ, "MYSQL_PWD": layout.DB_PASSWORD}


def _dump(database: str, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        proc = subprocess.run(
            [
                "mariadb-dump",
                *_client_args(),
                "--single-transaction",
                "--skip-comments",
                "--routines",
                "--triggers",
                database,
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            env=_client_env(),
            timeout=300,
            check=False,
        )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise TestbedError(f"mariadb-dump {database} failed: {proc.stderr.decode().strip()[-300:]}")
    tmp.replace(target)


def dump(database: str, target: Path) -> None:
    """Dump ``database`` (schema and rows) to ``target``, atomically."""
    _dump(database, target)


def load(dump: Path, database: str) -> None:
    """Load a template dump into ``database`` (its tables are dropped and re-created)."""
    with open(dump, "rb") as source:
        proc = subprocess.run(
            ["mariadb", *_client_args(), database],
            stdin=source,
            stderr=subprocess.PIPE,
            env=_client_env(),
            timeout=300,
            check=False,
        )
    if proc.returncode != 0:
        raise TestbedError(
            f"loading {dump} into {database} failed: {proc.stderr.decode().strip()[-300:]}"
        )


@contextmanager
def _locked(name: str) -> Iterator[None]:
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    with open(SCHEMA_DIR / f"{name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def template_dir(service: str, package: str) -> Path:
    return SCHEMA_DIR / f"{service}-{runtime.version(package)}"


def ensure(
    c: layout.CloudLayout,
    service: str,
    package: str,
    databases: Sequence[str],
    migrate: Callable[[layout.CloudLayout], None],
) -> None:
    """Bring ``databases`` (service names, e.g. ``nova_api``) of cloud ``c`` to head.

    Loads the template of this service version when there is one; otherwise
    runs ``migrate(c)`` and keeps the result as the template. Clouds take
    turns (a lock per service), so the second one waits for the template
    instead of migrating beside the first.
    """
    runtime.create_databases(c, *databases)
    with _locked(service):
        directory = template_dir(service, package)
        dumps = {db: directory / f"{db}.sql" for db in databases}
        if all(p.exists() for p in dumps.values()):
            for db, dump in dumps.items():
                load(dump, c.db_name(db))
            return
        migrate(c)
        directory.mkdir(parents=True, exist_ok=True)
        for db, dump in dumps.items():
            _dump(c.db_name(db), dump)


def ensure_once(
    c: layout.CloudLayout,
    service: str,
    package: str,
    migrate: Callable[[layout.CloudLayout], None],
) -> None:
    """:func:`ensure` the service's one database, skipped when the stamp says it is at head.

    The stamp holds the package version, so an upgrade of the service runs its
    migrations again.
    """
    done = runtime.stamp(c, f"{service}-db", runtime.version(package))
    if done.done():
        return
    ensure(c, service, package, [service], migrate)
    done.mark()
