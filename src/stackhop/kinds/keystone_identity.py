"""``keystone.domain``, ``keystone.project``, ``keystone.role``: Keystone's own objects.

Opt-in (``--identity``): the default selection of ``export|import|migrate``
leaves them out (see :attr:`Kind.default_selected`), because every cloud
already has its ``Default`` domain, ``admin`` and ``service`` projects, whose
descriptions differ between clouds and would turn into conflicts in runs that
only meant to move keypairs or networks.

- a **domain** is matched by name (``Default`` on both sides is adopted, not
  duplicated); a created one carries the source's description, enabled flag
  and ``[stackhop-source:<id>]`` in its description;
- a **project** is matched by (destination domain, name); its description,
  tags, enabled flag and parent are kept; a parent is a reference to another
  ``keystone.project`` so the engine creates parents first. A top-level
  project's Keystone ``parent_id`` is its domain: the record has ``None``;
- a **role** is a custom role (the roles ``keystone-manage bootstrap`` makes,
  ``admin``, ``member``, ``reader``, ``manager`` and ``service``, are never
  moved), matched by (domain, name); implied-role rules are not touched.

The marker is the description stamp (Keystone keeps descriptions of domains,
projects and roles as given), so a re-run without the journal finds its own
objects; rollback deletes only objects that carry it (a domain is disabled
first, as Keystone requires).

``--via db`` reads Keystone's ``project`` table (domains are its rows with
``is_domain``), ``project_tag`` and ``role``.
"""

from __future__ import annotations

import builtins
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from stackhop.errors import ConflictError
from stackhop.kinds import register
from stackhop.kinds.base import (
    MARKER_PREFIX,
    Connection,
    ExportScope,
    Kind,
    Record,
    SqlSource,
)
from stackhop.kinds.identity import is_sql_id
from stackhop.kinds.rest import call, segment

DOMAIN = "keystone.domain"
PROJECT = "keystone.project"
ROLE = "keystone.role"

#: Roles ``keystone-manage bootstrap`` makes (``manager`` and ``service`` in
#: recent releases; on an older source they are the operator's, but a new destination's
#: bootstrap already has them by name): never moved.
BUILTIN_ROLES = frozenset({"admin", "member", "reader", "manager", "service"})
#: Keystone's hidden root of the domain tree (a row of ``project``).
ROOT_DOMAIN_ID = "<<keystone.domain.root>>"
SELECTOR = {
    "identity": "Keystone domains, projects (with hierarchy), custom roles, SQL users, "
    "groups with their members, and role assignments (opt-in)"
}


def _listing(conn: Connection, url: str, key: str) -> builtins.list[dict[str, Any]]:
    """Every item of a Keystone listing, following ``links.next``."""
    items: builtins.list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        body = call(conn.identity, "GET", next_url) or {}
        items.extend(body.get(key, []))
        next_url = (body.get("links") or {}).get("next")
    return items


def domain_record(row: Mapping[str, Any]) -> Record:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "description": row.get("description") or "",
        "enabled": bool(row.get("enabled", True)),
    }


def project_record(row: Mapping[str, Any], tags: Sequence[str], domain_name: str) -> Record:
    parent = row.get("parent_id")
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "domain_id": str(row["domain_id"]),
        "domain_name": domain_name,
        "parent_id": None if parent in (None, row["domain_id"]) else str(parent),
        "description": row.get("description") or "",
        "enabled": bool(row.get("enabled", True)),
        "tags": sorted(str(t) for t in tags),
    }


def _built_in(name: str, domain_name: str | None) -> bool:
    """A global role that bootstrap makes; a domain's own ``admin`` is the operator's."""
    return domain_name is None and name in BUILTIN_ROLES


def role_record(row: Mapping[str, Any], domain_name: str | None) -> Record:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "domain_id": None if row.get("domain_id") in (None, "<<null>>") else str(row["domain_id"]),
        "domain_name": domain_name,
        "description": row.get("description") or "",
    }


def _with_subtrees(records: Sequence[Record], scope: ExportScope) -> Iterator[Record]:
    """The project records in ``scope``: all, or the chosen projects with their subtrees
    (parents first)."""
    wanted = None if scope.whole_cloud else {str(p["id"]) for p in scope.projects}
    children: dict[str | None, builtins.list[Record]] = {}
    for record in records:
        children.setdefault(record["parent_id"], []).append(record)
    ids = {r["id"] for r in records}
    roots = [r for r in records if r["parent_id"] is None or r["parent_id"] not in ids]
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        record, inside = stack.pop()
        inside = inside or wanted is None or record["id"] in wanted
        if inside:
            yield record
        stack.extend((child, inside) for child in reversed(children.get(record["id"], [])))


def _domains_in(scope: ExportScope) -> set[str] | None:
    """The domain IDs an export with ``--project`` covers (None: all): those of the projects
    and of the SQL users (``keystone.user`` refers to its users' domains)."""
    if scope.whole_cloud:
        return None
    users = {str(u.get("domain_id")) for u in scope.users if is_sql_id(str(u["id"]))}
    return {str(p.get("domain_id")) for p in scope.projects} | users


class _Keystone(Kind):
    """What the three kinds share: description markers, refusal to delete foreign objects."""

    service = "identity"
    selectors = SELECTOR
    transfer = True
    default_selected = False
    path: ClassVar[str]
    key: ClassVar[str]

    def normalize(self, field: str, value: Any) -> Any:
        if field == "description":
            return Kind.unstamp(value)
        return super().normalize(field, value)

    def _get(self, conn: Connection, object_id: str) -> dict[str, Any] | None:
        body = call(conn.identity, "GET", f"/{self.path}/{segment(object_id)}", missing_ok=True)
        return None if body is None else dict(body[self.key])

    def _patch(self, conn: Connection, object_id: str, changes: Mapping[str, Any]) -> None:
        call(
            conn.identity,
            "PATCH",
            f"/{self.path}/{segment(object_id)}",
            json={self.key: dict(changes)},
        )

    def _changes(self, wanted: Mapping[str, Any], existing: Mapping[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for field in self.portable_fields:
            if field in ("domain_id", "parent_id"):
                continue
            if self.normalize(field, wanted.get(field)) != self.normalize(
                field, existing.get(field)
            ):
                changes[field] = wanted.get(field)
        if "description" in changes:
            # keep our marker on what we created, put the source text otherwise
            marked = Kind.marked_source_id(existing.get("description"))
            text = changes["description"] or ""
            changes["description"] = f"{text} [{MARKER_PREFIX}{marked}]".strip() if marked else text
        return changes

    def update(
        self, conn: Connection, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> None:
        changes = self._changes(record, existing)
        if changes:
            self._patch(conn, str(existing["id"]), changes)

    def restore(self, conn: Connection, before: Mapping[str, Any]) -> None:
        current = self._get(conn, str(before["id"]))
        if current is None:
            raise ConflictError(
                f"{self.name} {before['id']} is gone from the destination; nothing to restore"
            )
        changes = {
            f: before[f]
            for f in self.portable_fields
            if f in before and f not in ("domain_id", "parent_id") and current.get(f) != before[f]
        }
        if changes:
            self._patch(conn, str(before["id"]), changes)

    def _refuse_unmarked(self, found: Mapping[str, Any], destination_id: str) -> None:
        if Kind.marked_source_id(found.get("description")) is None:
            raise ConflictError(
                f"{self.name} {destination_id} carries no stackhop marker; it was not created "
                "by stackhop, so it is left in place"
            )

    def delete(self, conn: Connection, destination_id: str) -> None:
        found = self._get(conn, destination_id)
        if found is None:
            return
        self._refuse_unmarked(found, destination_id)
        call(conn.identity, "DELETE", f"/{self.path}/{segment(destination_id)}", missing_ok=True)


class _InDomains(_Keystone):
    """Users and groups: named uniquely within a domain, listed one domain at a time."""

    @abstractmethod
    def in_domains(self, conn: Connection, domains: Mapping[str, str]) -> Iterator[Record]:
        """The records of the domains ``domains`` (ID -> name), one listing each."""

    def identity(self, record: Mapping[str, Any]) -> str:
        return f"{record.get('domain_name')}/{record['name']}"

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """One listing per destination domain the records name: by (domain, name)."""
        domains = {str(r["domain_id"]): str(r.get("domain_name")) for r in records}
        by_key = {(o["domain_id"], o["name"]): o for o in self.in_domains(conn, domains)}
        return [by_key.get((str(r["domain_id"]), r["name"])) for r in records]


@register
class Domain(_Keystone):
    name = DOMAIN
    portable_fields = ("description", "enabled")
    path = "domains"
    key = "domain"
    import_options = {
        "keep-domain-ids": "create each domain with its source ID (Keystone's "
        "explicit_domain_id), so the IDs Keystone derives from it for LDAP users stay the same"
    }

    def __init__(self, *, keep_ids: bool = False) -> None:
        self.keep_ids = keep_ids

    def configured(self, options: Mapping[str, bool]) -> Domain:
        keep = bool(options.get("keep_domain_ids"))
        return self if keep == self.keep_ids else type(self)(keep_ids=keep)

    def _keeps(self, record: Mapping[str, Any]) -> bool:
        """Whether the domain is created with its source ID (Keystone takes a UUID only)."""
        return self.keep_ids and is_sql_id(self.source_id(record))

    def create_detail(self, record: Mapping[str, Any]) -> str:
        return f"with its source ID {record['id']}" if self._keeps(record) else ""

    def identity(self, record: Mapping[str, Any]) -> str:
        return str(record["name"])

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        for domain in _listing(conn, "/domains", "domains"):
            yield domain_record(domain)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        wanted = _domains_in(scope)
        for record in self.list(conn):
            if wanted is None or record["id"] in wanted:
                yield record

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        wanted = _domains_in(scope)
        rows = db.query(
            "keystone",
            "SELECT id, name, description, enabled FROM project "
            "WHERE is_domain = 1 AND id <> :root ORDER BY name",
            root=ROOT_DOMAIN_ID,
        )
        for row in rows:
            record = domain_record(row._mapping)
            if wanted is None or record["id"] in wanted:
                yield record

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        by_name = {d["name"]: d for d in self.list(conn)}
        return [by_name.get(r["name"]) for r in records]

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        body = call(
            conn.identity,
            "POST",
            "/domains",
            json={
                "domain": {
                    "name": record["name"],
                    "description": self.stamp(record.get("description"), record),
                    "enabled": record["enabled"],
                    **({"explicit_domain_id": record["id"]} if self._keeps(record) else {}),
                }
            },
        )
        return str(body["domain"]["id"])

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Keystone deletes only a disabled domain: disable it first (marked ones only)."""
        found = self._get(conn, destination_id)
        if found is None:
            return
        self._refuse_unmarked(found, destination_id)
        if found.get("enabled", True):
            self._patch(conn, destination_id, {"enabled": False})
        call(conn.identity, "DELETE", f"/domains/{segment(destination_id)}", missing_ok=True)


@register
class Project(_Keystone):
    name = PROJECT
    references = {"domain_id": DOMAIN, "parent_id": PROJECT}
    portable_fields = ("domain_id", "parent_id", "description", "enabled", "tags")
    source_only_fields = ("domain_name",)
    path = "projects"
    key = "project"

    def identity(self, record: Mapping[str, Any]) -> str:
        return f"{record.get('domain_name')}/{record['name']}"

    def _view(self, project: Mapping[str, Any], domains: Mapping[str, str]) -> Record:
        domain_id = str(project["domain_id"])
        return project_record(project, project.get("tags") or [], domains.get(domain_id, domain_id))

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        domains = {d["id"]: d["name"] for d in _listing(conn, "/domains", "domains")}
        for project in _listing(conn, "/projects", "projects"):
            if not project.get("is_domain"):
                yield self._view(project, domains)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        yield from _with_subtrees(builtins.list(self.list(conn)), scope)

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        domains = {
            row.id: row.name
            for row in db.query("keystone", "SELECT id, name FROM project WHERE is_domain = 1")
        }
        tags: dict[str, builtins.list[str]] = {}
        for row in db.query("keystone", "SELECT project_id, name FROM project_tag"):
            tags.setdefault(row.project_id, []).append(row.name)
        rows = db.query(
            "keystone",
            "SELECT id, name, description, enabled, domain_id, parent_id FROM project "
            "WHERE is_domain = 0 ORDER BY id",
        )
        records = [
            project_record(
                row._mapping, tags.get(row.id, []), domains.get(row.domain_id, row.domain_id)
            )
            for row in rows
        ]
        yield from _with_subtrees(records, scope)

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """One listing: by (destination domain, name)."""
        by_key = {(p["domain_id"], p["name"]): p for p in self.list(conn)}
        return [by_key.get((str(r["domain_id"]), r["name"])) for r in records]

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        body: dict[str, Any] = {
            "name": record["name"],
            "domain_id": record["domain_id"],
            "description": self.stamp(record.get("description"), record),
            "enabled": record["enabled"],
            "tags": list(record.get("tags") or []),
        }
        if record.get("parent_id"):
            body["parent_id"] = record["parent_id"]
        created = call(conn.identity, "POST", "/projects", json={"project": body})
        return str(created["project"]["id"])

    def before(self, existing: Mapping[str, Any]) -> Record:
        return {f: existing.get(f) for f in ("id", "description", "enabled", "tags")}

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Keystone deletes only a leaf project: children stackhop made go first (the
        rollback does not order objects of one kind); an unmarked child refuses it all."""
        found = self._get(conn, destination_id)
        if found is None:
            return
        self._refuse_unmarked(found, destination_id)
        children = _listing(conn, f"/projects?parent_id={segment(destination_id)}", "projects")
        for child in children:
            self.delete(conn, str(child["id"]))
        call(conn.identity, "DELETE", f"/projects/{segment(destination_id)}", missing_ok=True)


@register
class Role(_Keystone):
    name = ROLE
    references = {"domain_id": DOMAIN}
    portable_fields = ("domain_id", "description")
    source_only_fields = ("domain_name",)
    path = "roles"
    key = "role"

    def identity(self, record: Mapping[str, Any]) -> str:
        return f"{record.get('domain_name') or ''}/{record['name']}"

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        domains = {d["id"]: d["name"] for d in _listing(conn, "/domains", "domains")}
        for role in _listing(conn, "/roles", "roles"):
            domain_id = role.get("domain_id")
            yield role_record(role, domains.get(domain_id) if domain_id else None)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        for record in self.list(conn):
            if not _built_in(record["name"], record.get("domain_name")):
                yield record

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        domains = {
            row.id: row.name
            for row in db.query("keystone", "SELECT id, name FROM project WHERE is_domain = 1")
        }
        for row in db.query(
            "keystone", "SELECT id, name, domain_id, description FROM role ORDER BY name"
        ):
            if _built_in(row.name, domains.get(row.domain_id)):
                continue
            yield role_record(row._mapping, domains.get(row.domain_id))

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        by_key = {(r["domain_id"], r["name"].lower()): r for r in self.list(conn)}
        return [by_key.get((r.get("domain_id"), r["name"].lower())) for r in records]

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        body: dict[str, Any] = {
            "name": record["name"],
            "description": self.stamp(record.get("description"), record),
        }
        if record.get("domain_id"):
            body["domain_id"] = record["domain_id"]
        created = call(conn.identity, "POST", "/roles", json={"role": body})
        return str(created["role"]["id"])
