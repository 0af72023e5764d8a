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

import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackhop.engine import Engine
from stackhop.errors import Interrupted, StackhopError, UsageError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.executor.names import DEFAULT_QUEUE
from stackhop.journal import DONE, FAILED, Journal, OperationRecord, RunRecord
from stackhop.kinds.identity import OperatorMap
from stackhop.plan import Operation
from stackhop.resolve import Resolver
from stackhop.volumes import grant, preflight
from stackhop.volumes.cleanup import cleanup_run
from stackhop.volumes.inventory import (
    map_project,
    project_connection,
    project_record,
    quota_room,
    select_volumes,
    volume_ref,
)
from stackhop.volumes.methods import get_method
from stackhop.volumes.model import Temporary, VolumeMethod, VolumeRef
from stackhop.volumes.passes import (
    KIND,
    PlannedVolume,
    VolumeOutcome,
    operation_of,
    pass_identity,
    plan_volume,
)
from stackhop.volumes.reshape import Reshape
from stackhop.volumes.storage import StorageMap, load_storage_map
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
    #: The volumes' server is stopped by the caller (a server migration's cutover): a final
    #: pass of attached volumes is then as consistent as one of detached volumes.
    quiesced: bool = False
    #: Destination type and size of the volumes (``--type-map``, ``--min-size``, ``--grow-to``).
    reshape: Reshape = field(default_factory=Reshape)
    #: ``--grant-role``: the operator's user holds this role in the destination project for
    #: the run (granted and removed by stackhop only when it did not hold it already).
    grant_role: str | None = None
    #: Options of the method (``--codec`` of the stream method).
    method_options: Mapping[str, Any] = field(default_factory=dict)
    #: ``local`` (threads of this process) or ``celery`` (workers; ``docs/scale.md``).
    executor: str = "local"

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

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> CopyRequest:
        """The request a run was started with, from its journal arguments (a worker's)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"reshape", "method_options"}
        reshape_keys = set(Reshape().as_args())
        plain = {k: v for k, v in args.items() if k in names}
        plain["volumes"] = tuple(plain.get("volumes") or ())
        reshape = Reshape(**{k: v for k, v in args.items() if k in reshape_keys})
        options = {k: v for k, v in args.items() if k not in names | reshape_keys}
        return cls(**plain, reshape=reshape, method_options=options)


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
        stop: threading.Event | None = None,
        app: Any = None,
    ) -> None:
        self.request = request
        #: ``--executor celery``: the Celery app the passes are published with.
        self.app = app
        #: Source volume ID -> the queue of its pass (the storage sites it needs).
        self.queues: dict[str, str] = {}
        #: Set to stop starting passes (a project migration's Ctrl-C); in-flight ones finish.
        self.stop = stop
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
            moving,
            request.quiesced or (request.allow_in_use and not request.final),
            request.incremental or request.quiesced,
        )
        preflight.check_method(
            self.method, moving, self.storage, request.destination_cloud, types, request.incremental
        )
        preflight.check_hosts(
            self.method, moving, self.storage, dst, request.destination_cloud, types
        )
        if request.executor == "celery":
            self.queues = {v.id: self._queue(v, types.get(v.id)) for v in moving}
        return plan

    def _queue(self, volume: VolumeRef, destination_type: str | None) -> str:
        """The queue of a pass: ``stackhop.volumes.<source site>.<destination site>``, so a
        worker on the storage hosts of that pair copies it; the image method needs no
        storage host (the default queue)."""
        if self.method.name == "image":
            return DEFAULT_QUEUE
        source = self.storage.backend_of(volume.cloud, volume.host).site
        name = preflight.backend_for_type(self.destination_conn, destination_type)
        known = name is not None and (self.request.destination_cloud, name) in self.storage.backends
        destination = (
            self.storage.backend(self.request.destination_cloud, name).site
            if known and name is not None
            else self.request.destination_cloud
        )
        return f"{DEFAULT_QUEUE}.volumes.{source}.{destination}"

    def queue_of(self, op: Operation) -> str:
        return self.queues.get(op.source_id or "", DEFAULT_QUEUE)

    # -- running -------------------------------------------------------------

    def run(self, plan: Sequence[PlannedVolume]) -> CopyResult:
        """Copy every planned volume through the engine; failures are in the result.

        One engine run: each pass is a :class:`~.passes.VolumePass` task (a
        verified pass not to be repeated a ``Skip``), on ``workers`` threads,
        with the engine's journaling, retries, resume and Ctrl-C. A
        ``--grant-role`` grant is journaled and made when the run starts (the
        planner hands the passes over only then) and revoked when it ends.
        """
        workers = max(1, self.request.workers)
        executor = None
        if self.request.executor == "celery":
            from stackhop.executor.dispatch import celery_executor

            if self.app is None:
                raise UsageError("--executor celery needs a broker: set $STACKHOP_BROKER_URL")
            executor = celery_executor(self.app, self.queue_of, workers)
        engine = Engine(
            self.journal,
            self.destination_conn,
            Resolver(self.scope, journal=self.journal),
            scope=self.scope,
            workers=workers,
            events=self.events,
            stop=self.stop,
            executor=executor,
        )
        operations = [operation_of(self, p) for p in plan]
        granted: list[Temporary] = []

        def batches() -> Iterator[list[Operation]]:
            if self.grant is not None:  # journaled first: a crash leaves it to `volumes cleanup`
                self.ledger.created(engine.run_id, None, self.grant)
                granted.append(self.grant)
                grant.grant(self.destination_conn, self.grant)
                self.destination_project_conn = project_connection(
                    self.destination_conn, self.request.destination_cloud,
                    self.destination_project,
                )  # fmt: skip
            yield operations

        run_id = None
        if executor is not None:  # a run whose coordinator died is taken over, not redone
            from stackhop.executor.reattach import reattach

            run_id = reattach(
                self.journal, COMMAND, source_cloud=self.request.source_cloud,
                destination_cloud=self.request.destination_cloud, args=self.request.args(),
            )  # fmt: skip
            if run_id is not None:
                self.events.emit(Event(EventType.INFO, run_id=run_id,
                                       message=f"reattached to run {run_id}"))  # fmt: skip
        outcome = "failed"
        #: Workers may still hold passes of this run when it stops on an error: it stays
        #: ``running`` with its grant, for the re-run that takes it over.
        left_to_workers = executor is not None
        try:
            result = engine.run_planned(
                [operations] if self.grant is None else batches(),
                total=len(operations),
                command=COMMAND,
                source_cloud=self.request.source_cloud,
                destination_cloud=self.request.destination_cloud,
                args=self.request.args(),
                run_id=run_id,
            )
            outcome = result.outcome
            left_to_workers = False
        except Interrupted:  # the passes on workers were waited for
            outcome, left_to_workers = "interrupted", False
            raise
        finally:
            if run_id is not None and not left_to_workers:  # a reattached run: ours to end
                self.journal.finish_run(run_id, outcome)
            for made in granted if not left_to_workers else ():
                grant.revoke(self.destination_conn, made)
                self.ledger.removed(engine.run_id, made)
        return CopyResult(
            engine.run_id, self.method.name, list(plan), self._outcomes(engine.run_id, plan)
        )

    def _outcomes(self, run_id: str, plan: Sequence[PlannedVolume]) -> list[VolumeOutcome]:
        """Each volume's outcome in run ``run_id``, as its journal row says."""
        outcomes = []
        for planned in plan:
            volume = planned.volume
            identity = pass_identity(volume.id, planned.pass_number)
            row = self.journal.operation(self.scope, KIND, identity)
            # A pass followed while a worker of an earlier run finished it counts as done.
            followed = row is not None and row.state == DONE and planned.action != "skip"
            if planned.action == "skip" or row is None or (row.run_id != run_id and not followed):
                state = "skipped" if planned.action == "skip" else "failed"
                error = None if state == "skipped" else "not attempted"
                outcomes.append(
                    VolumeOutcome(
                        volume.id, volume.name, state, planned.destination_id,
                        planned.pass_number, error=error,
                    )  # fmt: skip
                )
                continue
            facts = row.before or {}
            outcomes.append(
                VolumeOutcome(
                    volume.id,
                    volume.name,
                    "done" if row.state == DONE else FAILED,
                    row.destination_id,
                    planned.pass_number,
                    int(facts.get("bytes_sent") or 0) if row.state == DONE else 0,
                    str(facts.get("content_digest") or "") if row.state == DONE else "",
                    error=row.error if row.state != DONE else None,
                    backup=facts.get("backup") if row.state == DONE else None,
                )
            )
        return outcomes


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
    app: Any = None,
) -> CopyResult:
    """Copy the requested volumes (see the module docstring); with ``dry_run`` only plan.

    ``selected`` replaces the request's ``volumes``/``all`` (interactive choice).
    Preflight failures raise before anything moves; a volume's failure is in
    the result (and the journal), the others carry on.
    """
    copier = VolumeCopier(
        request, clouds, journal, storage, events=events, project_map=project_map,
        selected=selected, app=app,
    )  # fmt: skip
    plan = copier.prepare()
    if on_plan is not None:
        on_plan(plan)
    if request.dry_run:
        return CopyResult(None, copier.method.name, plan)
    return copier.run(plan)


class _WorkerJob:
    """A ``volumes copy`` run as a worker sees it (:mod:`stackhop.executor.worker`): the
    run's request, the worker's own clouds and storage map, and each pass re-planned from
    the journal (the row is ``pending`` in the run, so the plan resumes it)."""

    def __init__(self, run: RunRecord, journal: Journal, events: EventSink) -> None:
        from stackhop.executor.worker import connection

        self.request = CopyRequest.from_args(run.args)
        clouds = Clouds(
            connection(self.request.source_cloud), connection(self.request.destination_cloud)
        )
        self.destination = clouds.destination
        self.copier = VolumeCopier(
            self.request, clouds, journal, load_storage_map(None), events=events
        )
        self._projects: dict[str, Any] = {}

    def operation(self, row: OperationRecord) -> tuple[Operation, None]:
        payload = row.payload or {}
        request, copier = self.request, self.copier
        project = str(payload["destination_project"])
        if project not in self._projects:
            self._projects[project] = project_connection(
                copier.destination_conn, request.destination_cloud, project
            )
        copier.destination_project_conn = self._projects[project]
        source = copier.source_conn.block_storage.get_volume(str(payload["volume"]))
        planned = plan_volume(
            copier.journal,
            copier.scope,
            volume_ref(request.source_cloud, source),
            request.incremental,
            project,
            payload.get("destination_type"),
        )
        op = operation_of(copier, planned)
        if op.key != row.identity:
            raise StackhopError(
                f"volume {source.id}: the journal plans pass {op.key!r}, the worker was sent "
                f"{row.identity!r}; re-run the command to plan again"
            )
        return op, None


def worker_job(run: RunRecord, journal: Journal, events: EventSink) -> _WorkerJob:
    """The worker's job for a ``volumes copy`` run (registered in ``executor.worker.JOBS``)."""
    return _WorkerJob(run, journal, events)
