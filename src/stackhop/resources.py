"""Resource transfer between clouds: export, plan, import, verify, rollback (job 1).

The commands of :mod:`stackhop.cli.resources` are thin skins over these
functions. Records come from the source through the API (the kinds' ``list``)
or from the services' databases (:mod:`stackhop.dbexport`), travel in an
archive (or in memory for ``migrate``), are resolved against the destination's
users and projects (:mod:`stackhop.kinds.identity`), planned
(:mod:`stackhop.plan`) and applied by the engine (:mod:`stackhop.engine`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stackhop import dbexport
from stackhop import kinds as registry
from stackhop.dbexport import DatabaseReader
from stackhop.errors import ConflictError, UsageError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import DONE, Journal
from stackhop.kinds.base import Connection, Kind, Record
from stackhop.kinds.identity import (
    PROJECT,
    USER,
    IdentityMapping,
    OperatorMap,
    list_projects,
    list_users,
    map_identities,
)
from stackhop.plan import BulkFinder, Conflict, Create, Operation, Skip, plan, plan_batches
from stackhop.resolve import Resolver

#: Selector flag -> the kinds it selects (``--quotas`` is the three quota kinds).
SELECTORS: Mapping[str, tuple[str, ...]] = {
    "keypairs": ("nova.keypair",),
    "nova_quotas": ("nova.quota",),
    "neutron_quotas": ("neutron.quota",),
    "cinder_quotas": ("cinder.quota",),
    "quotas": ("nova.quota", "neutron.quota", "cinder.quota"),
    "security_groups": ("neutron.security_group", "neutron.security_group_rules"),
}
ALL_KINDS: tuple[str, ...] = (
    "nova.keypair",
    "nova.quota",
    "neutron.quota",
    "cinder.quota",
    "neutron.security_group",
    "neutron.security_group_rules",
)
IDENTITY_KINDS = (USER, PROJECT)


def selected_kinds(chosen: Iterable[str]) -> list[str]:
    """The kind names for the selector flags set (none set: every kind)."""
    names: list[str] = []
    for selector in chosen:
        for name in SELECTORS[selector]:
            if name not in names:
                names.append(name)
    return [k for k in ALL_KINDS if k in names] if names else list(ALL_KINDS)


class RecordSink(Protocol):
    def add_kind(self, kind: str) -> None: ...

    def write(self, kind: str, record: dict[str, Any]) -> None: ...


@dataclass
class RecordSet:
    """Records by kind in memory: what an archive holds, without the file (``migrate``)."""

    records: dict[str, list[Record]] = field(default_factory=dict)

    def add_kind(self, kind: str) -> None:
        self.records.setdefault(kind, [])

    def write(self, kind: str, record: dict[str, Any]) -> None:
        self.records.setdefault(kind, []).append(record)

    def kinds(self) -> list[str]:
        return list(self.records)

    def get(self, kind: str) -> list[Record]:
        return self.records.get(kind, [])


# -- export --------------------------------------------------------------------


def _pick_projects(projects: list[Record], wanted: Sequence[str] | None) -> list[Record]:
    if not wanted:
        return projects
    picked = [p for p in projects if p["id"] in wanted or p["name"] in wanted]
    found = {p["id"] for p in picked} | {p["name"] for p in picked}
    missing = [w for w in wanted if w not in found]
    if missing:
        raise UsageError(
            f"no project {', '.join(map(repr, missing))} on the source cloud; "
            "pass a project ID or name that exists there"
        )
    return picked


def _users_of(conn: Connection, users: list[Record], projects: list[Record]) -> list[Record]:
    """The users with a role in one of ``projects`` (whose keypairs a project export carries)."""
    ids: set[str] = set()
    for project in projects:
        for assignment in conn.identity.role_assignments(scope_project_id=project["id"]):
            if assignment.user:
                ids.add(assignment.user["id"])
    return [u for u in users if u["id"] in ids]


def export(
    conn: Connection,
    sink: RecordSink,
    kinds: Sequence[str],
    *,
    projects: Sequence[str] | None = None,
    database: DatabaseReader | None = None,
    events: EventSink | None = None,
) -> dict[str, int]:
    """Read ``kinds`` from the source into ``sink``; return the count per kind.

    Users and projects always come from the source's Keystone API; the
    records of each kind from its API, or from the services' databases when
    ``database`` is given (``--via db``).
    """
    events = events or NullSink()
    all_users = list(list_users(conn))
    all_projects = list(list_projects(conn))
    chosen = _pick_projects(all_projects, projects)
    users = _users_of(conn, all_users, chosen) if projects else all_users
    counts = {USER: _write_all(sink, USER, users), PROJECT: _write_all(sink, PROJECT, chosen)}
    groups: list[Record] = []
    for name in kinds:
        kind = registry.get(name)
        events.emit(Event(EventType.KIND_STARTED, kind=name, message="export"))
        records: Iterable[Record]
        if database is not None:
            records = dbexport.read(database, name, users=users, projects=chosen, groups=groups)
        elif name == "nova.keypair":
            records = kind.list(conn, users=users)
        elif name == "neutron.security_group_rules":
            records = kind.list(conn, groups=groups, projects=chosen)
        else:
            records = kind.list(conn, projects=chosen)
        if name == "neutron.security_group":
            records = groups = list(records)
        counts[name] = _write_all(sink, name, records)
    return counts


def _write_all(sink: RecordSink, kind: str, records: Iterable[Record]) -> int:
    sink.add_kind(kind)
    count = 0
    for record in records:
        sink.write(kind, record)
        count += 1
    return count


# -- resolving and planning ----------------------------------------------------


def records_of(source: Any, kind: str) -> list[Record]:
    """The records of ``kind`` in an ArchiveReader or a RecordSet."""
    if isinstance(source, RecordSet):
        return source.get(kind)
    return list(source.records(kind)) if kind in source.kinds() else []


def check_selection(source: Any, kinds: Sequence[str], explicit: bool) -> list[str]:
    """The kinds to import: those selected that the archive holds.

    A selector naming a kind the archive lacks is a UsageError (the operator
    asked for something that is not there); without selectors, every kind the
    archive holds is taken.
    """
    held = set(source.kinds())
    if explicit:
        missing = [k for k in kinds if k not in held]
        if missing:
            raise UsageError(
                f"the archive holds no {', '.join(missing)} records; export them first or "
                f"drop the selector (it holds: {', '.join(sorted(held)) or 'nothing'})"
            )
    return [k for k in kinds if k in held]


@dataclass
class Prepared:
    """What planning needs: the records per kind, the identity mapping, the resolver."""

    records: dict[Kind, list[Record]]
    identities: IdentityMapping
    resolver: Resolver


def prepare(
    source: Any,
    kinds: Sequence[str],
    destination: Connection,
    scope: str,
    *,
    user_map: OperatorMap | None = None,
    project_map: OperatorMap | None = None,
    journal: Journal | None = None,
) -> Prepared:
    """Map the archive's users and projects on the destination and build the resolver."""
    identities = map_identities(
        records_of(source, USER),
        records_of(source, PROJECT),
        destination,
        user_map=user_map,
        project_map=project_map,
    )
    resolver = Resolver(scope, maps=identities.maps(), keep_ids=frozenset(), journal=journal)
    records = {registry.get(k): records_of(source, k) for k in kinds}
    return Prepared(records=records, identities=identities, resolver=resolver)


def bulk_finder(conn: Connection, workers: int = 8) -> BulkFinder:
    """The planner's bulk lookup: each kind reads its destination objects in few requests.

    A kind lists what its API can list in one request (all groups of many
    projects, all keypairs of a user, ...) and looks up the rest ``workers``
    at a time (:meth:`~stackhop.kinds.base.Kind.find_many`): the planner is
    sequential, and one GET per object in a row would dominate a large import.
    """
    return lambda kind, records: kind.find_many(conn, records, workers)


def plan_import(
    prepared: Prepared, destination: Connection, overwrite: bool, workers: int = 8
) -> list[Operation]:
    """The operations an import would apply (nothing is changed)."""
    return plan(
        prepared.records,
        lambda kind, record: kind.find(destination, record),
        prepared.resolver,
        overwrite,
        find_many=bulk_finder(destination, workers),
    )


def plan_stream(
    prepared: Prepared, destination: Connection, overwrite: bool, workers: int = 8
) -> Iterator[list[Operation]]:
    """:func:`plan_import` kind by kind as each is planned (the kinds of one dependency level
    side by side), for :meth:`~stackhop.engine.Engine.run_planned` to apply while it reads."""
    return plan_batches(
        prepared.records,
        lambda kind, record: kind.find(destination, record),
        prepared.resolver,
        overwrite,
        find_many=bulk_finder(destination, workers),
        # One worker applies in plan order; planning side by side would reorder the kinds.
        side_by_side=workers > 1,
    )


def unmapped_message(identities: IdentityMapping) -> str | None:
    """One line naming the users and projects with no destination counterpart."""
    parts = []
    for kind, flag in ((USER, "--user-map"), (PROJECT, "--project-map")):
        names = identities.unmapped_labels(kind)
        if names:
            parts.append(f"{kind.split('.')[1]}s {', '.join(names)} (map them with {flag})")
    if not parts:
        return None
    return "not on the destination, their objects are skipped: " + "; ".join(parts)


# -- verify --------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """One object that does not match between the archive and the destination."""

    kind: str
    identity: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "identity": self.identity, "problem": self.problem}


def verify(
    prepared: Prepared, destination: Connection, workers: int = 8
) -> tuple[int, list[Mismatch]]:
    """Compare the destination with the records: (objects checked, mismatches)."""
    checked, mismatches = 0, []
    operations = plan(
        prepared.records,
        lambda kind, record: kind.find(destination, record),
        prepared.resolver,
        find_many=bulk_finder(destination, workers),
    )
    for op in operations:
        checked += 1
        if isinstance(op, Skip):
            continue
        if isinstance(op, Create):
            problem = "missing on the destination"
            observe = getattr(op.kind, "observe", None)
            if observe is not None and not op.depends_on:
                state = observe(destination, op.resolved)
                if state is not None:
                    problem = (
                        "; ".join(d.describe() for d in op.kind.compare(op.resolved, state))
                        or problem
                    )
        elif isinstance(op, Conflict):
            problem = op.reason
        else:
            problem = "; ".join(d.describe() for d in op.differences)
        mismatches.append(Mismatch(op.kind.name, op.identity, problem))
    return checked, mismatches


# -- rollback ------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackStep:
    """One undo: delete what a run created, or restore what it changed."""

    action: str  # delete / restore
    kind: str
    identity: str
    destination_id: str | None
    outcome: str = "planned"
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def rollback(
    journal: Journal,
    destination: Connection,
    run_ids: Sequence[str],
    *,
    dry_run: bool = False,
    events: EventSink | None = None,
) -> list[RollbackStep]:
    """Undo what the runs ``run_ids`` did on the destination, in reverse dependency order.

    Objects a run created are deleted; values a run changed are restored from
    the journal's ``before``. Objects that existed before the run (planned as
    skips or conflicts) are never touched. Undone operations leave the
    journal, so the same import can be run again.
    """
    events = events or NullSink()
    runs = [journal.run(r) for r in run_ids]
    rows = [
        op
        for run in runs
        for op in journal.operations(run_id=run.id, state=DONE)
        if op.action in ("create", "update")
    ]
    known = [registry.get(name) for name in sorted({op.kind for op in rows})]
    order = [k.name for level in reversed(registry.dependency_levels(known)) for k in level]
    rows.sort(key=lambda op: order.index(op.kind))
    created_groups = {
        op.destination_id
        for op in rows
        if op.kind == "neutron.security_group" and op.action == "create"
    }
    steps: list[RollbackStep] = []
    for op in rows:
        kind = registry.get(op.kind)
        action = "delete" if op.action == "create" else "restore"
        step = RollbackStep(action, op.kind, op.identity, op.destination_id)
        if dry_run:
            steps.append(step)
            continue
        try:
            if op.kind == "neutron.security_group_rules" and op.destination_id in created_groups:
                pass  # deleting the group deletes its rules
            elif action == "delete" and op.destination_id:
                kind.delete(destination, op.destination_id)
            elif action == "restore":
                restore = getattr(kind, "restore", None)
                if restore is None or op.before is None:
                    raise ConflictError(f"{op.kind} {op.identity!r}: no previous state journaled")
                restore(destination, op.before)
        except Exception as exc:  # report each failure, carry on with the rest
            step = RollbackStep(
                action,
                op.kind,
                op.identity,
                op.destination_id,
                "failed",
                f"{type(exc).__name__}: {exc}",
            )
        else:
            step = RollbackStep(action, op.kind, op.identity, op.destination_id, "done")
            # Undone: drop the operation and its ID mapping, so a later import starts afresh.
            journal.forget(op.scope, op.kind, op.identity, op.source_id)
        events.emit(
            Event(
                EventType.OPERATION_FINISHED,
                kind=op.kind,
                identity=op.identity,
                operation=action,
                outcome=step.outcome,
                message=step.error,
            )
        )
        steps.append(step)
    return steps


__all__ = [
    "ALL_KINDS",
    "SELECTORS",
    "Mismatch",
    "Prepared",
    "RecordSet",
    "RollbackStep",
    "bulk_finder",
    "check_selection",
    "export",
    "plan_import",
    "plan_stream",
    "prepare",
    "rollback",
    "selected_kinds",
    "unmapped_message",
    "verify",
]
