"""Copy images between clouds: plan with the planner, apply with the engine.

The image kind (:mod:`stackhop.kinds.image`) does the per-image work; this
module maps owners and members to destination projects the way the resource
transfer does (:func:`stackhop.kinds.identity.map_identities`: same ID, else
same domain and name, else ``--project-map``), plans, and runs the engine, so
the journal, retries, resume, Ctrl-C and progress events are the engine's.
A re-run skips images already copied: the journal says so, or the planner
finds an active copy with the same hash (same ID, or the ``stackhop_source``
marker) on the destination.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stackhop.engine import Engine, RunResult
from stackhop.errors import ConfigError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.images.ceph_copy import CephImage, CephRoute
from stackhop.images.common import PropertyFilter
from stackhop.journal import Journal, OperationRecord, RunRecord
from stackhop.kinds import get
from stackhop.kinds.base import Connection, Record
from stackhop.kinds.identity import OperatorMap, list_projects, map_identities
from stackhop.kinds.image import Image, image_record, list_members
from stackhop.plan import Create, Operation, plan
from stackhop.resolve import Resolver


@dataclass
class ImageCopier:
    """Copies images from ``source`` to ``destination`` (openstacksdk connections)."""

    source: Connection
    destination: Connection
    journal: Journal
    source_cloud: str
    destination_cloud: str
    keep_id: bool = False
    workers: int = 2
    events: EventSink = field(default_factory=NullSink)
    project_map: OperatorMap | None = None
    #: The destination store to upload into (default: the destination's default store).
    to_store: str | None = None
    properties: PropertyFilter = field(default_factory=PropertyFilter)
    #: Copy pool to pool where both images are in RBD (stackhop.images.ceph_copy).
    ceph_route: CephRoute | None = None
    #: Set to stop starting copies (a project migration's Ctrl-C); in-flight ones finish.
    stop: threading.Event | None = None

    def __post_init__(self) -> None:
        registered = get(Image.name)
        assert isinstance(registered, Image)
        options: dict[str, Any] = {"keep_id": self.keep_id, "journal": self.journal,
                                   "events": self.events, "store": self.to_store}
        self.kind: Image
        if self.ceph_route is not None:
            self.kind = CephImage(self.source, self.ceph_route, **options)
        else:
            self.kind = registered.bound(self.source, **options)
        identities = map_identities(
            [], list_projects(self.source), self.destination, project_map=self.project_map
        )
        self.resolver = Resolver(
            self.destination_cloud, maps=identities.maps(), keep_ids=frozenset(),
            journal=self.journal,
        )

    def records(self, images: Sequence[dict[str, Any]]) -> list[Record]:
        """The image records (with members) of the selected images' Glance JSON."""
        return [self.properties.apply(image_record(i, list_members(self.source.image, i)))
                for i in images]

    def plan(self, images: Sequence[dict[str, Any]]) -> list[Operation]:
        """The operations a copy would apply; changes nothing."""
        records = []
        for record in self.records(images):
            if record.get("status") == "active":
                records.append(record)
                continue
            self.events.emit(Event(
                EventType.WARNING, kind=Image.name, identity=self.kind.identity(record),
                message=f"not copied: the image is {record.get('status')}, not active",
            ))
        return plan(
            {self.kind: records},
            lambda kind, record: kind.find(self.destination, record),
            self.resolver,
        )

    def run(
        self, operations: Sequence[Operation], args: dict[str, Any], *, app: Any = None
    ) -> RunResult:
        """Apply ``operations``; failures are in the result (the caller raises). ``app``:
        the Celery app of ``--executor celery`` (each copy then runs on a worker, which
        rebuilds this copier from ``args``: see :func:`worker_job`)."""
        executor = None
        if app is not None:
            from stackhop.executor.dispatch import celery_executor, default_route

            executor = celery_executor(app, default_route, self.workers)
        engine = Engine(
            self.journal, self.destination, self.resolver, workers=self.workers,
            events=self.events, stop=self.stop, executor=executor,
        )
        return engine.run(
            operations, command="images copy", source_cloud=self.source_cloud,
            destination_cloud=self.destination_cloud, args=args,
        )


class _WorkerJob:
    """An ``images copy`` run as a worker sees it: the copier rebuilt from the run's
    arguments (``keep_id``, ``to_store``) with the worker's own connections; each create
    from its payload (the records the coordinator planned, properties filtered, owner and
    members resolved)."""

    def __init__(self, run: RunRecord, journal: Journal, events: EventSink) -> None:
        from stackhop.executor.worker import connection

        if not run.source_cloud or not run.destination_cloud:
            raise ConfigError(f"run {run.id} names no source or destination cloud")
        args = run.args
        if args.get("location_cloud"):
            raise ConfigError(
                "a Ceph-to-Ceph images copy (--location-cloud) runs on the coordinator only; "
                "re-run it with --executor local"
            )
        self.copier = ImageCopier(
            connection(run.source_cloud), connection(run.destination_cloud), journal,
            source_cloud=run.source_cloud, destination_cloud=run.destination_cloud,
            keep_id=bool(args.get("keep_id")), events=events, to_store=args.get("to_store"),
        )  # fmt: skip
        self.destination = self.copier.destination

    def operation(self, row: OperationRecord) -> tuple[Operation, Record | None]:
        payload = row.payload or {}
        resolved = dict(payload.get("resolved") or {})
        op = Create(kind=self.copier.kind, identity=str(payload["identity"]),
                    source=dict(payload.get("source") or {}), resolved=resolved)  # fmt: skip
        return op, resolved


def worker_job(run: RunRecord, journal: Journal, events: EventSink) -> _WorkerJob:
    """The worker's job for an ``images copy`` run (``executor.worker.JOBS``)."""
    return _WorkerJob(run, journal, events)
