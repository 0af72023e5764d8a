"""Export straight from the services' SQL databases (``stackhop export --via db``).

For a source cloud whose APIs are gone or too slow, the records are read from
the databases named in ``nova.conf`` (``[api_database]``: keypairs and quotas
live in the API database today), ``neutron.conf`` and ``cinder.conf`` under
``--db-config-dir``. Every connection is opened read-only (the session is put
in read-only transaction mode before any statement), and only the tables and
columns needed are read. User and project names still come from Keystone.

This module is the connection layer only: each kind declares its own SQL in
its module (:meth:`~stackhop.kinds.base.Kind.read_db`) and builds its records
with the same function as its API export, so both exports of a cloud hold the
same records.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from stackhop.errors import ConfigError
from stackhop.kinds.base import ExportScope, Kind, Record
from stackhop.sqlurl import with_shipped_driver

#: Where each database's connection URL is configured: (file, section).
DATABASES: Mapping[str, tuple[str, str]] = {
    "nova_api": ("nova/nova.conf", "api_database"),
    # Liberty kept keypairs and quotas in the cell database (``[database]``).
    "nova": ("nova/nova.conf", "database"),
    "neutron": ("neutron/neutron.conf", "database"),
    "cinder": ("cinder/cinder.conf", "database"),
    "keystone": ("keystone/keystone.conf", "database"),
}


def connection_url(config_dir: str | Path, database: str) -> tuple[str, Path]:
    """The SQLAlchemy URL of ``database`` read from its service's config file, and the file."""
    relative, section = DATABASES[database]
    path = Path(config_dir) / relative
    parser = configparser.RawConfigParser(strict=False)
    try:
        with path.open(encoding="utf-8") as stream:
            parser.read_file(stream)
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror or exc}; point --db-config-dir at the "
            "directory holding nova/, neutron/ and cinder/"
        ) from exc
    except configparser.Error as exc:
        raise ConfigError(f"{path} is not a valid config file: {exc}") from exc
    url = parser.get(section, "connection", fallback=None)
    if not url:
        raise ConfigError(f"{path} has no [{section}] connection; it names the database to read")
    return url.strip(), path


class SchemaError(ConfigError):
    """A database whose tables are not one of the shapes stackhop knows."""


def _read_only(engine: sa.Engine) -> None:
    statement = (
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
        if engine.dialect.name == "postgresql"
        else "SET SESSION TRANSACTION READ ONLY"
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(statement)
        cursor.close()


@dataclass
class DatabaseReader:
    """Read-only access to the source's Nova API, Neutron and Cinder databases."""

    config_dir: str | Path
    _engines: dict[str, sa.Engine] = field(default_factory=dict)
    _columns: dict[tuple[str, str], set[str] | None] = field(default_factory=dict)

    def configured(self, database: str) -> bool:
        """Whether ``database``'s service config names a connection (Liberty may lack one)."""
        try:
            connection_url(self.config_dir, database)
        except ConfigError:
            return False
        return True

    def columns(self, database: str, table: str) -> set[str] | None:
        """The column names of ``table`` by reflection, or None when there is no such table.

        Reflected once per table and reader: every kind asks again (keypairs and
        three quota kinds, groups and rules), the schema does not change meanwhile.
        """
        key = (database, table)
        if key in self._columns:
            return self._columns[key]
        engine, url, path = self._engine(database)
        try:
            inspector = sa.inspect(engine)
            found = (
                {str(c["name"]) for c in inspector.get_columns(table)}
                if inspector.has_table(table)
                else None
            )
        except sa.exc.OperationalError as exc:
            raise self._unreachable(database, url, path, exc) from exc
        self._columns[key] = found
        return found

    def quote(self, database: str, name: str) -> str:
        """``name`` quoted for ``database``'s dialect (``limit`` is a reserved word)."""
        engine, _, _ = self._engine(database)
        return str(engine.dialect.identifier_preparer.quote(name))

    def require(self, database: str, table: str, needed: set[str]) -> set[str]:
        """``table``'s columns; a one-line :class:`SchemaError` naming what is missing."""
        found = self.columns(database, table)
        if found is None:
            raise SchemaError(
                f"the {database} database has no table {table}: not a Nova/Neutron/Cinder "
                "schema stackhop knows (Liberty or later); export with --via api"
            )
        missing = sorted(needed - found)
        if missing:
            raise SchemaError(
                f"table {table} of the {database} database has no column {missing[0]}: "
                "not a schema stackhop knows (Liberty or later); export with --via api"
            )
        return found

    def _engine(self, database: str) -> tuple[sa.Engine, str, Path]:
        engine = self._engines.get(database)
        url, path = connection_url(self.config_dir, database)
        if engine is None:
            try:
                engine = sa.create_engine(with_shipped_driver(url), pool_pre_ping=True)
            except (sa.exc.ArgumentError, ImportError) as exc:
                raise ConfigError(f"{path}: cannot use connection URL: {exc}") from exc
            _read_only(engine)
            self._engines[database] = engine
        return engine, url, path

    @staticmethod
    def _unreachable(database: str, url: str, path: Path, exc: sa.exc.DBAPIError) -> ConfigError:
        where = sa.make_url(url).render_as_string(hide_password=True)
        reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        return ConfigError(
            f"cannot read the {database} database at {where}: {reason} "
            f"(check the connection in {path} and that the database answers)"
        )

    def query(self, database: str, sql: str, **params: Any) -> list[sa.Row[Any]]:
        engine, url, path = self._engine(database)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(sql), params))
        except sa.exc.OperationalError as exc:
            raise self._unreachable(database, url, path, exc) from exc
        except sa.exc.DBAPIError as exc:  # a statement the server refuses: one line, no traceback
            where = sa.make_url(url).render_as_string(hide_password=True)
            reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc).splitlines()[0]
            raise ConfigError(
                f"reading the {database} database at {where} failed: {reason} "
                f"({engine.dialect.name}); export with --via api"
            ) from exc

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()


def live(columns: set[str], *, boolean: bool = False) -> str:
    """The SQL condition keeping live rows: soft-deleted ones (``deleted`` set) are not.

    Nova's ``deleted`` is an integer (the row's ID once deleted), Cinder's a
    boolean (``tinyint(1)`` on MariaDB, ``boolean`` on PostgreSQL).
    """
    if "deleted" not in columns:
        return "1 = 1"
    return "deleted = false" if boolean else "deleted = 0"


def read(reader: DatabaseReader, kind: Kind, scope: ExportScope) -> Iterator[Record]:
    """The records of ``kind`` within ``scope`` from the databases (the kind's own SQL reader)."""
    return kind.read_db(reader, scope)
