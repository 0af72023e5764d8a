"""The planner: source records + destination state -> operations.

Operations are data. :func:`plan` reads the destination (through a finder)
but changes nothing; ``stackhop plan`` and ``--dry-run`` print the operations
it returns, and the engine applies exactly those. The rules, per record:

- resolve its references (:mod:`stackhop.resolve`); a reference nothing maps
  makes a :class:`Conflict` naming the map to fix;
- a record that refers to an object the run will create is a :class:`Create`
  that depends on that object's operation (it cannot exist yet either);
- otherwise look it up on the destination: missing -> :class:`Create`;
  identical in every portable field -> :class:`Skip`; different -> the kind's
  policy (:meth:`~stackhop.kinds.base.Kind.on_difference`): :class:`Update`
  with ``overwrite``, else :class:`Conflict` listing the differing fields.

A rollback is planned from the journal instead (:mod:`stackhop.rollback`):
:class:`Delete` and :class:`Restore` operations, each undoing one ``done``
operation of an earlier run, applied by the same engine.

Kinds whose objects carry bytes copy them inside ``create`` (a Glance upload
is all-or-nothing, so the object and its data are one step); there is no
separate data operation.
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stackhop.errors import UnmappedReferenceError
from stackhop.journal import OperationRecord
from stackhop.kinds import dependency_levels
from stackhop.kinds.base import CREATED_AS, Difference, Kind, Record
from stackhop.resolve import Resolver

OperationKey = tuple[str, str]
"""``(kind name, journal key)``: names one operation in a plan and in the journal."""

DestinationFinder = Callable[[Kind, Record], Record | None]
"""Looks a resolved record up on the destination: usually ``lambda k, r: k.find(conn, r)``."""

BulkFinder = Callable[[Kind, Sequence[Record]], list[Record | None]]
"""Looks many resolved records of one kind up at once, in their order:
usually ``lambda k, rs: k.find_many(conn, rs, workers)``."""


@dataclass(frozen=True, kw_only=True)
class Operation:
    """One thing to do (or not) to one object.

    ``source`` is the record as read from the source (source IDs), ``resolved``
    the same with references mapped as far as known at planning time,
    ``existing`` the destination counterpart if one was found.
    """

    action: ClassVar[str] = "operation"

    kind: Kind
    identity: str
    source: Record
    resolved: Record
    existing: Record | None = None
    differences: tuple[Difference, ...] = ()
    depends_on: tuple[OperationKey, ...] = ()

    @property
    def key(self) -> str:
        """This operation's identity in the journal (unique per kind and scope)."""
        return self.identity

    @property
    def ref(self) -> OperationKey:
        return (self.kind.name, self.key)

    @property
    def source_id(self) -> str | None:
        try:
            return self.kind.source_id(self.source)
        except KeyError:
            return None

    @property
    def destination_id(self) -> str | None:
        return None if self.existing is None else self.kind.destination_id(self.existing)

    def _detail(self) -> str:
        return ""

    def describe(self) -> str:
        """One line for people: ``create nova.keypair alice/key1``."""
        detail = self._detail()
        return f"{self.action} {self.kind.name} {self.identity}" + (f": {detail}" if detail else "")

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (``stackhop plan -f json``)."""
        return {
            "action": self.action,
            "kind": self.kind.name,
            "identity": self.identity,
            "source_id": self.source_id,
            "destination_id": self.destination_id,
            "differences": [d.as_dict() for d in self.differences],
            "depends_on": [list(ref) for ref in self.depends_on],
            "detail": self._detail() or None,
        }


@dataclass(frozen=True, kw_only=True)
class Create(Operation):
    """The object is missing on the destination: create it."""

    action: ClassVar[str] = "create"

    def _detail(self) -> str:
        return self.kind.create_detail(self.resolved)


@dataclass(frozen=True, kw_only=True)
class Update(Operation):
    """The object differs on the destination and the policy says to change it."""

    action: ClassVar[str] = "update"

    def _detail(self) -> str:
        return "changes " + ", ".join(d.field for d in self.differences)


@dataclass(frozen=True, kw_only=True)
class Skip(Operation):
    """Nothing to do: identical on the destination (or the kind keeps the destination's)."""

    action: ClassVar[str] = "skip"

    def _detail(self) -> str:
        if self.differences:
            return "destination kept despite " + ", ".join(d.field for d in self.differences)
        return "identical on the destination"


@dataclass(frozen=True, kw_only=True)
class Pinned(Skip):
    """The operator's map names the destination object (``pinned_to``), or the object of
    the destination's that holds it (``parent``): nothing is created or compared."""

    pinned_to: str | None = None
    parent: str | None = None

    @property
    def destination_id(self) -> str | None:
        return self.pinned_to

    def _detail(self) -> str:
        if self.pinned_to is not None:
            return f"pinned to {self.pinned_to} by the operator's map"
        return f"its parent is pinned to {self.parent} by the operator's map: the destination's"


@dataclass(frozen=True, kw_only=True)
class Conflict(Operation):
    """Cannot proceed without the operator: the reason says what to do."""

    action: ClassVar[str] = "conflict"
    reason: str

    def _detail(self) -> str:
        return self.reason


@dataclass(frozen=True, kw_only=True)
class Undo(Operation):
    """Undo what operation ``undoes`` (a ``done`` row of an earlier run) did (rollback).

    Its journal key names the run it undoes, so the same object imported and
    rolled back twice gets two undo rows. ``source`` is empty: a rollback works
    from the journal, not from records.
    """

    undoes: OperationRecord

    @property
    def key(self) -> str:
        return f"{self.identity}#undo:{self.undoes.run_id}"

    @property
    def source_id(self) -> str | None:
        return self.undoes.source_id

    @property
    def destination_id(self) -> str | None:
        return self.undoes.destination_id

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "undoes_run": self.undoes.run_id}


@dataclass(frozen=True, kw_only=True)
class Delete(Undo):
    """Delete the object a run created; ``with_parent``: it went with its deleted parent."""

    action: ClassVar[str] = "delete"
    with_parent: bool = False

    def _detail(self) -> str:
        if self.with_parent:
            parent = self.kind.parent_id(self.destination_id or "")
            return f"goes with its {self.kind.deleted_with} {parent}"
        return f"created by run {self.undoes.run_id[:8]}"


@dataclass(frozen=True, kw_only=True)
class Restore(Undo):
    """Put back the state a run's update replaced (from the journaled ``before``)."""

    action: ClassVar[str] = "restore"

    def _detail(self) -> str:
        return f"changed by run {self.undoes.run_id[:8]}"


def _differences_reason(differences: Iterable[Difference]) -> str:
    fields = ", ".join(d.field for d in differences)
    return f"differs on the destination in {fields} (use --overwrite to update it)"


@dataclass
class _Planner:
    find: DestinationFinder
    resolver: Resolver
    overwrite: bool
    # (kind, source id) -> destination ID of an object found there, or None for
    # one this plan creates; the resolver reads it to map references.
    planned: dict[tuple[str, str], str | None] = field(default_factory=dict)
    creates: dict[tuple[str, str], OperationKey] = field(default_factory=dict)

    def remember(self, op: Operation) -> None:
        source_id = op.source_id
        if source_id is None:
            return
        if isinstance(op, Create):
            self.planned[(op.kind.name, source_id)] = None
            self.creates[(op.kind.name, source_id)] = op.ref
        elif isinstance(op, Update | Skip):
            self.planned[(op.kind.name, source_id)] = op.destination_id

    def pending_dependencies(self, kind: Kind, record: Record) -> tuple[OperationKey, ...]:
        deps = []
        for ref_field, target in kind.references.items():
            value = record.get(ref_field)
            for v in value if isinstance(value, list | tuple) else [value]:
                if v is None:
                    continue
                created = self.creates.get((target, str(v))) or self.creates.get(
                    (CREATED_AS.get(target, target), str(v))
                )
                if created is not None and created not in deps:
                    deps.append(created)
        return tuple(deps)

    def one(self, kind: Kind, record: Record) -> list[Operation]:
        started = self.start(kind, record)
        if not isinstance(started, _Lookup):
            return started
        existing = None if started.depends_on else self.find(kind, started.resolved)
        return self.decide(started, existing)

    def start(self, kind: Kind, record: Record) -> list[Operation] | _Lookup:
        """Resolve ``record``: a conflict, a skip the operator's map pins, or what to look up
        on the destination."""
        pinned = self.pinned(kind, record)
        if pinned is not None:
            if pinned.destination_id is not None:  # a pinned parent's child maps to nothing
                self.remember(pinned)
            return [pinned]
        try:
            resolved = self.resolver.resolve(kind, record, planned=self.planned)
        except UnmappedReferenceError as exc:
            return [
                Conflict(
                    kind=kind,
                    identity=kind.identity(record),
                    source=record,
                    resolved=dict(record),
                    reason=exc.message,
                )
            ]
        return _Lookup(kind, record, resolved, self.pending_dependencies(kind, record))

    def pinned(self, kind: Kind, record: Record) -> Pinned | None:
        """A skip for a record the operator's map pins (or whose parent it pins)."""
        common: dict[str, Any] = {"kind": kind, "identity": kind.identity(record),
                                  "source": record, "resolved": dict(record)}
        if kind.pinnable:
            target = self.resolver.maps.get(kind.name, {}).get(str(kind.source_id(record)))
            if target is not None:
                return Pinned(pinned_to=target, **common)
        if kind.pinned_with is not None:
            field_name, parent_kind = kind.pinned_with
            parent = self.resolver.maps.get(parent_kind, {}).get(str(record.get(field_name)))
            if parent is not None:
                return Pinned(pinned_to=None, parent=parent, **common)
        return None

    def decide(self, started: _Lookup, existing: Record | None) -> list[Operation]:
        """The operations for a resolved record given its destination counterpart."""
        kind, record, resolved = started.kind, started.record, started.resolved
        identity = kind.identity(record)
        common: dict[str, Any] = {"kind": kind, "identity": identity, "source": record}
        operation: Operation
        if existing is None:
            operation = Create(resolved=resolved, depends_on=started.depends_on, **common)
        else:
            differences = tuple(kind.compare(resolved, existing))
            common.update(resolved=resolved, existing=existing, differences=differences)
            decision: str = "skip"
            if differences:
                decision = kind.on_difference(list(differences), self.overwrite)
            if decision == "update":
                operation = Update(**common)
            elif decision == "skip":
                operation = Skip(**common)
            else:
                operation = Conflict(reason=_differences_reason(differences), **common)
        self.remember(operation)
        return [operation]

    def kind_in_bulk(
        self, kind: Kind, records: Iterable[Record], find_many: BulkFinder
    ) -> list[Operation]:
        """Plan every record of ``kind`` with one bulk lookup of those that need one.

        Only for a kind that does not refer to itself: its records' resolution
        then does not depend on each other's plan.
        """
        started = [self.start(kind, record) for record in records]
        lookups = [s for s in started if isinstance(s, _Lookup) and not s.depends_on]
        found = find_many(kind, [s.resolved for s in lookups]) if lookups else []
        existing = {id(s): f for s, f in zip(lookups, found, strict=True)}
        operations: list[Operation] = []
        for item in started:
            if isinstance(item, _Lookup):
                operations.extend(self.decide(item, existing.get(id(item))))
            else:
                operations.extend(item)
        return operations


@dataclass(frozen=True)
class _Lookup:
    """A resolved record whose destination counterpart is to be looked up (unless it depends
    on an object the plan creates: then it cannot exist yet)."""

    kind: Kind
    record: Record
    resolved: Record
    depends_on: tuple[OperationKey, ...]


def plan(
    records_by_kind: Mapping[Kind, Iterable[Record]],
    destination_finder: DestinationFinder,
    resolver: Resolver,
    overwrite: bool = False,
    *,
    find_many: BulkFinder | None = None,
) -> list[Operation]:
    """The operations that bring the destination in line with the source records.

    Kinds are planned in dependency order (referenced kinds first), so a
    record can refer to objects planned before it. Nothing is changed
    anywhere: ``destination_finder`` (and ``find_many``, which looks up all
    records of a kind at once where given) only read.
    """
    batches = plan_batches(
        records_by_kind, destination_finder, resolver, overwrite, find_many=find_many
    )
    return [op for batch in batches for op in batch]


def plan_batches(
    records_by_kind: Mapping[Kind, Iterable[Record]],
    destination_finder: DestinationFinder,
    resolver: Resolver,
    overwrite: bool = False,
    *,
    find_many: BulkFinder | None = None,
    side_by_side: bool = False,
) -> Iterator[list[Operation]]:
    """:func:`plan`, handed over one kind at a time, as soon as that kind is planned.

    With ``side_by_side`` each kind is planned in a thread of its own as soon
    as the kinds it refers to are planned, and yielded when it is done; a kind
    is never yielded before the kinds it refers to. The
    engine applies the first kinds while the destination is still being read
    for the others (:meth:`~stackhop.engine.Engine.run_planned`).
    """
    planner = _Planner(find=destination_finder, resolver=resolver, overwrite=overwrite)

    def one_kind(kind: Kind) -> list[Operation]:
        records = records_by_kind[kind]
        if find_many is not None and kind.name not in kind.references.values():
            return planner.kind_in_bulk(kind, records, find_many)
        return [op for record in records for op in planner.one(kind, record)]

    if not side_by_side:
        for level in dependency_levels(records_by_kind):
            for kind in level:
                yield one_kind(kind)
        return
    names = {kind.name: kind for kind in records_by_kind}
    order: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for kind in records_by_kind:
        order.add(kind.name, *(d for d in kind.dependencies() if d in names))
    order.prepare()
    with ThreadPoolExecutor(
        max_workers=len(names) or 1, thread_name_prefix="stackhop-plan"
    ) as pool:
        running: dict[Future[list[Operation]], str] = {}
        while order.is_active():
            for name in order.get_ready():
                running[pool.submit(one_kind, names[name])] = name
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                order.done(running.pop(future))


def summarize(operations: Iterable[Operation]) -> dict[str, dict[str, int]]:
    """Per kind, how many operations of each action (for ``stackhop plan``'s summary)."""
    summary: dict[str, dict[str, int]] = {}
    for op in operations:
        per_kind = summary.setdefault(op.kind.name, {})
        per_kind[op.action] = per_kind.get(op.action, 0) + 1
    return summary
