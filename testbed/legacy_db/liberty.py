"""Liberty-shaped databases: the tables the DB export reads, as Liberty's migrations left them.

Built from the facts, checked against the ``liberty-eol`` tags of the
services' repositories, not by running Liberty:

- Nova: ``key_pairs`` (216_havana; ``type`` enum ``keypair_types`` ssh/x509
  from 275, ``name`` NOT NULL from 280), ``quotas``, ``project_user_quotas``
  and ``quota_classes`` all in the **main** ``nova`` database, each with
  ``deleted`` INTEGER (0, or the row's ID once soft-deleted). Keypairs moved
  to ``nova_api`` in Newton, quotas in Ocata
  (the API tables and their online data migration are in nova 15.0.0; the
  issue said Pike).
- Neutron: ``securitygroups``, ``securitygrouprules``, ``quotas`` and
  ``default_security_group`` with ``tenant_id`` (``project_id`` from Newton),
  ``description`` on the group row itself and no ``standardattributes``
  (Mitaka). ``limit`` is a reserved word in both dialects.
- Cinder: ``quotas`` with ``deleted`` BOOLEAN (``tinyint(1)`` on MariaDB,
  ``boolean`` on PostgreSQL) and ``allocated`` (048, Liberty).

The databases ``src_liberty_nova``, ``src_liberty_neutron`` and
``src_liberty_cinder`` exist on MariaDB and on PostgreSQL and hold src's
seeded rows, plus one soft-deleted keypair, Nova quota and Cinder quota
beside a live row of the same name: a reader that ignores ``deleted``
exports them twice. Rules with a ``remote_address_group_id`` (Wallaby) have
no Liberty form and are left out.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import MEDIUMTEXT
from sqlalchemy.schema import CreateTable

from testbed import layout
from testbed.infra import postgresql
from testbed.legacy_db import rows

CLOUD = layout.SRC
SERVICES = ("nova", "neutron", "cinder")
STAMP_DIR = postgresql.BASE_DIR / "stamps"
_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8"}
#: When the soft-deleted trap rows were deleted (any fixed time: stamps stay stable).
_DELETED_AT = datetime.datetime(2016, 3, 1, 12, 0, 0)


def db_name(service: str) -> str:
    return CLOUD.db_name(f"liberty_{service}")


def _audit() -> list[sa.Column[Any]]:
    return [sa.Column("created_at", sa.DateTime), sa.Column("updated_at", sa.DateTime),
            sa.Column("deleted_at", sa.DateTime)]


def nova_schema() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "key_pairs", md, *_audit(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255)),
        sa.Column("fingerprint", sa.String(255)),
        sa.Column("public_key", sa.Text().with_variant(MEDIUMTEXT(), "mysql")),
        sa.Column("deleted", sa.Integer),
        sa.Column("type", sa.Enum("ssh", "x509", name="keypair_types"), nullable=False,
                  server_default="ssh"),
        sa.UniqueConstraint("user_id", "name", "deleted",
                            name="uniq_key_pairs0user_id0name0deleted"),
        **_MYSQL,
    )
    sa.Table(
        "quotas", md,
        sa.Column("id", sa.Integer, primary_key=True), *_audit(),
        sa.Column("project_id", sa.String(255)),
        sa.Column("resource", sa.String(255), nullable=False),
        sa.Column("hard_limit", sa.Integer),
        sa.Column("deleted", sa.Integer),
        sa.UniqueConstraint("project_id", "resource", "deleted",
                            name="uniq_quotas0project_id0resource0deleted"),
        **_MYSQL,
    )
    sa.Table(
        "project_user_quotas", md,
        sa.Column("id", sa.Integer, primary_key=True), *_audit(),
        sa.Column("deleted", sa.Integer),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("resource", sa.String(255), nullable=False),
        sa.Column("hard_limit", sa.Integer),
        sa.UniqueConstraint("user_id", "project_id", "resource", "deleted",
                            name="uniq_project_user_quotas0user_id0project_id0resource0deleted"),
        **_MYSQL,
    )
    sa.Table(
        "quota_classes", md, *_audit(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("class_name", sa.String(255), index=True),
        sa.Column("resource", sa.String(255)),
        sa.Column("hard_limit", sa.Integer),
        sa.Column("deleted", sa.Integer),
        **_MYSQL,
    )
    return md


def neutron_schema() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "securitygroups", md,
        sa.Column("tenant_id", sa.String(255), index=True),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("description", sa.String(255)),
        **_MYSQL,
    )
    sa.Table(
        "securitygrouprules", md,
        sa.Column("tenant_id", sa.String(255), index=True),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("security_group_id", sa.String(36),
                  sa.ForeignKey("securitygroups.id", ondelete="CASCADE"), nullable=False),
        sa.Column("remote_group_id", sa.String(36),
                  sa.ForeignKey("securitygroups.id", ondelete="CASCADE")),
        sa.Column("direction",
                  sa.Enum("ingress", "egress", name="securitygrouprules_direction")),
        sa.Column("ethertype", sa.String(40)),
        sa.Column("protocol", sa.String(40)),
        sa.Column("port_range_min", sa.Integer),
        sa.Column("port_range_max", sa.Integer),
        sa.Column("remote_ip_prefix", sa.String(255)),
        **_MYSQL,
    )
    sa.Table(
        "default_security_group", md,
        sa.Column("tenant_id", sa.String(255), primary_key=True),
        sa.Column("security_group_id", sa.String(36),
                  sa.ForeignKey("securitygroups.id", ondelete="CASCADE"), nullable=False),
        **_MYSQL,
    )
    sa.Table(
        "quotas", md,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(255), index=True),
        sa.Column("resource", sa.String(255)),
        sa.Column("limit", sa.Integer),
        **_MYSQL,
    )
    return md


def cinder_schema() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "quotas", md,
        sa.Column("id", sa.Integer, primary_key=True), *_audit(),
        sa.Column("deleted", sa.Boolean),
        sa.Column("project_id", sa.String(255)),
        sa.Column("resource", sa.String(255), nullable=False),
        sa.Column("hard_limit", sa.Integer),
        sa.Column("allocated", sa.Integer, server_default="0"),
        mysql_engine="InnoDB",
    )
    return md


SCHEMAS: dict[str, Callable[[], sa.MetaData]] = {
    "nova": nova_schema, "neutron": neutron_schema, "cinder": cinder_schema,
}


# -- rows: src's seeded data in Liberty's shape ------------------------------------------


def _select(conn: sa.Connection, statement: str) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.exec_driver_sql(statement)]


def _trap(live: list[dict[str, Any]], deleted: object) -> list[dict[str, Any]]:
    """A soft-deleted twin of the first live row (new ID; same identity otherwise)."""
    if not live:
        return []
    new_id = max(r["id"] for r in live) + 1
    twin = {**live[0], "id": new_id, "deleted_at": _DELETED_AT,
            "deleted": new_id if deleted == "id" else deleted}
    if "hard_limit" in twin:
        twin["hard_limit"] = 1  # a value the live row never has: the export shows which it read
    return [twin]


def nova_rows(src: sa.Connection) -> dict[str, list[dict[str, Any]]]:
    audit = "created_at, updated_at, NULL AS deleted_at, 0 AS deleted"
    keypairs = _select(src, f"SELECT {audit}, id, name, user_id, fingerprint, public_key, type "
                            "FROM key_pairs")
    quotas = _select(src, f"SELECT {audit}, id, project_id, resource, hard_limit FROM quotas")
    return {
        "key_pairs": keypairs + _trap(keypairs, "id"),
        "quotas": quotas + _trap(quotas, "id"),
        "project_user_quotas": _select(
            src, f"SELECT {audit}, id, user_id, project_id, resource, hard_limit "
                 "FROM project_user_quotas"),
        "quota_classes": _select(
            src, f"SELECT {audit}, id, class_name, resource, hard_limit FROM quota_classes"),
    }


def neutron_rows(src: sa.Connection) -> dict[str, list[dict[str, Any]]]:
    return {
        "securitygroups": _select(
            src, "SELECT g.project_id AS tenant_id, g.id, g.name, s.description "
                 "FROM securitygroups g LEFT JOIN standardattributes s "
                 "ON s.id = g.standard_attr_id"),
        "securitygrouprules": _select(
            src, "SELECT project_id AS tenant_id, id, security_group_id, remote_group_id, "
                 "direction, ethertype, protocol, port_range_min, port_range_max, "
                 "remote_ip_prefix FROM securitygrouprules "
                 "WHERE remote_address_group_id IS NULL"),
        "default_security_group": _select(
            src, "SELECT project_id AS tenant_id, security_group_id FROM default_security_group"),
        "quotas": _select(
            src, "SELECT id, project_id AS tenant_id, resource, `limit` FROM quotas"),
    }


def cinder_rows(src: sa.Connection) -> dict[str, list[dict[str, Any]]]:
    quotas = _select(src, "SELECT created_at, updated_at, deleted_at, deleted, id, project_id, "
                          "resource, hard_limit, allocated FROM quotas WHERE NOT deleted")
    return {"quotas": quotas + _trap(quotas, True)}


#: The live database each Liberty database is filled from, and how.
SOURCES: dict[str, tuple[str, Callable[[sa.Connection], dict[str, list[dict[str, Any]]]]]] = {
    "nova": ("nova_api", nova_rows),
    "neutron": ("neutron", neutron_rows),
    "cinder": ("cinder", cinder_rows),
}


def _ddl_fingerprint(md: sa.MetaData) -> str:
    """The schema as DDL for both dialects: a change rebuilds the databases."""
    from sqlalchemy.dialects import mysql
    from sqlalchemy.dialects import postgresql as pg

    text = "".join(str(CreateTable(t).compile(dialect=d))
                   for d in (mysql.dialect(), pg.dialect()) for t in md.sorted_tables)
    return hashlib.sha256(text.encode()).hexdigest()


def _targets(service: str) -> Iterable[tuple[str, str]]:
    """(label, SQLAlchemy URL) of the service's Liberty database on each server."""
    name = db_name(service)
    yield ("mariadb", CLOUD.db_url(f"liberty_{service}"))
    yield ("postgresql", postgresql.url(name))


def build(report: Callable[[str], None] = print) -> None:
    """Every Liberty-shaped database on both servers, redone only where something changed."""
    postgresql.require()
    for service in SERVICES:
        md = SCHEMAS[service]()
        live_db, reader = SOURCES[service]
        source_url = CLOUD.db_url(live_db)
        wanted_rows = f"{_ddl_fingerprint(md)} {rows.checksum(source_url)}"
        todo = []
        for label, url in _targets(service):
            stamp = rows.Stamp(STAMP_DIR / f"liberty-{label}-{db_name(service)}", wanted_rows)
            if not stamp.done():
                todo.append((label, url, stamp))
            else:
                report(f"{label} {db_name(service)}: up to date")
        if not todo:
            continue
        eng = rows.engine(source_url)
        try:
            with eng.connect() as src:
                data = reader(src)
        finally:
            eng.dispose()
        for label, url, stamp in todo:
            _rebuild(label, service, url, md, data)
            stamp.mark()
            report(f"{label} {db_name(service)}: "
                   f"{sum(len(v) for v in data.values())} rows in Liberty's shape")


def _rebuild(label: str, service: str, url: str, md: sa.MetaData,
             data: dict[str, list[dict[str, Any]]]) -> None:
    """Drop and re-create the database (schema changes are rare; it has a few hundred rows)."""
    name = db_name(service)
    if label == "mariadb":
        server = rows.engine(CLOUD.db_url(f"liberty_{service}").replace(f"/{name}?", "/?"))
        try:
            with server.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8")
        finally:
            server.dispose()
    else:
        postgresql.drop_database(name)
        postgresql.create_database(name)
    eng = rows.engine(url)
    try:
        md.create_all(eng)
        with eng.begin() as conn:
            rows.replace_rows(conn, md.sorted_tables, data)
    finally:
        eng.dispose()
