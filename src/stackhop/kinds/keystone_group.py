"""``keystone.group`` and ``keystone.group_member``: groups and who is in them (``--identity``).

- a **group** is matched by (destination domain, name), like a project: an
  existing one is adopted into the ID map, never duplicated; a created one
  carries the source's description and ``[stackhop-source:<id>]`` in it (the
  marker a re-run without the journal finds, and the only groups rollback
  deletes). A group of a directory-backed domain (its ID is not one Keystone's
  SQL driver generated, :func:`identity.is_sql_id`) is never created: Keystone
  cannot write to the directory, so it is only mapped, and one the
  destination's directory lacks is a conflict naming it;
- a **membership** is one record per (group, user) pair, so adding one is one
  idempotent ``PUT`` the engine can retry and resume like any create. Members
  of directory groups are the directory's business and are not exported. A
  membership has nowhere to carry a marker: one found on the destination is
  adopted (so rollback leaves it), and a re-run that lost its journal adopts
  the memberships its earlier run added. Memberships the destination has and
  the source does not are left alone.

Which groups an export carries: every group of the cloud, or with
``--project`` those holding a role assignment on one of the projects; their
members as far as the export carries the user (with ``--project``, the users
with a role in the projects).

``--via db`` reads Keystone's ``group`` (a reserved word, quoted) and
``user_group_membership`` tables and, for ``--project``, ``assignment``.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from stackhop.dbexport import DatabaseReader
from stackhop.errors import ConflictError
from stackhop.kinds import register
from stackhop.kinds.base import Connection, ExportScope, Kind, Record, SqlSource
from stackhop.kinds.identity import USER, is_sql_id, list_users
from stackhop.kinds.keystone_identity import DOMAIN, SELECTOR, _domains_in, _InDomains, _listing
from stackhop.kinds.rest import call, segment

GROUP = "keystone.group"
MEMBER = "keystone.group_member"


def group_record(row: Mapping[str, Any], domain_name: str) -> Record:
    """The archive record of one group (the API and the database export both build it here)."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "domain_id": str(row["domain_id"]),
        "domain_name": domain_name,
        "description": row.get("description") or "",
    }


def _project_groups(assignments: Iterator[tuple[str, str]], scope: ExportScope) -> set[str]:
    """The groups with a role on a project of ``scope``, from (group ID, project ID) pairs."""
    projects = {str(p["id"]) for p in scope.projects}
    return {group for group, project in assignments if project in projects}


def _in_scope(
    records: Iterator[Record], scope: ExportScope, groups: set[str] | None
) -> Iterator[Record]:
    domains = _domains_in(scope)
    for record in records:
        if domains is not None and record["domain_id"] not in domains:
            continue
        if groups is not None and record["id"] not in groups:
            continue
        yield record


def _domain_names_db(db: SqlSource) -> dict[str, str]:
    rows = db.query("keystone", "SELECT id, name FROM project WHERE is_domain = 1")
    return {str(row.id): str(row.name) for row in rows}


def _group_table(db: SqlSource) -> str:
    return db.quote("keystone", "group") if isinstance(db, DatabaseReader) else '"group"'


@register
class Group(_InDomains):
    name = GROUP
    references = {"domain_id": DOMAIN}
    portable_fields = ("domain_id", "description")
    source_only_fields = ("domain_name",)
    path = "groups"
    key = "group"

    def in_domains(self, conn: Connection, domains: Mapping[str, str]) -> Iterator[Record]:
        for domain_id, domain_name in domains.items():
            for group in _listing(conn, f"/groups?domain_id={segment(domain_id)}", "groups"):
                yield group_record(group, domain_name)

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        domains = {d["id"]: d["name"] for d in _listing(conn, "/domains", "domains")}
        yield from self.in_domains(conn, domains)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        groups = None
        if not scope.whole_cloud:
            pairs = (
                (str(a["group"]["id"]), str(a["scope"]["project"]["id"]))
                for a in _listing(conn, "/role_assignments", "role_assignments")
                if "group" in a and "project" in (a.get("scope") or {})
            )
            groups = _project_groups(pairs, scope)
        yield from _in_scope(self.list(conn), scope, groups)

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        domains = _domain_names_db(db)
        groups = None
        if not scope.whole_cloud:
            rows = db.query(
                "keystone",
                "SELECT actor_id, target_id FROM assignment WHERE type = 'GroupProject'",
            )
            groups = _project_groups(((str(r.actor_id), str(r.target_id)) for r in rows), scope)
        rows = db.query(
            "keystone",
            f"SELECT id, name, domain_id, description FROM {_group_table(db)} ORDER BY id",
        )
        records = (
            group_record(row._mapping, domains.get(str(row.domain_id), str(row.domain_id)))
            for row in rows
        )
        yield from _in_scope(records, scope, groups)

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        if not is_sql_id(self.source_id(record)):
            raise ConflictError(
                f"group {self.identity(record)!r} comes from the source's directory and the "
                "destination's directory has no group of that name; Keystone cannot create "
                "it there: add it to the directory, then re-run"
            )
        body = {
            "name": record["name"],
            "domain_id": record["domain_id"],
            "description": self.stamp(record.get("description"), record),
        }
        created = call(conn.identity, "POST", "/groups", json={"group": body})
        return str(created["group"]["id"])


def member_record(group: Mapping[str, Any], user: Mapping[str, Any]) -> Record:
    """One (group, user) pair; the names make its portable identity."""
    return {
        "id": f"{group['id']}:{user['id']}",
        "group_id": str(group["id"]),
        "user_id": str(user["id"]),
        "group": f"{group.get('domain_name')}/{group['name']}",
        "user": f"{user.get('domain_name')}/{user['name']}",
    }


def _members(
    groups: Sequence[Record], users: Sequence[Record], pairs: Iterator[tuple[str, str]]
) -> Iterator[Record]:
    """The records of (group ID, user ID) ``pairs`` whose group is an SQL group of ``groups``
    and whose user the export carries, ordered by group then user name."""
    by_id = {g["id"]: g for g in groups if is_sql_id(str(g["id"]))}
    by_user = {str(u["id"]): u for u in users}
    records = [member_record(by_id[g], by_user[u]) for g, u in pairs if g in by_id and u in by_user]
    yield from sorted(records, key=lambda r: (r["group"], r["user"], r["id"]))


@register
class GroupMember(Kind):
    name = MEMBER
    service = "identity"
    selectors = SELECTOR
    transfer = True
    default_selected = False
    references = {"group_id": GROUP, "user_id": USER}
    source_only_fields = ("group", "user")
    updatable = False

    def identity(self, record: Mapping[str, Any]) -> str:
        return f"{record['group']} <- {record['user']}"

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """The memberships of the SQL groups ``groups`` (``keystone.group`` records, default:
        every group) whose user is one of ``users`` (``identity.user`` records, default:
        every user)."""
        groups = filters.get("groups")
        if groups is None:
            groups = builtins.list(Group().list(conn))
        users = filters.get("users")
        if users is None:
            users = builtins.list(list_users(conn))
        pairs = (
            (str(g["id"]), str(u["id"]))
            for g in groups
            if is_sql_id(str(g["id"]))
            for u in _listing(conn, f"/groups/{segment(str(g['id']))}/users", "users")
        )
        return _members(groups, users, pairs)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        return self.list(conn, groups=scope.exported.get(GROUP, []), users=scope.users)

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        rows = db.query("keystone", "SELECT group_id, user_id FROM user_group_membership")
        pairs = ((str(r.group_id), str(r.user_id)) for r in rows)
        return _members(scope.exported.get(GROUP, []), scope.users, pairs)

    def _url(self, group_id: str, user_id: str) -> str:
        return f"/groups/{segment(group_id)}/users/{segment(user_id)}"

    def _view(self, group_id: str, user_id: str) -> Record:
        return {"id": f"{group_id}:{user_id}", "group_id": group_id, "user_id": user_id}

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        group_id, user_id = str(record["group_id"]), str(record["user_id"])
        response = conn.identity.request(self._url(group_id, user_id), "HEAD")
        if response.status_code == 404:
            return None
        call_ok(response)
        return self._view(group_id, user_id)

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """One member listing per destination group the records name."""
        members: dict[str, set[str]] = {}
        for group_id in {str(r["group_id"]) for r in records}:
            url = f"/groups/{segment(group_id)}/users"
            found = call(conn.identity, "GET", url, missing_ok=True)
            members[group_id] = {str(u["id"]) for u in (found or {}).get("users", [])}
        return [
            self._view(str(r["group_id"]), str(r["user_id"]))
            if str(r["user_id"]) in members[str(r["group_id"])]
            else None
            for r in records
        ]

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        group_id, user_id = str(record["group_id"]), str(record["user_id"])
        call(conn.identity, "PUT", self._url(group_id, user_id))
        return f"{group_id}:{user_id}"

    def delete(self, conn: Connection, destination_id: str) -> None:
        group_id, _, user_id = destination_id.partition(":")
        call(conn.identity, "DELETE", self._url(group_id, user_id), missing_ok=True)


def call_ok(response: Any) -> None:
    """Raise openstacksdk's error for a failed ``response`` (a HEAD has no body to decode)."""
    from openstack import exceptions as sdk_exceptions

    sdk_exceptions.raise_from_response(response)
