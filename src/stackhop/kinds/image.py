"""``glance.image``: an image's metadata and data, copied between clouds, same ID where free.

A record carries every attribute Glance lets a client set (name, formats,
visibility, protection, min_disk/min_ram, hidden flag, tags, free-form
properties), the owner and the members (project IDs, mapped to the
destination by the resolver, with each member's status alongside), and the
source-only facts (size, checksums, stores, status).

Glance uploads are all-or-nothing: one PUT whose body Glance discards when
it breaks off. So for images *create is the copy*: :meth:`Image.create`
creates (or re-uses a left-over ``queued``) image stamped with the
``stackhop_source`` property, sets its members and protection, then streams
the data from the source cloud through :mod:`stackhop.transfer` and verifies
it: the data is the last step, so the image Glance makes ``active`` when the
data is in is a finished copy (a run killed between the two would otherwise
leave an active copy without them, which re-runs report as differing). A
copy that fails its hash check is deleted; an upload that broke off leaves a
``queued`` image without data, which the retry re-uses (so ``--keep-id``
keeps its ID). :meth:`Image.find` only ever recognises an ``active`` image
whose hash equals the source's, so a half-made copy is never taken for a
finished one.

Copying needs the source cloud: the registered instance only reads and
compares; :meth:`Image.bound` returns one that can create.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

from openstack import exceptions as sdk_exceptions

from stackhop.errors import ConfigError, IntegrityError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import Journal
from stackhop.kinds import register
from stackhop.kinds.base import Connection, Kind, Record
from stackhop.kinds.identity import PROJECT
from stackhop.kinds.rest import call
from stackhop.transfer import Source
from stackhop.transfer import copy as transfer_copy
from stackhop.transfer.glance import GlanceDestination, GlanceSource, get_image

DataOpener = Callable[[Mapping[str, Any]], Source]
"""Gives the transfer Source of a record's data (an image on a cloud, chunks in an archive)."""

#: The property stackhop stamps on an image it creates: the source image's ID.
MARKER_PROPERTY = "stackhop_source"

#: Image attributes a client sets directly (everything else is a free-form property).
SETTABLE = (
    "name", "disk_format", "container_format", "visibility", "protected",
    "min_disk", "min_ram", "os_hidden",
)

#: Attributes Glance computes or owns; never copied as properties.
READ_ONLY = frozenset({
    "id", "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
    "created_at", "updated_at", "file", "schema", "self", "owner", "tags", "locations",
    "direct_url", "stores", "members", MARKER_PROPERTY,
})

#: Prefix of the properties Glance uses for its own bookkeeping (import tasks).
GLANCE_INTERNAL = "os_glance_"


def image_record(image: Mapping[str, Any], members: list[dict[str, Any]]) -> Record:
    """The archive record of one image from its Glance v2 JSON and member list."""
    properties = {
        k: v
        for k, v in image.items()
        if k not in READ_ONLY and k not in SETTABLE and not k.startswith(GLANCE_INTERNAL)
    }
    member_ids = sorted(str(m["member_id"]) for m in members)
    statuses = {str(m["member_id"]): str(m.get("status", "pending")) for m in members}
    return {
        "id": image["id"],
        **{k: image.get(k) for k in SETTABLE},
        "owner": image.get("owner"),
        "tags": sorted(image.get("tags") or []),
        "properties": dict(sorted(properties.items())),
        "members": member_ids,
        "member_statuses": [statuses[m] for m in member_ids],
        "size": image.get("size"),
        "virtual_size": image.get("virtual_size"),
        "checksum": image.get("checksum"),
        "os_hash_algo": image.get("os_hash_algo"),
        "os_hash_value": image.get("os_hash_value"),
        "status": image.get("status"),
        "stores": sorted(s for s in str(image.get("stores") or "").split(",") if s),
        "source_marker": image.get(MARKER_PROPERTY),
    }


def list_members(service: Any, image: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The members of a shared image (none for other visibilities)."""
    if image.get("visibility") != "shared":
        return []
    body = call(service, "GET", f"/images/{image['id']}/members") or {}
    members: list[dict[str, Any]] = body.get("members", [])
    return members


def list_images(service: Any, **filters: str) -> Iterator[dict[str, Any]]:
    """Every image the caller can see (hidden ones too), following Glance's ``next`` links.

    Community images are in it too: Glance leaves them out of a listing
    unless it asks for ``visibility=all`` (or a ``visibility`` filter says otherwise).
    """
    base = {"limit": "200", "member_status": "all", "visibility": "all", **filters}
    for hidden in ("false", "true"):
        query = urlencode({**base, "os_hidden": hidden})
        url: str | None = f"/images?{query}"
        while url:
            body = call(service, "GET", url) or {}
            yield from body.get("images", [])
            url = body.get("next")
            if url and url.startswith("/v2"):
                url = url[len("/v2"):]


@register
class Image(Kind):
    name = "glance.image"
    references = {"owner": PROJECT, "members": PROJECT}
    portable_fields = (*SETTABLE, "owner", "tags", "properties", "members", "os_hash_value")
    source_only_fields = (
        "size", "virtual_size", "checksum", "os_hash_algo", "status", "stores",
        "member_statuses", "source_marker",
    )
    updatable = False

    def __init__(
        self,
        source: Connection | None = None,
        *,
        keep_id: bool = False,
        journal: Journal | None = None,
        events: EventSink | None = None,
        store: str | None = None,
        data: DataOpener | None = None,
    ) -> None:
        self.source = source
        self.keep_id = keep_id
        self.journal = journal
        self.events: EventSink = events or NullSink()
        self.store = store
        self.data = data

    def bound(
        self,
        source: Connection | None = None,
        *,
        keep_id: bool = False,
        journal: Journal | None = None,
        events: EventSink | None = None,
        store: str | None = None,
        data: DataOpener | None = None,
    ) -> Image:
        """An Image kind that can create copies (the registered one only reads and compares).

        The data comes from the image on the ``source`` cloud, or from ``data``
        (a function giving a transfer Source for a record: an archive). ``store``
        names the destination store to upload into (default: the cloud's default).
        """
        return type(self)(source, keep_id=keep_id, journal=journal, events=events, store=store,
                          data=data)

    def identity(self, record: Mapping[str, Any]) -> str:
        # Names repeat and may be empty: the source ID makes it unique and stable.
        return f"{record.get('name') or ''}/{record['id']}"

    def normalize(self, field: str, value: Any) -> Any:
        if field == "properties":
            return {k: v for k, v in (value or {}).items() if k != MARKER_PROPERTY}
        if field in ("tags", "members"):
            return sorted(value or [])
        return value

    # -- reading ---------------------------------------------------------------

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """Every image of ``conn`` (``owner=`` a project ID narrows it), as records."""
        query = {"owner": str(filters["owner"])} if filters.get("owner") else {}
        for image in list_images(conn.image, **query):
            yield image_record(image, list_members(conn.image, image))

    def read(self, conn: Connection, image_id: str) -> Record | None:
        """One image of ``conn`` as a record, or None."""
        image = get_image(conn.image, image_id)
        if image is None:
            return None
        return image_record(image, list_members(conn.image, image))

    def _candidates(
        self, conn: Connection, record: Mapping[str, Any]
    ) -> builtins.list[dict[str, Any]]:
        found = []
        same_id = get_image(conn.image, str(record["id"]))
        if same_id is not None:
            found.append(same_id)
        for image in list_images(conn.image, **{MARKER_PROPERTY: str(record["id"])}):
            if all(image["id"] != f["id"] for f in found):
                found.append(image)
        return found

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        """The finished copy: active, with the source's hash, by same ID or by marker."""
        for image in self._candidates(conn, record):
            if image.get("status") != "active":
                continue
            if image.get("os_hash_value") != record.get("os_hash_value"):
                continue
            if image["id"] != record["id"] and image.get(MARKER_PROPERTY) != record["id"]:
                continue
            return image_record(image, list_members(conn.image, image))
        return None

    # -- writing ---------------------------------------------------------------

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        """Create the image on ``conn`` with its members and protection, then copy its data
        from the source and verify it."""
        source = self._open_data(record)
        image_id = self._left_over(conn, record) or self._create_record(conn, record)
        self._protect_and_share(conn, image_id, record)

        def progress(done: int, total: int | None) -> None:
            self.events.emit(Event(
                EventType.PROGRESS, kind=self.name, identity=self.identity(record),
                operation="copy", done=done, total=total, unit="bytes",
            ))

        try:
            transfer_copy(
                source,
                GlanceDestination(conn.image, image_id, store=self.store),
                key=f"{self.name}:{record['id']}->{image_id}",
                journal=self.journal,
                progress=progress,
            )
        except IntegrityError:
            # A copy that fails its check must leave nothing behind.
            self.delete(conn, image_id)
            raise
        return image_id

    def _open_data(self, record: Mapping[str, Any]) -> Source:
        if self.data is not None:
            return self.data(record)
        if self.source is None:
            raise ConfigError("glance.image: copying needs a data source (use Image.bound)")
        source_image = get_image(self.source.image, str(record["id"]))
        if source_image is None or source_image.get("status") != "active":
            raise ConfigError(
                f"image {self.identity(record)} is not active on the source any more; "
                "nothing was copied"
            )
        return GlanceSource(self.source.image, source_image)

    def _left_over(self, conn: Connection, record: Mapping[str, Any]) -> str | None:
        """A ``queued`` image an earlier, broken-off attempt made: upload into it again."""
        for image in list_images(conn.image, **{MARKER_PROPERTY: str(record["id"])}):
            ours = image.get(MARKER_PROPERTY) == record["id"]
            if ours and image.get("status") == "queued":
                return str(image["id"])
        return None

    def _create_record(self, conn: Connection, record: Mapping[str, Any]) -> str:
        body: dict[str, Any] = {k: record[k] for k in SETTABLE if record.get(k) is not None}
        body["protected"] = False  # set after the data is in and verified
        body.update(record.get("properties") or {})
        body["tags"] = list(record.get("tags") or [])
        body[MARKER_PROPERTY] = str(record["id"])
        if record.get("owner"):
            body["owner"] = record["owner"]
        if self.keep_id and get_image(conn.image, str(record["id"])) is None:
            try:
                created = call(conn.image, "POST", "/images", json={**body, "id": record["id"]})
                return str(created["id"])
            except sdk_exceptions.ConflictException:
                # Glance never re-uses the ID of a deleted image: fall back to a new one.
                self.events.emit(Event(
                    EventType.WARNING, kind=self.name, identity=self.identity(record),
                    message=f"ID {record['id']} was used before on the destination; "
                    "the copy gets a new ID",
                ))
        return str(call(conn.image, "POST", "/images", json=body)["id"])

    def _protect_and_share(
        self, conn: Connection, image_id: str, record: Mapping[str, Any]
    ) -> None:
        """Members and protection, before the data: an ``active`` copy is a finished one."""
        for member, status in zip(
            record.get("members") or [], record.get("member_statuses") or [], strict=False
        ):
            existing = call(conn.image, "GET", f"/images/{image_id}/members/{member}",
                            missing_ok=True)
            if existing is None:
                call(conn.image, "POST", f"/images/{image_id}/members", json={"member": member})
            if status != "pending":
                call(conn.image, "PUT", f"/images/{image_id}/members/{member}",
                     json={"status": status})
        if record.get("protected"):
            patch = [{"op": "replace", "path": "/protected", "value": True}]
            response = conn.image.patch(
                f"/images/{image_id}", json=patch,
                headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
            )
            sdk_exceptions.raise_from_response(response)

    def delete(self, conn: Connection, destination_id: str) -> None:
        image = get_image(conn.image, destination_id)
        if image is None:
            return
        if image.get("protected"):
            response = conn.image.patch(
                f"/images/{destination_id}",
                json=[{"op": "replace", "path": "/protected", "value": False}],
                headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
            )
            sdk_exceptions.raise_from_response(response)
        call(conn.image, "DELETE", f"/images/{destination_id}", missing_ok=True)

    def __repr__(self) -> str:
        source = "bound" if self.source is not None or self.data is not None else "unbound"
        return f"<Image {self.name} {source}>"

