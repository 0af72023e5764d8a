"""Copying rows between databases of different dialects, and stamps of what was copied.

The copy is a restore, not a merge: the target's tables are emptied and
refilled in one transaction, with PostgreSQL's foreign-key triggers off for
it (``session_replication_role = replica``, what ``pg_restore`` does), then
every serial sequence is moved past the highest ID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from testbed.infra.files import write_file
from testbed.process import TestbedError

Row = dict[str, Any]
#: Tables that hold a schema's version, not data: never copied.
VERSION_TABLES = frozenset({"alembic_version", "migrate_version"})
_BATCH = 1000


def engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def checksum(url: str) -> str:
    """A fingerprint of every row of a MariaDB database (``CHECKSUM TABLE``), cheap."""
    eng = engine(url)
    try:
        with eng.connect() as conn:
            names = sorted(sa.inspect(conn).get_table_names())
            if not names:
                return "empty"
            listed = ", ".join(f"`{n}`" for n in names)
            rows = conn.exec_driver_sql(f"CHECKSUM TABLE {listed}").all()
    finally:
        eng.dispose()
    return hashlib.sha256(repr(sorted((str(r[0]), r[1]) for r in rows)).encode()).hexdigest()


def _convert(column: sa.Column[Any]) -> Callable[[Any], Any]:
    """How a MariaDB value becomes one the target column accepts."""
    if isinstance(column.type, sa.Boolean):
        return lambda v: None if v is None else bool(v)
    if isinstance(column.type, sa.String | sa.Text):
        return lambda v: v.decode() if isinstance(v, bytes | bytearray) else v
    return lambda v: v


def replace_rows(
    conn: sa.Connection, tables: Sequence[sa.Table], rows: Mapping[str, Iterable[Row]]
) -> dict[str, int]:
    """Empty ``tables`` and insert ``rows`` (by table name) in ``conn``'s transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        listed = ", ".join(f'"{t.name}"' for t in tables)
        if listed:
            conn.exec_driver_sql(f"TRUNCATE {listed}")
    else:
        conn.exec_driver_sql("SET foreign_key_checks = 0")
        for t in tables:
            conn.execute(t.delete())
    counts: dict[str, int] = {}
    for t in tables:
        converters = {c.name: _convert(c) for c in t.columns}
        batch: list[Row] = []
        n = 0
        for row in rows.get(t.name, ()):
            batch.append({k: converters[k](v) for k, v in row.items()})
            if len(batch) >= _BATCH:
                conn.execute(t.insert(), batch)
                n += len(batch)
                batch = []
        if batch:
            conn.execute(t.insert(), batch)
            n += len(batch)
        counts[t.name] = n
    if conn.dialect.name == "postgresql":
        _advance_sequences(conn, tables)
    else:
        conn.exec_driver_sql("SET foreign_key_checks = 1")
    return counts


def _advance_sequences(conn: sa.Connection, tables: Sequence[sa.Table]) -> None:
    for t in tables:
        for c in t.primary_key.columns:
            if not isinstance(c.type, sa.Integer):
                continue
            seq = conn.execute(
                sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": f'"{t.name}"', "c": c.name}
            ).scalar()
            if seq:
                conn.execute(
                    sa.text(f'SELECT setval(:s, COALESCE((SELECT MAX("{c.name}") FROM "{t.name}"), '
                            "0) + 1, false)"),
                    {"s": seq},
                )


def copy_database(source_url: str, target_url: str, label: str) -> dict[str, int]:
    """Replace every row of the target database with the source's, table by table.

    The target's schema decides: each of its tables gets the rows of the
    source table of the same name. A source column with no place in the
    target is an error naming it (the two schemas must be the same version).
    """
    src, dst = engine(source_url), engine(target_url)
    try:
        src_meta, dst_meta = sa.MetaData(), sa.MetaData()
        src_meta.reflect(src)
        dst_meta.reflect(dst)
        tables = [t for t in dst_meta.sorted_tables if t.name not in VERSION_TABLES]
        with src.connect() as sconn, dst.begin() as dconn:
            # Tables the target's schema lacks (Neutron's models miss a few that only
            # migrations make) may be left out while they hold nothing.
            for name in sorted(set(src_meta.tables) - set(dst_meta.tables) - VERSION_TABLES):
                if sconn.execute(sa.select(sa.func.count()).select_from(src_meta.tables[name])
                                 ).scalar():
                    raise TestbedError(f"{label}: table {name} has rows but no place on the target")
            rows: dict[str, Iterable[Row]] = {}
            for t in tables:
                source = src_meta.tables.get(t.name)
                if source is None:
                    continue
                extra = [c.name for c in source.columns if c.name not in t.columns]
                if extra:
                    raise TestbedError(
                        f"{label}: column {t.name}.{extra[0]} has no place on the target"
                    )
                names = [c.name for c in t.columns if c.name in source.columns]
                result = sconn.execute(sa.select(*(source.c[n] for n in names)))
                rows[t.name] = [dict(zip(names, r, strict=True)) for r in result]
            return replace_rows(dconn, tables, rows)
    finally:
        src.dispose()
        dst.dispose()


class Stamp:
    """What a database was last made from; the work is skipped while it still matches."""

    def __init__(self, path: Path, value: str) -> None:
        self.path, self.value = path, value

    def done(self) -> bool:
        try:
            return self.path.read_text() == self.value
        except OSError:
            return False

    def mark(self) -> None:
        write_file(self.path, self.value)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
