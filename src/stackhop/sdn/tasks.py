"""MidoNet's task tables in the Neutron database: schema, queueing, removal, the ID sequence.

The cluster's importer reads ``midonet_tasks`` rows with
``id > midonet_data_state.last_processed_task_id`` in ID order, so a task ID
must never be issued twice: removing tasks must not lower the table's
``AUTO_INCREMENT``, and nothing here ever sets a task ID by hand. InnoDB on
MariaDB >= 10.2.4 and MySQL >= 8.0 keeps the counter across a restart; on an
engine that would not, :func:`guard_sequence` refuses to remove tasks.

Tasks stackhop queues carry a ``transaction_id`` starting with
:data:`TRANSACTION_PREFIX`, which is how a rollback finds exactly them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from stackhop.errors import ConfigError
from stackhop.sdn.topology import DATA_TYPES, NeutronObject

TASK_TYPES: tuple[str, ...] = ("create", "delete", "update", "flush")

#: 8 characters + 32 hex digits: exactly the 40 characters of the column.
TRANSACTION_PREFIX = "stackhop"

metadata = sa.MetaData()

task_types = sa.Table(
    "midonet_task_types",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    mysql_engine="InnoDB",
)

data_types = sa.Table(
    "midonet_data_types",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    mysql_engine="InnoDB",
)

tasks = sa.Table(
    "midonet_tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("type_id", sa.Integer, sa.ForeignKey("midonet_task_types.id"), nullable=False),
    sa.Column("data_type_id", sa.Integer, sa.ForeignKey("midonet_data_types.id")),
    sa.Column("data", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")),
    sa.Column("resource_id", sa.String(36)),
    sa.Column("transaction_id", sa.String(40), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    mysql_engine="InnoDB",
)

data_state = sa.Table(
    "midonet_data_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_processed_task_id", sa.Integer),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("active_version", sa.Integer),
    sa.Column("readonly", sa.Boolean, nullable=False),
    mysql_engine="InnoDB",
)

TABLES: tuple[str, ...] = tuple(t.name for t in metadata.sorted_tables)
DATA_STATE_FIELDS = ("last_processed_task_id", "updated_at", "active_version", "readonly")


def _now() -> datetime:
    # The importer's columns are naive DATETIMEs in UTC, as Neutron writes them.
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def tables_present(conn: Connection) -> set[str]:
    """Which task tables already exist in the connection's database."""
    return set(sa.inspect(conn).get_table_names()) & set(TABLES)


def ensure_schema(conn: Connection) -> list[str]:
    """Create the missing task tables and their fixed rows; return the tables created."""
    present = tables_present(conn)
    metadata.create_all(conn, checkfirst=True)
    for table, names in ((task_types, TASK_TYPES), (data_types, DATA_TYPES)):
        have = {r.name for r in conn.execute(sa.select(table.c.name))}
        for index, name in enumerate(names, start=1):
            if name not in have:
                conn.execute(table.insert().values(id=index, name=name))
    if conn.execute(sa.select(sa.func.count()).select_from(data_state)).scalar_one() == 0:
        conn.execute(
            data_state.insert().values(
                id=1, last_processed_task_id=0, updated_at=_now(), active_version=1, readonly=False
            )
        )
    return [t for t in TABLES if t not in present]


def _ids(conn: Connection, table: sa.Table) -> dict[str, int]:
    return {r.name: r.id for r in conn.execute(sa.select(table.c.id, table.c.name))}


def queued_resource_ids(conn: Connection, data_type: str) -> set[str]:
    """Resource IDs that already have a create task of ``data_type`` (queued by anyone)."""
    query = (
        sa.select(tasks.c.resource_id)
        .join(task_types, tasks.c.type_id == task_types.c.id)
        .join(data_types, tasks.c.data_type_id == data_types.c.id)
        .where(task_types.c.name == "create", data_types.c.name == data_type)
    )
    return {r[0] for r in conn.execute(query)}


def new_transaction_id() -> str:
    """A transaction ID marking tasks as stackhop's (exactly 40 characters)."""
    return TRANSACTION_PREFIX + uuid.uuid4().hex


def queue_creates(conn: Connection, data_type: str, objects: Iterable[NeutronObject]) -> int:
    """Insert one create task per object not yet queued; return how many were inserted.

    Rows go in one by one in the given order so that IDs follow it; the caller
    holds one transaction for the whole group.
    """
    done = queued_resource_ids(conn, data_type)
    type_id = _ids(conn, task_types)["create"]
    data_type_id = _ids(conn, data_types)[data_type]
    transaction_id = new_transaction_id()
    inserted = 0
    for obj in objects:
        if obj.id in done:
            continue
        conn.execute(
            tasks.insert().values(
                type_id=type_id,
                data_type_id=data_type_id,
                data=json.dumps(dict(obj.data), sort_keys=True, default=str),
                resource_id=obj.id,
                transaction_id=transaction_id,
                created_at=_now(),
            )
        )
        inserted += 1
    return inserted


@dataclass(frozen=True)
class TaskCounts:
    """How many tasks the table holds, in all and queued by stackhop, per data type."""

    total: int
    stackhop: int
    per_data_type: dict[str, int]
    highest_id: int
    next_id: int


def _auto_increment(conn: Connection, table: str = "midonet_tasks") -> int:
    value = conn.execute(
        sa.text(
            "SELECT auto_increment FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = :t"
        ),
        {"t": table},
    ).scalar()
    return int(value or 1)


def highest_issued(conn: Connection) -> int:
    """The highest task ID ever issued as far as the server knows (0 when none)."""
    highest = conn.execute(sa.select(sa.func.max(tasks.c.id))).scalar() or 0
    return max(int(highest), _auto_increment(conn) - 1)


def counts(conn: Connection) -> TaskCounts:
    """The task counts of the table (which must exist)."""
    per_type = {
        name: int(n)
        for name, n in conn.execute(
            sa.select(data_types.c.name, sa.func.count(tasks.c.id))
            .join(tasks, tasks.c.data_type_id == data_types.c.id)
            .group_by(data_types.c.name)
        )
    }
    total = conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar_one()
    ours = conn.execute(
        sa.select(sa.func.count()).where(tasks.c.transaction_id.startswith(TRANSACTION_PREFIX))
    ).scalar_one()
    highest = conn.execute(sa.select(sa.func.max(tasks.c.id))).scalar() or 0
    return TaskCounts(int(total), int(ours), per_type, int(highest), _auto_increment(conn))


_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def guard_sequence(conn: Connection) -> None:
    """Refuse to delete tasks where a server restart could hand out a deleted ID again."""
    version = str(conn.execute(sa.text("SELECT VERSION()")).scalar_one())
    engine = conn.execute(
        sa.text(
            "SELECT engine FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = 'midonet_tasks'"
        )
    ).scalar()
    match = _VERSION.match(version)
    numbers = tuple(int(x) for x in match.groups()) if match else (0, 0, 0)
    maria = "mariadb" in version.lower()
    persistent = numbers >= (10, 2, 4) if maria else numbers >= (8, 0, 0)
    if str(engine).lower() != "innodb" or not persistent:
        raise ConfigError(
            f"midonet_tasks is {engine} on server {version}, which may reset AUTO_INCREMENT "
            "on restart; removing tasks there could reissue task IDs. Use InnoDB on "
            "MariaDB >= 10.2.4 or MySQL >= 8.0"
        )


def remove_stackhop_tasks(conn: Connection) -> tuple[int, int]:
    """Delete the tasks stackhop queued; return (rows deleted, highest ID ever issued).

    The counter is read before the delete and, should it have dropped (it must
    not on a guarded server), set back above every issued ID.
    """
    highest = highest_issued(conn)
    deleted = conn.execute(
        tasks.delete().where(tasks.c.transaction_id.startswith(TRANSACTION_PREFIX))
    ).rowcount
    if _auto_increment(conn) <= highest:
        conn.execute(sa.text(f"ALTER TABLE midonet_tasks AUTO_INCREMENT = {int(highest) + 1}"))
    return int(deleted), highest


def read_data_state(conn: Connection) -> dict[str, Any] | None:
    """The one ``midonet_data_state`` row as JSON-ready data; None without table or row."""
    if "midonet_data_state" not in tables_present(conn):
        return None
    row = conn.execute(sa.select(data_state).order_by(data_state.c.id).limit(1)).first()
    if row is None:
        return None
    values = dict(row._mapping)
    updated = values["updated_at"]
    values["updated_at"] = updated.isoformat() if updated is not None else None
    values["readonly"] = bool(values["readonly"])
    return values


def write_data_state(conn: Connection, state: Mapping[str, Any] | None) -> None:
    """Make ``midonet_data_state`` hold exactly ``state`` (None: no row)."""
    if "midonet_data_state" not in tables_present(conn):
        if state is None:
            return
        metadata.create_all(conn, tables=[data_state], checkfirst=True)
    if state is None:
        conn.execute(data_state.delete())
        return
    values = {k: state[k] for k in DATA_STATE_FIELDS}
    values["updated_at"] = (
        datetime.fromisoformat(values["updated_at"]) if values["updated_at"] else None
    )
    row_id = state["id"]
    conn.execute(data_state.delete().where(data_state.c.id != row_id))
    exists = conn.execute(
        sa.select(sa.func.count()).where(data_state.c.id == row_id)
    ).scalar_one()
    if exists:
        conn.execute(data_state.update().where(data_state.c.id == row_id).values(**values))
    else:
        conn.execute(data_state.insert().values(id=row_id, **values))
