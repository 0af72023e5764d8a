"""Move images between stores by re-creating them: for clouds without copy-image.

What the original tool did, made safe to run twice. Per image:

1. journal the original's protection (the row's ``before``); protect the original;
2. find the copy an earlier run made (``stackhop_source`` = the original's ID,
   active, same hash) or create it: a new image with every attribute
   (properties, tags, visibility, formats, min_disk/min_ram, hidden flag,
   owner, members and their status), ``stackhop_source`` naming the original,
   its data streamed from the original into ``--to-store`` and hash-verified
   (a copy that fails the check is deleted);
3. retire the original as ``--original`` says: ``protect`` (default; both
   images stay, both protected), ``deactivate`` (the original is deactivated
   and stays protected), ``delete`` (the original is deleted);
4. the new image's ID goes to the row (``done``) and the ID map.

Each image is a :class:`RecreateImage` task of one engine run (journaled
``pending``/``done``/``failed`` by the engine, transient failures retried).

What the cloud must allow, checked before anything moves: multi-store with
both stores (the upload names the target store with ``X-Image-Meta-Store``);
then, as each step needs it, image create/upload and ``protected`` changes
(admin or owner), and for ``--original deactivate`` the deactivate action (admin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from stackhop.engine import Engine
from stackhop.errors import ConfigError
from stackhop.events import EventSink
from stackhop.images.common import PropertyFilter, image_stores, set_protected
from stackhop.images.move_store import resuming
from stackhop.journal import DONE, Journal
from stackhop.kinds import get
from stackhop.kinds.base import Connection
from stackhop.kinds.image import MARKER_PROPERTY, Image, image_record, list_images, list_members
from stackhop.kinds.rest import call
from stackhop.plan import Operation, Skip
from stackhop.resolve import Resolver
from stackhop.task import Task, TaskContext, TaskKind
from stackhop.transfer.glance import get_image

KIND = "glance.image-recreate"
ORIGINAL_POLICIES = ("protect", "deactivate", "delete")


def _copy_of(conn: Connection, original: dict[str, Any], to_store: str) -> dict[str, Any] | None:
    for image in list_images(conn.image, **{MARKER_PROPERTY: original["id"]}):
        if (image.get("status") == "active"
                and image.get("os_hash_value") == original.get("os_hash_value")
                and to_store in image_stores(image)):
            return image
    return None


class RecreateKind(TaskKind):
    """The journal kind of a move by re-creation (a task: the engine calls its ``call``)."""

    name = KIND
    service = "image"


RECREATE_KIND = RecreateKind()


@dataclass(frozen=True, kw_only=True)
class RecreateImage(Task):
    """Move one image (``of``) by re-creating it; the journal key is ``<ID>:<from>-><to>``."""

    action: ClassVar[str] = "recreate"

    conn: Connection = field(compare=False, repr=False)
    image_kind: Image = field(compare=False, repr=False)
    scope: str
    from_store: str
    to_store: str
    original_policy: str
    properties: PropertyFilter | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.of}:{self.from_store}->{self.to_store}"

    def call(self, ctx: TaskContext) -> str:
        conn, image_id, to_store = self.conn, str(self.of), self.to_store
        row = ctx.previous
        original = get_image(conn.image, image_id)
        if original is None:
            raise ConfigError(f"image {image_id} no longer exists")
        if not resuming(row):
            if original.get("status") != "active":
                raise ConfigError(f"image {image_id} is {original.get('status')}, not active")
            if self.from_store not in image_stores(original):
                raise ConfigError(f"image {image_id} is not in store {self.from_store}")
        before = (row.before if resuming(row) and row and row.before else None) or {
            "protected": bool(original.get("protected"))}
        ctx.stage("pending", before)
        if not original.get("protected") and original.get("status") == "active":
            set_protected(conn.image, image_id, True)
        record = (self.properties or PropertyFilter()).apply(
            image_record(original, list_members(conn.image, original)))
        record["protected"] = True if self.original_policy != "delete" else before["protected"]
        existing = _copy_of(conn, original, to_store)
        new_id = str(existing["id"]) if existing else self.image_kind.create(conn, record)
        ctx.stage("created", destination_id=new_id)
        if self.original_policy == "deactivate" and original.get("status") == "active":
            call(conn.image, "POST", f"/images/{image_id}/actions/deactivate")
        elif self.original_policy == "delete":
            set_protected(conn.image, image_id, False)
            call(conn.image, "DELETE", f"/images/{image_id}", missing_ok=True)
        ctx.journal.map_id(self.scope, Image.name, image_id, new_id)
        return new_id


def recreate_images(conn: Connection, journal: Journal, images: list[dict[str, Any]], *,
                    cloud: str, from_store: str, to_store: str, original_policy: str,
                    events: EventSink, properties: PropertyFilter | None = None,
                    ) -> tuple[str, list[dict[str, str]]]:
    """Move each image by re-creating it; return the run ID and per image its outcome.

    One engine run, one :class:`RecreateImage` task per image (a ``Skip`` for
    one moved before or already only in ``to_store``); a failure is journaled
    and reported in the outcomes, the others carry on.
    """
    registered = get(Image.name)
    assert isinstance(registered, Image)
    scope = f"{cloud}/stores"
    kind = registered.bound(conn, journal=journal, events=events, store=to_store)
    operations: list[Operation] = []
    for image in images:
        image_id = image["id"]
        key = f"{image_id}:{from_store}->{to_store}"
        row = journal.operation(scope, KIND, key)
        if (row is not None and row.state == DONE) or (
            not resuming(row) and image_stores(image) == {to_store}
        ):
            operations.append(Skip(kind=RECREATE_KIND, identity=key, source={"id": image_id},
                                   resolved={}))
            continue
        operations.append(RecreateImage(
            kind=RECREATE_KIND, identity=f"{image.get('name') or ''}/{image_id}", of=image_id,
            conn=conn, image_kind=kind, scope=scope, from_store=from_store, to_store=to_store,
            original_policy=original_policy, properties=properties))
    engine = Engine(journal, conn, Resolver(scope, journal=journal), scope=scope, workers=1,
                    events=events)
    run = engine.run(operations, command="images move-store --method recreate",
                     source_cloud=cloud, destination_cloud=cloud,
                     args={"from_store": from_store, "to_store": to_store,
                           "original": original_policy})
    outcomes = []
    for image, op in zip(images, operations, strict=True):
        detail = journal.mapped_id(scope, Image.name, image["id"]) or ""
        if isinstance(op, Skip):
            outcomes.append({"id": image["id"], "outcome": "skipped", "detail": detail})
            continue
        row = journal.operation(scope, KIND, op.key)
        if row is not None and row.run_id == run.run_id and row.state == DONE:
            outcomes.append({"id": image["id"], "outcome": "done", "detail": detail})
        else:
            error = row.error if row is not None and row.error else "not attempted"
            outcomes.append({"id": image["id"], "outcome": "failed", "detail": error})
    return run.run_id, outcomes
