"""``keystone.role_assignment``: who holds which role where (``--identity``).

One record per direct assignment: an actor (a user or a group) holds a role on
a target (a project or a domain), inherited to the target's projects or not.
Effective assignments (through groups, inheritance and implied roles) are not
records: they follow on the destination from the direct ones, and implied-role
rules are the destination's own. System-scoped assignments (``admin`` on the
system) stay behind: they belong to the cloud, not to a tenant.

- the actor and the target are references, so they resolve through the ID map
  like any other: users and projects through the identity mapping (or the
  ``keystone.user`` / ``keystone.project`` objects the same run creates),
  groups and domains through their Keystone kinds;
- a custom role is a reference to the ``keystone.role`` that moves with it; a
  role ``keystone-manage bootstrap`` makes (``admin``, ``member``, ``reader``,
  ...) is not moved and is found by name on the destination;
- a grant is one idempotent ``PUT``; an assignment the destination already has
  is adopted. An assignment carries no description, so no marker: a re-run
  that lost its journal adopts what an earlier run granted, and rollback then
  leaves those grants (the journal-kept rollback revokes them).

``--via db`` reads Keystone's ``assignment`` and ``role`` tables; the actors'
and targets' names come from the export's identity records either way, so the
two routes give the same records.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from stackhop.errors import ConflictError
from stackhop.kinds import register
from stackhop.kinds.base import Connection, ExportScope, Kind, Record, SqlSource
from stackhop.kinds.identity import PROJECT, USER
from stackhop.kinds.keystone_group import GROUP, call_ok
from stackhop.kinds.keystone_identity import (
    BUILTIN_ROLES,
    DOMAIN,
    ROLE,
    SELECTOR,
    _domains_in,
    _listing,
)
from stackhop.kinds.rest import call, segment

ASSIGNMENT = "keystone.role_assignment"

#: Keystone's ``assignment.type`` -> (actor, target).
_TYPES = {
    "UserProject": ("user", "project"),
    "GroupProject": ("group", "project"),
    "UserDomain": ("user", "domain"),
    "GroupDomain": ("group", "domain"),
}


def _key(
    actor: str, actor_id: str, target: str, target_id: str, role_id: str, inherited: bool
) -> str:
    return f"{actor}:{actor_id}/{target}:{target_id}/{role_id}/{int(inherited)}"


def _parse(key: str) -> tuple[str, str, str, str, str, bool]:
    actor, target, role_id, inherited = key.split("/")
    actor_type, _, actor_id = actor.partition(":")
    target_type, _, target_id = target.partition(":")
    return actor_type, actor_id, target_type, target_id, role_id, inherited == "1"


def grant_url(
    actor: str, actor_id: str, target: str, target_id: str, role_id: str, inherited: bool
) -> str:
    """The grant's own URL (``PUT`` grants, ``HEAD`` checks, ``DELETE`` revokes)."""
    url = f"/{target}s/{segment(target_id)}/{actor}s/{segment(actor_id)}/roles/{segment(role_id)}"
    return f"/OS-INHERIT{url}/inherited_to_projects" if inherited else url


def _name(record: Mapping[str, Any] | None, fallback: str) -> str:
    if record is None:
        return fallback
    return f"{record.get('domain_name')}/{record['name']}"


class _Names:
    """The names an export knows, to make the records' portable identity."""

    def __init__(self, scope: ExportScope, domains: Mapping[str, str]) -> None:
        self.users = {str(u["id"]): u for u in scope.users}
        self.groups = {str(g["id"]): g for g in scope.exported.get(GROUP, [])}
        projects = [*scope.projects, *scope.exported.get("keystone.project", [])]
        self.projects = {str(p["id"]): p for p in projects}
        self.domains = dict(domains)
        self.scope_domains = _domains_in(scope)

    def actor(self, kind: str, actor_id: str) -> Mapping[str, Any] | None:
        return (self.users if kind == "user" else self.groups).get(actor_id)

    def target(self, kind: str, target_id: str) -> str | None:
        """``domain/name`` of a project of the export, the name of a domain it covers."""
        if kind == "project":
            project = self.projects.get(target_id)
            return None if project is None else _name(project, target_id)
        if self.scope_domains is not None and target_id not in self.scope_domains:
            return None
        return self.domains.get(target_id)


def assignment_records(
    rows: Iterable[tuple[str, str, str, str, str, bool]],
    roles: Mapping[str, tuple[str, str | None]],
    names: _Names,
) -> Iterator[Record]:
    """The records of the direct assignments ``rows`` ((actor, actor ID, target, target ID,
    role ID, inherited)) whose actor and target the export carries, sorted by identity.

    ``roles``: role ID -> (name, domain ID or None) on the source.
    """
    records = []
    for actor, actor_id, target, target_id, role_id, inherited in rows:
        who = names.actor(actor, actor_id)
        where = names.target(target, target_id)
        if who is None or where is None or role_id not in roles:
            continue
        role_name, role_domain = roles[role_id]
        builtin = role_domain is None and role_name in BUILTIN_ROLES
        records.append(
            {
                "id": _key(actor, actor_id, target, target_id, role_id, inherited),
                "user_id": actor_id if actor == "user" else None,
                "group_id": actor_id if actor == "group" else None,
                "project_id": target_id if target == "project" else None,
                "domain_id": target_id if target == "domain" else None,
                "role_id": None if builtin else role_id,
                "role_name": role_name,
                "inherited": bool(inherited),
                "actor": f"{actor}:{_name(who, actor_id)}",
                "target": f"{target}:{where}",
            }
        )
    yield from sorted(records, key=lambda r: (r["target"], r["actor"], r["role_name"], r["id"]))


@register
class RoleAssignment(Kind):
    name = ASSIGNMENT
    service = "identity"
    selectors = SELECTOR
    transfer = True
    default_selected = False
    references = {
        "user_id": USER,
        "group_id": GROUP,
        "project_id": PROJECT,
        "domain_id": DOMAIN,
        "role_id": ROLE,
    }
    source_only_fields = ("role_name", "actor", "target")
    updatable = False

    def identity(self, record: Mapping[str, Any]) -> str:
        inherited = " (inherited)" if record.get("inherited") else ""
        return f"{record['actor']} on {record['target']} as {record['role_name']}{inherited}"

    # -- reading the source ------------------------------------------------------

    def _rows(self, conn: Connection) -> Iterator[tuple[str, str, str, str, str, bool]]:
        for item in _listing(conn, "/role_assignments", "role_assignments"):
            scope = item.get("scope") or {}
            actor = "user" if "user" in item else "group" if "group" in item else None
            target = "project" if "project" in scope else "domain" if "domain" in scope else None
            if actor is None or target is None:
                continue  # a system-scoped assignment
            inherited = scope.get("OS-INHERIT:inherited_to") == "projects"
            yield (
                actor,
                str(item[actor]["id"]),
                target,
                str(scope[target]["id"]),
                str(item["role"]["id"]),
                inherited,
            )

    @staticmethod
    def _roles(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str | None]]:
        return {
            str(r["id"]): (
                str(r["name"]),
                None if r.get("domain_id") in (None, "<<null>>") else str(r["domain_id"]),
            )
            for r in rows
        }

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        from stackhop.kinds.identity import domain_names, list_projects, list_users
        from stackhop.kinds.keystone_group import Group

        domains = domain_names(conn)
        scope = ExportScope(
            users=builtins.list(list_users(conn, domains)),
            projects=builtins.list(list_projects(conn, domains)),
            exported={GROUP: builtins.list(Group().list(conn))},
        )
        return self.export(conn, scope)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        domains = {d["id"]: d["name"] for d in _listing(conn, "/domains", "domains")}
        roles = self._roles(_listing(conn, "/roles", "roles"))
        return assignment_records(self._rows(conn), roles, _Names(scope, domains))

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        domains = {
            str(row.id): str(row.name)
            for row in db.query("keystone", "SELECT id, name FROM project WHERE is_domain = 1")
        }
        roles = self._roles(
            row._mapping for row in db.query("keystone", "SELECT id, name, domain_id FROM role")
        )
        rows = db.query(
            "keystone", "SELECT type, actor_id, target_id, role_id, inherited FROM assignment"
        )
        facts = (
            (actor, str(r.actor_id), target, str(r.target_id), str(r.role_id), bool(r.inherited))
            for r in rows
            if str(r.type) in _TYPES
            for actor, target in [_TYPES[str(r.type)]]
        )
        return assignment_records(facts, roles, _Names(scope, domains))

    # -- the destination ---------------------------------------------------------

    @staticmethod
    def _actor_target(record: Mapping[str, Any]) -> tuple[str, str, str, str]:
        actor = "user" if record.get("user_id") else "group"
        target = "project" if record.get("project_id") else "domain"
        return actor, str(record[f"{actor}_id"]), target, str(record[f"{target}_id"])

    def _role_id(self, conn: Connection, record: Mapping[str, Any]) -> str:
        """The destination role: the mapped custom role, or the global role of that name."""
        if record.get("role_id"):
            return str(record["role_id"])
        for role in _listing(conn, f"/roles?name={segment(str(record['role_name']))}", "roles"):
            if role.get("domain_id") in (None, "<<null>>"):
                return str(role["id"])
        raise ConflictError(
            f"role assignment {self.identity(record)!r}: the destination has no role "
            f"{record['role_name']!r}; create it there (or move it with --identity), then re-run"
        )

    def _destination_key(self, conn: Connection, record: Mapping[str, Any]) -> str:
        actor, actor_id, target, target_id = self._actor_target(record)
        role_id = self._role_id(conn, record)
        return _key(actor, actor_id, target, target_id, role_id, bool(record.get("inherited")))

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        key = self._destination_key(conn, record)
        response = conn.identity.request(grant_url(*_parse(key)), "HEAD")
        if response.status_code == 404:
            return None
        call_ok(response)
        return {"id": key}

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """One listing of the destination's direct assignments and one of its roles."""
        roles = {
            name: role_id
            for role_id, (name, domain) in self._roles(_listing(conn, "/roles", "roles")).items()
            if domain is None
        }
        present = {_key(*row) for row in self._rows(conn)}
        found: builtins.list[Record | None] = []
        for record in records:
            role_id = record.get("role_id") or roles.get(str(record["role_name"]))
            if role_id is None:
                found.append(None)  # create says what is missing
                continue
            actor, actor_id, target, target_id = self._actor_target(record)
            key = _key(actor, actor_id, target, target_id, str(role_id), bool(record["inherited"]))
            found.append({"id": key} if key in present else None)
        return found

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        key = self._destination_key(conn, record)
        call(conn.identity, "PUT", grant_url(*_parse(key)))
        return key

    def delete(self, conn: Connection, destination_id: str) -> None:
        call(conn.identity, "DELETE", grant_url(*_parse(destination_id)), missing_ok=True)
