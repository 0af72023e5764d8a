"""Move images between stores by re-creating them: for clouds without copy-image.

What the original tool did, made safe to run twice. Per image:

1. journal ``pending`` with the original's protection; protect the original;
2. find the copy an earlier run made (``stackhop_source`` = the original's ID,
   active, same hash) or create it: a new image with every attribute
   (properties, tags, visibility, formats, min_disk/min_ram, hidden flag,
   owner, members and their status), ``stackhop_source`` naming the original,
   its data streamed from the original into ``--to-store`` and hash-verified
   (a copy that fails the check is deleted);
3. retire the original as ``--original`` says: ``protect`` (default; both
   images stay, both protected), ``deactivate`` (the original is deactivated
   and stays protected), ``delete`` (the original is deleted);
4. journal ``done`` with the new image's ID (also in the ID map).

What the cloud must allow, checked before anything moves: multi-store with
both stores (the upload names the target store with ``X-Image-Meta-Store``);
then, as each step needs it, image create/upload and ``protected`` changes
(admin or owner), and for ``--original deactivate`` the deactivate action (admin).
"""

from __future__ import annotations

from typing import Any

from stackhop.errors import ConfigError, StackhopError
from stackhop.events import Event, EventSink, EventType
from stackhop.images.common import PropertyFilter, image_stores, set_protected
from stackhop.journal import DONE, FAILED, PENDING, SKIPPED, Journal
from stackhop.kinds import get
from stackhop.kinds.base import Connection
from stackhop.kinds.image import MARKER_PROPERTY, Image, image_record, list_images, list_members
from stackhop.kinds.rest import call
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


def recreate_one(conn: Connection, kind: Image, journal: Journal, run_id: str, scope: str,
                 image_id: str, from_store: str, to_store: str, original_policy: str,
                 properties: PropertyFilter | None = None) -> str:
    """Move one image by re-creating it; return ``done`` or ``skipped``."""
    key = f"{image_id}:{from_store}->{to_store}"
    row = journal.operation(scope, KIND, key)
    if row is not None and row.state == DONE:
        return "skipped"
    original = get_image(conn.image, image_id)
    if original is None:
        raise ConfigError(f"image {image_id} no longer exists")
    resuming = row is not None and row.state in (PENDING, FAILED) and bool(row.before)
    if not resuming:
        if image_stores(original) == {to_store}:
            journal.transition(run_id, scope, KIND, key, SKIPPED, action="recreate",
                               expected=row, source_id=image_id, error=f"already in {to_store}")
            return "skipped"
        if original.get("status") != "active":
            raise ConfigError(f"image {image_id} is {original.get('status')}, not active")
        if from_store not in image_stores(original):
            raise ConfigError(f"image {image_id} is not in store {from_store}")
    before = (row.before if resuming and row and row.before else None) or {
        "protected": bool(original.get("protected"))}
    row = journal.transition(run_id, scope, KIND, key, PENDING, action="recreate", expected=row,
                             source_id=image_id, before=before, attempt=True)
    if not original.get("protected") and original.get("status") == "active":
        set_protected(conn.image, image_id, True)
    record = (properties or PropertyFilter()).apply(
        image_record(original, list_members(conn.image, original)))
    record["protected"] = True if original_policy != "delete" else before["protected"]
    existing = _copy_of(conn, original, to_store)
    new_id = str(existing["id"]) if existing else kind.create(conn, record)
    if original_policy == "deactivate" and original.get("status") == "active":
        call(conn.image, "POST", f"/images/{image_id}/actions/deactivate")
    elif original_policy == "delete":
        set_protected(conn.image, image_id, False)
        call(conn.image, "DELETE", f"/images/{image_id}", missing_ok=True)
    journal.transition(run_id, scope, KIND, key, DONE, action="recreate", expected=row,
                       destination_id=new_id)
    journal.map_id(scope, Image.name, image_id, new_id)
    return "done"


def recreate_images(conn: Connection, journal: Journal, images: list[dict[str, Any]], *,
                    cloud: str, from_store: str, to_store: str, original_policy: str,
                    events: EventSink, properties: PropertyFilter | None = None,
                    ) -> tuple[str, list[dict[str, str]]]:
    """Move each image by re-creating it; return the run ID and per image its outcome.

    A failure is journaled and reported in the outcomes; the others carry on.
    """
    registered = get(Image.name)
    assert isinstance(registered, Image)
    scope = f"{cloud}/stores"
    kind = registered.bound(conn, journal=journal, events=events, store=to_store)
    run = journal.start_run("images move-store --method recreate", source_cloud=cloud,
                            destination_cloud=cloud,
                            args={"from_store": from_store, "to_store": to_store,
                                  "original": original_policy})
    outcomes = []
    for image in images:
        label = f"{image.get('name') or ''}/{image['id']}"
        try:
            outcome = recreate_one(conn, kind, journal, run.id, scope, image["id"],
                                   from_store, to_store, original_policy, properties)
            detail = journal.mapped_id(scope, Image.name, image["id"]) or ""
        except Exception as exc:
            outcome = "failed"
            detail = (exc.message if isinstance(exc, StackhopError)
                      else f"{type(exc).__name__}: {exc}")
            key = f"{image['id']}:{from_store}->{to_store}"
            row = journal.operation(scope, KIND, key)
            journal.transition(run.id, scope, KIND, key, FAILED, action="recreate",
                               expected=row, source_id=image["id"], error=detail)
        events.emit(Event(EventType.OPERATION_FINISHED, kind=KIND, identity=label,
                          operation="recreate", outcome=outcome, message=detail or None,
                          run_id=run.id))
        outcomes.append({"id": image["id"], "outcome": outcome, "detail": detail})
    failed = any(o["outcome"] == "failed" for o in outcomes)
    journal.finish_run(run.id, "failed" if failed else "succeeded")
    return run.id, outcomes
