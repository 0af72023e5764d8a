"""One pass of one volume: what the journal says it needs, and the engine task that runs it.

:func:`plan_volume` reads a volume's ``volume`` rows (one per pass; see
:mod:`stackhop.volumes.copy` and ``docs/journal.md``) and decides whether this
run copies it in full, passes incrementally, resumes an interrupted pass or
skips it; :func:`operation_of` turns that decision into the engine's
operation: a :class:`VolumePass` task (action ``copy``), an
:class:`IncrementalPass` (``incremental``) or a :class:`~stackhop.plan.Skip`.

The engine journals the pass's row (``pending`` before, ``done``/``failed``
after, retries of transient failures, resume); the task's :meth:`VolumePass.call`
runs the method and reports every stage with its facts (``before``) and the
destination volume as soon as it exists, and the bytes through as progress
(the row's ``stage`` and ``progress`` columns, which ``stackhop status``
shows). The last report, ``verified``, carries the final facts (digest, bytes,
backup), so a ``done`` row holds them. The temporaries ledger
(``volume.temporary``) is written by the pass itself, as it creates and
removes temporaries mid-step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from stackhop.errors import IntegrityError, StackhopError
from stackhop.events import Event, EventSink, EventType
from stackhop.journal import DONE, Journal, OperationRecord
from stackhop.plan import Operation, Skip
from stackhop.task import LeaseLost, Task, TaskContext, TaskKind
from stackhop.volumes.backup import BackupWriter, IncrementalBackupWriter
from stackhop.volumes.inventory import wait_volume
from stackhop.volumes.model import PassContext, PassResult, Temporary, VolumeMethod, VolumeRef
from stackhop.volumes.reshape import Reshape
from stackhop.volumes.storage import StorageMap
from stackhop.volumes.temporaries import TemporaryLedger

KIND = "volume"


class VolumeKind(TaskKind):
    """The journal kind of a volume pass (rows ``<ID>`` / ``<ID>#<n>``)."""

    name = KIND
    service = "volume"


VOLUME_KIND = VolumeKind()


def pass_identity(volume_id: str, number: int) -> str:
    """The journal identity of pass ``number`` (1-based) of a volume."""
    return volume_id if number == 1 else f"{volume_id}#{number}"


def pass_number(identity: str) -> int:
    """The pass number a row's identity names (``<ID>`` = 1, ``<ID>#<n>`` = n)."""
    _, sep, number = identity.rpartition("#")
    return int(number) if sep and number.isdigit() else 1


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
    # The pass number is the identity's: a row an attempt left before its first report
    # has no facts yet.
    rows = sorted(
        (r for r in journal.operations(scope=scope, kind=KIND) if r.source_id == volume.id),
        key=lambda r: pass_number(r.identity),
    )
    done = [r for r in rows if r.state == DONE]
    previous = done[-1] if done else None
    latest = rows[-1] if rows else None
    number = pass_number(latest.identity) if latest else 1
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


@dataclass(frozen=True, kw_only=True)
class VolumePass(Task):
    """A full pass of one volume (action ``copy``): the engine's task for it.

    ``identity`` is the volume's label (events); the journal key is the pass's
    identity (``<ID>`` / ``<ID>#<n>``); ``of`` the source volume ID.
    """

    action: ClassVar[str] = "copy"

    planned: PlannedVolume = field(compare=False)
    host: PassHost = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        return pass_identity(self.planned.volume.id, self.planned.pass_number)

    def call(self, ctx: TaskContext) -> str:
        attempt = _PassAttempt(self.host, self.planned, ctx)
        try:
            return attempt.execute()
        except BaseException as exc:
            attempt.abandon(exc)
            raise

    def to_payload(self) -> dict[str, Any]:
        """The volume and where it goes; a worker re-plans the rest from the journal."""
        planned = self.planned
        return {
            "volume": planned.volume.id,
            "destination_project": planned.destination_project_id,
            "destination_type": planned.destination_type,
        }

    def find(self, ctx: TaskContext) -> str | None:
        """An earlier attempt that reached ``verified`` (only the ``done`` write was lost):
        its destination volume, if it is still there."""
        previous = ctx.previous
        if previous is None or not previous.destination_id:
            return None
        if (previous.before or {}).get("stage") != "verified":
            return None
        volume = self.host.destination_conn.block_storage.find_volume(
            previous.destination_id, ignore_missing=True
        )
        return None if volume is None else previous.destination_id


@dataclass(frozen=True, kw_only=True)
class IncrementalPass(VolumePass):
    """A pass that sends what changed since the volume's last verified pass."""

    action: ClassVar[str] = "incremental"


def operation_of(host: PassHost, planned: PlannedVolume) -> Operation:
    """The engine's operation for one planned volume."""
    volume = planned.volume
    label = volume.name or volume.id
    if planned.action == "skip":
        # Keyed by the verified pass's row: the engine counts it skipped and keeps its mapping.
        return Skip(
            kind=VOLUME_KIND,
            identity=pass_identity(volume.id, planned.pass_number),
            source={"id": volume.id},
            resolved={},
        )
    cls = IncrementalPass if planned.action == "incremental" else VolumePass
    return cls(kind=VOLUME_KIND, identity=label, of=volume.id, planned=planned, host=host)


class _PassAttempt:
    """One attempt at one pass: runs the method, reports to the task context."""

    def __init__(self, host: PassHost, planned: PlannedVolume, ctx: TaskContext) -> None:
        self.host = host
        self.planned = planned
        self.ctx = ctx
        earlier = ctx.previous.destination_id if ctx.previous is not None else None
        self.destination_id = earlier or planned.destination_id
        self.temporaries: list[Temporary] = []
        previous = planned.previous.before if planned.previous is not None else {}
        self.facts: dict[str, Any] = {
            "pass": planned.pass_number,
            "method": host.method.name,
            "stage": "started",
            "stages": {},
            "state": {},
            "attached": bool(planned.volume.attachments),
            "incremental": planned.action == "incremental",
            "previous_digest": (previous or {}).get("content_digest"),
        }
        self.backup: BackupWriter | None = None

    @property
    def label(self) -> str:
        return self.planned.volume.name or self.planned.volume.id

    def _report(self, name: str) -> None:
        self.facts["stage"] = name
        self.ctx.stage(name, dict(self.facts), destination_id=self.destination_id)

    def _on_stage(self, name: str, facts: Mapping[str, Any]) -> None:
        if facts.get("destination_id"):
            self.destination_id = str(facts["destination_id"])
        self.facts["stages"] = {**self.facts["stages"], name: {**facts, "at": time.time()}}
        self._report(name)
        self._emit(EventType.INFO, message=f"{self.planned.volume.label}: {name}")

    def _on_progress(self, done: int, total: int | None) -> None:
        self.ctx.progress(done, total, "bytes")

    def _emit(self, type_: EventType, **fields: Any) -> None:
        self.ctx.events.emit(
            Event(type_, kind=KIND, identity=self.label, run_id=self.ctx.run_id, **fields)
        )

    def _created(self, temporary: Temporary) -> None:
        self.host.ledger.created(self.ctx.run_id, self.planned.volume.id, temporary)
        self.temporaries.append(temporary)

    def _removed(self, temporary: Temporary) -> None:
        self.host.ledger.removed(self.ctx.run_id, temporary)
        if temporary in self.temporaries:
            self.temporaries.remove(temporary)

    def execute(self) -> str:
        host, planned = self.host, self.planned
        self._report("started")
        full = planned.action == "copy"
        previous = planned.previous.before if planned.previous is not None else {}
        base = (previous or {}).get("content_digest")
        if host.backup_to and full:
            self.backup = BackupWriter(host.backup_to, planned.volume)
        elif host.backup_to and base:  # only what changed, chained to the previous pass
            self.backup = IncrementalBackupWriter(
                host.backup_to,
                planned.volume,
                base_digest=str(base),
                pass_number=planned.pass_number,
            )
        elif host.backup_to:
            self._emit(
                EventType.WARNING,
                message="no backup from this pass: the pass before it recorded no content digest",
            )
        ctx = PassContext(
            run_id=self.ctx.run_id,
            source=planned.volume,
            destination_project_id=planned.destination_project_id,
            destination_type=planned.destination_type,
            source_conn=host.source_conn,
            destination_conn=host.destination_conn,
            storage=host.storage,
            journal=self.ctx.journal,
            events=_as_bus(self.ctx.events),
            # The operator's --incremental: keep what a next pass needs, diff from previous.
            incremental=host.incremental,
            previous=dict((previous or {}).get("state") or {}),
            destination_id=self.destination_id,
            backup=self.backup,
            on_stage=self._on_stage,
            on_temporary=self._created,
            on_temporary_removed=self._removed,
            on_progress=self._on_progress,
            destination_cloud=host.destination_cloud,
            destination_project_conn=host.destination_project_conn,
        )
        result = host.method.copy_pass(ctx)
        self._check_backup(result)
        self.destination_id = result.destination_id
        target = host.reshape.target_gib(planned.volume)
        # Verified at the source's size, then extended; in an incremental chain only by its
        # last pass (a diff applied to a grown image could resize it back).
        if target > planned.volume.size_gib and (host.final or not host.incremental):
            grown = grow_volume(host.destination_conn, result.destination_id, target)
            self.facts["destination_size_gib"] = grown
        state = result.state
        if host.final:  # the cutover pass ends the chain: nothing is kept for a next pass
            host.method.forget_incremental(
                state, host.source_conn, host.destination_conn, host.storage
            )
            for temporary in list(self.temporaries):
                self._removed(temporary)
            host.ledger.forget_kept(self.ctx.run_id, planned.volume.id)
            state = {}
        for kept in self.temporaries:  # what the next incremental pass starts from
            host.ledger.keep(self.ctx.run_id, kept)
        self.temporaries = []
        self.facts.update(
            final=host.final,
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
        # The last report carries the final facts: the engine's ``done`` keeps them.
        self._report("verified")
        return result.destination_id

    def _check_backup(self, result: PassResult) -> None:
        if self.backup is None:
            return
        if isinstance(self.backup, IncrementalBackupWriter):
            self.backup.finish(result.content_digest)  # sealed with what the pass verified
            return
        if self.backup.content_digest is None:
            raise StackhopError(f"the {self.host.method.name} method did not write the backup")
        if self.backup.content_digest != result.content_digest:
            self.backup.discard()
            raise IntegrityError(
                f"{self.planned.volume.label}: the backup hashes to "
                f"{self.backup.content_digest[:16]}..., the copy to {result.content_digest[:16]}"
                f"...; the backup {self.backup.location} is not to be used (a file is removed); "
                "re-run"
            )

    def abandon(self, exc: BaseException) -> None:
        """The attempt failed: cut the backup short and remove what it created.

        The engine records the failure (the row keeps the facts last reported).
        """
        host = self.host
        if self.backup is not None:  # a backup not sealed yet is cut short (nothing if it was)
            self.backup.abort(exc)
        if isinstance(exc, LeaseLost):  # the worker that took over may be using them
            return
        for temporary in list(self.temporaries):
            try:
                host.method.remove_temporary(
                    temporary, host.source_conn, host.destination_conn, host.storage
                )
                self._removed(temporary)
            except Exception as problem:  # left for `volumes cleanup --run`, and said so
                self._emit(
                    EventType.WARNING,
                    message=f"could not remove {temporary.identity}: {problem}; "
                    f"run `stackhop volumes cleanup --run {self.ctx.run_id}`",
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
