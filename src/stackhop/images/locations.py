"""Move images to another backend on a single-store Glance by swapping their locations.

For a Glance without multi-store (no ``copy-image``) that shows image
locations (``show_multiple_locations = True``; deprecated but still there).
A legacy Glance has no store IDs: an image's "store" is the scheme of its
locations (``file``, ``rbd``, ...). The target must be ``rbd``: Glance refuses
to add ``file://`` locations (``RESTRICTED_URI_SCHEMAS`` in
``glance/common/store_utils.py``), so nothing can be moved *into* a file
store this way. Per image:

1. journal the image's original protection, status, hash, checksum, size
   and locations (the row's ``before``);
2. protect it (and reactivate a deactivated one: Glance changes locations
   of ``active`` images only), noting on the image what the move changed
   (``stackhop_move_protected``, ``stackhop_move_deactivated``) in the same
   call, so that a re-run whose journal was lost puts it back too;
3. write its data, downloaded through Glance and hashed against
   ``os_hash_value`` while it streams, into the RBD image named after the
   image ID, then snapshot ``snap`` and protect it, as Glance's driver does
   (an image left complete by a killed run is reused, a partial one rewritten);
4. read the snapshot back with librbd: size, ``os_hash_value`` and md5
   ``checksum`` must match, else the RBD image is removed and the move stops
   before Glance sees it;
5. add the location ``rbd://<fsid>/<pool>/<id>/snap`` (Glance checks it can
   open it), and put it first so Glance serves the image from it;
6. read the image back through Glance and hash it (unless
   ``verify_data=False``);
7. remove every other location: Glance deletes their data;
8. put protection and deactivation back.

Each image is a :class:`~stackhop.images.move_store.MoveImage` task of one
engine run (:func:`~stackhop.images.move_store.run_moves`, kind
``glance.image-location``): the engine journals ``pending``/``done``/``failed``
and retries transient failures; the task reports its steps as the row's stage.

Every step looks at the image and the pool first, so a run killed anywhere
is finished by running it again: it ends with exactly one location, in the
target pool, and no orphan RBD image or file. A failure before the location
is added removes the RBD image and puts the flags back.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlparse

from stackhop.errors import CapabilityError, ConfigError, IntegrityError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.images.common import JSON_PATCH, import_methods
from stackhop.images.move_store import (
    PROTECTED_BY_MOVE,
    MovePlan,
    MoveResult,
    protected_by_move,
    resuming,
    run_moves,
)
from stackhop.images.rbd_store import GlanceRbdStore
from stackhop.journal import Journal
from stackhop.kinds.rest import call
from stackhop.task import TaskContext, TaskKind
from stackhop.transfer.base import DEFAULT_CHUNK_SIZE, READ_AHEAD, Digest, chunk_filters
from stackhop.transfer.glance import GlanceSource, get_image, image_digest
from stackhop.transfer.rbd_access import read_ahead

KIND = "glance.image-location"
"""The journal kind of a location move (one row per image and pair of stores)."""

TARGETS = ("rbd",)

DEACTIVATED_BY_MOVE = "stackhop_move_deactivated"
"""The property on a deactivated image a move reactivated (Glance changes the locations of
active images only), so that a re-run without the journal deactivates it again."""


class LocationMoveKind(TaskKind):
    """The journal kind of a location move (a task: the engine calls MoveImage.call)."""

    name = KIND
    service = "image"
"""Stores an image can be moved into by adding a location."""


def location_store(url: str) -> str:
    """The store type a location URL is in: its scheme (``file``, ``rbd``, ``http``...)."""
    return urlparse(url).scheme


def location_urls(image: dict[str, Any]) -> list[str]:
    return [str(loc["url"]) for loc in image.get("locations") or []]


def shows_locations(image: dict[str, Any]) -> bool:
    """Whether Glance shows this image's locations (``show_multiple_locations``)."""
    return "locations" in image


def left_by_move(image: dict[str, Any]) -> bool:
    """Whether a move protected or reactivated the image and has not put it back."""
    return protected_by_move(image) or DEACTIVATED_BY_MOVE in image


def check_locations_method(cloud: str, images: Sequence[dict[str, Any]], to_store: str) -> None:
    """Before anything changes: the cloud shows locations and ``to_store`` can be added."""
    hidden = [i["id"] for i in images if not shows_locations(i)]
    if hidden:
        raise CapabilityError(
            cloud=cloud, feature="image locations (show_multiple_locations)",
            detail="Glance does not show them; set show_multiple_locations = True in "
            "glance-api.conf (nothing was changed), or use --method copy-image or recreate",
        )
    if to_store not in TARGETS:
        raise CapabilityError(
            cloud=cloud, feature=f"locations in store {to_store!r}",
            detail="Glance only accepts added locations outside file stores (file:// is "
            "restricted); --method locations moves into rbd, use --method recreate otherwise",
        )


def plan_location_moves(images: Sequence[dict[str, Any]], from_store: str,
                        to_store: str) -> list[MovePlan]:
    """Per image: move, skip (already only in ``to_store``) or error."""
    plans = []
    for image in images:
        name = image.get("name") or ""
        stores = {location_store(u) for u in location_urls(image)}
        if left_by_move(image):  # a move started (its journal maybe lost): finish it
            plans.append(MovePlan(image["id"], name, "move", "finish an unfinished move"))
        elif stores == {to_store}:
            plans.append(MovePlan(image["id"], name, "skip", f"already in {to_store}"))
        elif image.get("status") not in ("active", "deactivated"):
            plans.append(MovePlan(image["id"], name, "error",
                                  f"status is {image.get('status')}, not active"))
        elif from_store not in stores:
            plans.append(MovePlan(image["id"], name, "error",
                                  f"no location in {from_store} (has {', '.join(sorted(stores))})"))
        else:
            plans.append(MovePlan(image["id"], name, "move", f"{from_store} -> {to_store}"))
    return plans


def _update(hashes: tuple[Any, ...], data: bytes) -> None:
    for h in hashes:
        h.update(data)


def _mismatch(length: int, size: int, whole: Any, declared: Digest, md5: Any,
              checksum: str | None) -> str:
    """What differs between what was read and what Glance declares ('' when nothing)."""
    wrong = []
    if length != size:
        wrong.append(f"{length} bytes, not {size}")
    if whole.hexdigest() != declared.value:
        wrong.append(f"{declared.algorithm} {whole.hexdigest()[:16]}..., not "
                     f"{declared.value[:16]}...")
    if md5 is not None and checksum and md5.hexdigest() != checksum:
        wrong.append(f"md5 {md5.hexdigest()}, not {checksum}")
    return "; ".join(wrong)


def _patch(service: Any, image_id: str, ops: list[dict[str, Any]]) -> None:
    response = service.patch(f"/images/{image_id}", json=ops, headers=JSON_PATCH)
    if response.status_code >= 400:
        what = ", ".join(f"{o['op']} {o['path']}" for o in ops)
        detail = " ".join(re.sub(r"<[^>]+>", " ", response.text).split())[-200:]
        raise ConfigError(f"image {image_id}: Glance refused {what} ({response.status_code}: "
                          f"{detail})")


@dataclass
class LocationMover:
    """Moves images of one legacy Glance into its RBD store (``service`` is ``conn.image``)."""

    task_kind: ClassVar[TaskKind] = LocationMoveKind()

    service: Any
    journal: Journal
    cloud: str
    from_store: str
    to_store: str
    store: GlanceRbdStore
    verify_data: bool = True
    workers: int = 2
    events: EventSink = field(default_factory=NullSink)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def scope(self) -> str:
        return f"{self.cloud}/locations"

    def run(self, images: Sequence[dict[str, Any]], args: dict[str, Any]) -> MoveResult:
        """Move every image of ``images``; failures are journaled and reported, not raised."""
        return run_moves(self, "images move-store --method locations", images, args)

    # -- one image -------------------------------------------------------------

    def _step(self, image_id: str, step: str) -> None:
        """After each step (the tests stop or tamper here)."""

    def _key(self, image_id: str) -> str:
        return f"{image_id}:{self.from_store}->{self.to_store}"

    def key(self, image_id: str) -> str:
        return self._key(image_id)

    def skip_reason(self, image: dict[str, Any]) -> str | None:
        if left_by_move(image):
            return None  # moved, maybe, but its flags are still the move's
        if {location_store(u) for u in location_urls(image)} == {self.to_store}:
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
        target = self.store.location(image_id)
        urls = location_urls(image)
        # Without a row (the journal lost), the image's own properties say that a move
        # protected or reactivated it: the move is finished, and they are put back.
        started = resuming(row) or left_by_move(image)
        if not started:
            self._check_movable(image)
        before = (row.before if resuming(row) and row and row.before else None) or {
            "protected": bool(image.get("protected")) and not protected_by_move(image),
            "status": "deactivated" if DEACTIVATED_BY_MOVE in image else image.get("status"),
            "os_hash_algo": image.get("os_hash_algo"),
            "os_hash_value": image.get("os_hash_value"),
            "checksum": image.get("checksum"),
            "size": image.get("size"),
            "locations": urls,
        }
        ctx.stage("pending", before, destination_id=image_id)
        self._step(image_id, "pending")
        marks: list[dict[str, Any]] = []
        if not image.get("protected"):
            marks += [{"op": "replace", "path": "/protected", "value": True},
                      {"op": "add", "path": f"/{PROTECTED_BY_MOVE}", "value": "true"}]
        if image.get("status") == "deactivated" and DEACTIVATED_BY_MOVE not in image:
            marks.append({"op": "add", "path": f"/{DEACTIVATED_BY_MOVE}", "value": "true"})
        if marks:  # one call, before the reactivation: the image says what to put back
            _patch(self.service, image_id, marks)
        if image.get("status") == "deactivated":
            call(self.service, "POST", f"/images/{image_id}/actions/reactivate")
        ctx.stage("prepared")
        self._step(image_id, "prepared")
        if target not in urls:
            try:
                self._write_and_add(image, target, before)
            except Exception:
                if target not in location_urls(self._image(image_id)):
                    self._restore(image_id, before)
                raise
        ctx.stage("added")
        self._swap(image_id, target, before)
        ctx.stage("swapped")
        self._restore(image_id, before)
        ctx.stage("restored")

    def _check_movable(self, image: dict[str, Any]) -> None:
        image_id = image["id"]
        if image.get("status") not in ("active", "deactivated"):
            raise ConfigError(f"image {image_id} is {image.get('status')}, not active; "
                              "nothing was moved")
        stores = {location_store(u) for u in location_urls(image)}
        if self.from_store not in stores:
            raise ConfigError(f"image {image_id} has no location in {self.from_store} "
                              f"(its locations are in: {', '.join(sorted(stores)) or 'none'})")
        if image_digest(image) is None or not image.get("size"):
            raise ConfigError(f"image {image_id} declares no os_hash_value or size; stackhop "
                              "moves only data it can verify")

    def _write_and_add(self, image: dict[str, Any], target: str, before: dict[str, Any]) -> None:
        image_id = image["id"]
        declared = image_digest({"os_hash_algo": before["os_hash_algo"],
                                 "os_hash_value": before["os_hash_value"]})
        assert declared is not None
        if not self.store.state(image_id).complete:
            self.store.remove(image_id)  # a partial write of a killed run
            self._stream_into_rbd(image_id, declared, before)
        self._step(image_id, "written")
        try:
            # The stream checked the md5 checksum; sha512 alone catches any byte changed since.
            self.store.check(image_id, declared, None, int(before["size"]))
        except IntegrityError:
            self.store.remove(image_id)
            raise
        self._step(image_id, "checked")
        _patch(self.service, image_id, [{"op": "add", "path": "/locations/-",
                                         "value": {"url": target, "metadata": {}}}])
        self._step(image_id, "added")

    def _swap(self, image_id: str, target: str, before: dict[str, Any]) -> None:
        image = self._image(image_id)
        locations = image.get("locations") or []
        others = [loc for loc in locations if loc["url"] != target]
        if others:
            if locations[0]["url"] != target:
                # The same URLs, the new one first: Glance then serves the image from it.
                ours = [loc for loc in locations if loc["url"] == target]
                _patch(self.service, image_id, [
                    {"op": "replace", "path": "/locations",
                     "value": [{"url": loc["url"], "metadata": loc.get("metadata") or {}}
                               for loc in ours + others]}])
            self._step(image_id, "first")
            if self.verify_data:
                self._read_back(image_id, before)
            self._step(image_id, "read-back")
        for url in [loc["url"] for loc in others]:
            current = location_urls(self._image(image_id))
            if url in current:
                # Glance deletes the location's data in its backend.
                _patch(self.service, image_id,
                       [{"op": "remove", "path": f"/locations/{current.index(url)}"}])
        self._step(image_id, "removed")
        after = self._image(image_id)
        if location_urls(after) != [target]:
            raise IntegrityError(f"image {image_id}: Glance lists locations "
                                 f"{location_urls(after)} after the move, not only {target}")
        if after.get("os_hash_value") != before["os_hash_value"]:
            raise IntegrityError(f"image {image_id}: os_hash_value changed during the move")

    def _stream_into_rbd(self, image_id: str, declared: Digest, before: dict[str, Any]) -> None:
        """Glance's data into the RBD image, hashed as it streams (os_hash_value and md5).

        Reading runs ahead on a thread (at most :data:`READ_AHEAD` chunks); a
        mismatch of size, os_hash_value or md5 checksum removes the RBD image
        before its snapshot is made.
        """
        size = int(before["size"])
        source = GlanceSource(self.service, {"id": image_id, "size": size,
                                             "os_hash_algo": declared.algorithm,
                                             "os_hash_value": declared.value})
        destination = self.store.destination(image_id)
        whole = hashlib.new(declared.algorithm)
        md5 = hashlib.md5(usedforsecurity=False)
        done = 0
        stop = threading.Event()
        destination.open(size)
        try:
            chunks = read_ahead(source.chunks(DEFAULT_CHUNK_SIZE), depth=READ_AHEAD,
                                name=f"read {image_id}", stop=stop)
            # Hashing runs on its own thread beside the write (hashlib and librbd release
            # the GIL): chunk n is hashed while it is written, in order.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash") as hashing:
                hashed: Future[None] | None = None
                try:
                    for chunk in chunks:
                        for tamper in chunk_filters:  # the tests' hook (empty in production)
                            chunk = tamper(chunk)
                        if hashed is not None:
                            hashed.result()
                        hashed = hashing.submit(_update, (whole, md5), chunk.data)
                        destination.write(chunk)
                        done += len(chunk.data)
                        self._emit(EventType.PROGRESS, None, identity=image_id,
                                   operation="write", done=done, total=size, unit="bytes")
                    if hashed is not None:
                        hashed.result()
                finally:
                    chunks.close()
            wrong = _mismatch(done, size, whole, declared, md5, before.get("checksum"))
            if wrong:
                raise IntegrityError(f"image {image_id}: the data Glance served read as {wrong};"
                                     " nothing was kept in the pool, re-run to retry")
        except BaseException as exc:
            destination.abort(exc)
            raise
        finally:
            source.close()
        destination.commit()

    def _read_back(self, image_id: str, before: dict[str, Any]) -> None:
        """Read the image through Glance (its first location: ours) and hash it."""
        size = int(before["size"])
        declared = Digest(str(before["os_hash_algo"]), str(before["os_hash_value"]))
        source = GlanceSource(self.service, {"id": image_id, "size": size})
        whole = hashlib.new(declared.algorithm)
        done = 0
        stop = threading.Event()
        # Read ahead on a thread: receiving the next chunk overlaps hashing this one.
        chunks = read_ahead(source.chunks(DEFAULT_CHUNK_SIZE), depth=READ_AHEAD,
                            name=f"verify {image_id}", stop=stop)
        try:
            for chunk in chunks:
                whole.update(chunk.data)
                done += len(chunk.data)
                self._emit(EventType.PROGRESS, None, identity=image_id, operation="verify",
                           done=done, total=size, unit="bytes")
        finally:
            chunks.close()
            source.close()
        wrong = _mismatch(done, size, whole, declared, None, None)
        if wrong:
            raise IntegrityError(f"image {image_id}: read back through Glance as {wrong}; the "
                                 "old location was kept, investigate before re-running")

    def _restore(self, image_id: str, before: dict[str, Any]) -> None:
        """Put the image's own protection and deactivation back, then drop the move's marks."""
        image = self._image(image_id)
        if before.get("status") == "deactivated" and image.get("status") == "active":
            call(self.service, "POST", f"/images/{image_id}/actions/deactivate")
        ops: list[dict[str, Any]] = []
        if bool(image.get("protected")) != bool(before["protected"]):
            ops.append({"op": "replace", "path": "/protected", "value": bool(before["protected"])})
        ops += [{"op": "remove", "path": f"/{mark}"}
                for mark in (PROTECTED_BY_MOVE, DEACTIVATED_BY_MOVE) if mark in image]
        if ops:
            _patch(self.service, image_id, ops)
        self._step(image_id, "restored")

    def _emit(self, type_: EventType, run_id: str | None, **fields: Any) -> None:
        fields.setdefault("kind", KIND)
        self.events.emit(Event(type_, run_id=run_id, **fields))



def multi_store(service: Any) -> bool:
    """Whether the Glance is multi-store (``GET /v2/info/stores`` answers)."""
    return bool(service.get("/info/stores").status_code == 200)


def choose_method(service: Any, cloud: str, requested: str,
                  images: Sequence[dict[str, Any]]) -> str:
    """The move method ``auto`` stands for on this Glance, or ``requested`` once it fits.

    auto: copy-image on a multi-store Glance offering it, locations on a
    single-store Glance that shows locations; otherwise a one-line
    CapabilityError naming what is missing. Nothing has changed when it raises.
    """
    if requested in ("copy-image", "recreate"):
        return requested
    multi = multi_store(service)
    if requested == "locations":
        check_locations_method(cloud, images, TARGETS[0])
        if multi:
            raise CapabilityError(
                cloud=cloud, feature="a single-store Glance",
                detail="--method locations works on Glance without enabled_backends; this one "
                "is multi-store: use --method copy-image",
            )
        return requested
    if multi:
        if "copy-image" in import_methods(service):
            return "copy-image"
        raise CapabilityError(
            cloud=cloud, feature="the copy-image import method",
            detail="add copy-image to enabled_import_methods in glance-api.conf, or use "
            "--method recreate (new image IDs)",
        )
    if images and all(shows_locations(i) for i in images):
        return "locations"
    raise CapabilityError(
        cloud=cloud, feature="a way to move image data under the same ID",
        detail="Glance is single-store and does not show image locations; set "
        "show_multiple_locations = True in glance-api.conf, or use --method recreate "
        "(new image IDs); nothing was changed",
    )
