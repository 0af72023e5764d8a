"""The journal: stackhop's only memory of progress.

A SQL database (a SQLite file by default, any SQLAlchemy URL for PostgreSQL or
MariaDB) with five tables:

``runs``
    one row per command invocation (who, from where to where, when, outcome);
``operations``
    one row per object a command acts on, keyed by ``(scope, kind, identity)``
    so that a re-run of the same command finds the row of an earlier run and
    skips what is ``done``; a rollback run marks what it undid ``rolled_back``
    (and journals its own delete / restore operations beside it);
``id_map``
    source ID -> destination ID per ``(scope, kind)``, read by the resolver;
``chunks``
    which chunks of a data transfer are confirmed, keyed by ``(object, offset)``;
``schema_version``
    one row with the schema version; older journals are upgraded in place by
    forward migrations, newer ones are refused (:mod:`stackhop.journal_schema`).

Every state change touches exactly one row, written as a compare-and-set on
the row's ``state`` and ``attempts``: if the row changed under us (another
thread or process got there first) the update matches no row and
:class:`~stackhop.errors.JournalError` is raised instead of silently
overwriting it. That is what makes several workers safe on one journal.
:meth:`Journal.transition` is one change in one transaction;
:meth:`Journal.apply` commits several changes (and ID mappings) in one
transaction, all or none, so a busy engine does not pay a commit per row.

No secret ever goes into the journal: run arguments are scrubbed of anything
named like a password, token, secret or key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from stackhop.errors import JournalError
from stackhop.journal_records import (
    IN_CHUNK,
    Change,
    ChunkRecord,
    Mapping_,
    OperationRecord,
    RunRecord,
    Unmapping,
    operation_record,
    run_record,
)
from stackhop.journal_schema import (
    chunks,
    id_map,
    journal_info,
    operations,
    runs,
    upgrade,
)
from stackhop.sqlurl import with_shipped_driver

DEFAULT_PATH = "stackhop-journal.sqlite"
"""The journal file used when the operator names none (in the working directory)."""

PENDING = "pending"
DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
ROLLED_BACK = "rolled_back"
STATES = (PENDING, DONE, FAILED, SKIPPED, ROLLED_BACK)

#: Allowed state transitions; ``None`` is "no row yet". ``done`` is final for
#: the command that did it (a re-run skips it); only a rollback run moves it on,
#: to ``rolled_back``, after which the same command may do it again. A
#: ``failed`` or ``skipped`` row may be attempted again. An operation may fail
#: without an attempt (its dependency failed), hence new -> failed and
#: failed -> failed.
TRANSITIONS: Mapping[str | None, frozenset[str]] = {
    None: frozenset({PENDING, SKIPPED, FAILED}),
    PENDING: frozenset({PENDING, DONE, FAILED, SKIPPED}),
    FAILED: frozenset({PENDING, SKIPPED, FAILED}),
    SKIPPED: frozenset({PENDING, SKIPPED}),
    DONE: frozenset({ROLLED_BACK}),
    ROLLED_BACK: frozenset({PENDING, SKIPPED, FAILED}),
}

CHUNK_PENDING = "pending"
CHUNK_CONFIRMED = "confirmed"

RUN_RUNNING = "running"

_SECRET_WORDS = (
    "password",
    "passwd",
    "token",
    "secret",
    "private",
    "credential",
    "api_key",
    "apikey",
)


def _now() -> datetime:
    return datetime.now(UTC)


def db_clock(dialect: str, plus: float = 0.0) -> sa.ColumnElement[Any]:
    """The database server's time, ``plus`` seconds, as SQL: a lease is written and
    judged by one clock, never by those of the hosts that take it. On SQLite (one
    host) the text form SQLAlchemy stores, with microseconds."""
    micros = int(round(plus * 1_000_000))
    if dialect == "sqlite":
        return sa.literal_column(
            f"strftime('%Y-%m-%d %H:%M:%f', 'now', '{micros / 1_000_000:+.6f} seconds') || '000'"
        )
    if dialect == "postgresql":
        return sa.literal_column(f"(statement_timestamp() + INTERVAL '{micros} microseconds')")
    if dialect in ("mysql", "mariadb"):
        return sa.literal_column(f"(UTC_TIMESTAMP(6) + INTERVAL {micros} MICROSECOND)")
    raise JournalError(f"journal: no clock for database {dialect!r}")


def _still_running(row: OperationRecord) -> tuple[sa.ColumnElement[bool], ...]:
    """``row`` still ``pending`` at the attempt it was read at (the fencing token)."""
    c = operations.c
    return (c.id == row.id, c.state == PENDING, c.attempts == row.attempts)


@dataclasses.dataclass(frozen=True)
class Lease:
    """Who holds an operation's lease, and whether it ran out (by the database's clock)."""

    owner: str
    expired: bool


def scrub_secrets(value: Any) -> Any:
    """Return ``value`` with every mapping entry whose key looks secret removed (recursively)."""
    if isinstance(value, Mapping):
        return {
            str(k): scrub_secrets(v)
            for k, v in value.items()
            if not any(word in str(k).lower() for word in _SECRET_WORDS)
        }
    if isinstance(value, list | tuple):
        return [scrub_secrets(v) for v in value]
    return value


# -- the journal -------------------------------------------------------------


def journal_url(location: str | os.PathLike[str]) -> str:
    """Turn a journal location (a file path or a SQLAlchemy URL) into a URL."""
    text = os.fspath(location)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _create_private_file(path: Path) -> None:
    # Create the SQLite file ourselves so it is born 0600 (SQLite would use
    # the umask); its -wal and -shm files inherit the database file's mode.
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _sqlite_engine(url: sa.URL, *, timeout: float) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": timeout}, pool_size=16, max_overflow=16)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" hook below: pysqlite's
        # own deferred BEGIN lets two writers both take a read lock and then
        # deadlock when upgrading it, which busy_timeout cannot resolve.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


#: How long a journal on a database server waits for the server to answer again (a
#: restart, a failover) before the command stops with one line.
SERVER_WAIT = 120.0


def _server_engine(url: sa.URL, opened: threading.Event) -> Engine:
    """An engine for PostgreSQL or MariaDB that rides out the server's restart.

    Every connection is checked before use (``pool_pre_ping``): one the server
    closed is replaced. Once the journal is ``opened`` (a wrong URL fails at
    once), a new connection is retried with jittered waits for up to
    :data:`SERVER_WAIT` seconds while the server is away. A statement that was
    in flight when the server went is not repeated (its commit may or may not
    have happened): the command stops with one line, and a re-run resumes.
    """
    engine = sa.create_engine(url, pool_pre_ping=True, pool_size=16)
    refused = engine.dialect.loaded_dbapi.OperationalError
    where = url.render_as_string(hide_password=True)

    @sa.event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        if not opened.is_set():
            return dialect.connect(*cargs, **cparams)
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(refused),
            wait=tenacity.wait_random_exponential(multiplier=0.5, max=5),
            stop=tenacity.stop_after_delay(SERVER_WAIT),
            reraise=True,
        ):
            with attempt:
                return dialect.connect(*cargs, **cparams)
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    @sa.event.listens_for(engine, "handle_error")
    def _one_line(context: sa.engine.ExceptionContext) -> None:
        if context.is_pre_ping:  # the pool replaces that connection by itself
            return
        if context.connection is None or context.is_disconnect:
            reason = str(context.original_exception).strip().splitlines()[0]
            if context.connection is None:
                what, fix = "refused the connection", "check the URL and the server"
            else:
                what, fix = "went away mid-write", "once the server answers"
            raise JournalError(
                f"the journal's database server ({where}) {what}: {reason}; "
                f"{fix}, then re-run the same command: it resumes"
            ) from context.original_exception

    return engine


class Journal:
    """A handle on one journal database; thread-safe, share one per process.

    ``Journal(location)`` opens (creating and upgrading as needed) the journal
    at a file path or SQLAlchemy URL.
    """

    def __init__(self, location: str | os.PathLike[str] = DEFAULT_PATH, *, timeout: float = 60.0):
        self.url = sa.make_url(journal_url(location))
        self._opened = threading.Event()
        if self.url.get_backend_name() == "sqlite":
            if self.url.database in (None, "", ":memory:"):
                raise JournalError("the journal must be a file or a server database, not :memory:")
            _create_private_file(Path(self.url.database))
            self.engine = _sqlite_engine(self.url, timeout=timeout)
        else:
            self.url = with_shipped_driver(self.url)
            self.engine = _server_engine(self.url, self._opened)
        try:
            self.schema_version = upgrade(self.engine)
        except JournalError:
            self.engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as exc:
            self.engine.dispose()
            raise JournalError(f"cannot open journal {self.describe()}: {exc}") from exc
        self._opened.set()

    def describe(self) -> str:
        """The journal's location without any password, for messages."""
        return self.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @staticmethod
    def _expect_one(result: sa.CursorResult[Any], what: str) -> None:
        if result.rowcount != 1:
            raise JournalError(
                f"journal: {what} touched {result.rowcount} rows instead of 1 "
                "(another worker changed it; re-run the command to resume)"
            )

    # -- runs ----------------------------------------------------------------

    def start_run(
        self,
        command: str,
        *,
        source_cloud: str | None = None,
        destination_cloud: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Record the start of a command; ``args`` are stored without secrets."""
        run_id = str(uuid.uuid4())
        clean_args = json.loads(json.dumps(scrub_secrets(dict(args or {})), default=str))
        with self._transaction() as conn:
            conn.execute(
                runs.insert().values(
                    id=run_id,
                    command=command,
                    source_cloud=source_cloud,
                    destination_cloud=destination_cloud,
                    args=clean_args,
                    started_at=_now(),
                    outcome=RUN_RUNNING,
                )
            )
        return self.run(run_id)

    def finish_run(self, run_id: str, outcome: str) -> RunRecord:
        """Record the end of a run with its outcome (e.g. succeeded, failed, interrupted)."""
        run_id = self.run(run_id).id
        with self._transaction() as conn:
            result = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.finished_at.is_(None))
                .values(finished_at=_now(), outcome=outcome)
            )
            self._expect_one(result, f"finishing run {run_id}")
        return self.run(run_id)

    def claim_run(
        self, run_id: str, coordinator: str, *, stale_after: float, dead: str | None = None
    ) -> bool:
        """Become the coordinator of the running celery run ``run_id``: when it has none,
        or its coordinator has not been seen for ``stale_after`` seconds (by the database's
        clock) or is ``dead`` (a process of this host that is gone). False: another follows it."""
        c = runs.c
        with self._transaction() as conn:
            result = conn.execute(
                runs.update()
                .where(
                    c.id == run_id,
                    c.outcome == RUN_RUNNING,
                    sa.or_(
                        c.coordinator.is_(None),
                        c.coordinator == coordinator,
                        c.coordinator == (dead or ""),
                        c.coordinator_seen_at < self._clock(-stale_after),
                    ),
                )
                .values(executor="celery", coordinator=coordinator,
                        coordinator_seen_at=self._clock())  # fmt: skip
            )
        return result.rowcount == 1

    def coordinator_seen(self, run_id: str, within: float) -> bool:
        """Whether the coordinator of celery run ``run_id`` said it lives in the last
        ``within`` seconds (by the database's clock)."""
        c = runs.c
        with self.engine.connect() as conn:
            fresh = conn.execute(
                sa.select(c.coordinator_seen_at >= self._clock(-within)).where(c.id == run_id)
            ).scalar()
        return bool(fresh)

    def touch_run(self, run_id: str, coordinator: str) -> bool:
        """The coordinator of ``run_id`` is alive; False if another took the run over."""
        c = runs.c
        with self._transaction() as conn:
            result = conn.execute(
                runs.update()
                .where(c.id == run_id, c.coordinator == coordinator)
                .values(coordinator_seen_at=self._clock())
            )
        return result.rowcount == 1

    def run(self, run_id: str) -> RunRecord:
        """The run with this ID (a unique prefix is enough); JournalError if unknown."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(runs).where(runs.c.id.startswith(run_id, autoescape=True)).limit(2)
            ).all()
        if len(rows) != 1:
            problem = "is not in" if not rows else "is ambiguous in"
            raise JournalError(f"run {run_id!r} {problem} journal {self.describe()}")
        return run_record(rows[0])

    def runs(self) -> list[RunRecord]:
        """Every run, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).order_by(runs.c.started_at, runs.c.id)).all()
        return [run_record(r) for r in rows]

    # -- operations ----------------------------------------------------------

    def operation(self, scope: str, kind: str, identity: str) -> OperationRecord | None:
        """The operation row for this object, from whichever run last touched it."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(operations).where(
                    operations.c.scope == scope,
                    operations.c.kind == kind,
                    operations.c.identity == identity,
                )
            ).first()
        return None if row is None else operation_record(row)

    def operations(
        self,
        *,
        run_id: str | None = None,
        scope: str | None = None,
        kind: str | None = None,
        state: str | None = None,
    ) -> list[OperationRecord]:
        """Operation rows matching every given filter, in insertion order."""
        query = sa.select(operations).order_by(operations.c.id)
        for column, value in (
            (operations.c.run_id, run_id),
            (operations.c.scope, scope),
            (operations.c.kind, kind),
            (operations.c.state, state),
        ):
            if value is not None:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            return [operation_record(r) for r in conn.execute(query)]

    def counts(self, run_id: str | None = None) -> dict[str, dict[str, int]]:
        """Per kind, the number of operations in each state (every state present, zeros too)."""
        query = sa.select(operations.c.kind, operations.c.state, sa.func.count()).group_by(
            operations.c.kind, operations.c.state
        )
        if run_id is not None:
            query = query.where(operations.c.run_id == run_id)
        result: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for kind, state, count in conn.execute(query):
                result.setdefault(kind, dict.fromkeys(STATES, 0))[state] = int(count)
        return dict(sorted(result.items()))

    def transition(
        self,
        run_id: str,
        scope: str,
        kind: str,
        identity: str,
        state: str,
        *,
        action: str,
        expected: OperationRecord | None,
        source_id: str | None = None,
        destination_id: str | None = None,
        error: str | None = None,
        before: Any = None,
        attempt: bool = False,
        undone_by: str | None = None,
    ) -> OperationRecord:
        """Move one operation to ``state`` in one transaction touching one row.

        ``expected`` is the row as the caller last read it (``None``: no row
        yet). The write succeeds only if the row is still exactly that (same
        state and attempt count), else JournalError: another worker moved it.
        ``attempt=True`` counts one more attempt (use it when an API call is
        about to be made). ``before`` is kept (JSON) for rollback.
        """
        change = Change(
            run_id=run_id,
            scope=scope,
            kind=kind,
            identity=identity,
            state=state,
            action=action,
            expected=expected,
            source_id=source_id,
            destination_id=destination_id,
            error=error,
            before=before,
            attempt=attempt,
            undone_by=undone_by,
        )
        self.apply([change])
        found = self.operation(scope, kind, identity)
        assert found is not None
        return found

    def apply(
        self,
        changes: Sequence[Change],
        mappings: Sequence[Mapping_] = (),
        unmappings: Sequence[Unmapping] = (),
    ) -> list[OperationRecord]:
        """Apply several state changes and ID mappings in one transaction.

        Each change is the compare-and-set of :meth:`transition` on its own
        row; if any of them finds its row moved, nothing is written and
        JournalError is raised (the caller may retry them one by one). The
        rows are returned as written, in the order of ``changes``, without
        reading them back. ``mappings`` are :meth:`map_id` entries;
        ``unmappings`` drop the mappings of objects a rollback deleted.
        """
        now = _now()
        written: list[OperationRecord] = []
        change: Change | None = None
        try:
            with self._transaction() as conn:
                for change in changes:
                    written.append(self._apply_change(conn, change, now))
                change = None
                for mapping in mappings:
                    self._map_in(conn, *mapping)
                for scope, kind, source_id in unmappings:
                    conn.execute(
                        id_map.delete().where(
                            id_map.c.scope == scope,
                            id_map.c.kind == kind,
                            id_map.c.source_id == source_id,
                        )
                    )
        except SAIntegrityError as exc:
            what = f"{change.kind} {change.identity!r}" if change else "an ID mapping"
            raise JournalError(
                f"journal: {what} was started by another worker at the same time"
            ) from exc
        return written

    def _apply_change(self, conn: Connection, change: Change, now: datetime) -> OperationRecord:
        expected = change.expected
        current = expected.state if expected else None
        if change.state not in STATES:
            raise JournalError(f"journal: unknown operation state {change.state!r}")
        if change.state not in TRANSITIONS[current]:
            raise JournalError(
                f"journal: {change.kind} {change.identity!r} cannot go from "
                f"{current or 'new'} to {change.state}"
            )
        values: dict[str, Any] = {
            "run_id": change.run_id,
            "action": change.action,
            "state": change.state,
            "error": change.error,
            "updated_at": now,
        }
        if change.source_id is not None:
            values["source_id"] = change.source_id
        if change.destination_id is not None:
            values["destination_id"] = change.destination_id
        if change.before is not None:
            values["before_state"] = change.before
        values["undone_by"] = change.undone_by if change.state == ROLLED_BACK else None
        if change.state != PENDING:  # an outcome ends the lease and the work's payload
            values.update(lease_owner=None, lease_expires=None, payload=None, dispatched_at=None)
        if expected is None:
            attempts = 1 if change.attempt else 0
            result = conn.execute(
                operations.insert().values(
                    scope=change.scope,
                    kind=change.kind,
                    identity=change.identity,
                    attempts=attempts,
                    created_at=now,
                    **values,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            row_id, created = int(key[0]), now
            source_id, destination_id, before = change.source_id, change.destination_id, None
            stage, progress = None, None
        else:
            attempts = expected.attempts + (1 if change.attempt else 0)
            values["attempts"] = attempts
            result = conn.execute(
                operations.update()
                .where(
                    operations.c.id == expected.id,
                    operations.c.state == expected.state,
                    operations.c.attempts == expected.attempts,
                )
                .values(**values)
            )
            self._expect_one(result, f"moving {change.kind} {change.identity!r} to {change.state}")
            row_id, created = expected.id, expected.created_at
            source_id = change.source_id if change.source_id is not None else expected.source_id
            destination_id = (
                change.destination_id
                if change.destination_id is not None
                else expected.destination_id
            )
            before = expected.before
            stage, progress = expected.stage, expected.progress
        return OperationRecord(
            id=row_id,
            run_id=change.run_id,
            scope=change.scope,
            kind=change.kind,
            identity=change.identity,
            source_id=source_id,
            action=change.action,
            state=change.state,
            destination_id=destination_id,
            error=change.error,
            attempts=attempts,
            before=change.before if change.before is not None else before,
            created_at=created,
            updated_at=now,
            undone_by=values["undone_by"],
            stage=stage,
            progress=progress,
        )

    def report(
        self,
        row: OperationRecord,
        *,
        stage: str | None = None,
        progress: Mapping[str, Any] | None = None,
        before: Any = None,
        destination_id: str | None = None,
    ) -> bool:
        """Record how far the running operation ``row`` got; False if it is no longer running.

        Only the ``pending`` row of ``row``'s run and attempt is touched, so a
        late report never overwrites the outcome of a newer attempt. ``before``
        replaces the row's ``before_state`` (a task's resume state);
        ``destination_id`` records the object the operation made as soon as it exists.
        """
        values: dict[str, Any] = {"updated_at": _now()}
        if stage is not None:
            values["stage"] = stage
        if progress is not None:
            values["progress"] = dict(progress)
        if before is not None:
            values["before_state"] = before
        if destination_id is not None:
            values["destination_id"] = destination_id
        with self._transaction() as conn:
            result = conn.execute(
                operations.update()
                .where(*_still_running(row), operations.c.run_id == row.run_id)
                .values(**values)
            )
        return result.rowcount == 1

    # -- leases: an operation run by a worker on another host (issue 20) -------

    def journal_id(self) -> str:
        """This journal's random ID (schema 5): a worker refuses work naming another."""
        with self.engine.connect() as conn:
            return str(conn.execute(sa.select(journal_info.c.journal_id)).scalar_one())

    def _clock(self, plus: float = 0.0) -> sa.ColumnElement[Any]:
        return db_clock(self.engine.dialect.name, plus)

    def _lease_free(self) -> sa.ColumnElement[bool]:
        """Nobody holds the row's lease, or it ran out (by the database's clock)."""
        c = operations.c
        return sa.or_(c.lease_owner.is_(None), c.lease_expires < self._clock())

    def _taken(self, owner: str, ttl: float) -> dict[str, Any]:
        """What a take writes: the holder, the end of its term, one attempt more."""
        c = operations.c
        return {"lease_owner": owner, "lease_expires": self._clock(ttl),
                "attempts": c.attempts + 1, "updated_at": _now()}  # fmt: skip

    def take_lease(
        self, row: OperationRecord, owner: str, ttl: float, *, steal_from: str | None = None
    ) -> OperationRecord | None:
        """Take the lease of the ``pending`` operation ``row`` for ``ttl`` seconds; the row
        as taken, or None when it moved on or another holds a lease that has not run out.
        ``steal_from``: a holder known dead (a process of this host that is gone), whose
        lease is taken at once instead of after it runs out.

        Taking counts an attempt: ``attempts`` is the fencing token, so after a steal
        (the take of an expired lease) every write of the earlier holder, which
        compares ``attempts``, changes nothing.
        """
        c = operations.c
        with self._transaction() as conn:
            result = conn.execute(
                operations.update()
                .where(
                    *_still_running(row),
                    c.run_id == row.run_id,
                    sa.or_(self._lease_free(), c.lease_owner == (steal_from or "")),
                )
                .values(**self._taken(owner, ttl))
            )
            if result.rowcount != 1:
                return None
            # As it is now: what the holders before reported (stage, destination...).
            return operation_record(conn.execute(sa.select(operations).where(c.id == row.id)).one())

    def renew_lease(self, row: OperationRecord, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s lease of ``row``; False once it is lost.

        ``owner`` names one take (a worker adds a nonce of its own), so the holder's
        retries, which count attempts, keep their lease, and a steal ends it.
        """
        c = operations.c
        with self._transaction() as conn:
            result = conn.execute(
                operations.update()
                .where(c.id == row.id, c.state == PENDING, c.lease_owner == owner)
                .values(lease_expires=self._clock(ttl))
            )
        return result.rowcount == 1

    def operations_by_id(self, ids: Sequence[int]) -> dict[int, OperationRecord]:
        """The operation rows of ``ids`` (those that exist), in one read per chunk."""
        found: dict[int, OperationRecord] = {}
        wanted = sorted(set(ids))
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), IN_CHUNK):
                part = wanted[start : start + IN_CHUNK]
                for r in conn.execute(sa.select(operations).where(operations.c.id.in_(part))):
                    found[int(r.id)] = operation_record(r)
        return found

    def dispatch(self, rows: Sequence[tuple[OperationRecord, Any]]) -> list[int]:
        """Record that each ``(row, payload)`` goes to a worker: the payload it rebuilds the
        operation from, and the time (by the database's clock). The IDs of the rows
        still ``pending`` at the attempt read, which may be sent; the others moved on.
        One statement for them all (executemany), then one read of what it wrote."""
        if not rows:
            return []
        c = operations.c
        with self._transaction() as conn:
            conn.execute(
                operations.update()
                .where(
                    c.id == sa.bindparam("rid"),
                    c.state == PENDING,
                    c.attempts == sa.bindparam("seen"),
                )
                .values(payload=sa.bindparam("body"), dispatched_at=self._clock()),
                [{"rid": row.id, "seen": row.attempts, "body": payload} for row, payload in rows],
            )
            ids = [row.id for row, _ in rows]
            written = conn.execute(
                sa.select(c.id).where(c.id.in_(ids), c.state == PENDING, c.payload.is_not(None))
            ).scalars()
            sent = set(int(i) for i in written)
        return [row.id for row, _ in rows if row.id in sent]

    def take_leases(
        self, run_id: str, ids: Sequence[int], owner: str, ttl: float
    ) -> list[OperationRecord]:
        """:meth:`take_lease` of every row of ``ids`` that is ``pending`` in run ``run_id``
        and free, in one statement (a worker's first delivery of a bulk message); the rows
        as taken. Each take counts an attempt, as one by one."""
        if not ids:
            return []
        c = operations.c
        with self._transaction() as conn:
            conn.execute(
                operations.update()
                .where(
                    c.id.in_(list(ids)),
                    c.run_id == run_id,
                    c.state == PENDING,
                    self._lease_free(),
                )
                .values(**self._taken(owner, ttl))
            )
            taken = conn.execute(
                sa.select(operations).where(c.id.in_(list(ids)), c.lease_owner == owner)
            )
            return [operation_record(r) for r in taken]

    def release_lease(self, row: OperationRecord, owner: str) -> bool:
        """Give ``row``'s lease up without an outcome (the holder stops); False if not held."""
        c = operations.c
        with self._transaction() as conn:
            result = conn.execute(
                operations.update()
                .where(c.id == row.id, c.attempts == row.attempts, c.lease_owner == owner)
                .values(lease_owner=None, lease_expires=None)
            )
        return result.rowcount == 1

    def lease(self, row_id: int) -> Lease | None:
        """The lease on operation ``row_id``, or None when nobody holds one."""
        c = operations.c
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(c.lease_owner, c.lease_expires < self._clock()).where(c.id == row_id)
            ).first()
        if found is None or found[0] is None:
            return None
        return Lease(str(found[0]), bool(found[1]))

    def rows(
        self, scope: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], OperationRecord]:
        """The operation rows of several ``(kind, identity)`` keys in ``scope``, in one read."""
        wanted = set(keys)
        found: dict[tuple[str, str], OperationRecord] = {}
        identities = sorted({identity for _, identity in wanted})
        with self.engine.connect() as conn:
            for start in range(0, len(identities), IN_CHUNK):
                query = sa.select(operations).where(
                    operations.c.scope == scope,
                    operations.c.identity.in_(identities[start : start + IN_CHUNK]),
                )
                for row in conn.execute(query):
                    if (row.kind, row.identity) in wanted:
                        found[(row.kind, row.identity)] = operation_record(row)
        return found

    # -- ID map --------------------------------------------------------------

    def map_id(self, scope: str, kind: str, source_id: str, destination_id: str) -> None:
        """Record that ``source_id`` of ``kind`` is ``destination_id`` in ``scope``.

        Idempotent; a different earlier mapping is replaced (the destination
        object it named is gone, or the operator chose another).
        """
        for _ in range(3):
            try:
                with self._transaction() as conn:
                    self._map_in(conn, scope, kind, source_id, destination_id)
                return
            except SAIntegrityError:
                continue  # a concurrent insert of the same key: read it again
        raise JournalError(f"journal: cannot record the ID map for {kind} {source_id}")

    def _map_in(
        self, conn: Connection, scope: str, kind: str, source_id: str, destination_id: str
    ) -> None:
        key = (id_map.c.scope == scope, id_map.c.kind == kind, id_map.c.source_id == source_id)
        current = conn.execute(sa.select(id_map.c.destination_id).where(*key)).first()
        if current is None:
            conn.execute(
                id_map.insert().values(
                    scope=scope, kind=kind, source_id=source_id, destination_id=destination_id
                )
            )
        elif current.destination_id != destination_id:
            result = conn.execute(id_map.update().where(*key).values(destination_id=destination_id))
            self._expect_one(result, f"mapping {kind} {source_id}")

    def mapped_id(self, scope: str, kind: str, source_id: str) -> str | None:
        """The destination ID recorded for ``source_id``, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(id_map.c.destination_id).where(
                    id_map.c.scope == scope, id_map.c.kind == kind, id_map.c.source_id == source_id
                )
            ).first()
        return None if row is None else str(row.destination_id)

    def id_map(self, scope: str, kind: str) -> dict[str, str]:
        """The whole source -> destination map of one kind in one scope."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(id_map.c.source_id, id_map.c.destination_id).where(
                    id_map.c.scope == scope, id_map.c.kind == kind
                )
            )
            return {str(r.source_id): str(r.destination_id) for r in rows}

    def mappings(
        self,
        *,
        scope: str | None = None,
        kinds: Sequence[str] = (),
        ids: Sequence[str] = (),
    ) -> list[Mapping_]:
        """Every recorded mapping ``(scope, kind, source id, destination id)``, sorted.

        ``kinds`` keeps those kinds (a name ending in ``.`` keeps a whole
        service, e.g. ``nova.``); ``ids`` keeps mappings whose source or
        destination ID is one of them.
        """
        c = id_map.c
        query = sa.select(c.scope, c.kind, c.source_id, c.destination_id)
        if scope is not None:
            query = query.where(id_map.c.scope == scope)
        if kinds:
            query = query.where(
                sa.or_(
                    *(
                        id_map.c.kind.startswith(k, autoescape=True)
                        if k.endswith(".")
                        else id_map.c.kind == k
                        for k in kinds
                    )
                )
            )
        if ids:
            query = query.where(
                sa.or_(id_map.c.source_id.in_(list(ids)), id_map.c.destination_id.in_(list(ids)))
            )
        query = query.order_by(id_map.c.scope, id_map.c.kind, id_map.c.source_id)
        with self.engine.connect() as conn:
            return [
                (str(r.scope), str(r.kind), str(r.source_id), str(r.destination_id))
                for r in conn.execute(query)
            ]

    def mapped_kinds(self, scope: str | None = None) -> list[str]:
        """The kinds that have at least one mapping (in ``scope``), sorted."""
        query = sa.select(id_map.c.kind).distinct().order_by(id_map.c.kind)
        if scope is not None:
            query = query.where(id_map.c.scope == scope)
        with self.engine.connect() as conn:
            return [str(kind) for kind in conn.execute(query).scalars()]

    # -- chunks --------------------------------------------------------------

    def record_chunk(
        self, object_key: str, offset: int, length: int, digest: str, state: str = CHUNK_CONFIRMED
    ) -> None:
        """Record (or replace) what is known of the chunk at ``offset`` of ``object_key``."""
        if state not in (CHUNK_PENDING, CHUNK_CONFIRMED):
            raise JournalError(f"journal: unknown chunk state {state!r}")
        key = (chunks.c.object == object_key, chunks.c.offset == offset)
        values = {"length": length, "digest": digest, "state": state}
        for _ in range(3):
            try:
                with self._transaction() as conn:
                    result = conn.execute(chunks.update().where(*key).values(**values))
                    if result.rowcount == 0:
                        conn.execute(
                            chunks.insert().values(object=object_key, offset=offset, **values)
                        )
                    else:
                        self._expect_one(result, f"recording chunk {object_key}@{offset}")
                return
            except SAIntegrityError:
                continue
        raise JournalError(f"journal: cannot record chunk {object_key}@{offset}")

    def chunks(self, object_key: str) -> dict[int, ChunkRecord]:
        """Every recorded chunk of ``object_key`` by offset."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(chunks).where(chunks.c.object == object_key).order_by(chunks.c.offset)
            )
            return {
                int(r.offset): ChunkRecord(
                    object=r.object,
                    offset=int(r.offset),
                    length=int(r.length),
                    digest=r.digest,
                    state=r.state,
                )
                for r in rows
            }

    def replace_chunks(self, object_key: str, rows: list[tuple[int, int, str]]) -> None:
        """Make (offset, length, digest) rows, all confirmed, the only chunks of ``object_key``."""
        with self._transaction() as conn:
            conn.execute(chunks.delete().where(chunks.c.object == object_key))
            if rows:
                conn.execute(
                    chunks.insert(),
                    [
                        dict(object=object_key, offset=o, length=n, digest=d, state=CHUNK_CONFIRMED)
                        for o, n, d in rows
                    ],
                )

    def clear_chunks(self, object_key: str) -> int:
        """Forget the chunks of ``object_key`` (once its transfer is verified); return the count."""
        with self._transaction() as conn:
            result = conn.execute(chunks.delete().where(chunks.c.object == object_key))
            return int(result.rowcount)

