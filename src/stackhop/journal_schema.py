"""The journal's schema: its tables, forward migrations and the upgrade that applies them.

``MIGRATIONS[n]`` takes a journal from schema version n to n+1. Each spells
its tables out as they were at that version (never the current ``metadata``),
so an old journal upgrades step by step. :func:`upgrade` applies what is
missing, refuses a journal newer than this stackhop, and serializes
concurrent upgraders. The tables are described in ``docs/journal.md``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import OperationalError, ProgrammingError

from stackhop import __version__
from stackhop.errors import JournalError


def _timestamp() -> sa.types.TypeEngine[datetime]:
    # MySQL/MariaDB DATETIME drops fractions of a second unless asked.
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("command", sa.String(255), nullable=False),
    sa.Column("source_cloud", sa.String(255)),
    sa.Column("destination_cloud", sa.String(255)),
    sa.Column("args", sa.JSON),
    sa.Column("started_at", _timestamp(), nullable=False),
    sa.Column("finished_at", _timestamp()),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("executor", sa.String(16)),
    sa.Column("coordinator", sa.String(255)),
    sa.Column("coordinator_seen_at", _timestamp()),
)

operations = sa.Table(
    "operations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), nullable=False, index=True),
    sa.Column("scope", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("identity", sa.String(500), nullable=False),
    sa.Column("source_id", sa.String(255)),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("destination_id", sa.String(255)),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("before_state", sa.JSON),
    sa.Column("created_at", _timestamp(), nullable=False),
    sa.Column("updated_at", _timestamp(), nullable=False),
    sa.Column("undone_by", sa.String(36)),
    sa.Column("stage", sa.String(64)),
    sa.Column("progress", sa.JSON),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_expires", _timestamp()),
    sa.Column("dispatched_at", _timestamp()),
    sa.Column("payload", sa.JSON),
    sa.Column("error_class", sa.String(128)),
    sa.UniqueConstraint("scope", "kind", "identity", name="uq_operations_key"),
    sa.Index("ix_operations_run_state", "run_id", "state"),
)

id_map = sa.Table(
    "id_map",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("source_id", sa.String(255), nullable=False),
    sa.Column("destination_id", sa.String(255), nullable=False),
    sa.UniqueConstraint("scope", "kind", "source_id", name="uq_id_map_key"),
)

chunks = sa.Table(
    "chunks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("object", sa.String(500), nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.UniqueConstraint("object", "offset", name="uq_chunks_key"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), nullable=False, index=True),
    sa.Column("operation_id", sa.Integer),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("detail", sa.JSON),
    sa.Column("at", _timestamp(), nullable=False),
)

journal_info = sa.Table(
    "journal_info",
    metadata,
    sa.Column("journal_id", sa.String(36), primary_key=True),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("written_by", sa.String(32), nullable=False),
)


# -- migrations --------------------------------------------------------------


def _migrate_1_initial(conn: Connection) -> None:
    """Version 1: runs, operations, id_map."""
    m = sa.MetaData()
    sa.Table(
        "runs",
        m,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("command", sa.String(255), nullable=False),
        sa.Column("source_cloud", sa.String(255)),
        sa.Column("destination_cloud", sa.String(255)),
        sa.Column("args", sa.JSON),
        sa.Column("started_at", _timestamp(), nullable=False),
        sa.Column("finished_at", _timestamp()),
        sa.Column("outcome", sa.String(32), nullable=False),
    )
    sa.Table(
        "operations",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), nullable=False, index=True),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("identity", sa.String(500), nullable=False),
        sa.Column("source_id", sa.String(255)),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("destination_id", sa.String(255)),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.UniqueConstraint("scope", "kind", "identity", name="uq_operations_key"),
    )
    sa.Table(
        "id_map",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(255), nullable=False),
        sa.Column("destination_id", sa.String(255), nullable=False),
        sa.UniqueConstraint("scope", "kind", "source_id", name="uq_id_map_key"),
    )
    m.create_all(conn)


def _migrate_2_rollback_and_chunks(conn: Connection) -> None:
    """Version 2: ``operations.before_state`` (state before an update, for rollback) and chunks."""
    json_type = sa.JSON().compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE operations ADD COLUMN before_state {json_type}")
    m = sa.MetaData()
    sa.Table(
        "chunks",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("object", sa.String(500), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.UniqueConstraint("object", "offset", name="uq_chunks_key"),
    )
    m.create_all(conn)


def _migrate_3_rolled_back(conn: Connection) -> None:
    """Version 3: ``operations.undone_by``, the rollback run that undid a ``done`` operation.

    From this version a rollback marks what it undid (state ``rolled_back``)
    instead of deleting the row; journals of version 2 hold no such row, so no
    data moves. The version bump keeps an older stackhop, which knows no
    ``rolled_back`` state, from opening a journal that has one.
    """
    conn.exec_driver_sql("ALTER TABLE operations ADD COLUMN undone_by VARCHAR(36)")


def _migrate_4_stage_and_progress(conn: Connection) -> None:
    """Version 4: ``operations.stage`` and ``operations.progress`` of a long operation.

    A task (:class:`stackhop.task.Task`: a volume pass, a project phase)
    reports while it runs the stage it reached and how far it is (``{"done",
    "total", "unit"}``), so ``stackhop status`` shows a running or
    interrupted one and its resume knows where it stopped. Older rows have
    neither (NULL): no data moves.
    """
    json_type = sa.JSON().compile(dialect=conn.dialect)
    conn.exec_driver_sql("ALTER TABLE operations ADD COLUMN stage VARCHAR(64)")
    conn.exec_driver_sql(f"ALTER TABLE operations ADD COLUMN progress {json_type}")


def _migrate_5_leases(conn: Connection) -> None:
    """Version 5: what runs the operations of one run on several hosts needs (issue 20).

    ``operations``: a lease (``lease_owner``, ``lease_expires`` by the database's
    clock), ``dispatched_at`` (sent to a worker), ``payload`` (what the worker
    rebuilds the operation from), ``error_class`` (the failure's class, for the
    coordinator's exit code), and an index on ``(run_id, state)``. ``runs``: the
    executor and the coordinator following the run. ``events``: what workers say
    besides their rows. ``journal_info``: this journal's random ID (a worker refuses a
    message naming another journal). Every new column is NULL on older rows, which
    means "no lease, run in-process, not dispatched": no data moves. The bump keeps
    an older stackhop, which would ignore leases, off this journal.
    """
    # MariaDB commits each DDL statement by itself: a migration cut short there is taken
    # up again, so each step looks first.
    inspector = sa.inspect(conn)
    json_type = sa.JSON().compile(dialect=conn.dialect)
    stamp = _timestamp().compile(dialect=conn.dialect)
    for table, columns in (
        ("operations", (("lease_owner", "VARCHAR(255)"), ("lease_expires", stamp),
                        ("dispatched_at", stamp), ("payload", json_type),
                        ("error_class", "VARCHAR(128)"))),
        ("runs", (("executor", "VARCHAR(16)"), ("coordinator", "VARCHAR(255)"),
                  ("coordinator_seen_at", stamp))),
    ):
        present = {c["name"] for c in inspector.get_columns(table)}
        for column, type_ in columns:
            if column not in present:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {type_}")
    m = sa.MetaData()
    sa.Table(
        "events",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), nullable=False, index=True),
        sa.Column("operation_id", sa.Integer),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("detail", sa.JSON),
        sa.Column("at", _timestamp(), nullable=False),
    )
    info = sa.Table("journal_info", m, sa.Column("journal_id", sa.String(36), primary_key=True))
    m.create_all(conn)  # (tables that exist are left as they are)
    if "ix_operations_run_state" not in {i["name"] for i in inspector.get_indexes("operations")}:
        conn.exec_driver_sql("CREATE INDEX ix_operations_run_state ON operations (run_id, state)")
    if conn.execute(sa.select(sa.func.count()).select_from(info)).scalar_one() == 0:
        conn.execute(info.insert().values(journal_id=str(uuid.uuid4())))


Migration = Callable[[Connection], None]

#: Forward migrations; ``MIGRATIONS[n]`` takes the schema from version n to n+1.
MIGRATIONS: tuple[Migration, ...] = (
    _migrate_1_initial,
    _migrate_2_rollback_and_chunks,
    _migrate_3_rolled_back,
    _migrate_4_stage_and_progress,
    _migrate_5_leases,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _read_version(conn: Connection) -> tuple[int, str] | None:
    row = conn.execute(sa.select(schema_version.c.version, schema_version.c.written_by)).first()
    return None if row is None else (int(row.version), str(row.written_by))


def _ensure_version_table(engine: Engine) -> None:
    try:
        with engine.begin() as conn:
            schema_version.create(conn, checkfirst=True)
            if _read_version(conn) is None:
                conn.execute(schema_version.insert().values(version=0, written_by=__version__))
    except (OperationalError, ProgrammingError, SAIntegrityError):
        # Another process created it between our check and our create: fine,
        # as long as the table is there now.
        with engine.connect() as conn:
            if _read_version(conn) is None:
                raise


_SCHEMA_LOCK = "stackhop-journal-schema"
_SCHEMA_LOCK_ID = 0x57AC4809  # the PostgreSQL advisory lock key for the same purpose


@contextmanager
def _schema_lock(engine: Engine, timeout: float = 120.0) -> Iterator[None]:
    """Serialize schema upgrades between processes on a server database.

    MySQL/MariaDB commit DDL implicitly, so a row lock cannot guard a
    migration: a named session lock does. PostgreSQL gets an advisory lock.
    SQLite needs none (``BEGIN IMMEDIATE`` already serializes writers).
    """
    backend = engine.url.get_backend_name()
    if backend not in ("mysql", "mariadb", "postgresql"):
        yield
        return
    with engine.connect() as conn:
        if backend == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK_ID})
        else:
            got = conn.execute(
                sa.text("SELECT GET_LOCK(:name, :timeout)"),
                {"name": _SCHEMA_LOCK, "timeout": int(timeout)},
            ).scalar()
            if got != 1:
                raise JournalError(
                    "another stackhop has been upgrading the journal schema for "
                    f"{int(timeout)} s; wait for it to finish and retry"
                )
        conn.commit()
        try:
            yield
        finally:
            if backend == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK_ID})
            else:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": _SCHEMA_LOCK})
            conn.commit()


def upgrade(engine: Engine, target: int = SCHEMA_VERSION) -> int:
    """Bring the journal at ``engine`` up to schema ``target``; return the version reached.

    Each step runs in its own transaction and moves the version row with a
    compare-and-set; on a server database the whole upgrade holds a schema
    lock, so concurrent openers of a fresh journal never both apply a
    migration. A journal newer than this stackhop raises JournalError.
    """
    with _schema_lock(engine):
        return _upgrade(engine, target)


def _upgrade(engine: Engine, target: int) -> int:
    _ensure_version_table(engine)
    while True:
        with engine.begin() as conn:
            found = _read_version(conn)
            assert found is not None  # _ensure_version_table inserted it
            version, written_by = found
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {engine.url.render_as_string(hide_password=True)} has schema "
                    f"version {version}, written by stackhop {written_by}; this stackhop "
                    f"({__version__}) reads up to version {SCHEMA_VERSION}: use stackhop "
                    f">= {written_by} with this journal"
                )
            if version >= target:
                return version
            MIGRATIONS[version](conn)
            result = conn.execute(
                schema_version.update()
                .where(schema_version.c.version == version)
                .values(version=version + 1, written_by=__version__)
            )
            if result.rowcount != 1:
                raise JournalError(
                    f"journal schema moved from version {version} while upgrading it; retry"
                )
