"""Move images from one Glance store to another in the same cloud, keeping every ID.

Method ``copy-image`` (the default; the cloud needs multi-store and the
``copy-image`` import method, and the admin policy to delete an image's data
from one store), per image:

1. journal the image's original protection and hash (the row's ``before``);
2. protect the image (nobody deletes it while its data moves); an image that was
   not protected gets the property ``stackhop_move_protected`` in the same call;
3. import it into the target store with ``copy-image`` and wait for Glance;
4. check the target store is listed and ``os_hash_value`` is unchanged;
5. delete the data from the source store (unless ``--keep-source``);
6. read the data back (now only the target store holds it) and hash it
   against ``os_hash_value`` (unless ``verify_data=False``);
7. restore the original protection (and drop the property).

Each image is a :class:`MoveImage` task of one engine run (:func:`run_moves`):
the engine journals the row (kind ``glance.image-store``, key
``<image ID>:<from>-><to>``) ``pending`` before and ``done``/``failed`` after,
retries transient failures and stops on Ctrl-C; the task reports each step as
the row's stage and the copy and read-back as progress. Every step looks at
the image first, so a run killed anywhere is finished by re-running the same
command: the journal row keeps the original protection, and an import Glance
is still running is waited for, not started twice. Without the journal (lost,
or a fresh one) the property says the image was unprotected and its move is
unfinished, so a re-run still finishes it. Images already only in the target
store and without the property are skipped (a ``Skip``, no call).

Method ``recreate`` is in :mod:`stackhop.images.recreate`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from openstack import exceptions as sdk_exceptions

from stackhop.engine import Engine
from stackhop.errors import CapabilityError, ConfigError, IntegrityError, StackhopError
from stackhop.events import EventSink, NullSink
from stackhop.images.common import (
    JSON_PATCH,
    Waiter,
    check_stores,
    image_stores,
    import_methods,
)
from stackhop.journal import DONE, FAILED, PENDING, Journal, OperationRecord, RunRecord
from stackhop.kinds.rest import call
from stackhop.plan import Operation, Skip
from stackhop.resolve import Resolver
from stackhop.task import Task, TaskContext, TaskKind
from stackhop.transfer import HashingDestination
from stackhop.transfer import copy as transfer_copy
from stackhop.transfer.glance import GlanceSource, get_image

KIND = "glance.image-store"
"""The journal kind of a store move (one row per image and pair of stores)."""

METHODS = ("auto", "copy-image", "locations", "recreate")

PROTECTED_BY_MOVE = "stackhop_move_protected"
"""The property on an image a move protected that was not protected: the original
protection, kept on the image itself so that a re-run without the journal restores it."""


@dataclass(frozen=True)
class MovePlan:
    """What a move would do to one image: ``move``, ``skip`` or ``error``, and why."""

    image_id: str
    name: str
    action: str
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"id": self.image_id, "name": self.name, "action": self.action,
                "reason": self.reason}


@dataclass
class MoveResult:
    """What a move run did, per image."""

    run_id: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outcome: str = "running"

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "outcome": self.outcome, "done": self.done,
                "skipped": self.skipped, "failed": self.failed}


def operation_key(image_id: str, from_store: str, to_store: str) -> str:
    return f"{image_id}:{from_store}->{to_store}"


def moved(image: dict[str, Any], from_store: str, to_store: str, keep_source: bool) -> bool:
    """Whether the image's data is already where the move would put it."""
    stores = image_stores(image)
    return to_store in stores and (keep_source or from_store not in stores)


def protected_by_move(image: dict[str, Any]) -> bool:
    """Whether a move protected the image and has not restored it (an unfinished move)."""
    return PROTECTED_BY_MOVE in image


def protect_for_move(service: Any, image_id: str) -> None:
    """Protect an unprotected image, noting on it that it was not (one call)."""
    response = service.patch(f"/images/{image_id}", headers=JSON_PATCH, json=[
        {"op": "replace", "path": "/protected", "value": True},
        {"op": "add", "path": f"/{PROTECTED_BY_MOVE}", "value": "true"},
    ])
    sdk_exceptions.raise_from_response(response)


def restore_protection(service: Any, image: dict[str, Any], protected: bool) -> None:
    """Give the image its original protection back and drop the move's property."""
    patch = []
    if bool(image.get("protected")) != protected:
        patch.append({"op": "replace", "path": "/protected", "value": protected})
    if protected_by_move(image):
        patch.append({"op": "remove", "path": f"/{PROTECTED_BY_MOVE}"})
    if patch:
        response = service.patch(f"/images/{image['id']}", json=patch, headers=JSON_PATCH)
        sdk_exceptions.raise_from_response(response)


def plan_moves(
    images: Sequence[dict[str, Any]], from_store: str, to_store: str, keep_source: bool
) -> list[MovePlan]:
    """Per image: move, skip (already there) or error (not active, not in the source store)."""
    plans = []
    for image in images:
        name = image.get("name") or ""
        if moved(image, from_store, to_store, keep_source) and not protected_by_move(image):
            plans.append(MovePlan(image["id"], name, "skip", f"already in {to_store}"))
        elif image.get("status") != "active":
            plans.append(MovePlan(image["id"], name, "error",
                                  f"status is {image.get('status')}, not active"))
        elif from_store not in image_stores(image) and to_store not in image_stores(image):
            plans.append(MovePlan(image["id"], name, "error",
                                  f"not in store {from_store} (stores: {image.get('stores')})"))
        else:
            plans.append(MovePlan(image["id"], name, "move", f"{from_store} -> {to_store}"))
    return plans


def check_cloud(
    service: Any, cloud: str, from_store: str, to_store: str, method: str = "copy-image"
) -> None:
    """Before anything moves: the stores exist and, for copy-image, the cloud offers it."""
    if from_store == to_store:
        raise ConfigError(f"--from-store and --to-store are both {from_store!r}")
    check_stores(service, cloud, from_store, to_store)
    if method != "copy-image":
        return
    methods = import_methods(service)
    if "copy-image" not in methods:
        raise CapabilityError(
            cloud=cloud, feature="the copy-image import method",
            detail=f"it offers {', '.join(methods) or 'none'}; add copy-image to "
            "enabled_import_methods in glance-api.conf, or use --method recreate",
        )


class StoreMoveKind(TaskKind):
    """The journal kind of a store move (a task: the engine calls MoveImage.call)."""

    name = KIND
    service = "image"


STORE_MOVE_KIND = StoreMoveKind()


class Mover(Protocol):
    """What :func:`run_moves` needs of a mover (:class:`StoreMover`, the locations mover)."""

    #: The journal kind of its moves.
    task_kind: ClassVar[TaskKind]
    journal: Journal
    service: Any
    cloud: str
    workers: int
    stop: threading.Event
    events: EventSink

    @property
    def scope(self) -> str: ...

    def key(self, image_id: str) -> str:
        """The journal key of the image's move."""
        ...

    def skip_reason(self, image: dict[str, Any]) -> str | None:
        """Why the image needs no move (its data is already where the move puts it)."""
        ...

    def move(self, ctx: TaskContext, image_id: str) -> None:
        """Move one image; resumable from ``ctx.previous`` (its ``before`` state)."""
        ...


@dataclass(frozen=True, kw_only=True)
class MoveImage(Task):
    """The engine's task for one image: ``identity`` is its label, the key its move's."""

    action: ClassVar[str] = "move"

    mover: Mover = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        assert self.of is not None
        return self.mover.key(self.of)

    def call(self, ctx: TaskContext) -> str:
        assert self.of is not None
        self.mover.move(ctx, self.of)
        return self.of

    def to_payload(self) -> dict[str, Any]:
        """The image; a worker rebuilds the mover from the run's arguments."""
        return {"image": self.of, "label": self.identity}

    # ``find`` stays None: an unfinished move is finished by ``call`` itself (every step
    # looks at the image first), since its last step restores the original protection.


def resuming(row: OperationRecord | None) -> bool:
    """Whether an earlier attempt started the move (its ``before`` state is journaled)."""
    return row is not None and row.state in (PENDING, FAILED) and bool(row.before)


def run_moves(
    mover: Mover,
    command: str,
    images: Sequence[dict[str, Any]],
    args: dict[str, Any],
    *,
    app: Any = None,
) -> MoveResult:
    """One engine run moving every image of ``images``; failures are recorded, not raised.

    Per image a :class:`MoveImage` task, or a ``Skip`` when the journal has
    its move ``done`` or the image is already where the move puts it (and no
    earlier attempt left the move unfinished).
    """
    operations: list[Operation] = []
    skipped: list[str] = []
    for image in images:
        image_id = image["id"]
        key = mover.key(image_id)
        row = mover.journal.operation(mover.scope, mover.task_kind.name, key)
        reason = None
        if row is not None and row.state == DONE:
            reason = "done in an earlier run"
        elif not resuming(row):
            reason = mover.skip_reason(image)
        if reason is not None:
            skipped.append(image_id)
            operations.append(Skip(kind=mover.task_kind, identity=key,
                                   source={"id": image_id}, resolved={}))
            continue
        label = f"{image.get('name') or ''}/{image_id}"
        operations.append(MoveImage(kind=mover.task_kind, identity=label, of=image_id,
                                    mover=mover))
    executor = None
    if app is not None:  # ``--executor celery``: each move on a worker (docs/scale.md)
        from stackhop.executor.dispatch import celery_executor, default_route

        executor = celery_executor(app, default_route, mover.workers)
    engine = Engine(mover.journal, mover.service, Resolver(mover.scope, journal=mover.journal),
                    scope=mover.scope, workers=mover.workers, events=mover.events,
                    stop=mover.stop, executor=executor)
    run = engine.run(operations, command=command, source_cloud=mover.cloud,
                     destination_cloud=mover.cloud, args=args)
    result = MoveResult(run_id=run.run_id, skipped=skipped, outcome=run.outcome)
    for op in operations:
        if not isinstance(op, MoveImage) or op.of is None:
            continue
        row = mover.journal.operation(mover.scope, mover.task_kind.name, op.key)
        if row is None or row.run_id != run.run_id:
            result.failed[op.of] = "not attempted"
        elif row.state == DONE:
            result.done.append(op.of)
        else:
            result.failed[op.of] = row.error or row.state
    return result


@dataclass
class StoreMover:
    """Moves images between two stores of one cloud (``service`` is ``conn.image``)."""

    task_kind: ClassVar[TaskKind] = STORE_MOVE_KIND

    service: Any
    journal: Journal
    cloud: str
    from_store: str
    to_store: str
    keep_source: bool = False
    verify_data: bool = True
    workers: int = 2
    events: EventSink = field(default_factory=NullSink)
    waiter: Waiter = field(default_factory=lambda: Waiter(interval=0.5))
    stop: threading.Event = field(default_factory=threading.Event)
    #: Called after each step of each image (name of the step): the tests' kill point.
    on_step: Callable[[str, str], None] | None = None

    @property
    def scope(self) -> str:
        return f"{self.cloud}/stores"

    def run(
        self, images: Sequence[dict[str, Any]], args: dict[str, Any], *, app: Any = None
    ) -> MoveResult:
        """Move every image of ``images`` (Glance JSON); failures are recorded, not raised."""
        return run_moves(self, "images move-store", images, args, app=app)

    # -- one image -------------------------------------------------------------

    def _step(self, image_id: str, step: str) -> None:
        if self.on_step is not None:
            self.on_step(image_id, step)

    def key(self, image_id: str) -> str:
        return operation_key(image_id, self.from_store, self.to_store)

    def skip_reason(self, image: dict[str, Any]) -> str | None:
        if protected_by_move(image):
            return None  # moved, maybe, but its protection is still the move's
        if moved(image, self.from_store, self.to_store, self.keep_source):
            return f"already in {self.to_store}"
        return None

    def _image(self, image_id: str) -> dict[str, Any]:
        image = get_image(self.service, image_id)
        if image is None:
            raise ConfigError(f"image {image_id} no longer exists")
        return image

    def move(self, ctx: TaskContext, image_id: str) -> None:
        row = ctx.previous
        image = self._image(image_id)
        # A row with the original state (``before``) was started: finish it, whatever
        # the image looks like now (it may be moved but still protected by us). Without a
        # row (the journal lost), the image's own property says a move protected it.
        started = resuming(row) or protected_by_move(image)
        if not started:
            if image.get("status") != "active":
                raise ConfigError(f"image {image_id} is {image.get('status')}, not active; "
                                  "nothing was moved")
            if self.from_store not in image_stores(image):
                raise ConfigError(f"image {image_id} is not in store {self.from_store} "
                                  f"(its stores: {image.get('stores')})")
        before = (row.before if resuming(row) and row and row.before else None) or {
            "protected": bool(image.get("protected")) and not protected_by_move(image),
            "os_hash_value": image.get("os_hash_value"),
            "os_hash_algo": image.get("os_hash_algo"),
        }
        ctx.stage("pending", before, destination_id=image_id)
        self._step(image_id, "pending")
        if not image.get("protected"):
            protect_for_move(self.service, image_id)
        ctx.stage("protected")
        self._step(image_id, "protected")
        if self.to_store not in image_stores(image):
            self._copy_image(ctx, image)
        ctx.stage("copied")
        self._step(image_id, "copied")
        image = self._image(image_id)
        if self.to_store not in image_stores(image):
            raise ConfigError(f"image {image_id}: Glance did not add store {self.to_store}")
        if image.get("os_hash_value") != before["os_hash_value"]:
            raise IntegrityError(
                f"image {image_id}: os_hash_value changed during the move; the data in "
                f"{self.from_store} was kept, investigate before re-running"
            )
        if not self.keep_source and self.from_store in image_stores(image):
            call(self.service, "DELETE", f"/stores/{self.from_store}/{image_id}")
        ctx.stage("source-removed")
        self._step(image_id, "source-removed")
        if self.verify_data and not self.keep_source:
            self._verify_data(ctx, image)
        restore_protection(self.service, self._image(image_id), before["protected"])
        ctx.stage("restored")

    def _copy_image(self, ctx: TaskContext, image: dict[str, Any]) -> None:
        image_id = image["id"]
        importing = str(image.get("os_glance_importing_to_stores") or "").split(",")
        if self.to_store not in importing:
            call(self.service, "POST", f"/images/{image_id}/import", json={
                "method": {"name": "copy-image"}, "stores": [self.to_store],
                "all_stores_must_succeed": True,
            })

        def arrived() -> bool:
            current = self._image(image_id)
            failed = str(current.get("os_glance_failed_import") or "").split(",")
            if self.to_store in failed:
                raise ConfigError(
                    f"image {image_id}: Glance failed to copy it into {self.to_store} "
                    "(see the glance-api log); its data stays in "
                    f"{self.from_store}, re-run to retry"
                )
            there = self.to_store in image_stores(current)
            ctx.progress(int(there), 1, "stores")
            return there

        self.waiter.until(arrived, f"copy of image {image_id} into {self.to_store}")

    def _verify_data(self, ctx: TaskContext, image: dict[str, Any]) -> None:
        ctx.stage("verifying")

        def progress(done: int, total: int | None) -> None:
            ctx.progress(done, total, "bytes")

        transfer_copy(GlanceSource(self.service, image), HashingDestination(),
                      key=f"{KIND}:{image['id']}:verify", progress=progress)


class _WorkerJob:
    """An ``images move-store`` run as a worker sees it: the mover rebuilt from the run's
    arguments with the worker's own connection; each move from its payload (the image)."""

    def __init__(self, run: RunRecord, journal: Journal, events: EventSink) -> None:
        from stackhop.executor.worker import connection

        args = run.args
        self.mover = StoreMover(
            connection(str(args["cloud"])).image, journal, str(args["cloud"]),
            str(args["from_store"]), str(args["to_store"]),
            keep_source=bool(args.get("keep_source")),
            verify_data=bool(args.get("verify_data", True)), events=events,
        )  # fmt: skip
        self.destination = self.mover.service

    def operation(self, row: OperationRecord) -> tuple[Operation, None]:
        payload = row.payload or {}
        image_id = str(payload["image"])
        op = MoveImage(kind=self.mover.task_kind, identity=str(payload.get("label") or image_id),
                       of=image_id, mover=self.mover)  # fmt: skip
        if op.key != row.identity:
            raise StackhopError(f"image {image_id}: the worker was sent {row.identity!r}, "
                                f"its move is {op.key!r}; re-run the command")  # fmt: skip
        return op, None


def worker_job(run: RunRecord, journal: Journal, events: EventSink) -> _WorkerJob:
    """The worker's job for an ``images move-store`` run (``executor.worker.JOBS``)."""
    return _WorkerJob(run, journal, events)
