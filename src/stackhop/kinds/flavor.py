"""``nova.flavor``: flavors, public and private (with their project access list).

A record carries what an operator sets on a flavor: its shape (``ram``,
``vcpus``, ``disk``, ``ephemeral``, ``swap``, ``rxtx_factor``), whether it is
public, its description, its extra specs and, for a private flavor, the
projects that may use it (``access``, mapped to the destination like any
project reference). The flavor ID and ``disabled`` are source-only facts.

Nova keeps flavor names unique, so the identity is the name and the
destination counterpart is the flavor of that name. A flavor of the same
name with another *shape* is a conflict, even with ``--overwrite``: servers
were sized by it, it is never silently reused nor changed (Nova cannot change
a flavor's shape in place anyway). With the same shape, a different
description, extra specs or access list is a conflict, or an update with
``--overwrite``, and rollback restores them.

Creating a flavor takes several requests (the flavor, its extra specs, each
project's access). A flavor stackhop creates carries
``[stackhop-source:<source id>]`` in its description from the first request,
so an attempt that was cut off is recognised: :meth:`Flavor.find` does not
accept such a flavor until it is complete, and :meth:`Flavor.create`
completes it instead of creating another. Rollback deletes only flavors with
that marker.

Microversion 2.75: descriptions (2.55), extra specs in listings (2.61), and
``swap`` as a number. ``rxtx_factor`` is read and written at this
microversion; Nova dropped it from the API in 2.102.

``--via db`` reads Nova API's ``flavors``, ``flavor_extra_specs`` and
``flavor_projects`` tables.
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from stackhop.errors import ConflictError
from stackhop.kinds import register
from stackhop.kinds.base import (
    Connection,
    Decision,
    Difference,
    ExportScope,
    Kind,
    Record,
    SqlSource,
)
from stackhop.kinds.identity import PROJECT
from stackhop.kinds.rest import call, segment

MICROVERSION = "2.75"

#: What sizes a server: a difference here is always a conflict.
SHAPE = ("ram", "vcpus", "disk", "ephemeral", "swap", "rxtx_factor")


def flavor_record(
    flavor: Mapping[str, Any],
    extra_specs: Mapping[str, Any],
    access: Sequence[str],
    *,
    disabled: bool = False,
) -> Record:
    """The archive record of one flavor (the API and the database export both build it here).

    ``flavor`` holds ``id``, ``name``, the shape fields, ``is_public`` and
    ``description`` under the names of this record.
    """
    return {
        "id": str(flavor["id"]),
        "name": flavor["name"],
        "ram": int(flavor["ram"]),
        "vcpus": int(flavor["vcpus"]),
        "disk": int(flavor["disk"] or 0),
        "ephemeral": int(flavor["ephemeral"] or 0),
        "swap": int(flavor["swap"] or 0),
        "rxtx_factor": float(flavor["rxtx_factor"] or 1.0),
        "is_public": bool(flavor["is_public"]),
        "description": flavor.get("description") or "",
        "extra_specs": {str(k): str(v) for k, v in sorted(extra_specs.items())},
        "access": sorted(str(p) for p in access) if not flavor["is_public"] else [],
        "disabled": bool(disabled),
    }


def _from_api(flavor: Mapping[str, Any]) -> dict[str, Any]:
    """An API flavor under the record's field names."""
    return {
        "id": flavor["id"],
        "name": flavor["name"],
        "ram": flavor["ram"],
        "vcpus": flavor["vcpus"],
        "disk": flavor["disk"],
        "ephemeral": flavor.get("OS-FLV-EXT-DATA:ephemeral", 0),
        "swap": flavor.get("swap") or 0,
        "rxtx_factor": flavor.get("rxtx_factor") or 1.0,
        "is_public": flavor.get("os-flavor-access:is_public", True),
        "description": flavor.get("description"),
    }


def _in_scope(record: Mapping[str, Any], scope: ExportScope) -> Record | None:
    """The record as exported for ``scope``: public flavors always; private ones with the access
    list cut to the exported projects, and only if one of them may use it (unless the whole
    cloud is exported)."""
    if record["is_public"]:
        return dict(record)
    projects = {p["id"] for p in scope.projects}
    access = [p for p in record["access"] if p in projects]
    if not access and not scope.whole_cloud:
        return None
    return {**record, "access": access}


@register
class Flavor(Kind):
    name = "nova.flavor"
    service = "compute"
    references = {"access": PROJECT}
    portable_fields = (*SHAPE, "is_public", "description", "extra_specs", "access")
    source_only_fields = ("disabled",)
    selectors = {"flavors": "flavors, public and private (with their access lists)"}
    transfer = True

    def identity(self, record: Mapping[str, Any]) -> str:
        return str(record["name"])

    def normalize(self, field: str, value: Any) -> Any:
        if field == "description":
            return Kind.unstamp(value)
        if field == "extra_specs":
            return {str(k): str(v) for k, v in (value or {}).items()}
        return super().normalize(field, value)

    def on_difference(self, differences: list[Difference], overwrite: bool) -> Decision:
        if any(d.field in SHAPE or d.field == "is_public" for d in differences):
            return "conflict"  # never reuse nor reshape a flavor servers were sized by
        return super().on_difference(differences, overwrite)

    # -- reading ----------------------------------------------------------------

    def _listing(self, conn: Connection) -> builtins.list[dict[str, Any]]:
        body = call(
            conn.compute, "GET", "/flavors/detail?is_public=None", microversion=MICROVERSION
        )
        return list((body or {}).get("flavors", []))

    def _access(self, conn: Connection, flavor_id: str) -> builtins.list[str]:
        url = f"/flavors/{segment(flavor_id)}/os-flavor-access"
        body = call(conn.compute, "GET", url, microversion=MICROVERSION) or {}
        return [str(a["tenant_id"]) for a in body.get("flavor_access", [])]

    def _view(self, conn: Connection, flavor: Mapping[str, Any]) -> Record:
        public = flavor.get("os-flavor-access:is_public", True)
        access = [] if public else self._access(conn, str(flavor["id"]))
        return flavor_record(
            _from_api(flavor),
            flavor.get("extra_specs") or {},
            access,
            disabled=bool(flavor.get("OS-FLV-DISABLED:disabled", False)),
        )

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """Every flavor of the cloud, public and private."""
        for flavor in self._listing(conn):
            yield self._view(conn, flavor)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        for record in self.list(conn):
            kept = _in_scope(record, scope)
            if kept is not None:
                yield kept

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        specs: dict[int, dict[str, str]] = defaultdict(dict)
        for row in db.query(
            "nova_api", "SELECT s.flavor_id, s.key, s.value FROM flavor_extra_specs s"
        ):
            specs[row.flavor_id][row.key] = row.value
        access: dict[int, builtins.list[str]] = defaultdict(builtins.list)
        for row in db.query("nova_api", "SELECT flavor_id, project_id FROM flavor_projects"):
            access[row.flavor_id].append(row.project_id)
        rows = db.query(
            "nova_api",
            "SELECT id, flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, "
            "rxtx_factor, is_public, disabled, description FROM flavors ORDER BY flavorid",
        )
        for row in rows:
            record = flavor_record(
                {
                    "id": row.flavorid,
                    "name": row.name,
                    "ram": row.memory_mb,
                    "vcpus": row.vcpus,
                    "disk": row.root_gb,
                    "ephemeral": row.ephemeral_gb,
                    "swap": row.swap,
                    "rxtx_factor": row.rxtx_factor,
                    "is_public": row.is_public,
                    "description": row.description,
                },
                specs.get(row.id, {}),
                access.get(row.id, []),
                disabled=bool(row.disabled),
            )
            kept = _in_scope(record, scope)
            if kept is not None:
                yield kept

    def _complete(self, record: Mapping[str, Any], found: Record) -> bool:
        """Whether a flavor stackhop made for ``record`` got all of it (specs and access)."""
        return not any(d.field in ("extra_specs", "access") for d in self.compare(record, found))

    def _match(
        self, conn: Connection, record: Mapping[str, Any], flavor: Mapping[str, Any]
    ) -> Record | None:
        found = self._view(conn, flavor)
        ours = Kind.marked_source_id(found["description"]) == str(record["id"])
        if ours and not self._complete(record, found):
            return None  # an attempt cut off half-way: create completes it
        return found

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        for flavor in self._listing(conn):
            if flavor["name"] == record["name"]:
                return self._match(conn, record, flavor)
        return None

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """One listing for all; access lists only of the private flavors that match."""
        by_name = {f["name"]: f for f in self._listing(conn)}
        return [
            None if r["name"] not in by_name else self._match(conn, r, by_name[r["name"]])
            for r in records
        ]

    # -- writing ----------------------------------------------------------------

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        left_over = next((f for f in self._listing(conn) if f["name"] == record["name"]), None)
        if left_over is None:
            body = call(
                conn.compute,
                "POST",
                "/flavors",
                json={
                    "flavor": {
                        "name": record["name"],
                        "ram": record["ram"],
                        "vcpus": record["vcpus"],
                        "disk": record["disk"],
                        "OS-FLV-EXT-DATA:ephemeral": record["ephemeral"],
                        "swap": record["swap"],
                        "rxtx_factor": record["rxtx_factor"],
                        "os-flavor-access:is_public": record["is_public"],
                        "description": self.stamp(record.get("description"), record),
                    }
                },
                microversion=MICROVERSION,
            )
            flavor_id = str(body["flavor"]["id"])
            current: Record = {"extra_specs": {}, "access": []}
        elif Kind.marked_source_id(left_over.get("description")) == str(record["id"]):
            flavor_id = str(left_over["id"])
            current = self._view(conn, left_over)
        else:
            raise ConflictError(
                f"flavor {record['name']!r} exists on the destination and was not made by "
                "stackhop; it is left as it is"
            )
        self._set_specs_and_access(conn, flavor_id, record, current)
        return flavor_id

    def _set_specs_and_access(
        self,
        conn: Connection,
        flavor_id: str,
        wanted: Mapping[str, Any],
        current: Mapping[str, Any],
    ) -> None:
        base = f"/flavors/{segment(flavor_id)}"
        specs = dict(wanted.get("extra_specs") or {})
        have = dict(current.get("extra_specs") or {})
        changed = {k: v for k, v in specs.items() if have.get(k) != v}
        if changed:
            call(
                conn.compute,
                "POST",
                f"{base}/os-extra_specs",
                json={"extra_specs": changed},
                microversion=MICROVERSION,
            )
        for key in sorted(set(have) - set(specs)):
            call(
                conn.compute,
                "DELETE",
                f"{base}/os-extra_specs/{segment(key)}",
                microversion=MICROVERSION,
                missing_ok=True,
            )
        if wanted.get("is_public"):
            return
        access, granted = set(wanted.get("access") or []), set(current.get("access") or [])
        for project in sorted(access - granted):
            call(
                conn.compute,
                "POST",
                f"{base}/action",
                json={"addTenantAccess": {"tenant": project}},
                microversion=MICROVERSION,
            )
        for project in sorted(granted - access):
            call(
                conn.compute,
                "POST",
                f"{base}/action",
                json={"removeTenantAccess": {"tenant": project}},
                microversion=MICROVERSION,
            )

    def _describe(self, conn: Connection, flavor_id: str, description: str) -> None:
        call(
            conn.compute,
            "PUT",
            f"/flavors/{segment(flavor_id)}",
            json={"flavor": {"description": description}},
            microversion=MICROVERSION,
        )

    def update(
        self, conn: Connection, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> None:
        """Same shape, other description, extra specs or access: make them the source's."""
        if Kind.unstamp(existing.get("description")) != (record.get("description") or ""):
            self._describe(conn, str(existing["id"]), record.get("description") or "")
        self._set_specs_and_access(conn, str(existing["id"]), record, existing)

    def before(self, existing: Mapping[str, Any]) -> Record:
        return {
            "id": existing["id"],
            "is_public": existing["is_public"],
            "description": existing.get("description") or "",
            "extra_specs": dict(existing.get("extra_specs") or {}),
            "access": list(existing.get("access") or []),
        }

    def restore(self, conn: Connection, before: Mapping[str, Any]) -> None:
        """Put back the description, extra specs and access an ``--overwrite`` changed."""
        flavor_id = str(before["id"])
        url = f"/flavors/{segment(flavor_id)}"
        body = call(conn.compute, "GET", url, microversion=MICROVERSION, missing_ok=True)
        if body is None:
            raise ConflictError(
                f"flavor {flavor_id} is gone from the destination; nothing to restore"
            )
        current = self._view(conn, body["flavor"])
        self._describe(conn, flavor_id, str(before.get("description") or ""))
        self._set_specs_and_access(conn, flavor_id, before, current)

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Delete a flavor stackhop created; one without its marker is refused."""
        url = f"/flavors/{segment(destination_id)}"
        body = call(conn.compute, "GET", url, microversion=MICROVERSION, missing_ok=True)
        if body is None:
            return
        if Kind.marked_source_id(body["flavor"].get("description")) is None:
            raise ConflictError(
                f"flavor {destination_id} carries no stackhop marker; it was not created by "
                "stackhop, so it is left in place"
            )
        call(conn.compute, "DELETE", url, microversion=MICROVERSION, missing_ok=True)
