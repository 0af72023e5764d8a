"""Which of a plan's operations may start now, and the plan's batches as they arrive.

:class:`Schedule` orders operations by what they refer to and shares the
ready ones among the services; :class:`Feed` reads the planner's batches in
a thread of its own. Both serve :class:`stackhop.engine.Engine`.
"""

from __future__ import annotations

import heapq
import queue
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from stackhop.kinds import dependency_levels
from stackhop.kinds.base import Kind
from stackhop.plan import Operation, OperationKey


class Schedule:
    """Which operations may start now.

    An operation waits for the operations of this run that it refers to
    (its declared ``depends_on``, and any object its reference fields name,
    even one that is only skipped: its ID mapping must be journaled first).
    Ready operations are shared among the services (each service is its own
    API server: a rule request to Neutron and a keypair request to Nova run
    side by side); within a service, referenced kinds first, then plan order.
    Operations arrive in batches (:meth:`add`); a batch may depend only on
    earlier ones.
    """

    def __init__(self, *, sequential: bool = False) -> None:
        self.sequential = sequential
        self.per_kind: Counter[str] = Counter()
        self._open: Counter[str] = Counter()
        self._running: Counter[str] = Counter()
        self._kinds: dict[str, Kind] = {}
        self._rank: dict[str, int] = {}
        self._by_source: dict[tuple[str, str], OperationKey] = {}
        self._known: set[OperationKey] = set()
        self._finished: set[OperationKey] = set()
        self._referenced: set[str] = set()
        self._waiting: dict[OperationKey, int] = {}
        self._dependents: dict[OperationKey, list[Operation]] = defaultdict(list)
        self._priority: dict[OperationKey, tuple[int, int]] = {}
        self._ready: dict[str, list[tuple[tuple[int, int], OperationKey, Operation]]] = {}
        self._services: list[str] = []

    def add(self, operations: Sequence[Operation]) -> list[str]:
        """Schedule a batch of operations; return the kinds they refer to that are new."""
        new_references: list[str] = []
        for op in operations:
            self.per_kind[op.kind.name] += 1
            self._open[getattr(op.kind, "service", "")] += 1
            self._kinds.setdefault(op.kind.name, op.kind)
            self._known.add(op.ref)
            if op.source_id is not None:
                self._by_source.setdefault((op.kind.name, op.source_id), op.ref)
            for target in op.kind.references.values():
                if target not in self._referenced:
                    self._referenced.add(target)
                    new_references.append(target)
        levels = dependency_levels(self._kinds.values())
        self._rank = {k.name: i for i, k in enumerate(k for level in levels for k in level)}
        base = len(self._priority)
        for index, op in enumerate(operations):
            self._priority[op.ref] = (self._rank[op.kind.name], base + index)
            deps = {ref for ref in op.depends_on if ref in self._known}
            for field_name, target in op.kind.references.items():
                value = op.source.get(field_name)
                for v in value if isinstance(value, list | tuple) else [value]:
                    ref = None if v is None else self._by_source.get((target, str(v)))
                    if ref is not None and ref != op.ref:
                        deps.add(ref)
            deps -= self._finished
            for ref in deps:
                self._dependents[ref].append(op)
            self._waiting[op.ref] = len(deps)
            if not deps:
                self._push(op)
        return new_references

    def _push(self, op: Operation) -> None:
        service = getattr(op.kind, "service", "")
        if service not in self._ready:
            self._ready[service] = []
            self._services.append(service)
        # The rank may have changed since the operation was added (a later batch
        # brought a kind that comes first): order by the current one.
        priority = (self._rank[op.kind.name], self._priority[op.ref][1])
        heapq.heappush(self._ready[service], (priority, op.ref, op))

    @property
    def ready(self) -> bool:
        return any(self._ready.values())

    def take(self, count: int) -> list[Operation]:
        """Up to ``count`` ready operations.

        Several slots: each goes to the service with the most work left per
        call it already has in flight, so the service with the longest queue
        (the run's critical path) gets the larger share of the workers and no
        service idles while it has work. One slot at a time (one worker):
        strictly in plan order, kinds in dependency order.
        """
        batch: list[Operation] = []
        while len(batch) < count and self.ready:
            candidates = [s for s in self._services if self._ready[s]]
            if self.sequential:
                service = min(candidates, key=lambda s: self._ready[s][0][0])
            else:
                service = max(candidates, key=lambda s: self._open[s] / (self._running[s] + 1))
            batch.append(heapq.heappop(self._ready[service])[2])
            self._running[service] += 1
        return batch

    def take_kind(self, kind: str, count: int) -> list[Operation]:
        """Up to ``count`` more ready operations of ``kind``, next in their service's order
        (a bulk request's companions: they are taken, and finish, like any operation)."""
        batch: list[Operation] = []
        for service, ready in self._ready.items():
            while len(batch) < count and ready and ready[0][2].kind.name == kind:
                batch.append(heapq.heappop(ready)[2])
                self._running[service] += 1
        return batch

    def finished(self, op: Operation) -> None:
        """``op`` (taken before) has an outcome: the operations waiting for it may be ready."""
        service = getattr(op.kind, "service", "")
        self._open[service] -= 1
        self._running[service] -= 1
        self._finished.add(op.ref)
        for dependent in self._dependents.pop(op.ref, []):
            self._waiting[dependent.ref] -= 1
            if self._waiting[dependent.ref] == 0:
                self._push(dependent)


class Feed:
    """Batches of operations from the planner, read in a thread of their own."""

    def __init__(self, batches: Iterable[Sequence[Operation]], stop: threading.Event) -> None:
        self.seen: list[Operation] = []
        self.error: BaseException | None = None
        self.done = False
        self._queue: queue.Queue[Sequence[Operation] | None] = queue.Queue()
        self._stop = stop
        if isinstance(batches, list | tuple):
            for batch in batches:
                self._queue.put(batch)
            self._queue.put(None)
        else:
            threading.Thread(
                target=self._read, args=(batches,), name="stackhop-plan", daemon=True
            ).start()

    def _read(self, batches: Iterable[Sequence[Operation]]) -> None:
        try:
            for batch in batches:
                self._queue.put(batch)
                if self._stop.is_set():
                    break
        except BaseException as exc:  # handed to the engine's thread, which raises it
            self.error = exc
        finally:
            self._queue.put(None)

    def take(self, *, block: bool) -> list[Sequence[Operation]]:
        """The batches that arrived (waiting up to a moment for one if ``block``)."""
        batches: list[Sequence[Operation]] = []
        while not self.done:
            try:
                batch = self._queue.get(block=block and not batches, timeout=0.2)
            except queue.Empty:
                break
            if batch is None:
                self.done = True
            else:
                self.seen.extend(batch)
                batches.append(batch)
        return batches
