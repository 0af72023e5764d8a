"""One pass of one volume: what the journal says it needs, and running it with its row.

:func:`plan_volume` reads a volume's ``volume`` rows (one per pass; see
:mod:`stackhop.volumes.copy` and ``docs/journal.md``) and decides whether this
run copies it in full, passes incrementally, resumes an interrupted pass or
skips it. :class:`PassRunner` runs one pass through the method, keeping the
row's stage, destination ID and facts current, journaling the temporaries and
checking the backup written from the same read. The row's ``stage`` and
``progress`` columns (journal schema 4) carry the stage reached and the bytes
through, so ``stackhop status`` shows a running or interrupted pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from stackhop.errors import IntegrityError, StackhopError
from stackhop.events import EventSink, EventType
from stackhop.journal import DONE, FAILED, PENDING, Journal, OperationRecord
from stackhop.volumes.backup import BackupWriter, IncrementalBackupWriter
from stackhop.volumes.inventory import wait_volume
from stackhop.volumes.model import PassContext, PassResult, Temporary, VolumeMethod, VolumeRef
from stackhop.volumes.reshape import Reshape
from stackhop.volumes.storage import StorageMap
from stackhop.volumes.temporaries import TemporaryLedger

KIND = "volume"

#: Seconds between two progress writes of one pass to the journal.
PROGRESS_INTERVAL = 1.0


def pass_identity(volume_id: str, number: int) -> str:
    """The journal identity of pass ``number`` (1-based) of a volume."""
    return volume_id if number == 1 else f"{volume_id}#{number}"


@dataclass
class PlannedVolume:
    """One selected volume and what this run will do to it."""

    volume: VolumeRef
    #: ``copy`` (a full pass), ``incremental`` or ``skip``.
    action: str
    reason: str
    destination_project_id: str
    destination_type: str | None
    pass_number: int
    #: The row this pass resumes (interrupted earlier), or None for a new pass.
    resume: OperationRecord | None = None
    #: The last verified pass, or None.
    previous: OperationRecord | None = None

    @property
    def destination_id(self) -> str | None:
        for row in (self.resume, self.previous):
            if row is not None and row.destination_id:
                return row.destination_id
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "volume": self.volume.id,
            "name": self.volume.name,
            "size_gib": self.volume.size_gib,
            "action": self.action,
            "reason": self.reason,
            "pass": self.pass_number,
            "destination_project": self.destination_project_id,
            "destination_type": self.destination_type,
            "destination_id": self.destination_id,
        }


@dataclass
class VolumeOutcome:
    """How one volume's pass ended."""

    volume_id: str
    name: str
    outcome: str  # done / skipped / failed
    destination_id: str | None = None
    pass_number: int = 0
    bytes_sent: int = 0
    content_digest: str = ""
    error: str | None = None
    backup: str | None = None


def plan_volume(
    journal: Journal,
    scope: str,
    volume: VolumeRef,
    incremental: bool,
    dst_project: str,
    dst_type: str | None,
) -> PlannedVolume:
    """Decide, from the journal, what this run does to ``volume``."""
    rows = sorted(
        (r for r in journal.operations(scope=scope, kind=KIND) if r.source_id == volume.id),
        key=lambda r: int((r.before or {}).get("pass", 1)),
    )
    done = [r for r in rows if r.state == DONE]
    previous = done[-1] if done else None
    latest = rows[-1] if rows else None
    number = int((latest.before or {}).get("pass", 1)) if latest else 1
    planned = PlannedVolume(
        volume, "copy", "not copied yet", dst_project, dst_type, number, previous=previous
    )
    if latest is not None and latest.state != DONE:
        planned.resume = latest
        planned.action = "incremental" if previous is not None and incremental else "copy"
        planned.reason = (
            f"resumes pass {number} ({latest.state} at stage "
            f"{(latest.before or {}).get('stage', 'started')})"
        )
    elif previous is not None and not incremental:
        planned.action, planned.reason = "skip", f"verified by pass {number}"
    elif previous is not None:
        planned.action, planned.reason = "incremental", f"pass {number + 1} after pass {number}"
        planned.pass_number = number + 1
    return planned


class PassHost(Protocol):
    """What a pass needs of the run it belongs to (the :class:`~.copy.VolumeCopier`)."""

    journal: Journal
    scope: str
    method: VolumeMethod
    ledger: TemporaryLedger
    storage: StorageMap
    events: EventSink
    source_conn: Any
    destination_conn: Any
    backup_to: str | None
    #: The destination's type and size (``--type-map``, ``--min-size``, ``--grow-to``).
    reshape: Reshape
    destination_cloud: str
    destination_project_conn: Any
    #: ``--incremental``: passes keep what the next one needs and send only what changed.
    incremental: bool
    #: The cutover pass: end each volume's incremental chain once verified.
    final: bool

    def emit(self, type_: EventType, **fields: Any) -> None: ...


class PassRunner:
    """One pass of one volume: its journal row, its temporaries, its backup."""

    def __init__(self, copier: PassHost, run_id: str, planned: PlannedVolume) -> None:
        self.copier = copier
        self.run_id = run_id
        self.planned = planned
        self.identity = pass_identity(planned.volume.id, planned.pass_number)
        self.destination_id = planned.destination_id
        self.temporaries: list[Temporary] = []
        self.lock = threading.Lock()
        self.row: OperationRecord | None = planned.resume
        previous = planned.previous.before if planned.previous is not None else {}
        self.facts: dict[str, Any] = {
            "pass": planned.pass_number,
            "method": copier.method.name,
            "stage": "started",
            "stages": {},
            "state": {},
            "attached": bool(planned.volume.attachments),
            "incremental": planned.action == "incremental",
            "previous_digest": (previous or {}).get("content_digest"),
        }
        self.backup: BackupWriter | None = None
        self._progress_written: float | None = None

    def _write(self, state: str, *, error: str | None = None, attempt: bool = False) -> None:
        with self.lock:
            self.row = self.copier.journal.transition(
                self.run_id,
                self.copier.scope,
                KIND,
                self.identity,
                state,
                action=self.planned.action,
                expected=self.row,
                source_id=self.planned.volume.id,
                destination_id=self.destination_id,
                error=error,
                before=dict(self.facts),
                attempt=attempt,
            )

    def _on_stage(self, name: str, facts: Mapping[str, Any]) -> None:
        if facts.get("destination_id"):
            self.destination_id = str(facts["destination_id"])
        self.facts["stage"] = name
        self.facts["stages"] = {**self.facts["stages"], name: {**facts, "at": time.time()}}
        self._write(PENDING)
        self._report(stage=name)
        self.copier.emit(
            EventType.INFO,
            kind=KIND,
            identity=self.planned.volume.name,
            message=f"{self.planned.volume.label}: {name}",
        )

    def _report(self, **fields: Any) -> None:
        with self.lock:
            if self.row is not None:
                self.copier.journal.report(self.row, **fields)

    def _on_progress(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        last = self._progress_written
        if final or last is None or now - last >= PROGRESS_INTERVAL:
            self._progress_written = now
            self._report(progress={"done": done, "total": total, "unit": "bytes"})
        self.copier.emit(
            EventType.PROGRESS,
            kind=KIND,
            identity=self.planned.volume.name or self.planned.volume.id,
            done=done,
            total=total,
            unit="bytes",
        )

    def _created(self, temporary: Temporary) -> None:
        self.copier.ledger.created(self.run_id, self.planned.volume.id, temporary)
        self.temporaries.append(temporary)

    def _removed(self, temporary: Temporary) -> None:
        self.copier.ledger.removed(self.run_id, temporary)
        if temporary in self.temporaries:
            self.temporaries.remove(temporary)

    def execute(self) -> VolumeOutcome:
        copier, planned = self.copier, self.planned
        self._write(PENDING, attempt=True)
        full = planned.action == "copy"
        previous = planned.previous.before if planned.previous is not None else {}
        base = (previous or {}).get("content_digest")
        if copier.backup_to and full:
            self.backup = BackupWriter(copier.backup_to, planned.volume)
        elif copier.backup_to and base:  # only what changed, chained to the previous pass
            self.backup = IncrementalBackupWriter(
                copier.backup_to,
                planned.volume,
                base_digest=str(base),
                pass_number=planned.pass_number,
            )
        elif copier.backup_to:
            copier.emit(
                EventType.WARNING,
                kind=KIND,
                identity=planned.volume.name,
                message="no backup from this pass: the pass before it recorded no content digest",
            )
        ctx = PassContext(
            run_id=self.run_id,
            source=planned.volume,
            destination_project_id=planned.destination_project_id,
            destination_type=planned.destination_type,
            source_conn=copier.source_conn,
            destination_conn=copier.destination_conn,
            storage=copier.storage,
            journal=copier.journal,
            events=_as_bus(copier.events),
            # The operator's --incremental: keep what a next pass needs, diff from previous.
            incremental=copier.incremental,
            previous=dict((previous or {}).get("state") or {}),
            destination_id=self.destination_id,
            backup=self.backup,
            on_stage=self._on_stage,
            on_temporary=self._created,
            on_temporary_removed=self._removed,
            on_progress=self._on_progress,
            destination_cloud=copier.destination_cloud,
            destination_project_conn=copier.destination_project_conn,
        )
        result = copier.method.copy_pass(ctx)
        self._check_backup(result)
        self.destination_id = result.destination_id
        target = copier.reshape.target_gib(planned.volume)
        # Verified at the source's size, then extended; in an incremental chain only by its
        # last pass (a diff applied to a grown image could resize it back).
        if target > planned.volume.size_gib and (copier.final or not copier.incremental):
            grown = grow_volume(copier.destination_conn, result.destination_id, target)
            self.facts["destination_size_gib"] = grown
        copier.journal.map_id(copier.scope, KIND, planned.volume.id, result.destination_id)
        state = result.state
        if copier.final:  # the cutover pass ends the chain: nothing is kept for a next pass
            copier.method.forget_incremental(
                state, copier.source_conn, copier.destination_conn, copier.storage
            )
            for temporary in list(self.temporaries):
                self._removed(temporary)
            copier.ledger.forget_kept(self.run_id, planned.volume.id)
            state = {}
        for kept in self.temporaries:  # what the next incremental pass starts from
            copier.ledger.keep(self.run_id, kept)
        self.facts.update(
            stage="verified",
            final=copier.final,
            state=state,
            content_digest=result.content_digest,
            bytes_read=result.bytes_read,
            bytes_sent=result.bytes_sent,
            bytes_wire=result.bytes_wire,
            details=result.details,
            backup=self.backup.location if self.backup else None,
            backup_stream=(
                self.backup.result.as_facts() if self.backup and self.backup.result else None
            ),
        )
        self._write(DONE)
        return VolumeOutcome(
            planned.volume.id,
            planned.volume.name,
            "done",
            result.destination_id,
            planned.pass_number,
            result.bytes_sent,
            result.content_digest,
            backup=self.backup.location if self.backup else None,
        )

    def _check_backup(self, result: PassResult) -> None:
        if self.backup is None:
            return
        if isinstance(self.backup, IncrementalBackupWriter):
            self.backup.finish(result.content_digest)  # sealed with what the pass verified
            return
        if self.backup.content_digest is None:
            raise StackhopError(f"the {self.copier.method.name} method did not write the backup")
        if self.backup.content_digest != result.content_digest:
            self.backup.discard()
            raise IntegrityError(
                f"{self.planned.volume.label}: the backup hashes to "
                f"{self.backup.content_digest[:16]}..., the copy to {result.content_digest[:16]}"
                f"...; the backup {self.backup.location} is not to be used (a file is removed); "
                "re-run"
            )

    def fail(self, message: str) -> None:
        """Record the failure and remove what this pass created."""
        copier = self.copier
        if self.backup is not None:  # a backup not sealed yet is cut short (nothing if it was)
            self.backup.abort(StackhopError(message))
        for temporary in list(self.temporaries):
            try:
                copier.method.remove_temporary(
                    temporary, copier.source_conn, copier.destination_conn, copier.storage
                )
                self._removed(temporary)
            except Exception as exc:  # left for `volumes cleanup --run`, and said so
                copier.emit(
                    EventType.WARNING,
                    kind=KIND,
                    identity=self.planned.volume.name,
                    message=f"could not remove {temporary.identity}: {exc}; "
                    f"run `stackhop volumes cleanup --run {self.run_id}`",
                )
        try:
            self._write(FAILED, error=message)
        except StackhopError as exc:
            copier.emit(
                EventType.WARNING, kind=KIND, identity=self.planned.volume.name, message=str(exc)
            )


def grow_volume(conn: Any, volume_id: str, size_gib: int) -> int:
    """Extend destination volume ``volume_id`` to ``size_gib`` (no-op when it is that large)."""
    volume = conn.block_storage.get_volume(volume_id)
    if volume.size >= size_gib:
        return int(volume.size)
    conn.block_storage.extend_volume(volume, size_gib)
    deadline = time.monotonic() + 600
    while True:
        volume = wait_volume(conn, volume_id, ("available", "in-use"))
        if volume.size >= size_gib:
            return int(volume.size)
        if time.monotonic() > deadline:
            raise StackhopError(
                f"volume {volume_id} on the destination stayed at {volume.size} GiB after "
                f"extending it to {size_gib} GiB; check the Cinder volume service's log"
            )
        time.sleep(1)


def _as_bus(events: EventSink) -> Any:
    # PassContext wants an EventBus; any sink with emit() serves.
    return events
