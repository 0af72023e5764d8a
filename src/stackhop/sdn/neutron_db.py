"""The Neutron database: where its URL comes from, connecting, checking privileges.

The URL is ``[database] connection`` of ``neutron.conf`` or given directly.
Every command checks the privileges it needs *before* changing anything, so
that a user without them gets one clear line and an untouched database.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from stackhop.errors import ConfigError, UsageError
from stackhop.sdn.errors import NeutronDatabaseError, NeutronPermissionError

#: MariaDB/MySQL error codes meaning "you may not": access denied to a database,
#: a login refused, a command or table refused.
_DENIED_CODES = frozenset({1044, 1045, 1142, 1143, 1227})
_LOGIN_REFUSED = 1045


@dataclass(frozen=True)
class NeutronDatabase:
    """Where the Neutron database is; ``url`` holds the password, ``describe()`` does not."""

    url: sa.URL

    @property
    def name(self) -> str:
        return self.url.database or ""

    @property
    def user(self) -> str:
        return self.url.username or ""

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def key(self) -> str:
        """``host:port/database``: the same database however it was named (journal scopes)."""
        return f"{self.url.host or 'localhost'}:{self.url.port or 3306}/{self.name}"

    def jdbc_url(self) -> str:
        """The JDBC connection string the MidoNet cluster's importer uses for this database."""
        host = self.url.host or "127.0.0.1"
        port = self.url.port or 3306
        return f"jdbc:mysql://{host}:{port}/{self.name}"


def from_neutron_conf(path: str | Path) -> NeutronDatabase:
    """The database named by ``[database] connection`` in ``neutron.conf``."""
    conf = Path(path)
    if not conf.is_file():
        raise ConfigError(f"no neutron.conf at {conf}; pass the file with --neutron-conf")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(conf, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {conf}: {exc}") from exc
    connection = parser.get("database", "connection", fallback="").strip()
    if not connection:
        raise ConfigError(f"{conf} has no [database] connection; pass --neutron-db URL instead")
    return from_url(connection, origin=str(conf))


def from_url(url: str, *, origin: str = "--neutron-db") -> NeutronDatabase:
    """A database from a SQLAlchemy URL (``mysql+pymysql://user:pw@host:port/neutron``)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise UsageError(f"{origin}: {url!r} is not a database URL: {exc}") from exc
    if parsed.get_backend_name() not in ("mysql", "mariadb"):
        raise UsageError(
            f"{origin}: the MidoNet task tables live in MySQL/MariaDB; "
            f"{parsed.get_backend_name()!r} is not supported"
        )
    if not parsed.database:
        raise UsageError(f"{origin}: the URL names no database")
    return NeutronDatabase(parsed)


def resolve(neutron_conf: str | None, neutron_db: str | None) -> NeutronDatabase:
    """Exactly one of ``--neutron-conf`` / ``--neutron-db``, as a :class:`NeutronDatabase`."""
    if bool(neutron_conf) == bool(neutron_db):
        raise UsageError("give exactly one of --neutron-conf FILE or --neutron-db URL")
    return from_neutron_conf(neutron_conf) if neutron_conf else from_url(neutron_db or "")


def _is_denied(exc: sa.exc.DBAPIError) -> bool:
    args: tuple[object, ...] = tuple(getattr(exc.orig, "args", ()))
    return bool(args) and args[0] in _DENIED_CODES


def _detail(exc: sa.exc.DBAPIError) -> str:
    """The server's own message (PyMySQL errors are ``(code, message)``), on one line."""
    args = tuple(getattr(exc.orig, "args", ()))
    return " ".join(str(args[-1] if args else exc).split())


def connect(db: NeutronDatabase) -> Engine:
    """An engine whose first connection has already succeeded (else a one-line error)."""
    engine = sa.create_engine(db.url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        detail = _detail(exc)
        if getattr(exc.orig, "args", (None,))[0] == _LOGIN_REFUSED:
            raise NeutronDatabaseError(
                url=db.describe(),
                detail=f"login refused for user {db.user!r} (check the user and password)",
            ) from exc
        if _is_denied(exc):
            raise NeutronPermissionError(
                user=db.user, missing="access", database=db.name, purpose="connect"
            ) from exc
        raise NeutronDatabaseError(url=db.describe(), detail=f"cannot connect: {detail}") from exc
    return engine


def _privileges(conn: Connection, database: str, table: str) -> set[str]:
    # information_schema lists what the *current* user holds, at each level
    # (global, database, table); a role's grants appear the same way.
    rows = conn.execute(
        sa.text(
            "SELECT privilege_type FROM information_schema.user_privileges "
            "UNION SELECT privilege_type FROM information_schema.schema_privileges "
            "  WHERE table_schema = :db "
            "UNION SELECT privilege_type FROM information_schema.table_privileges "
            "  WHERE table_schema = :db AND table_name = :table"
        ),
        {"db": database, "table": table},
    )
    return {r[0].upper() for r in rows}


def require_privileges(
    engine: Engine, db: NeutronDatabase, needs: Iterable[tuple[str, str]], purpose: str
) -> None:
    """Raise :class:`NeutronPermissionError` unless every ``(privilege, table)`` is held."""
    missing: list[str] = []
    with engine.connect() as conn:
        cache: dict[str, set[str]] = {}
        for privilege, table in needs:
            held = cache.setdefault(table, _privileges(conn, db.name, table))
            if privilege.upper() not in held and "ALL PRIVILEGES" not in held:
                missing.append(f"{privilege.upper()} on {table}")
    if missing:
        raise NeutronPermissionError(
            user=db.user, missing=", ".join(missing), database=db.name, purpose=purpose
        )


def translate(exc: sa.exc.DBAPIError, db: NeutronDatabase, purpose: str) -> Exception:
    """A database error met mid-way, as a stackhop error (permission or plain failure)."""
    detail = _detail(exc)
    if _is_denied(exc):
        return NeutronPermissionError(
            user=db.user, missing=f"a privilege ({detail})", database=db.name, purpose=purpose
        )
    return NeutronDatabaseError(url=db.describe(), detail=f"{purpose} failed: {detail}")
