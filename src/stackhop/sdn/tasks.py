"""MidoNet's task tables in the Neutron database: schema, queueing, removal, the ID sequence.

The cluster's importer reads ``midonet_tasks`` rows with
``id > midonet_data_state.last_processed_task_id`` in ID order, so a task ID
must never be issued twice: removing tasks must not lower the table's
``AUTO_INCREMENT``, and nothing here ever sets a task ID by hand. InnoDB on
MariaDB >= 10.2.4 and MySQL >= 8.0 keeps the counter across a restart; on
older servers :mod:`stackhop.sdn.counter` keeps it through the server's init_file.

Tasks stackhop queues carry a ``transaction_id`` starting with
:data:`TRANSACTION_PREFIX`, which is how a rollback finds exactly them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from stackhop.errors import ConfigError
from stackhop.sdn.topology import NeutronObject

TASK_TYPES: tuple[str, ...] = ("CREATE", "DELETE", "UPDATE", "FLUSH")
CREATE = "CREATE"

#: 8 characters + 32 hex digits: exactly the 40 characters of the column.
TRANSACTION_PREFIX = "stackhop"

#: The columns of networking-midonet's string-generation ``midonet_tasks``
#: (migration 25aeae45d4ad as it stands since 2015-02-26), besides the project column.
STRING_COLUMNS = frozenset(
    {"id", "type", "data_type", "data", "resource_id", "transaction_id", "created_at"}
)
#: The pre-release integer generation (2014-10 .. 2015-02-26, in no tagged release).
INTEGER_COLUMNS = frozenset({"type_id", "data_type_id"})
UPGRADE_HINT = "run `neutron-db-manage --subproject networking-midonet upgrade head` first"

metadata = sa.MetaData()

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

TABLES: tuple[str, ...] = ("midonet_tasks", "midonet_data_state")
DATA_STATE_FIELDS = ("last_processed_task_id", "updated_at", "active_version", "readonly")


def _table(project_column: str | None) -> sa.TableClause:
    columns: list[sa.ColumnClause[Any]] = [
               sa.column("id", sa.Integer), sa.column("type", sa.String),
               sa.column("data_type", sa.String), sa.column("data", sa.Text),
               sa.column("resource_id", sa.String), sa.column("transaction_id", sa.String),
               sa.column("created_at", sa.DateTime)]
    if project_column:
        columns.append(sa.column(project_column, sa.String))
    return sa.table("midonet_tasks", *columns)


#: The columns every generation stackhop supports has (queries that need no project column).
tasks = _table(None)


@dataclass(frozen=True)
class TaskSchema:
    """The live ``midonet_tasks``: string generation, and its project column's name."""

    project_column: str | None  # tenant_id (2015.1 .. Mitaka), project_id (Newton on)

    @property
    def table(self) -> sa.TableClause:
        return _table(self.project_column)

    def describe(self) -> str:
        column = self.project_column or "no project column"
        return f"string generation, {column}"


def _now() -> datetime:
    # The importer's columns are naive DATETIMEs in UTC, as Neutron writes them.
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def tables_present(conn: Connection) -> set[str]:
    """Which task tables already exist in the connection's database."""
    return set(sa.inspect(conn).get_table_names()) & set(TABLES)


def detect_schema(conn: Connection) -> TaskSchema:
    """The generation of the live task table, from its columns; a one-line error otherwise.

    Only networking-midonet's string generation is written to; the integer
    generation (``type_id``/``data_type_id`` with lookup tables) numbered its
    types differently across commits and was in no release, so it is refused.
    """
    database = conn.execute(sa.text("SELECT DATABASE()")).scalar()
    if "midonet_tasks" not in tables_present(conn):
        raise ConfigError(
            f"database {database} has no midonet_tasks table (networking-midonet's "
            f"migrations create it): {UPGRADE_HINT}"
        )
    columns = {c["name"] for c in sa.inspect(conn).get_columns("midonet_tasks")}
    if columns & INTEGER_COLUMNS:
        raise ConfigError(
            f"midonet_tasks in {database} is the pre-release integer generation "
            f"(type_id/data_type_id), whose numbering MidoNet 5.x cannot read: {UPGRADE_HINT}"
        )
    missing = STRING_COLUMNS - columns
    if missing:
        raise ConfigError(
            f"midonet_tasks in {database} lacks column(s) {', '.join(sorted(missing))}; "
            f"it is not networking-midonet's task table: {UPGRADE_HINT}"
        )
    project = next((c for c in ("project_id", "tenant_id") if c in columns), None)
    return TaskSchema(project)


def queued_resource_ids(conn: Connection, data_type: str) -> set[str]:
    """Resource IDs that already have a CREATE task of ``data_type`` (queued by anyone)."""
    query = sa.select(tasks.c.resource_id).where(
        tasks.c.type == CREATE, tasks.c.data_type == data_type
    )
    return {r[0] for r in conn.execute(query)}


def new_transaction_id() -> str:
    """A transaction ID marking tasks as stackhop's (exactly 40 characters)."""
    return TRANSACTION_PREFIX + uuid.uuid4().hex


def task_data(obj: NeutronObject) -> str:
    """The ``data`` column of an object's CREATE task: its API representation as JSON."""
    return json.dumps(dict(obj.data), sort_keys=True, default=str)


def queue_creates(
    conn: Connection, schema: TaskSchema, data_type: str, objects: Iterable[NeutronObject]
) -> int:
    """Insert one CREATE task per object not yet queued; return how many were inserted.

    Each object is its own importer transaction (its own ``transaction_id``,
    as the plugin wrote one per API request). Rows go in one by one in the
    given order so that IDs follow it; the caller holds one database
    transaction for the whole group.
    """
    done = queued_resource_ids(conn, data_type)
    table = schema.table
    inserted = 0
    for obj in objects:
        if obj.id in done:
            continue
        values: dict[str, Any] = {
            "type": CREATE,
            "data_type": data_type,
            "data": task_data(obj),
            "resource_id": obj.id,
            "transaction_id": new_transaction_id(),
            "created_at": _now(),
        }
        if schema.project_column:
            values[schema.project_column] = obj.project_id
        conn.execute(table.insert().values(**values))
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
        str(name): int(n)
        for name, n in conn.execute(
            sa.select(tasks.c.data_type, sa.func.count(tasks.c.id)).group_by(tasks.c.data_type)
        )
    }
    total = conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar_one()
    ours = conn.execute(
        sa.select(sa.func.count()).where(tasks.c.transaction_id.startswith(TRANSACTION_PREFIX))
    ).scalar_one()
    highest = conn.execute(sa.select(sa.func.max(tasks.c.id))).scalar() or 0
    return TaskCounts(int(total), int(ours), per_type, int(highest), _auto_increment(conn))


def remove_tasks(conn: Connection, *, all_tasks: bool = False) -> tuple[int, int]:
    """Delete the tasks stackhop queued (``all_tasks``: every task); (rows deleted, highest issued).

    The counter is read before the delete and, should it have dropped (it must
    not on a guarded server), set back above every issued ID.
    """
    highest = highest_issued(conn)
    delete = tasks.delete()
    if not all_tasks:
        delete = delete.where(tasks.c.transaction_id.startswith(TRANSACTION_PREFIX))
    deleted = conn.execute(delete).rowcount
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
