"""``cinder.volume_type``: volume types, mapped onto the destination's, created only on request.

A volume type names a storage backend and its settings, which are the
destination operator's to choose: a source type is *mapped* to the
destination type of the same name, or to the one the operator names with
``--type-map SRC=DST`` (the same option, parsed by the same code, as
``volumes copy``'s). Nothing is created unless ``--create-volume-types`` is
given; without it, a source type with no counterpart stops ``plan``,
``import`` and ``migrate`` with one line naming the type and both fixes,
before anything is created. A mapped type whose settings differ is kept as
the destination has it (the plan says which fields differ); the ID map
records source type -> destination type, for the volumes that come later.

With ``--create-volume-types``, a missing type is created under its mapped
name with its description, extra specs, visibility and, when private, its
access list (projects mapped like every project reference; a project nothing
maps is left out of it). The description carries
``[stackhop-source:<source id>]`` from the create request on: a re-run
completes a type whose access list was cut off instead of creating another,
and rollback deletes only types with that marker (and only those its run
created, as the journal says).

With ``--project``, the export holds the public types and the private ones
those projects may use (their access lists cut to those projects).
``--via db`` reads Cinder's ``volume_types``, ``volume_type_extra_specs``
and ``volume_type_projects`` (soft-deleted rows are left out).
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

CREATE_FLAG = "create-volume-types"
VOLUME_TYPE_NAME = "cinder.volume_type_name"
"""Not a kind: the referenced "kind" of a destination type name, so the operator's
``--type-map`` (``{src type: dst type}``) maps it through the resolver; a name no map
names stays the same."""


def volume_type_record(
    volume_type: Mapping[str, Any], extra_specs: Mapping[str, Any], access: Sequence[str]
) -> Record:
    """The archive record of one type (the API and the database export both build it here).

    ``destination_name`` is the type's name, which the resolver maps through ``--type-map``.
    """
    public = bool(volume_type["is_public"])
    return {
        "id": str(volume_type["id"]),
        "name": volume_type["name"],
        "destination_name": volume_type["name"],
        "description": volume_type.get("description") or "",
        "is_public": public,
        "extra_specs": {str(k): str(v) for k, v in sorted((extra_specs or {}).items())},
        "access": [] if public else sorted(str(p) for p in access),
    }


def _in_scope(record: Record, scope: ExportScope) -> Record | None:
    """Public types always; private ones with their access cut to the exported projects, and
    only if one of them may use it (unless the whole cloud is exported)."""
    if record["is_public"]:
        return record
    projects = {p["id"] for p in scope.projects}
    access = [p for p in record["access"] if p in projects]
    if not access and not scope.whole_cloud:
        return None
    return {**record, "access": access}


def _public(volume_type: Mapping[str, Any]) -> bool:
    return bool(volume_type.get("os-volume-type-access:is_public", volume_type.get("is_public")))


@register
class VolumeType(Kind):
    name = "cinder.volume_type"
    service = "block-storage"
    references = {"access": PROJECT, "destination_name": VOLUME_TYPE_NAME}
    #: A project no map names is left out of a created type's access list.
    ordering_references = ("access",)
    portable_fields = ("description", "is_public", "extra_specs", "access")
    selectors = {
        "volume-types": "volume types, mapped by name or --type-map (created only with "
        f"--{CREATE_FLAG})"
    }
    mapped = True
    import_options = {CREATE_FLAG: "create the volume types the destination lacks (journaled)"}
    transfer = True

    def __init__(self, *, may_create: bool = False) -> None:
        self.may_create = may_create

    def configured(self, options: Mapping[str, bool]) -> VolumeType:
        wanted = bool(options.get("create_volume_types"))
        return self if wanted == self.may_create else type(self)(may_create=wanted)

    def identity(self, record: Mapping[str, Any]) -> str:
        return str(record["name"])

    def normalize(self, field: str, value: Any) -> Any:
        if field == "description":
            return Kind.unstamp(value)
        if field == "extra_specs":
            return {str(k): str(v) for k, v in (value or {}).items()}
        return super().normalize(field, value)

    def on_difference(self, differences: builtins.list[Difference], overwrite: bool) -> Decision:
        return "skip"  # the destination's types are its operator's: mapped, never changed

    def unmatched(self, records: Sequence[Mapping[str, Any]], destination: str) -> str:
        options = " ".join(f"--type-map {r['name']}=TYPE" for r in records)
        names = ", ".join(repr(r["name"]) for r in records)
        return (
            f"volume type(s) {names} have no counterpart on cloud {destination!r}: map them with "
            f"{options}, or pass --{CREATE_FLAG} to create them"
        )

    # -- reading ----------------------------------------------------------------

    def _listing(self, conn: Connection) -> builtins.list[dict[str, Any]]:
        body = call(conn.block_storage, "GET", "/types?is_public=None") or {}
        return list(body.get("volume_types", []))

    def _access(self, conn: Connection, type_id: str) -> builtins.list[str]:
        url = f"/types/{segment(type_id)}/os-volume-type-access"
        body = call(conn.block_storage, "GET", url) or {}
        return [str(a["project_id"]) for a in body.get("volume_type_access", [])]

    def _view(self, conn: Connection, volume_type: Mapping[str, Any]) -> Record:
        public = _public(volume_type)
        access = [] if public else self._access(conn, str(volume_type["id"]))
        return volume_type_record(
            {**volume_type, "is_public": public}, volume_type.get("extra_specs") or {}, access
        )

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """Every volume type of the cloud, public and private."""
        for volume_type in self._listing(conn):
            yield self._view(conn, volume_type)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        for record in self.list(conn):
            kept = _in_scope(record, scope)
            if kept is not None:
                yield kept

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        specs: dict[str, dict[str, str]] = defaultdict(dict)
        for row in _live_rows(db, "volume_type_extra_specs", "volume_type_id, key, value"):
            specs[row.volume_type_id][row.key] = row.value
        access: dict[str, builtins.list[str]] = defaultdict(builtins.list)
        for row in _live_rows(db, "volume_type_projects", "volume_type_id, project_id"):
            access[row.volume_type_id].append(row.project_id)
        rows = _live_rows(db, "volume_types", "id, name, description, is_public")
        for row in sorted(rows, key=lambda r: r.name):
            record = volume_type_record(
                {"id": row.id, "name": row.name, "description": row.description,
                 "is_public": row.is_public},
                specs.get(row.id, {}),
                access.get(row.id, []),
            )
            kept = _in_scope(record, scope)
            if kept is not None:
                yield kept

    # -- finding ----------------------------------------------------------------

    def _match(
        self, conn: Connection, record: Mapping[str, Any], volume_type: Mapping[str, Any]
    ) -> Record | None:
        found = self._view(conn, volume_type)
        ours = Kind.marked_source_id(found["description"]) == str(record["id"])
        if ours and any(d.field == "access" for d in self.compare(record, found)):
            return None  # a creation cut off before its access list: create completes it
        return found

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """One listing for all; access lists only of the private types that match."""
        by_name = {t["name"]: t for t in self._listing(conn)}
        return [
            None
            if r["destination_name"] not in by_name
            else self._match(conn, r, by_name[r["destination_name"]])
            for r in records
        ]

    # -- writing ----------------------------------------------------------------

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        """Create the type (only planned with ``--create-volume-types``), or complete the one
        an earlier attempt left without its access list."""
        name = record["destination_name"]
        left_over = next((t for t in self._listing(conn) if t["name"] == name), None)
        if left_over is None:
            body = call(
                conn.block_storage,
                "POST",
                "/types",
                json={
                    "volume_type": {
                        "name": name,
                        "description": self.stamp(record.get("description"), record),
                        "os-volume-type-access:is_public": record["is_public"],
                        "extra_specs": dict(record.get("extra_specs") or {}),
                    }
                },
            )
            type_id, granted = str(body["volume_type"]["id"]), set()
        elif Kind.marked_source_id(left_over.get("description")) == str(record["id"]):
            type_id = str(left_over["id"])
            granted = set() if _public(left_over) else set(self._access(conn, type_id))
        else:
            raise ConflictError(
                f"volume type {name!r} exists on the destination and was not made by "
                "stackhop; it is left as it is"
            )
        if not record["is_public"]:
            for project in sorted(set(record.get("access") or []) - granted):
                call(
                    conn.block_storage,
                    "POST",
                    f"/types/{segment(type_id)}/action",
                    json={"addProjectAccess": {"project": project}},
                )
        return type_id

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Delete a type stackhop created; one without its marker is refused."""
        url = f"/types/{segment(destination_id)}"
        body = call(conn.block_storage, "GET", url, missing_ok=True)
        if body is None:
            return
        if Kind.marked_source_id(body["volume_type"].get("description")) is None:
            raise ConflictError(
                f"volume type {destination_id} carries no stackhop marker; it was not created "
                "by stackhop, so it is left in place"
            )
        call(conn.block_storage, "DELETE", url, missing_ok=True)


def _live_rows(db: SqlSource, table: str, columns: str) -> builtins.list[Any]:
    """``columns`` of the rows of Cinder's ``table`` that are not soft-deleted.

    Cinder's ``deleted`` is a boolean on most tables but an integer on
    ``volume_type_projects`` (changed for its unique constraint), and
    PostgreSQL compares neither with the other's literal: the flag is read
    and filtered here rather than in SQL.
    """
    from stackhop.dbexport import DatabaseReader

    names = [c.strip() for c in columns.split(",")]
    if isinstance(db, DatabaseReader):
        present = db.require("cinder", table, set(names))
        quoted = ", ".join(f"t.{db.quote('cinder', n)}" for n in names)
        deleted = "t.deleted" if "deleted" in present else "0"
    else:
        quoted, deleted = ", ".join(f"t.{n}" for n in names), "t.deleted"
    rows = db.query("cinder", f"SELECT {quoted}, {deleted} AS gone FROM {table} t")
    return [row for row in rows if not row.gone]
