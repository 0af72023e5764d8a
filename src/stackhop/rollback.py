"""Rollback as a run of its own: undo what earlier runs did, through the engine.

``stackhop rollback --run R`` reads the ``done`` create and update rows of the
runs ``R`` from the journal and plans one operation per row:

- a :class:`~stackhop.plan.Delete` for an object the run created (the kind's
  ``delete``, which refuses what stackhop did not make);
- a :class:`~stackhop.plan.Restore` for an object the run changed (the kind's
  ``restore`` with the journaled ``before``).

Objects that existed before (skips, conflicts, adopted ones) have no such row
and are never touched. The engine applies the undo operations as it applies
an import: journaled ``pending`` before each call and ``done``/``failed``
after, transient failures retried, the order given by ``depends_on``
(dependents are undone before what they refer to; an object that goes with
its parent, as a group's rules with the group, is marked after the parent's
deletion). When an undo is ``done`` the row it undid becomes ``rolled_back``
(with ``undone_by`` naming the rollback run) and a deleted object's ID mapping
is dropped, in the same transaction; ``stackhop status`` shows both runs.
A rollback that stopped half-way is resumed by running it again: rows already
rolled back are not planned again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from stackhop import kinds as registry
from stackhop.engine import Engine, RunResult
from stackhop.errors import UsageError
from stackhop.events import EventSink
from stackhop.journal import DONE, Journal, OperationRecord
from stackhop.kinds.base import Connection, Kind
from stackhop.plan import Delete, OperationKey, Restore, Undo
from stackhop.resolve import Resolver

#: Actions of a forward run that a rollback undoes.
UNDOABLE = ("create", "update")


def plan_rollback(
    journal: Journal,
    run_ids: Sequence[str],
    destination_cloud: str | None = None,
    *,
    lookup: Callable[[str], Kind] = registry.get,
) -> list[Undo]:
    """The undo operations for the ``done`` creates and updates of the runs ``run_ids``.

    ``destination_cloud``, when given, must be the cloud those runs changed.
    ``lookup`` finds a kind by name (the registry; tests pass their own kinds).

    Dependents first: an undo waits for the undos of the kinds that refer to
    its kind (rules before groups), except an object deleted with its parent,
    whose undo waits for the parent's instead.
    """
    runs = [journal.run(r) for r in run_ids]
    if destination_cloud is not None:
        for run in runs:
            if run.destination_cloud not in (None, destination_cloud):
                raise UsageError(
                    f"run {run.id} changed cloud {run.destination_cloud!r}, not "
                    f"{destination_cloud!r}; roll it back with --to {run.destination_cloud}"
                )
    rows = [
        row
        for run in runs
        for row in journal.operations(run_id=run.id, state=DONE)
        if row.action in UNDOABLE
    ]
    kinds = {name: lookup(name) for name in sorted({row.kind for row in rows})}
    order = [
        kind.name
        for level in reversed(registry.dependency_levels(kinds.values()))
        for kind in level
    ]
    rows.sort(key=lambda row: (order.index(row.kind), row.id))
    # Objects this rollback deletes, by kind and destination ID: their children go with them.
    deleted = {
        (row.kind, row.destination_id): row
        for row in rows
        if row.action == "create" and row.destination_id
    }
    undos: list[Undo] = []
    refs_by_kind: dict[str, list[OperationKey]] = defaultdict(list)
    parent_refs: dict[tuple[str, str | None], OperationKey] = {}
    with_parent: list[tuple[int, OperationRecord, Kind]] = []
    for row in rows:
        kind = kinds[row.kind]
        undo: Undo
        if row.action == "update":
            undo = Restore(kind=kind, identity=row.identity, source={}, resolved={}, undoes=row)
        elif _goes_with_parent(kind, row, deleted):
            # Its dependency on the parent's deletion is added once every parent is planned.
            with_parent.append((len(undos), row, kind))
            undos.append(_delete(kind, row, with_parent=True))
            continue
        else:
            dependents = [
                ref
                for other in kinds.values()
                if kind.name in other.dependencies()
                for ref in refs_by_kind[other.name]
            ]
            undo = _delete(kind, row, depends_on=tuple(dependents))
        undos.append(undo)
        refs_by_kind[row.kind].append(undo.ref)
        parent_refs[(row.kind, row.destination_id)] = undo.ref
    for index, row, kind in with_parent:
        parent = parent_refs[(str(kind.deleted_with), kind.parent_id(str(row.destination_id)))]
        undos[index] = _delete(kind, row, with_parent=True, depends_on=(parent,))
    # Plan order: parents' deletions before the children that only wait for them.
    order_of = {undo.ref: index for index, undo in enumerate(undos)}
    return sorted(undos, key=lambda u: (isinstance(u, Delete) and u.with_parent, order_of[u.ref]))


def _delete(
    kind: Kind,
    row: OperationRecord,
    *,
    with_parent: bool = False,
    depends_on: tuple[OperationKey, ...] = (),
) -> Delete:
    return Delete(
        kind=kind,
        identity=row.identity,
        source={},
        resolved={},
        undoes=row,
        with_parent=with_parent,
        depends_on=depends_on,
    )


def _goes_with_parent(
    kind: Kind, row: OperationRecord, deleted: Mapping[tuple[str, str], OperationRecord]
) -> bool:
    if kind.deleted_with is None or not row.destination_id:
        return False
    return (kind.deleted_with, kind.parent_id(row.destination_id)) in deleted


def rollback(
    journal: Journal,
    destination: Connection,
    destination_cloud: str,
    run_ids: Sequence[str],
    *,
    workers: int = 8,
    events: EventSink | None = None,
) -> tuple[list[Undo], RunResult]:
    """Plan and apply the rollback of ``run_ids`` on ``destination``, as a run of its own."""
    undos = plan_rollback(journal, run_ids, destination_cloud)
    engine = Engine(
        journal,
        destination,
        Resolver(destination_cloud, maps={}, keep_ids=frozenset(), journal=journal),
        workers=workers,
        events=events,
    )
    result = engine.run(
        undos,
        command="rollback",
        destination_cloud=destination_cloud,
        args={"runs": [journal.run(r).id for r in run_ids]},
    )
    return undos, result


__all__ = ["UNDOABLE", "plan_rollback", "rollback"]
