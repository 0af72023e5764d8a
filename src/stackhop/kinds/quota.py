"""Quotas: ``nova.quota``, ``neutron.quota``, ``cinder.quota``, one kind per service.

A record is one project's explicitly set limits for one service:
``{"id": project, "project_id": project, "limits": {resource: value}}``. Only
values that differ from the source cloud's defaults are carried (a value
left at the default follows the destination's own defaults). Block-storage
records include the per-volume-type limits (``volumes_<type>``, ...).

On import the destination project's current values of the same resources are
read; equal -> skip, different -> update (quotas always follow the source). The
engine journals the previous values (``before``), and rollback puts them back.

``--via db`` reads each service's ``quotas`` table (and its ``quota_classes``
defaults where the database holds them). The database says which values were
*set*, the API only which differ from the defaults: values set equal to the
default are dropped here too, so both exports hold the same records.
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from stackhop.kinds import register
from stackhop.kinds.base import (
    Connection,
    Decision,
    Difference,
    ExportScope,
    Kind,
    Record,
    SqlSource,
    concurrently,
)
from stackhop.kinds.identity import PROJECT
from stackhop.kinds.rest import call, segment

#: Nova microversion for quota sets: network quotas (proxied to Neutron) are gone from 2.36.
NOVA_MICROVERSION = "2.36"

#: The help of ``--quotas``, the selector of all three quota kinds.
QUOTAS_HELP = "compute, network and block storage quotas"

#: Keys of a quota set that are not limits.
_NOT_LIMITS = frozenset({"id", "project_id", "tenant_id"})


def quota_record(project: Mapping[str, Any], limits: Mapping[str, int]) -> Record:
    """The archive record of one project's limits (API and database export build it here)."""
    return {
        "id": project["id"],
        "project_id": project["id"],
        "project_name": project["name"],
        "project_domain": project["domain_name"],
        "limits": {k: int(v) for k, v in sorted(limits.items())},
    }


def explicit(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, int]:
    """The limits in ``values`` that differ from ``defaults`` (ints only, IDs dropped)."""
    return {
        k: int(v)
        for k, v in values.items()
        if k not in _NOT_LIMITS
        and isinstance(v, int)
        and not isinstance(v, bool)
        and defaults.get(k) != v
    }


class QuotaKind(Kind):
    """Shared behaviour of the three quota kinds; subclasses say how to read and write."""

    references = {"project_id": PROJECT}
    portable_fields = ("limits",)
    source_only_fields = ("project_name", "project_domain")
    service: ClassVar[str]
    transfer = True
    #: ``--via db``: the database, the set limits (project_id, resource, hard_limit) and
    #: the defaults (resource, hard_limit) where the database holds them.
    database: ClassVar[str]
    limits_sql: ClassVar[str]
    defaults_sql: ClassVar[str | None] = None

    def identity(self, record: Mapping[str, Any]) -> str:
        return f"{record['project_domain']}/{record['project_name']}"

    def on_difference(self, differences: list[Difference], overwrite: bool) -> Decision:
        return "update"  # the source's explicit limits are what the operator moves

    # -- per service ----------------------------------------------------------

    def defaults(self, conn: Connection, project_id: str) -> dict[str, Any]:
        raise TypeError(f"{self.name} does not read defaults")

    def current(self, conn: Connection, project_id: str) -> dict[str, Any]:
        raise TypeError(f"{self.name} does not read quotas")

    def write(self, conn: Connection, project_id: str, limits: Mapping[str, int]) -> None:
        raise TypeError(f"{self.name} does not write quotas")

    def reset(self, conn: Connection, project_id: str) -> None:
        raise TypeError(f"{self.name} does not reset quotas")

    # -- the cloud calls ------------------------------------------------------

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """The explicit limits of each project in ``projects`` (``identity.project`` records)."""
        projects: Iterable[Mapping[str, Any]] = filters["projects"]
        defaults: dict[str, Any] | None = None
        for project in projects:
            if defaults is None:
                defaults = self.defaults(conn, project["id"])
            limits = explicit(self.current(conn, project["id"]), defaults)
            if limits:
                yield quota_record(project, limits)

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        from stackhop.dbexport import DatabaseReader

        if isinstance(db, DatabaseReader):
            return self._read_reflected(db, scope)
        return self._read_fixed(db, scope)

    def _read_reflected(self, db: Any, scope: ExportScope) -> Iterator[Record]:
        """Today's schema or Liberty's, decided by reflection (``dbexport``'s helpers).

        Liberty: Nova's quotas in the cell database (``[database]``), ``deleted``
        columns (integer in Nova, boolean in Cinder), Neutron's ``tenant_id``.
        """
        from stackhop.dbexport import live

        database = self.database
        if database == "nova_api" and not (
            db.configured("nova_api") and db.columns("nova_api", "quotas") is not None
        ):
            database = "nova"
        columns = db.require(database, "quotas", {"resource"})
        project = "project_id" if "project_id" in columns else "tenant_id"
        limit = "hard_limit" if "hard_limit" in columns else "limit"
        db.require(database, "quotas", {project, limit})
        boolean = self.database == "cinder"
        quote = db.quote
        by_project: dict[str, dict[str, int]] = defaultdict(dict)
        rows = db.query(
            database,
            f"SELECT {project} AS project_id, resource, {quote(database, limit)} AS hard_limit "
            f"FROM quotas WHERE {live(columns, boolean=boolean)}",
        )
        for row in rows:
            by_project[row.project_id][row.resource] = int(row.hard_limit)
        defaults: dict[str, int] = {}
        classes = db.columns(database, "quota_classes") if self.defaults_sql else None
        if classes is not None:  # without the table, the defaults live in the config file
            db.require(database, "quota_classes", {"class_name", "resource", "hard_limit"})
            defaults = {
                r.resource: int(r.hard_limit)
                for r in db.query(
                    database,
                    "SELECT resource, hard_limit FROM quota_classes WHERE class_name = 'default' "
                    f"AND {live(classes, boolean=boolean)}",
                )
            }
        for project_record in scope.projects:
            limits = explicit(by_project.get(project_record["id"], {}), defaults)
            if limits:
                yield quota_record(project_record, limits)

    def _read_fixed(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        by_project: dict[str, dict[str, int]] = defaultdict(dict)
        for row in db.query(self.database, self.limits_sql):
            by_project[row.project_id][row.resource] = int(row.hard_limit)
        defaults: dict[str, int] = {}
        if self.defaults_sql:
            defaults = {
                r.resource: int(r.hard_limit) for r in db.query(self.database, self.defaults_sql)
            }
        for project in scope.projects:
            limits = explicit(by_project.get(project["id"], {}), defaults)
            if limits:
                yield quota_record(project, limits)

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self._view(record, self.current(conn, record["project_id"]))

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """Each project's current values read once, ``workers`` projects at a time."""
        if not records:
            return []
        projects = sorted({str(r["project_id"]) for r in records})
        known = self.listed(conn)
        unknown = [p for p in projects if p not in known]
        values = concurrently(workers, lambda p: self.current(conn, p), unknown)
        known.update(zip(unknown, values, strict=True))
        return [self._view(r, known[str(r["project_id"])]) for r in records]

    def listed(self, conn: Connection) -> dict[str, dict[str, Any]]:
        """Current values of many projects in one request, where the API has one (else empty)."""
        return {}

    @staticmethod
    def _view(record: Mapping[str, Any], values: Mapping[str, Any]) -> Record:
        return {
            "id": record["project_id"],
            "project_id": record["project_id"],
            "limits": {k: values.get(k) for k in record["limits"]},
        }

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        self.write(conn, record["project_id"], record["limits"])
        return str(record["project_id"])

    def update(
        self, conn: Connection, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> None:
        self.write(conn, record["project_id"], record["limits"])

    def before(self, existing: Mapping[str, Any]) -> Record:
        return {
            "id": existing["id"],
            "project_id": existing["project_id"],
            "limits": dict(existing["limits"]),
        }

    def restore(self, conn: Connection, before: Mapping[str, Any]) -> None:
        """Put back the limits an import changed (rollback)."""
        limits = {k: v for k, v in before["limits"].items() if v is not None}
        if limits:
            self.write(conn, str(before["project_id"]), limits)

    def delete(self, conn: Connection, destination_id: str) -> None:
        self.reset(conn, destination_id)


@register
class NovaQuota(QuotaKind):
    name = "nova.quota"
    service = "compute"
    selectors = {"nova-quotas": "compute quotas", "quotas": QUOTAS_HELP}
    database = "nova_api"
    limits_sql = "SELECT project_id, resource, hard_limit FROM quotas"
    defaults_sql = "SELECT resource, hard_limit FROM quota_classes WHERE class_name = 'default'"

    def defaults(self, conn: Connection, project_id: str) -> dict[str, Any]:
        url = f"/os-quota-sets/{segment(project_id)}/defaults"
        return dict(call(conn.compute, "GET", url, microversion=NOVA_MICROVERSION)["quota_set"])

    def current(self, conn: Connection, project_id: str) -> dict[str, Any]:
        url = f"/os-quota-sets/{segment(project_id)}"
        return dict(call(conn.compute, "GET", url, microversion=NOVA_MICROVERSION)["quota_set"])

    def write(self, conn: Connection, project_id: str, limits: Mapping[str, int]) -> None:
        call(
            conn.compute,
            "PUT",
            f"/os-quota-sets/{segment(project_id)}",
            json={"quota_set": dict(limits)},
            microversion=NOVA_MICROVERSION,
        )

    def reset(self, conn: Connection, project_id: str) -> None:
        call(
            conn.compute,
            "DELETE",
            f"/os-quota-sets/{segment(project_id)}",
            microversion=NOVA_MICROVERSION,
            missing_ok=True,
        )


@register
class NeutronQuota(QuotaKind):
    name = "neutron.quota"
    service = "network"
    selectors = {"neutron-quotas": "network quotas", "quotas": QUOTAS_HELP}
    # Neutron's defaults live in neutron.conf, not in the database.
    database = "neutron"
    limits_sql = "SELECT project_id, resource, `limit` AS hard_limit FROM quotas"

    def listed(self, conn: Connection) -> dict[str, dict[str, Any]]:
        # Neutron lists every project that has a quota of its own, defaults filled in;
        # a project it does not list is read on its own.
        body = call(conn.network, "GET", "/quotas") or {}
        return {str(q["project_id"]): dict(q) for q in body.get("quotas", []) if "project_id" in q}

    def defaults(self, conn: Connection, project_id: str) -> dict[str, Any]:
        url = f"/quotas/{segment(project_id)}/default"
        return dict(call(conn.network, "GET", url)["quota"])

    def current(self, conn: Connection, project_id: str) -> dict[str, Any]:
        return dict(call(conn.network, "GET", f"/quotas/{segment(project_id)}")["quota"])

    def write(self, conn: Connection, project_id: str, limits: Mapping[str, int]) -> None:
        call(conn.network, "PUT", f"/quotas/{segment(project_id)}", json={"quota": dict(limits)})

    def reset(self, conn: Connection, project_id: str) -> None:
        call(conn.network, "DELETE", f"/quotas/{segment(project_id)}", missing_ok=True)


@register
class CinderQuota(QuotaKind):
    """Block storage limits, including the per-volume-type ones (``gigabytes_<type>``, ...)."""

    name = "cinder.quota"
    service = "block-storage"
    selectors = {"cinder-quotas": "block storage quotas", "quotas": QUOTAS_HELP}
    database = "cinder"
    limits_sql = "SELECT project_id, resource, hard_limit FROM quotas WHERE deleted = 0"
    defaults_sql = (
        "SELECT resource, hard_limit FROM quota_classes "
        "WHERE class_name = 'default' AND deleted = 0"
    )

    def defaults(self, conn: Connection, project_id: str) -> dict[str, Any]:
        url = f"/os-quota-sets/{segment(project_id)}/defaults"
        return dict(call(conn.block_storage, "GET", url)["quota_set"])

    def current(self, conn: Connection, project_id: str) -> dict[str, Any]:
        url = f"/os-quota-sets/{segment(project_id)}"
        return dict(call(conn.block_storage, "GET", url)["quota_set"])

    def write(self, conn: Connection, project_id: str, limits: Mapping[str, int]) -> None:
        call(
            conn.block_storage,
            "PUT",
            f"/os-quota-sets/{segment(project_id)}",
            json={"quota_set": dict(limits)},
        )

    def reset(self, conn: Connection, project_id: str) -> None:
        call(conn.block_storage, "DELETE", f"/os-quota-sets/{segment(project_id)}", missing_ok=True)
