"""src's service databases on PostgreSQL: schemas by the services' own code, rows from MariaDB.

Keystone, Nova (``nova_api`` and the cells ``nova_cell0``, ``nova_cell1``)
and Cinder make their schemas on PostgreSQL with their own tools
(``keystone-manage db_sync``, ``nova-manage api_db sync`` / ``db sync
--local_cell``, ``cinder-manage db sync``).
Neutron's migrations no longer run there: since 2025.2 the migration
``d553edeb540f`` (tag names case-sensitive) issues MySQL-only ``ALTER TABLE
... CONVERT TO CHARACTER SET``; its schema on PostgreSQL is made from
Neutron's own models instead (``neutron.db.migration.models.head``, the
metadata Neutron's migration tests compare the migrations against) and
stamped with the migration heads.

The rows are then copied from src's MariaDB databases (same names, other
server), whenever those changed since the last copy; Nova's cell mappings
are then pointed at the cells' PostgreSQL copies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from testbed import layout
from testbed.infra import postgresql
from testbed.infra.files import write_file
from testbed.legacy_db import rows
from testbed.openstack.config import render_ini
from testbed.openstack.runtime import version
from testbed.process import run

CLOUD = layout.SRC
#: Databases mirrored, with the Python distribution whose version their schema belongs to.
DATABASES: dict[str, str] = {
    "keystone": "keystone",
    "nova_api": "nova",
    "nova_cell0": "nova",
    "nova_cell1": "nova",
    "cinder": "cinder",
    "neutron": "neutron",
}
ETC_DIR = postgresql.BASE_DIR / "etc"
STAMP_DIR = postgresql.BASE_DIR / "stamps"
LOG = layout.LOG_DIR / "postgresql-mirror.log"

_NEUTRON_SCHEMA = """\
import sys
import sqlalchemy as sa
from neutron.db.migration.models import head
engine = sa.create_engine(sys.argv[1])
head.get_metadata().create_all(engine)
engine.dispose()
"""


def _conf(name: str, sections: dict[str, dict[str, object]]) -> Path:
    path = ETC_DIR / f"{name}.conf"
    write_file(path, render_ini(sections), mode=0o600)  # holds the database password
    return path


def _tool(program: str, conf: Path, *args: str) -> None:
    run([str(layout.VENV_BIN / program), "--config-file", str(conf), *args], log=LOG,
        timeout=900)


def _keystone() -> None:
    conf = _conf("keystone", {"database": {"connection": CLOUD.pg_url("keystone")}})
    _tool("keystone-manage", conf, "db_sync")


def _nova_conf(cell: str) -> Path:
    return _conf(f"nova-{cell}", {
        "database": {"connection": CLOUD.pg_url(cell)},
        "api_database": {"connection": CLOUD.pg_url("nova_api")},
    })


def _nova_api() -> None:
    _tool("nova-manage", _nova_conf("nova_cell1"), "api_db", "sync")


def _nova_cell(cell: str) -> Callable[[], None]:
    return lambda: _tool("nova-manage", _nova_conf(cell), "db", "sync", "--local_cell")


def _cinder() -> None:
    conf = _conf("cinder", {"database": {"connection": CLOUD.pg_url("cinder")}})
    _tool("cinder-manage", conf, "db", "sync")


def _neutron() -> None:
    run([str(layout.VENV_BIN / "python"), "-c", _NEUTRON_SCHEMA, CLOUD.pg_url("neutron")],
        log=LOG, timeout=600)
    conf = _conf("neutron", {
        "DEFAULT": {"core_plugin": "ml2", "service_plugins": "router"},
        "database": {"connection": CLOUD.pg_url("neutron")},
    })
    _tool("neutron-db-manage", conf, "stamp", "heads")


_MAKERS: dict[str, Callable[[], None]] = {
    "keystone": _keystone, "nova_api": _nova_api, "nova_cell0": _nova_cell("nova_cell0"),
    "nova_cell1": _nova_cell("nova_cell1"), "cinder": _cinder,
    "neutron": _neutron,
}


def ensure_schema(service: str) -> bool:
    """The service's database on PostgreSQL at the installed version; True if (re)made."""
    db = CLOUD.db_name(service)
    stamp = rows.Stamp(STAMP_DIR / f"schema-{db}", version(DATABASES[service]))
    if stamp.done():
        return False
    postgresql.drop_database(db)  # a half-made or older schema: start again
    (STAMP_DIR / f"rows-{db}").unlink(missing_ok=True)
    postgresql.create_database(db)
    _MAKERS[service]()
    stamp.mark()
    return True


def _point_cells_at_postgresql() -> None:
    """The copied cell mappings name MariaDB: point them at the cells' PostgreSQL copies."""
    eng = rows.engine(CLOUD.pg_url("nova_api"))
    try:
        with eng.begin() as conn:
            for cell in ("nova_cell0", "nova_cell1"):
                conn.execute(
                    sa.text("UPDATE cell_mappings SET database_connection = :pg "
                            "WHERE database_connection = :maria"),
                    {"pg": CLOUD.pg_url(cell), "maria": CLOUD.db_url(cell)},
                )
    finally:
        eng.dispose()


def mirror(report: Callable[[str], None] = print) -> None:
    """Every mirrored database's schema and rows, redone only where something changed."""
    postgresql.require()
    LOG.parent.mkdir(parents=True, exist_ok=True)
    for service in DATABASES:
        db = CLOUD.db_name(service)
        made = ensure_schema(service)
        source = CLOUD.db_url(service)
        stamp = rows.Stamp(STAMP_DIR / f"rows-{db}",
                           f"{version(DATABASES[service])} {rows.checksum(source)}")
        if stamp.done():
            report(f"postgresql {db}: up to date")
            continue
        counts = rows.copy_database(source, CLOUD.pg_url(service), f"PostgreSQL {db}")
        if service == "nova_api":
            _point_cells_at_postgresql()
        stamp.mark()
        report(f"postgresql {db}: {'schema made, ' if made else ''}"
               f"{sum(counts.values())} rows in {sum(1 for n in counts.values() if n)} tables")

