"""Export straight from the services' SQL databases (``stackhop export --via db``).

For a source cloud whose APIs are gone or too slow, the records are read from
the databases named in ``nova.conf`` (``[api_database]``: keypairs and quotas
live in the API database today), ``neutron.conf`` and ``cinder.conf`` under
``--db-config-dir``. Every connection is opened read-only (the session is put
in read-only transaction mode before any statement), and only the tables and
columns needed are read. User and project names still come from Keystone.

The records are built by the same functions as the API export
(:func:`~stackhop.kinds.keypair.keypair_record`, ...), so both exports of a
cloud hold the same records. One difference is inherent: the database says
which quota values were *set*; the API only which differ from the defaults.
Values set equal to the default are therefore dropped here too.
"""

from __future__ import annotations

import configparser
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from stackhop.errors import ConfigError
from stackhop.kinds.base import Record
from stackhop.kinds.keypair import keypair_record
from stackhop.kinds.quota import explicit, quota_record
from stackhop.kinds.security_group import group_record, rules_record

#: Where each database's connection URL is configured: (file, section).
DATABASES: Mapping[str, tuple[str, str]] = {
    "nova_api": ("nova/nova.conf", "api_database"),
    "neutron": ("neutron/neutron.conf", "database"),
    "cinder": ("cinder/cinder.conf", "database"),
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

    def query(self, database: str, sql: str, **params: Any) -> list[sa.Row[Any]]:
        engine = self._engines.get(database)
        url, path = connection_url(self.config_dir, database)
        if engine is None:
            try:
                engine = sa.create_engine(url, pool_pre_ping=True)
            except (sa.exc.ArgumentError, ImportError) as exc:
                raise ConfigError(f"{path}: cannot use connection URL: {exc}") from exc
            _read_only(engine)
            self._engines[database] = engine
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(sql), params))
        except sa.exc.OperationalError as exc:
            where = sa.make_url(url).render_as_string(hide_password=True)
            reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
            raise ConfigError(
                f"cannot read the {database} database at {where}: {reason} "
                f"(check the connection in {path} and that the database answers)"
            ) from exc

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()

    # -- per kind -------------------------------------------------------------

    def keypairs(self, users: Iterable[Mapping[str, Any]]) -> Iterator[Record]:
        by_id = {u["id"]: u for u in users}
        rows = self.query(
            "nova_api",
            "SELECT user_id, name, type, public_key, fingerprint FROM key_pairs "
            "ORDER BY user_id, name",
        )
        for row in rows:
            user = by_id.get(row.user_id)
            if user is not None:  # a keypair of a deleted user is not listed by the API either
                yield keypair_record(
                    user, row.name, row.type or "ssh", row.public_key, fingerprint=row.fingerprint
                )

    def _limits(
        self, database: str, sql: str, defaults_sql: str | None
    ) -> dict[str, dict[str, int]]:
        by_project: dict[str, dict[str, int]] = defaultdict(dict)
        for row in self.query(database, sql):
            by_project[row.project_id][row.resource] = int(row.hard_limit)
        defaults = {}
        if defaults_sql:
            defaults = {r.resource: int(r.hard_limit) for r in self.query(database, defaults_sql)}
        return {p: explicit(v, defaults) for p, v in by_project.items()}

    def quotas(self, kind: str, projects: Iterable[Mapping[str, Any]]) -> Iterator[Record]:
        if kind == "nova.quota":
            limits = self._limits(
                "nova_api",
                "SELECT project_id, resource, hard_limit FROM quotas",
                "SELECT resource, hard_limit FROM quota_classes WHERE class_name = 'default'",
            )
        elif kind == "neutron.quota":
            limits = self._limits(
                "neutron",
                "SELECT project_id, resource, `limit` AS hard_limit FROM quotas",
                None,
            )
        elif kind == "cinder.quota":
            limits = self._limits(
                "cinder",
                "SELECT project_id, resource, hard_limit FROM quotas WHERE deleted = 0",
                "SELECT resource, hard_limit FROM quota_classes "
                "WHERE class_name = 'default' AND deleted = 0",
            )
        else:
            raise ConfigError(f"no database export for {kind}")
        for project in projects:
            if limits.get(project["id"]):
                yield quota_record(project, limits[project["id"]])

    def security_groups(self, projects: Iterable[Mapping[str, Any]]) -> Iterator[Record]:
        by_id = {p["id"]: p for p in projects}
        rows = self.query(
            "neutron",
            "SELECT g.id, g.project_id, g.name, g.stateful, s.description "
            "FROM securitygroups g JOIN standardattributes s ON s.id = g.standard_attr_id "
            "ORDER BY s.id",
        )
        for row in rows:
            if row.project_id in by_id:
                yield group_record(row._asdict(), by_id[row.project_id])

    def security_group_rules(
        self, groups: Iterable[Mapping[str, Any]], projects: Iterable[Mapping[str, Any]]
    ) -> Iterator[Record]:
        by_id = {g["id"]: g for g in groups}
        by_project = {p["id"]: p for p in projects}
        rows = self.query(
            "neutron",
            "SELECT r.id, r.security_group_id, r.remote_group_id, r.direction, r.ethertype, "
            "r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix, s.description "
            "FROM securitygrouprules r JOIN standardattributes s ON s.id = r.standard_attr_id",
        )
        by_group: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in rows:
            if row.security_group_id in by_id:
                by_group[row.security_group_id].append(row._asdict())
        for group_id, group in by_id.items():
            yield rules_record(
                group, by_group.get(group_id, []), by_project.get(group["project_id"])
            )


def read(
    reader: DatabaseReader,
    kind: str,
    *,
    users: list[Record],
    projects: list[Record],
    groups: list[Record],
) -> Iterator[Record]:
    """The records of ``kind`` from the databases, for the given identities and groups."""
    if kind == "nova.keypair":
        return reader.keypairs(users)
    if kind.endswith(".quota"):
        return reader.quotas(kind, projects)
    if kind == "neutron.security_group":
        return reader.security_groups(projects)
    if kind == "neutron.security_group_rules":
        return reader.security_group_rules(groups, projects)
    raise ConfigError(f"no database export for {kind}")
