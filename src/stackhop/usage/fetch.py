"""Reading a cloud's compute usage (os-simple-tenant-usage), every page of it.

Nova answers ``GET /os-simple-tenant-usage`` (every project, admin) and
``GET /os-simple-tenant-usage/{project}`` (one project) with each server's
usage over a period when asked ``detailed=1``. From microversion 2.40 the
answers are paged by server: a page holds at most ``limit`` servers (the
cloud's ``max_limit``, 1000 by default, when not given) and ends with a
``next`` link carrying a ``marker``. One project's servers can be spread over
several pages, each page then repeating the project with partial totals:
:func:`fetch_usage` follows every link and merges the pieces, so a large
cloud is complete. Clouds older than 2.40 answer in one page.

Nova clips the period at its own clock, so the end asked for is clipped to
now here first, and the end Nova reports back is the one the figures use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from keystoneauth1 import exceptions as ksa_exceptions
from openstack import exceptions as sdk_exceptions

from stackhop.clouds import version_at_least
from stackhop.errors import CapabilityError, ConfigError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.kinds.rest import call, segment
from stackhop.usage.months import ServerLife, utc

#: The microversion that pages the usage listing (``limit`` / ``marker``).
PAGING_MICROVERSION = "2.40"
#: "From the beginning": before any cloud existed, so every server's life is inside.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TOTAL_KEYS = ("total_hours", "total_vcpus_usage", "total_memory_mb_usage", "total_local_gb_usage")
_FEATURE = "the compute usage API (os-simple-tenant-usage)"


@dataclass(frozen=True)
class Project:
    """A project whose usage is read: its ID and, where Keystone told us, its name."""

    id: str
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass
class ProjectUsage:
    """One project's usage over the period: Nova's server records and totals, merged."""

    project_id: str
    #: Every server's record exactly as Nova sent it.
    server_usages: list[dict[str, Any]] = field(default_factory=list)
    #: Nova's totals (``total_vcpus_usage`` ...) summed over the pages.
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOTAL_KEYS, 0.0))

    def lives(self) -> list[ServerLife]:
        """The servers as the month split needs them."""
        return [
            ServerLife(
                instance_id=str(s.get("instance_id")),
                name=str(s.get("name") or ""),
                vcpus=int(s.get("vcpus") or 0),
                memory_mb=int(s.get("memory_mb") or 0),
                local_gb=int(s.get("local_gb") or 0),
                started_at=parse_time(s.get("started_at")),
                ended_at=parse_time(s.get("ended_at")),
            )
            for s in self.server_usages
        ]

    def first_start(self) -> datetime | None:
        """When the project's first server was launched (None: no server ever ran)."""
        starts = [life.started_at for life in self.lives() if life.started_at is not None]
        return min(starts) if starts else None

    def _merge(self, piece: dict[str, Any]) -> None:
        known = {s.get("instance_id") for s in self.server_usages}
        for server in piece.get("server_usages") or []:
            if server.get("instance_id") not in known:
                self.server_usages.append(server)
        for key in TOTAL_KEYS:
            self.totals[key] += float(piece.get(key) or 0.0)


@dataclass
class UsageFetch:
    """What :func:`fetch_usage` read: per project usage, the period, how many pages."""

    start: datetime
    end: datetime
    usages: dict[str, ProjectUsage]
    pages: int
    microversion: str | None


def parse_time(value: Any) -> datetime | None:
    """Nova's ``2026-06-10T06:00:00.000000`` (UTC, maybe without fraction) as aware UTC."""
    if not value:
        return None
    text = str(value).replace(" ", "T").removesuffix("Z")
    return utc(datetime.fromisoformat(text))


def format_time(moment: datetime) -> str:
    """A time as Nova's usage API takes it: UTC, ``%Y-%m-%dT%H:%M:%S.%f``."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%f")


def resolve_projects(conn: Any, cloud: str, wanted: Sequence[str]) -> list[Project]:
    """The projects named by ID or name, checked in Keystone; unknown -> ConfigError.

    Nova answers an empty usage for any string, so an unknown project must be
    caught here. An account that may not read Keystone's project list still
    resolves its own project.
    """
    found: list[Project] = []
    for name in wanted:
        try:
            project = conn.identity.find_project(name, ignore_missing=True)
        except sdk_exceptions.DuplicateResource:
            raise ConfigError(
                f"project name {name!r} is ambiguous on cloud {cloud!r} (several domains "
                "have it); give the project's ID"
            ) from None
        except sdk_exceptions.ForbiddenException:
            own = conn.current_project
            if name not in (own.id, own.name):
                raise ConfigError(
                    f"cloud {cloud!r}: this account may not look up project {name!r}; "
                    "use an admin account or give the account's own project"
                ) from None
            project = own
        if project is None:
            raise ConfigError(
                f"project {name!r} does not exist on cloud {cloud!r}; give a project ID or name "
                "from `openstack project list`"
            )
        entry = Project(str(project.id), project.name)
        if entry not in found:
            found.append(entry)
    return found


def project_names(conn: Any) -> dict[str, str]:
    """Every project's name by ID, or ``{}`` when the account may not list projects."""
    try:
        return {str(p.id): str(p.name) for p in conn.identity.projects()}
    except sdk_exceptions.ForbiddenException:
        return {}


def _microversion(conn: Any, cloud: str) -> str | None:
    """2.40 when the cloud has it (paged answers), else the base API (one page)."""
    try:
        data = conn.compute.get_endpoint_data()
    except ksa_exceptions.EndpointNotFound:
        data = None
    if data is None:
        raise CapabilityError(
            cloud=cloud,
            feature=_FEATURE,
            detail="the catalog has no compute endpoint; archive usage from a cloud with Nova",
        )
    highest = getattr(data, "max_microversion", None)
    if highest is not None and not isinstance(highest, str):
        highest = ".".join(str(p) for p in highest)
    return PAGING_MICROVERSION if version_at_least(highest, PAGING_MICROVERSION) else None


def _get(conn: Any, cloud: str, url: str, microversion: str | None) -> dict[str, Any]:
    try:
        body = call(conn.compute, "GET", url, microversion=microversion)
    except sdk_exceptions.HttpException as exc:
        if exc.status_code == 403:
            raise CapabilityError(
                cloud=cloud,
                feature=_FEATURE,
                detail="the account may not read usage (policy "
                "os_compute_api:os-simple-tenant-usage); use an admin account or grant the right",
            ) from exc
        if exc.status_code in (404, 405, 501):
            raise CapabilityError(
                cloud=cloud,
                feature=_FEATURE,
                detail=f"Nova answered {exc.status_code} for {url.split('?')[0]}; archive usage "
                "from a cloud whose compute API offers it",
            ) from exc
        raise
    if not isinstance(body, dict):
        raise CapabilityError(
            cloud=cloud, feature=_FEATURE, detail="the compute API did not answer a usage document"
        )
    return body


def fetch_usage(
    conn: Any,
    cloud: str,
    *,
    projects: Sequence[Project] | None,
    start: datetime | None,
    end: datetime | None,
    page_size: int | None = None,
    events: EventSink | None = None,
) -> UsageFetch:
    """Every server's usage over ``[start, end)`` for ``projects`` (None: every project).

    ``start`` None reads from :data:`EPOCH`; ``end`` None (or later than now)
    is now. ``page_size`` asks Nova for pages of that many servers (2.40+).
    """
    sink = events or NullSink()
    now = datetime.now(UTC)
    period_start = utc(start) if start is not None else EPOCH
    period_end = min(utc(end), now) if end is not None else now
    microversion = _microversion(conn, cloud)
    query: dict[str, str] = {
        "start": format_time(period_start),
        "end": format_time(period_end),
        "detailed": "1",
    }
    if page_size is not None and microversion is not None:
        query["limit"] = str(page_size)
    usages: dict[str, ProjectUsage] = {}
    pages = 0
    reported_end = period_end
    paths = (
        [("/os-simple-tenant-usage", "tenant_usages")]
        if projects is None
        else [(f"/os-simple-tenant-usage/{segment(p.id)}", "tenant_usage") for p in projects]
    )
    for path, key in paths:
        url: str | None = f"{path}?{urlencode(query)}"
        seen: set[str] = set()
        while url:
            if url in seen:  # a server that repeats a link would loop forever
                raise CapabilityError(
                    cloud=cloud, feature=_FEATURE, detail=f"the usage pages repeat at {url}"
                )
            seen.add(url)
            body = _get(conn, cloud, url, microversion)
            pages += 1
            pieces = body.get(key) or []
            for piece in pieces if isinstance(pieces, list) else [pieces]:
                if not piece or not piece.get("tenant_id"):
                    continue  # Nova's answer for a project without servers: {}
                project_id = str(piece["tenant_id"])
                usages.setdefault(project_id, ProjectUsage(project_id))._merge(piece)
                stop = parse_time(piece.get("stop"))
                if stop is not None and stop < reported_end:
                    reported_end = stop
            sink.emit(
                Event(
                    EventType.PROGRESS,
                    kind="compute.usage",
                    identity=path,
                    done=pages,
                    unit="pages",
                    message=f"usage page {pages}",
                )
            )
            url = next(
                (
                    link["href"]
                    for link in body.get(f"{key}_links") or []
                    if link.get("rel") == "next"
                ),
                None,
            )
    if projects is not None:
        for p in projects:  # asked for, even without a server: an empty record
            usages.setdefault(p.id, ProjectUsage(p.id))
    return UsageFetch(period_start, reported_end, usages, pages, microversion)
