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

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from stackhop.errors import StackhopError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import DONE, FAILED, Journal
from stackhop.kinds.identity import OperatorMap
from stackhop.volumes import grant, preflight
from stackhop.volumes.inventory import (
    map_project,
    project_connection,
    project_record,
    quota_room,
    select_volumes,
)
from stackhop.volumes.methods import get_method
from stackhop.volumes.model import Temporary, VolumeMethod, VolumeRef
from stackhop.volumes.passes import (
    KIND,
    PassRunner,
    PlannedVolume,
    VolumeOutcome,
    pass_identity,
    plan_volume,
)
from stackhop.volumes.reshape import Reshape
from stackhop.volumes.storage import StorageMap
from stackhop.volumes.temporaries import TemporaryLedger

COMMAND = "volumes copy"

__all__ = [
    "KIND",
    "CopyRequest",
    "CopyResult",
    "Clouds",
    "PlannedVolume",
    "VolumeCopier",
    "VolumeOutcome",
    "cleanup_run",
    "copy_volumes",
    "pass_identity",
    "plan_volume",
    "scope_of",
]


def scope_of(source_cloud: str, destination_cloud: str) -> str:
    """The journal scope of copies from one cloud to another."""
    return f"{source_cloud}->{destination_cloud}"


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
    #: The cutover pass (implies ``incremental``): volumes must be detached; each volume's
    #: incremental chain ends once it is verified (the method's kept snapshots are removed).
    final: bool = False
    #: Destination type and size of the volumes (``--type-map``, ``--min-size``, ``--grow-to``).
    reshape: Reshape = field(default_factory=Reshape)
    #: ``--grant-role``: the operator's user holds this role in the destination project for
    #: the run (granted and removed by stackhop only when it did not hold it already).
    grant_role: str | None = None
    #: Options of the method (``--codec`` of the stream method).
    method_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.final:  # a cutover pass is the last pass of an incremental chain
            object.__setattr__(self, "incremental", True)

    def args(self) -> dict[str, Any]:
        """The request as journal run arguments."""
        plain = {k: v for k, v in self.__dict__.items() if k not in ("reshape", "method_options")}
        return {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in plain.items()},
            **self.reshape.as_args(),
            **dict(self.method_options),
        }


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
        self.method: VolumeMethod = get_method(request.method, **request.method_options)
        self.ledger = TemporaryLedger(journal, self.scope)
        self.source_conn = clouds.source
        self.destination_conn = clouds.destination
        self.backup_to = request.backup_to
        self.reshape = request.reshape
        self.destination_cloud = request.destination_cloud
        self.final = request.final
        self.incremental = request.incremental
        self.destination_project_conn: Any = None
        self.destination_project = ""
        self.grant: Temporary | None = None

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
        self.destination_project = dst_project
        self.grant = (
            grant.needed_grant(dst, request.destination_cloud, dst_project, request.grant_role)
            if request.grant_role
            else None
        )
        if self.grant is None:
            # Fails early when the credentials cannot act in the destination project; kept
            # for the passes, which create volumes there.
            self.destination_project_conn = project_connection(
                dst, request.destination_cloud, dst_project
            )
        request.reshape.check(volumes)
        types = preflight.destination_types(
            dst, volumes, request.destination_cloud, request.reshape.type_map
        )
        plan = [
            plan_volume(self.journal, self.scope, v, request.incremental, dst_project, types[v.id])
            for v in volumes
        ]
        moving = [p.volume for p in plan if p.action != "skip"]
        creating = [p.volume for p in plan if p.action == "copy"]
        preflight.check_quota(
            label, quota_room(dst, dst_project), request.reshape.sized(creating), types
        )
        preflight.check_in_use(
            moving, request.allow_in_use and not request.final, request.incremental
        )
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
        self.emit(EventType.RUN_STARTED, run_id=run.id, total=len(plan))
        self.emit(EventType.KIND_STARTED, kind=KIND, total=len(plan))
        outcome = "failed"
        granted = self.grant
        try:
            if granted is not None:  # journaled first: a crash leaves it to `volumes cleanup`
                self.ledger.created(run.id, None, granted)
                grant.grant(self.destination_conn, granted)
                self.destination_project_conn = project_connection(
                    self.destination_conn, self.request.destination_cloud,
                    self.destination_project,
                )  # fmt: skip
            with ThreadPoolExecutor(
                max_workers=max(1, self.request.workers), thread_name_prefix="volume"
            ) as pool:
                result.outcomes = list(pool.map(lambda p: self._one(run.id, p), plan))
            outcome = "failed" if result.failed else "succeeded"
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            if granted is not None:
                grant.revoke(self.destination_conn, granted)
                self.ledger.removed(run.id, granted)
            self.journal.finish_run(run.id, outcome)
            self.emit(EventType.RUN_FINISHED, run_id=run.id, outcome=outcome)
        return result

    def emit(self, type_: EventType, **fields: Any) -> None:
        self.events.emit(Event(type_, **fields))

    def _one(self, run_id: str, planned: PlannedVolume) -> VolumeOutcome:
        volume = planned.volume
        label = volume.name or volume.id
        if planned.action == "skip":
            self.emit(
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
        self.emit(EventType.OPERATION_STARTED, kind=KIND, identity=label, operation=planned.action)
        pass_run = PassRunner(self, run_id, planned)
        try:
            outcome = pass_run.execute()
        except Exception as exc:  # recorded, reported; the other volumes go on
            message = (
                exc.message if isinstance(exc, StackhopError) else f"{type(exc).__name__}: {exc}"
            )
            pass_run.fail(message)
            self.emit(
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
        self.emit(
            EventType.OPERATION_FINISHED,
            kind=KIND,
            identity=label,
            operation=planned.action,
            outcome="done",
            message=f"-> {outcome.destination_id}, {outcome.bytes_sent} bytes sent",
        )
        return outcome


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
    scope: str,
    clouds: Clouds,
    journal: Journal,
    storage: StorageMap,
    *,
    end_chains: bool = False,
    events: EventSink | None = None,
) -> list[dict[str, Any]]:
    """Remove every temporary run ``run_id`` left in ``scope`` (pending, not kept); each outcome.

    With ``end_chains`` also end the incremental chains of the volumes that run
    verified: the method drops what it kept for a next pass (its snapshots).
    """
    ledger = TemporaryLedger(journal, scope)
    sink = events or NullSink()
    report: list[dict[str, Any]] = []
    for _row, temporary in ledger.leftovers(run_id):
        try:
            if temporary.method == grant.METHOD:
                grant.revoke(clouds.destination, temporary)
            else:
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
