"""Where the engine's calls run: the seam between planning a run and doing its work.

The :class:`~stackhop.engine.Engine` decides what starts, journals it ``pending``,
and hands each group of calls (one operation, or creates of one kind in one bulk
request) to an :class:`Executor`; it then collects what the calls came to and
journals it. The executor decides only *where* a call runs:

- :class:`LocalExecutor` runs each group on a thread of a pool in this process (the
  ``--workers`` of every command);
- :class:`~stackhop.executor.dispatch.CeleryExecutor` publishes each group to a
  Celery queue and learns its outcome from the journal, which the worker
  (:mod:`stackhop.executor.worker`) writes; the worker's lease take counts the
  attempt (:meth:`Executor.leases`), so the engine's ``pending`` write does not.

The engine never waits on anything but :meth:`Executor.collect`, which returns in short
slices so that Ctrl-C reaches the main thread promptly.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Generic, Protocol, TypeVar

#: One call's input (the engine's started operation) and outcome (its attempt).
Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

#: How long :meth:`LocalExecutor.collect` waits at a time when blocking (s).
COLLECT_SLICE = 0.2


class Executor(Protocol[Item, Outcome]):
    """Runs groups of calls somewhere and reports what each came to."""

    #: Groups that may be in flight at once.
    capacity: int

    def leases(self, op: Any) -> bool:
        """Whether ``op`` runs where a lease take counts its attempt (a worker's)."""

    def submit(self, group: list[Item]) -> None:
        """Start the calls of ``group`` (one request: its items succeed or fail together)."""

    def in_flight(self) -> int:
        """Groups submitted and not yet collected."""

    def collect(self, *, block: bool) -> list[tuple[Item, Outcome]]:
        """What finished, each item with its outcome; ``block``: wait until one group has."""

    def close(self) -> None:
        """Wait for the groups in flight to end, and let go of what runs them."""


class LocalExecutor(Generic[Item, Outcome]):
    """Runs each group with ``call`` on one of ``workers`` threads of this process.

    ``call`` returns one outcome per item of its group, in order. When it raises (a
    journal or programming error, not an API error, which ``call`` turns into an
    outcome), every item of the group gets ``failed(item, exception)``: reported,
    never swallowed.
    """

    def __init__(
        self,
        call: Callable[[list[Item]], list[Outcome]],
        failed: Callable[[Item, Exception], Outcome],
        *,
        workers: int,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.capacity = workers
        self._call = call
        self._failed = failed
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stackhop")
        self._groups: dict[Future[list[Outcome]], list[Item]] = {}

    def leases(self, op: Any) -> bool:
        return False

    def submit(self, group: list[Item]) -> None:
        self._groups[self._pool.submit(self._call, group)] = group

    def in_flight(self) -> int:
        return len(self._groups)

    def collect(self, *, block: bool) -> list[tuple[Item, Outcome]]:
        done: set[Future[list[Outcome]]] = set()
        while self._groups and not done:
            done, _ = wait(
                self._groups, timeout=COLLECT_SLICE if block else 0, return_when=FIRST_COMPLETED
            )
            if not block:
                break
        finished: list[tuple[Item, Outcome]] = []
        for future in done:
            group = self._groups.pop(future)
            try:
                finished.extend(zip(group, future.result(), strict=True))
            except Exception as exc:
                finished.extend((item, self._failed(item, exc)) for item in group)
        return finished

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> LocalExecutor[Item, Outcome]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
