"""Copying a project's volumes between clouds: plan, preflight, journal, workers, cleanup.

:func:`copy_volumes` is the library API behind ``stackhop volumes copy``. It
selects the volumes, maps the project, reads the journal to decide what each
volume needs (``copy``, ``incremental``, or ``skip`` when a verified pass
exists and no ``--incremental`` was asked), runs the preflight
(:mod:`.preflight`), then hands every volume to the method on ``workers``
threads and records each pass in the journal.

Journal (scope ``<source cloud>-><destination cloud>``):

- kind ``volume``: one row per *pass* of a volume. Identity = the source
  volume ID for the first pass, ``<ID>#<n>`` for pass n >= 2 (a ``done`` row is
  final, so a later incremental pass is a new row); ``source_id`` = the source
  volume ID; ``destination_id`` = the destination volume ID as soon as it
  exists; ``before`` holds the pass's JSON: ``pass``, ``method``, ``stage``
  (the last of ``started``, ``exported``, ``imported``, ``adopted``,
  ``verified`` reached), ``stages`` (stage -> facts), ``state`` (what the next
  incremental pass needs), ``content_digest``, ``bytes_read``, ``bytes_sent``,
  ``bytes_wire``, ``attached`` (the pass ran on an in-use volume), ``backup``.
  ``pending``: running or interrupted (re-run resumes that row), ``done``:
  verified, ``failed``: the error is in the row.
- kind ``volume.temporary``: one row per temporary a method created
  (identity ``<Temporary.identity>#<k>``), ``pending`` while it exists,
  ``done`` once removed; ``before`` holds the :class:`Temporary` and
  ``kept: true`` when a verified pass keeps it for the next incremental pass.
  :func:`cleanup_run` removes the pending, not kept ones of a run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from stackhop.errors import StackhopError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import DONE, FAILED, PENDING, Journal, OperationRecord
from stackhop.kinds.identity import OperatorMap
from stackhop.volumes import preflight
from stackhop.volumes.backup import BackupWriter
from stackhop.volumes.inventory import (
    map_project,
    project_connection,
    project_record,
    quota_room,
    select_volumes,
)
from stackhop.volumes.methods import get_method
from stackhop.volumes.model import PassContext, PassResult, Temporary, VolumeMethod, VolumeRef
from stackhop.volumes.storage import StorageMap
from stackhop.volumes.temporaries import TemporaryLedger

KIND = "volume"
COMMAND = "volumes copy"


def scope_of(source_cloud: str, destination_cloud: str) -> str:
    """The journal scope of copies from one cloud to another."""
    return f"{source_cloud}->{destination_cloud}"


def pass_identity(volume_id: str, number: int) -> str:
    """The journal identity of pass ``number`` (1-based) of a volume."""
    return volume_id if number == 1 else f"{volume_id}#{number}"


@dataclass(frozen=True)
class CopyRequest:
    """What to copy, where, how (the options of ``stackhop volumes copy``)."""

    source_cloud: str
    destination_cloud: str
    project: str
    volumes: tuple[str, ...] = ()
    all: bool = False
    method: str = "image"
    incremental: bool = False
    backup_to: str | None = None
    workers: int = 1
    allow_in_use: bool = False
    dry_run: bool = False

    def args(self) -> dict[str, Any]:
        """The request as journal run arguments."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


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


@dataclass
class CopyResult:
    """What :func:`copy_volumes` did (or, with ``dry_run``, would do)."""

    run_id: str | None
    method: str
    plan: list[PlannedVolume] = field(default_factory=list)
    outcomes: list[VolumeOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[VolumeOutcome]:
        return [o for o in self.outcomes if o.outcome == FAILED]


@dataclass
class Clouds:
    """The two connections a copy works with (admin on both sides)."""

    source: Any
    destination: Any


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


class VolumeCopier:
    """Runs one request: the plan, the preflight, the passes (see the module docstring)."""

    def __init__(
        self,
        request: CopyRequest,
        clouds: Clouds,
        journal: Journal,
        storage: StorageMap,
        *,
        events: EventSink | None = None,
        project_map: OperatorMap | None = None,
        selected: Sequence[VolumeRef] | None = None,
    ) -> None:
        self.request = request
        self.clouds = clouds
        self.journal = journal
        self.storage = storage
        self.events = events or NullSink()
        self.project_map = project_map
        self.selected = selected
        self.scope = scope_of(request.source_cloud, request.destination_cloud)
        self.method: VolumeMethod = get_method(request.method)
        self.ledger = TemporaryLedger(journal, self.scope)

    # -- planning and preflight ----------------------------------------------

    def prepare(self) -> list[PlannedVolume]:
        """Select, map, plan and preflight; raises before anything moves."""
        request, src, dst = self.request, self.clouds.source, self.clouds.destination
        project = project_record(src, request.project)
        volumes = (
            list(self.selected)
            if self.selected is not None
            else select_volumes(
                src, request.source_cloud, project["id"], request.volumes, request.all
            )
        )
        dst_project = map_project(project, dst, self.project_map)
        label = f"{project['name']}"
        # Fails early when the credentials cannot act in the destination project.
        project_connection(dst, request.destination_cloud, dst_project)
        types = preflight.destination_types(dst, volumes, request.destination_cloud)
        plan = [
            plan_volume(self.journal, self.scope, v, request.incremental, dst_project, types[v.id])
            for v in volumes
        ]
        moving = [p.volume for p in plan if p.action != "skip"]
        creating = [p.volume for p in plan if p.action == "copy"]
        preflight.check_quota(label, quota_room(dst, dst_project), creating, types)
        preflight.check_in_use(moving, request.allow_in_use, request.incremental)
        preflight.check_method(
            self.method, moving, self.storage, request.destination_cloud, types, request.incremental
        )
        preflight.check_hosts(
            self.method, moving, self.storage, dst, request.destination_cloud, types
        )
        return plan

    # -- running -------------------------------------------------------------

    def run(self, plan: Sequence[PlannedVolume]) -> CopyResult:
        """Copy every planned volume; failures are in the result, not raised."""
        run = self.journal.start_run(
            COMMAND,
            source_cloud=self.request.source_cloud,
            destination_cloud=self.request.destination_cloud,
            args=self.request.args(),
        )
        result = CopyResult(run.id, self.method.name, list(plan))
        self._emit(EventType.RUN_STARTED, run_id=run.id, total=len(plan))
        self._emit(EventType.KIND_STARTED, kind=KIND, total=len(plan))
        outcome = "failed"
        try:
            with ThreadPoolExecutor(
                max_workers=max(1, self.request.workers), thread_name_prefix="volume"
            ) as pool:
                result.outcomes = list(pool.map(lambda p: self._one(run.id, p), plan))
            outcome = "failed" if result.failed else "succeeded"
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            self.journal.finish_run(run.id, outcome)
            self._emit(EventType.RUN_FINISHED, run_id=run.id, outcome=outcome)
        return result

    def _emit(self, type_: EventType, **fields: Any) -> None:
        self.events.emit(Event(type_, **fields))

    def _one(self, run_id: str, planned: PlannedVolume) -> VolumeOutcome:
        volume = planned.volume
        label = volume.name or volume.id
        if planned.action == "skip":
            self._emit(
                EventType.OPERATION_FINISHED,
                kind=KIND,
                identity=label,
                operation="skip",
                outcome="skipped",
                message=planned.reason,
            )
            return VolumeOutcome(
                volume.id, volume.name, "skipped", planned.destination_id, planned.pass_number
            )
        self._emit(EventType.OPERATION_STARTED, kind=KIND, identity=label, operation=planned.action)
        pass_run = _PassRun(self, run_id, planned)
        try:
            outcome = pass_run.execute()
        except Exception as exc:  # recorded, reported; the other volumes go on
            message = (
                exc.message if isinstance(exc, StackhopError) else f"{type(exc).__name__}: {exc}"
            )
            pass_run.fail(message)
            self._emit(
                EventType.OPERATION_FINISHED,
                kind=KIND,
                identity=label,
                operation=planned.action,
                outcome="failed",
                message=message,
            )
            return VolumeOutcome(
                volume.id,
                volume.name,
                "failed",
                pass_run.destination_id,
                planned.pass_number,
                error=message,
            )
        self._emit(
            EventType.OPERATION_FINISHED,
            kind=KIND,
            identity=label,
            operation=planned.action,
            outcome="done",
            message=f"-> {outcome.destination_id}, {outcome.bytes_sent} bytes sent",
        )
        return outcome


class _PassRun:
    """One pass of one volume: its journal row, its temporaries, its backup."""

    def __init__(self, copier: VolumeCopier, run_id: str, planned: PlannedVolume) -> None:
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
        self.copier._emit(
            EventType.INFO,
            kind=KIND,
            identity=self.planned.volume.name,
            message=f"{self.planned.volume.label}: {name}",
        )

    def _on_progress(self, done: int, total: int | None) -> None:
        self.copier._emit(
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
        if copier.request.backup_to and full:
            self.backup = BackupWriter(copier.request.backup_to, planned.volume)
        elif copier.request.backup_to:
            copier._emit(
                EventType.WARNING,
                kind=KIND,
                identity=planned.volume.name,
                message="no backup from an incremental pass (the full pass wrote it)",
            )
        previous = planned.previous.before if planned.previous is not None else {}
        ctx = PassContext(
            run_id=self.run_id,
            source=planned.volume,
            destination_project_id=planned.destination_project_id,
            destination_type=planned.destination_type,
            source_conn=copier.clouds.source,
            destination_conn=copier.clouds.destination,
            storage=copier.storage,
            journal=copier.journal,
            events=_as_bus(copier.events),
            incremental=planned.action == "incremental",
            previous=dict((previous or {}).get("state") or {}),
            destination_id=self.destination_id,
            backup=self.backup,
            on_stage=self._on_stage,
            on_temporary=self._created,
            on_temporary_removed=self._removed,
            on_progress=self._on_progress,
            destination_cloud=copier.request.destination_cloud,
        )
        result = copier.method.copy_pass(ctx)
        self._check_backup(result)
        self.destination_id = result.destination_id
        copier.journal.map_id(copier.scope, KIND, planned.volume.id, result.destination_id)
        for kept in self.temporaries:  # what the next incremental pass starts from
            copier.ledger.keep(self.run_id, kept)
        self.facts.update(
            stage="verified",
            state=result.state,
            content_digest=result.content_digest,
            bytes_read=result.bytes_read,
            bytes_sent=result.bytes_sent,
            bytes_wire=result.bytes_wire,
            details=result.details,
            backup=str(self.backup.path) if self.backup else None,
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
            backup=str(self.backup.path) if self.backup else None,
        )

    def _check_backup(self, result: PassResult) -> None:
        if self.backup is None:
            return
        if self.backup.content_digest is None:
            raise StackhopError(f"the {self.copier.method.name} method did not write the backup")
        if self.backup.content_digest != result.content_digest:
            self.backup.path.unlink(missing_ok=True)
            from stackhop.errors import IntegrityError

            raise IntegrityError(
                f"{self.planned.volume.label}: the backup hashes to "
                f"{self.backup.content_digest[:16]}..., the copy to {result.content_digest[:16]}"
                "...; the backup was removed, re-run"
            )

    def fail(self, message: str) -> None:
        """Record the failure and remove what this pass created."""
        copier = self.copier
        for temporary in list(self.temporaries):
            try:
                copier.method.remove_temporary(
                    temporary, copier.clouds.source, copier.clouds.destination, copier.storage
                )
                self._removed(temporary)
            except Exception as exc:  # left for `volumes cleanup --run`, and said so
                copier._emit(
                    EventType.WARNING,
                    kind=KIND,
                    identity=self.planned.volume.name,
                    message=f"could not remove {temporary.identity}: {exc}; "
                    f"run `stackhop volumes cleanup --run {self.run_id}`",
                )
        try:
            self._write(FAILED, error=message)
        except StackhopError as exc:
            copier._emit(
                EventType.WARNING, kind=KIND, identity=self.planned.volume.name, message=str(exc)
            )


def _as_bus(events: EventSink) -> Any:
    # PassContext wants an EventBus; any sink with emit() serves.
    return events


def copy_volumes(
    request: CopyRequest,
    clouds: Clouds,
    journal: Journal,
    storage: StorageMap,
    *,
    events: EventSink | None = None,
    project_map: OperatorMap | None = None,
    selected: Sequence[VolumeRef] | None = None,
    on_plan: Callable[[list[PlannedVolume]], None] | None = None,
) -> CopyResult:
    """Copy the requested volumes (see the module docstring); with ``dry_run`` only plan.

    ``selected`` replaces the request's ``volumes``/``all`` (interactive choice).
    Preflight failures raise before anything moves; a volume's failure is in
    the result (and the journal), the others carry on.
    """
    copier = VolumeCopier(
        request, clouds, journal, storage, events=events, project_map=project_map, selected=selected
    )
    plan = copier.prepare()
    if on_plan is not None:
        on_plan(plan)
    if request.dry_run:
        return CopyResult(None, copier.method.name, plan)
    return copier.run(plan)


def cleanup_run(
    run_id: str,
    source_cloud: str,
    destination_cloud: str,
    clouds: Clouds,
    journal: Journal,
    storage: StorageMap,
    *,
    events: EventSink | None = None,
) -> list[dict[str, Any]]:
    """Remove every temporary run ``run_id`` left (pending, not kept); what happened to each."""
    scope = scope_of(source_cloud, destination_cloud)
    ledger = TemporaryLedger(journal, scope)
    sink = events or NullSink()
    report: list[dict[str, Any]] = []
    for _row, temporary in ledger.leftovers(run_id):
        try:
            get_method(temporary.method).remove_temporary(
                temporary, clouds.source, clouds.destination, storage
            )
            ledger.removed(run_id, temporary)
            report.append({"temporary": temporary.identity, "outcome": "removed"})
        except StackhopError as exc:
            report.append(
                {"temporary": temporary.identity, "outcome": "failed", "error": exc.message}
            )
            sink.emit(
                Event(
                    EventType.WARNING,
                    kind="volume.temporary",
                    identity=temporary.identity,
                    message=exc.message,
                )
            )
    return report
