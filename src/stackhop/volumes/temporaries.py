"""The journal's record of temporaries (snapshots, images, staging files) of volume copies.

Kind ``volume.temporary``, identity ``<Temporary.identity>#<k>``: the same
temporary may be created again after it was removed (``done`` is final in the
journal), so each creation is its own row, k = 1, 2, ... A row is ``pending``
while the temporary may exist, ``done`` once removed; ``before`` holds the
Temporary and ``kept: true`` when a verified pass keeps it for the next
incremental pass (cleanup leaves those alone).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from stackhop.journal import DONE, PENDING, Journal, OperationRecord
from stackhop.volumes.model import Temporary

KIND = "volume.temporary"


def as_json(temporary: Temporary, volume_id: str | None, kept: bool = False) -> dict[str, Any]:
    return {
        "method": temporary.method,
        "kind": temporary.kind,
        "cloud": temporary.cloud,
        "name": temporary.name,
        "details": dict(temporary.details),
        "volume": volume_id,
        "kept": kept,
    }


def from_json(data: dict[str, Any]) -> Temporary:
    return Temporary(
        str(data["method"]),
        str(data["kind"]),
        str(data["cloud"]),
        str(data["name"]),
        dict(data.get("details") or {}),
    )


class TemporaryLedger:
    """Journals temporaries of one scope; thread-safe."""

    def __init__(self, journal: Journal, scope: str) -> None:
        self.journal = journal
        self.scope = scope
        self._lock = threading.Lock()

    def _rows(self, temporary: Temporary) -> Iterator[tuple[int, OperationRecord | None]]:
        k = 1
        while True:
            row = self.journal.operation(self.scope, KIND, f"{temporary.identity}#{k}")
            yield k, row
            if row is None:
                return
            k += 1

    def _latest(self, temporary: Temporary) -> tuple[int, OperationRecord | None]:
        last: tuple[int, OperationRecord | None] = (1, None)
        for k, row in self._rows(temporary):
            if row is None:
                return last if last[1] is not None else (k, None)
            last = (k, row)
        return last

    def created(self, run_id: str, volume_id: str | None, temporary: Temporary) -> None:
        """Record, before it is created, that ``temporary`` may exist."""
        with self._lock:
            k, row = self._latest(temporary)
            if row is not None and row.state == DONE:
                k, row = k + 1, None
            self.journal.transition(
                run_id,
                self.scope,
                KIND,
                f"{temporary.identity}#{k}",
                PENDING,
                action="create",
                expected=row,
                source_id=volume_id,
                before=as_json(temporary, volume_id),
            )

    def keep(self, run_id: str, temporary: Temporary) -> None:
        """Mark a temporary that a verified pass keeps for the next incremental pass."""
        with self._lock:
            k, row = self._latest(temporary)
            if row is None or row.state != PENDING:
                return
            before = dict(row.before or {})
            before["kept"] = True
            self.journal.transition(
                run_id,
                self.scope,
                KIND,
                row.identity,
                PENDING,
                action="create",
                expected=row,
                source_id=row.source_id,
                before=before,
            )

    def removed(self, run_id: str, temporary: Temporary) -> None:
        """Record that ``temporary`` is gone (whichever run created it)."""
        with self._lock:
            k, row = self._latest(temporary)
            if row is None or row.state != PENDING:
                return
            self.journal.transition(
                run_id,
                self.scope,
                KIND,
                row.identity,
                DONE,
                action="delete",
                expected=row,
                source_id=row.source_id,
                before=row.before,
            )

    def forget_kept(self, run_id: str, volume_id: str) -> None:
        """Mark every kept temporary of a volume removed (its method removed its chain)."""
        with self._lock:
            for row in self.journal.operations(scope=self.scope, kind=KIND, state=PENDING):
                if row.source_id == volume_id and (row.before or {}).get("kept"):
                    self.journal.transition(
                        run_id, self.scope, KIND, row.identity, DONE, action="delete",
                        expected=row, source_id=row.source_id, before=row.before,
                    )  # fmt: skip

    def pending(self) -> list[OperationRecord]:
        """Every temporary of the scope that may still exist."""
        return self.journal.operations(scope=self.scope, kind=KIND, state=PENDING)

    def leftovers(self, run_id: str) -> list[tuple[OperationRecord, Temporary]]:
        """The temporaries run ``run_id`` created and did not remove (kept ones excluded)."""
        return [
            (row, from_json(row.before))
            for row in self.pending()
            if row.run_id == run_id and not (row.before or {}).get("kept")
        ]
