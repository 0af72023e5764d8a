"""``volumes cleanup``: the temporaries a run left, removed by undo tasks through the engine.

The temporaries ledger (kind ``volume.temporary``, see :mod:`.temporaries`)
holds one ``pending`` row per temporary that may still exist. A cleanup plans
one :class:`RemoveTemporary` task per such row of the run it is asked about
(kept ones excluded: a next incremental pass starts from them) and runs them
in an engine run of its own (command ``volumes cleanup``): each removal is
journaled (kind ``volume.cleanup``, key = the ledger row's identity),
retried when the failure is transient, and marks its ledger row ``done``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from stackhop.engine import Engine
from stackhop.events import EventSink
from stackhop.journal import DONE, Journal, OperationRecord
from stackhop.resolve import Resolver
from stackhop.task import Task, TaskContext, TaskKind
from stackhop.volumes import grant
from stackhop.volumes.methods import get_method
from stackhop.volumes.model import Temporary
from stackhop.volumes.passes import KIND
from stackhop.volumes.storage import StorageMap
from stackhop.volumes.temporaries import TemporaryLedger

COMMAND = "volumes cleanup"


class CleanupKind(TaskKind):
    """The journal kind of a temporary's removal."""

    name = "volume.cleanup"
    service = "volume"


CLEANUP_KIND = CleanupKind()


@dataclass(frozen=True)
class Sides:
    """The connections a removal may need (the temporary says on which cloud it is)."""

    source: Any
    destination: Any


@dataclass(frozen=True, kw_only=True)
class RemoveTemporary(Task):
    """Remove one temporary a run left and mark its ledger row ``done``.

    ``identity`` is the temporary's (events); the journal key is its ledger
    row's (``<Temporary.identity>#<k>``), so each creation is removed once.
    """

    action: ClassVar[str] = "remove"

    entry: OperationRecord = field(compare=False)
    temporary: Temporary = field(compare=False)
    sides: Sides = field(compare=False, repr=False)
    storage: StorageMap = field(compare=False, repr=False)
    ledger: TemporaryLedger = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        return self.entry.identity

    def call(self, ctx: TaskContext) -> str | None:
        temporary = self.temporary
        if temporary.method == grant.METHOD:
            grant.revoke(self.sides.destination, temporary)
        else:
            get_method(temporary.method).remove_temporary(
                temporary, self.sides.source, self.sides.destination, self.storage
            )
        self.ledger.removed(self.entry.run_id, temporary)
        return None


def cleanup_run(
    run_id: str,
    scope: str,
    clouds: Any,
    journal: Journal,
    storage: StorageMap,
    *,
    end_chains: bool = False,
    events: EventSink | None = None,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Remove every temporary run ``run_id`` left in ``scope`` (pending, not kept); each outcome.

    ``clouds`` has ``source`` and ``destination`` connections. With
    ``end_chains`` also end the incremental chains of the volumes that run
    verified: the method drops what it kept for a next pass (its snapshots).
    """
    ledger = TemporaryLedger(journal, scope)
    sides = Sides(clouds.source, clouds.destination)
    tasks = [
        RemoveTemporary(
            kind=CLEANUP_KIND,
            identity=temporary.identity,
            of=entry.identity,
            entry=entry,
            temporary=temporary,
            sides=sides,
            storage=storage,
            ledger=ledger,
        )
        for entry, temporary in ledger.leftovers(run_id)
    ]
    report: list[dict[str, Any]] = []
    if tasks:
        engine = Engine(
            journal, clouds.destination, Resolver(scope, journal=journal),
            scope=scope, workers=workers, events=events,
        )  # fmt: skip
        engine.run(tasks, command=COMMAND, args={"run": run_id, "end_chains": end_chains})
        for task in tasks:
            row = journal.operation(scope, CLEANUP_KIND.name, task.key)
            if row is not None and row.run_id == engine.run_id and row.state == DONE:
                report.append({"temporary": task.identity, "outcome": "removed"})
            else:
                error = row.error if row is not None and row.error else "not attempted"
                report.append({"temporary": task.identity, "outcome": "failed", "error": error})
    if end_chains:
        for row in journal.operations(run_id=run_id, scope=scope, kind=KIND, state=DONE):
            before = row.before or {}
            if not before.get("state"):
                continue
            get_method(str(before["method"])).forget_incremental(
                before["state"], clouds.source, clouds.destination, storage
            )
            ledger.forget_kept(run_id, str(row.source_id))
            report.append({"temporary": f"chain of {row.source_id}", "outcome": "ended"})
    return report
