"""Resource transfer between clouds: export, plan, import, verify (job 1).

The commands of :mod:`stackhop.cli.resources` are thin skins over these
functions. Records come from the source through the API (the kinds' ``list``)
or from the services' databases (:mod:`stackhop.dbexport`), travel in an
archive (or in memory for ``migrate``), are resolved against the destination's
users and projects (:mod:`stackhop.kinds.identity`), planned
(:mod:`stackhop.plan`) and applied by the engine (:mod:`stackhop.engine`).
Rollback is a run of its own (:mod:`stackhop.rollback`).

Which kinds move, their selector flags and their readers all come from the
kinds' own declarations (:mod:`stackhop.kinds`): nothing here names a kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from stackhop import dbexport
from stackhop import kinds as registry
from stackhop.dbexport import DatabaseReader
from stackhop.errors import ConfigError, UnmappedReferenceError, UsageError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import Journal
from stackhop.kinds.base import CREATED_AS, Connection, ExportScope, Kind, Record
from stackhop.kinds.identity import (
    PROJECT,
    USER,
    IdentityMapping,
    OperatorMap,
    domain_names,
    list_projects,
    list_users,
    map_identities,
)
from stackhop.plan import BulkFinder, Conflict, Create, Operation, Skip, plan, plan_batches
from stackhop.resolve import Resolver

#: Selector (argparse attribute, ``nova_quotas``) -> the kinds it selects, from the registry.
SELECTORS: Mapping[str, tuple[str, ...]] = {
    registry.selector_dest(flag): names for flag, (_, names) in registry.selectors().items()
}
#: The kinds ``export``/``import``/``migrate`` move, in dependency order, from the registry.
ALL_KINDS: tuple[str, ...] = tuple(kind.name for kind in registry.transfer_kinds())
IDENTITY_KINDS = (USER, PROJECT)


def selected_kinds(chosen: Iterable[str], *, archive: bool = False) -> list[str]:
    """The kind names for the selector flags set (none set: every kind, except the opt-in
    ones unless reading an ``archive``, which holds only what its export chose)."""
    names: list[str] = []
    for selector in chosen:
        for name in SELECTORS[selector]:
            if name not in names:
                names.append(name)
    if names:
        return [k for k in ALL_KINDS if k in names]
    return [k for k in ALL_KINDS if archive or registry.get(k).default_selected]


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


def _project_members(conn: Connection) -> dict[str, set[str]]:
    """Project ID -> the IDs of the users with a role in it, from one listing.

    One listing of every assignment, filtered by the caller: a listing per project
    cost one Keystone round trip (about 0.45 s on the testbed) per project, most of
    a ``--via db`` export's time (bench/resources.py --profile-dir).
    """
    members: dict[str, set[str]] = {}
    for assignment in conn.identity.role_assignments():
        project = (assignment.scope or {}).get("project") or {}
        if assignment.user and project.get("id"):
            members.setdefault(project["id"], set()).add(assignment.user["id"])
    return members


def _users_of(
    members: Mapping[str, set[str]], users: list[Record], projects: list[Record]
) -> list[Record]:
    """The users with a role in one of ``projects`` (whose keypairs a project export carries)."""
    ids = set().union(*(members.get(p["id"], set()) for p in projects))
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
    # Keystone's three listings at once: a source whose Default holds an LDAP
    # directory spends a second on its users alone.
    domains = domain_names(conn)
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="keystone") as pool:
        users_read = pool.submit(lambda: list(list_users(conn, domains)))
        projects_read = pool.submit(lambda: list(list_projects(conn, domains)))
        members_read = pool.submit(_project_members, conn) if projects else None
        all_users, all_projects = users_read.result(), projects_read.result()
        members = members_read.result() if members_read is not None else {}
    chosen = _pick_projects(all_projects, projects)
    users = _users_of(members, all_users, chosen) if projects else all_users
    counts = {USER: _write_all(sink, USER, users), PROJECT: _write_all(sink, PROJECT, chosen)}
    exported: dict[str, list[Record]] = {}
    scope = ExportScope(
        users=users, projects=chosen, exported=exported, whole_cloud=not projects
    )
    ordered = [k for level in registry.dependency_levels(map(registry.get, kinds)) for k in level]
    needed = {dep for kind in ordered for dep in kind.dependencies()}
    for kind in ordered:
        events.emit(Event(EventType.KIND_STARTED, kind=kind.name, message="export"))
        records: Iterable[Record] = (
            dbexport.read(database, kind, scope)
            if database is not None
            else kind.export(conn, scope)
        )
        if kind.name in needed:  # a later kind reads per object of this one
            records = exported[kind.name] = list(records)
        counts[kind.name] = _write_all(sink, kind.name, records)
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
    options: Mapping[str, bool] | None = None,
) -> Prepared:
    """Map the archive's users and projects on the destination and build the resolver.

    ``options`` are the kinds' import options (``{"keep_segmentation_ids": True}``):
    each kind is configured with them (:meth:`~stackhop.kinds.base.Kind.configured`).
    """
    identities = map_identities(
        records_of(source, USER),
        records_of(source, PROJECT),
        destination,
        user_map=user_map,
        project_map=project_map,
    )
    resolver = Resolver(scope, maps=identities.maps(), keep_ids=frozenset(), journal=journal)
    records = {registry.get(k).configured(options or {}): records_of(source, k) for k in kinds}
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


def check_counterparts(
    prepared: Prepared, destination: Connection, cloud: str, workers: int = 8
) -> None:
    """Refuse, before anything is created, records of a :attr:`~Kind.mapped` kind (volume
    types) that nothing on the destination matches, unless the kind as configured
    :attr:`~Kind.may_create` (``--create-volume-types``).

    One ConfigError line per run, the kind's own (:meth:`~stackhop.kinds.base.Kind.unmatched`):
    it names the objects, the map option and the create flag. The planner would otherwise
    plan creates for them while other kinds are already being applied.
    """
    for kind, records in prepared.records.items():
        if not kind.mapped or kind.may_create or not records:
            continue
        resolved: list[tuple[Record, Record]] = []
        for record in records:
            try:
                resolved.append((record, prepared.resolver.resolve(kind, record)))
            except UnmappedReferenceError:
                continue  # a conflict in the plan, which names the map to fix
        found = kind.find_many(destination, [r for _, r in resolved], workers)
        pairs = zip(resolved, found, strict=True)
        missing = [record for (record, _), match in pairs if match is None]
        if missing:
            raise ConfigError(kind.unmatched(missing, cloud))


def record_aliases(
    journal: Journal, destination: Connection, scope: str, kinds: Iterable[Kind]
) -> None:
    """Put the other names the kinds' objects got on the destination (a floating IP's
    address) into the ID map, by source ID, from one read of the mapped objects."""
    for kind in kinds:
        if kind.alias_kind is None:
            continue
        mapped = journal.id_map(scope, kind.name)
        if not mapped:
            continue
        for source_id, alias in kind.aliases(destination, mapped).items():
            journal.map_id(scope, kind.alias_kind, source_id, alias)


#: How many unmapped names the warning spells out; a directory of a thousand people
#: left unmapped (a forgotten ``--domain-map``) must not fill the terminal.
UNMAPPED_NAMED = 10


def unmapped_message(identities: IdentityMapping) -> str | None:
    """One line naming the users and projects with no destination counterpart.

    At most :data:`UNMAPPED_NAMED` names per kind, then how many more; the full
    list is in the ``--log-json`` events and the run's skipped operations.
    """
    parts = []
    for kind, flag in ((USER, "--user-map"), (PROJECT, "--project-map")):
        names = identities.unmapped_labels(kind)
        if names:
            shown = ", ".join(names[:UNMAPPED_NAMED])
            if len(names) > UNMAPPED_NAMED:
                shown += f" and {len(names) - UNMAPPED_NAMED} more"
            parts.append(f"{len(names)} {kind.split('.')[1]}s: {shown} (map them with {flag})")
    if not parts:
        return None
    return "not on the destination, their objects are skipped: " + "; ".join(parts)


def unmapped_warning(
    identities: IdentityMapping, prepared: Prepared | None = None
) -> Event | None:
    """:func:`unmapped_message` as a warning whose detail lists every name (``--log-json``).

    With ``prepared``, users and projects its Keystone kinds move are not named: the run
    creates them (or finds them) and maps what refers to them.
    """
    if prepared is not None:
        moved = {
            str(r["id"])
            for kind, records in prepared.records.items()
            if kind.name in CREATED_AS.values()
            for r in records
        }
        kept = [entry for entry in identities.unmapped if entry[1] not in moved]
        identities = replace(identities, unmapped=kept)
    message = unmapped_message(identities)
    if message is None:
        return None
    detail = {
        kind.split(".")[1] + "s": identities.unmapped_labels(kind) for kind in (USER, PROJECT)
    }
    return Event(EventType.WARNING, message=message, detail=detail)


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
            if not op.depends_on:
                state = op.kind.observe(destination, op.resolved)
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


__all__ = [
    "ALL_KINDS",
    "SELECTORS",
    "Mismatch",
    "Prepared",
    "RecordSet",
    "bulk_finder",
    "check_counterparts",
    "check_selection",
    "export",
    "plan_import",
    "plan_stream",
    "prepare",
    "record_aliases",
    "selected_kinds",
    "unmapped_message",
    "unmapped_warning",
    "verify",
]
