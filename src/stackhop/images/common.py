"""What every image command shares: picking images, checking the cloud, small Glance calls."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from openstack import exceptions as sdk_exceptions

from stackhop.errors import CapabilityError, ConfigError, UsageError
from stackhop.kinds.image import list_images
from stackhop.kinds.rest import call
from stackhop.transfer.glance import get_image

JSON_PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def image_stores(image: dict[str, Any]) -> set[str]:
    """The stores holding the image's data (Glance's comma-separated ``stores``)."""
    return {s for s in str(image.get("stores") or "").split(",") if s}


def set_protected(service: Any, image_id: str, protected: bool) -> None:
    """Set the image's ``protected`` flag."""
    response = service.patch(
        f"/images/{image_id}",
        json=[{"op": "replace", "path": "/protected", "value": protected}],
        headers=JSON_PATCH,
    )
    sdk_exceptions.raise_from_response(response)


def cloud_stores(service: Any, cloud: str) -> list[str]:
    """The store names of a multi-store Glance; CapabilityError where there are none."""
    try:
        body = call(service, "GET", "/info/stores") or {}
    except sdk_exceptions.HttpException as exc:
        raise CapabilityError(
            cloud=cloud, feature="Glance multi-store (GET /v2/info/stores)",
            detail=f"{exc.status_code}: enable enabled_backends in glance-api.conf",
        ) from exc
    return [str(s["id"]) for s in body.get("stores", [])]


def import_methods(service: Any) -> list[str]:
    """The image import methods the cloud offers (``/v2/info/import``)."""
    body = call(service, "GET", "/info/import") or {}
    methods: list[str] = (body.get("import-methods") or {}).get("value") or []
    return methods


def check_stores(service: Any, cloud: str, *stores: str) -> None:
    """ConfigError naming the known stores when one of ``stores`` does not exist."""
    known = cloud_stores(service, cloud)
    for store in stores:
        if store not in known:
            raise ConfigError(
                f"cloud {cloud!r} has no image store {store!r}; its stores are: "
                f"{', '.join(known) or 'none'}"
            )


@dataclass(frozen=True)
class Selection:
    """Which images a command acts on: named ones, a project's, or all."""

    images: tuple[str, ...] = ()
    project: str | None = None
    all: bool = False

    def check(self) -> None:
        chosen = sum((bool(self.images), self.project is not None, self.all))
        if chosen != 1:
            raise UsageError("name the images: --image ID_OR_NAME ..., --project P, or --all")


def _project_id(conn: Any, project: str) -> str:
    found = conn.identity.find_project(project, ignore_missing=True)
    if found is None:
        raise ConfigError(f"project {project!r} does not exist on the source cloud")
    return str(found.id)


GLOB_CHARACTERS = frozenset("*?[")


def is_glob(text: str) -> bool:
    """Whether ``text`` is a shell-style name pattern (``web-*``), not a plain name or ID."""
    return any(c in GLOB_CHARACTERS for c in text)


def name_matches(image: dict[str, Any], pattern: str) -> bool:
    """Whether the image's ID is ``pattern``, or its name matches it (case-sensitive glob)."""
    return image.get("id") == pattern or fnmatchcase(str(image.get("name") or ""), pattern)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _by_name(images: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(images, key=lambda i: (i.get("name") or "", i["id"]))


def select_images(conn: Any, selection: Selection) -> list[dict[str, Any]]:
    """The Glance JSON of the selected images, in a stable order.

    A named image is looked up by ID, then by name (an ambiguous or unknown
    name is a ConfigError). A name with ``*``, ``?`` or ``[`` is a shell-style
    pattern: every image whose name matches it (none is a ConfigError).
    ``--project`` takes a project name or ID.
    """
    selection.check()
    service = conn.image
    if selection.all or selection.project is not None:
        filters = {"owner": _project_id(conn, selection.project)} if selection.project else {}
        return _by_name(list_images(service, **filters))
    result: list[dict[str, Any]] = []
    every: list[dict[str, Any]] | None = None
    for wanted in selection.images:
        if is_glob(wanted):
            every = every if every is not None else _by_name(list_images(service))
            matched = [i for i in every if name_matches(i, wanted)]
            if not matched:
                raise ConfigError(f"no image name matches {wanted!r}")
            result += [i for i in matched if all(i["id"] != r["id"] for r in result)]
            continue
        # Glance's image IDs are UUIDs (it refuses others on create); anything else is a name.
        image = get_image(service, wanted) if _is_uuid(wanted) else None
        if image is None:
            # Glance reads "OP:" at the start of a filter as an operator (glance.common.utils.
            # split_filter_op): "eq:" makes the rest, colons and all, the exact name.
            found = list_images(service, name=f"eq:{wanted}")
            matches = [i for i in found if i.get("name") == wanted]
            if not matches:
                raise ConfigError(f"no image with ID or name {wanted!r}")
            if len(matches) > 1:
                ids = ", ".join(i["id"] for i in matches)
                raise ConfigError(f"image name {wanted!r} is ambiguous ({ids}); give an ID")
            image = matches[0]
        if all(image["id"] != r["id"] for r in result):
            result.append(image)
    return result


def images_of_projects(conn: Any, projects: Sequence[str] | None) -> list[dict[str, Any]]:
    """The images owned by ``projects`` (IDs or names), or every image when None or empty."""
    if not projects:
        return select_images(conn, Selection(all=True))
    found: dict[str, dict[str, Any]] = {}
    for project in projects:
        for image in select_images(conn, Selection(project=project)):
            found.setdefault(image["id"], image)
    return list(found.values())


def inactive(images: Iterable[dict[str, Any]]) -> list[str]:
    """``name (id): status`` of every image that is not ``active``."""
    return [
        f"{i.get('name') or ''} ({i['id']}): {i.get('status')}"
        for i in images
        if i.get("status") != "active"
    ]


@dataclass
class Waiter:
    """Polls until a condition holds (injectable clock and sleep for tests)."""

    timeout: float = 3600.0
    interval: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    waited: float = field(default=0.0)

    def until(self, check: Callable[[], bool], what: str) -> None:
        start = self.clock()
        while not check():
            if self.clock() - start > self.timeout:
                raise TimeoutError(f"{what} did not happen within {self.timeout:.0f} s")
            self.sleep(self.interval)
        self.waited = self.clock() - start


@dataclass(frozen=True)
class PropertyFilter:
    """Which image properties a copy carries: ``--property-include`` / ``--property-exclude``.

    Shell-style globs (``fnmatch``, case-sensitive) on property names: a
    property is carried when it matches one of ``include`` (or there is no
    ``include``) and none of ``exclude``. Attributes Glance defines (name,
    visibility, formats, min_disk/min_ram, protection, tags, owner, members)
    are not properties and are always carried.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def keeps(self, name: str) -> bool:
        if self.include and not any(fnmatchcase(name, g) for g in self.include):
            return False
        return not any(fnmatchcase(name, g) for g in self.exclude)

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with only the properties this filter keeps."""
        if not self.include and not self.exclude:
            return record
        properties = record.get("properties") or {}
        return {**record, "properties": {k: v for k, v in properties.items() if self.keeps(k)}}
