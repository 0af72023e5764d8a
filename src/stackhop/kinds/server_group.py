"""``nova.server_group``: server groups, their policy and rules (not their members).

A record carries what a group's owner chose: its ``name``, its ``policy``
(``affinity``, ``anti-affinity``, ``soft-affinity``, ``soft-anti-affinity``)
and its ``rules`` (``max_server_per_host`` of an anti-affinity group, compute
microversion 2.64). Clouds older than 2.64 answer with a ``policies`` list of
one policy and no rules; the record is the same either way. Members are not
carried: servers do not move (yet), and a group's members are servers of the
cloud it is on.

Ownership. The project is mapped like every project reference. Nova takes a
new group's project and user from the token, never from the request, so the
group is created with a connection of the importing user scoped to the mapped
project (that user needs a role there), and its user on the destination is
the importing user: the source owner (``user_id``, ``user_name``) is kept in
the archive as a source-only fact, as Nova's API cannot set it.

Identity and matching. Nova lets names repeat and a server group has no
description to carry stackhop's marker (its ``metadata`` is ignored), so a
group's identity is ``<domain>/<project>/<name>/<source id>`` and its
destination counterpart is the group of the same name in the mapped project,
preferring one with the same policy and rules. Source groups of one name in
one project are paired with the destination's in order (groups with the same
name, policy and rules are interchangeable while members do not move), so a
re-run, with the journal or without, creates none twice. A counterpart with
another policy or rules is a conflict: Nova cannot change a group in place.
Rollback deletes only what the run created (the journal says which) and
refuses a group that has members by then.

``--via db`` reads Nova API's ``instance_groups`` and ``instance_group_policy``
(Liberty's cell database held them, with soft-deleted rows and no rules:
decided by reflection).
"""

from __future__ import annotations

import builtins
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from openstack import exceptions as sdk_exceptions

from stackhop.clouds import scoped_connection
from stackhop.errors import ConflictError
from stackhop.kinds import register
from stackhop.kinds.base import Connection, ExportScope, Kind, Record, SqlSource
from stackhop.kinds.identity import PROJECT
from stackhop.kinds.rest import call, segment

#: ``policy`` and ``rules`` (2.64), with ``project_id`` and ``user_id`` (2.13).
MICROVERSION = "2.64"
#: Before 2.64: ``policies`` (a list of one), no rules; still with the owner (2.13).
LEGACY_MICROVERSION = "2.13"
#: Groups per listing request (Nova's default ``max_limit``).
PAGE = 1000


def _rules(rules: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Rules as one form whatever their source: Nova accepts ``max_server_per_host`` as a
    number or a string of digits and keeps it as given; the database holds JSON text."""
    if isinstance(rules, str):
        rules = json.loads(rules) if rules.strip() else {}
    result: dict[str, Any] = {}
    for key, value in (rules or {}).items():
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        result[str(key)] = value
    return dict(sorted(result.items()))


def _policy(group: Mapping[str, Any]) -> str:
    """The group's policy: ``policy`` from 2.64 on, else the one entry of ``policies``."""
    if group.get("policy"):
        return str(group["policy"])
    policies = group.get("policies") or []
    return str(policies[0]) if policies else ""


def server_group_record(
    group: Mapping[str, Any],
    project: Mapping[str, Any] | None,
    user: Mapping[str, Any] | None,
) -> Record:
    """The archive record of one group (the API and the database export both build it here).

    ``group`` holds ``id``, ``name``, ``project_id``, ``user_id`` and either ``policy`` and
    ``rules`` or ``policies``, as Nova's API shows them.
    """
    return {
        "id": str(group["id"]),
        "name": group["name"] or "",
        "policy": _policy(group),
        "rules": _rules(group.get("rules")),
        "project_id": group["project_id"],
        "project_name": project["name"] if project else group["project_id"],
        "project_domain": project["domain_name"] if project else "?",
        "user_id": group["user_id"],
        "user_name": user["name"] if user else group["user_id"],
        "user_domain": user["domain_name"] if user else "?",
    }


def _listing(conn: Connection) -> builtins.list[dict[str, Any]]:
    """Every server group of the cloud (all projects), as the API shows them, page by page.

    A cloud older than microversion 2.64 refuses it (406): then it is asked at 2.13.
    """
    try:
        return _pages(conn, MICROVERSION)
    except sdk_exceptions.HttpException as exc:
        if exc.status_code != 406:
            raise
        return _pages(conn, LEGACY_MICROVERSION)


def _pages(conn: Connection, microversion: str) -> builtins.list[dict[str, Any]]:
    groups: builtins.list[dict[str, Any]] = []
    while True:
        url = f"/os-server-groups?all_projects=True&limit={PAGE}&offset={len(groups)}"
        page = (call(conn.compute, "GET", url, microversion=microversion) or {}).get(
            "server_groups", []
        )
        groups.extend(page)
        if len(page) < PAGE:
            return groups


def _view(group: Mapping[str, Any]) -> Record:
    """A destination group as a record (what ``compare`` looks at)."""
    return {
        "id": group["id"],
        "name": group["name"],
        "policy": _policy(group),
        "rules": _rules(group.get("rules")),
        "project_id": group["project_id"],
        "user_id": group.get("user_id"),
        "members": builtins.list(group.get("members") or []),
    }


def _same_kind(record: Mapping[str, Any], group: Mapping[str, Any]) -> bool:
    return record["policy"] == _policy(group) and record["rules"] == _rules(group.get("rules"))


def pair(
    records: Sequence[Mapping[str, Any]], groups: Sequence[Mapping[str, Any]]
) -> builtins.list[Record | None]:
    """Each resolved record's destination group, or None.

    Groups are candidates when they have the record's name in its (mapped) project. Records
    take them in source-ID order, first those with the same policy and rules, then any left
    (a conflict, as Nova cannot change them); no group is taken twice.
    """
    candidates: dict[tuple[str, str], builtins.list[Mapping[str, Any]]] = defaultdict(
        builtins.list
    )
    for group in groups:
        candidates[(str(group["project_id"]), str(group["name"]))].append(group)
    found: builtins.list[Record | None] = [None] * len(records)
    taken: set[str] = set()
    order = sorted(range(len(records)), key=lambda i: str(records[i]["id"]))
    for exact in (True, False):
        for index in order:
            record = records[index]
            if found[index] is not None:
                continue
            for group in candidates[(str(record["project_id"]), str(record["name"]))]:
                if group["id"] in taken or (exact and not _same_kind(record, group)):
                    continue
                found[index] = _view(group)
                taken.add(str(group["id"]))
                break
    return found


@register
class ServerGroup(Kind):
    name = "nova.server_group"
    service = "compute"
    references = {"project_id": PROJECT}
    portable_fields = ("name", "policy", "rules", "project_id")
    source_only_fields = ("user_id", "user_name", "user_domain", "project_name", "project_domain")
    updatable = False
    selectors = {"server-groups": "server groups: policy and rules, not their members"}
    transfer = True

    def identity(self, record: Mapping[str, Any]) -> str:
        return (
            f"{record['project_domain']}/{record['project_name']}/{record['name']}/{record['id']}"
        )

    def normalize(self, field: str, value: Any) -> Any:
        if field == "rules":
            return _rules(value)
        return super().normalize(field, value)

    # -- reading ----------------------------------------------------------------

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """The groups of ``projects`` (``identity.project`` records); owners from ``users``."""
        projects = {p["id"]: p for p in filters["projects"]}
        users = {u["id"]: u for u in filters.get("users", ())}
        for group in _listing(conn):
            if group["project_id"] in projects:
                yield server_group_record(
                    group, projects[group["project_id"]], users.get(group["user_id"])
                )

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        return self.list(conn, projects=scope.projects, users=scope.users)

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        projects = {p["id"]: p for p in scope.projects}
        users = {u["id"]: u for u in scope.users}
        policies: dict[int, builtins.list[Any]] = defaultdict(builtins.list)
        groups_sql, policies_sql = _sql(db)
        database = _database(db)
        for row in db.query(database, policies_sql):
            policies[row.group_id].append(row)
        for row in db.query(database, groups_sql):
            if row.project_id not in projects:
                continue
            rows = policies.get(row.id, [])
            group = {
                "id": row.uuid,
                "name": row.name,
                "project_id": row.project_id,
                "user_id": row.user_id,
                "policies": [p.policy for p in rows],
                "rules": rows[0].rules if rows else None,
            }
            yield server_group_record(group, projects[row.project_id], users.get(row.user_id))

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """One listing of every group for all records."""
        return pair(records, _listing(conn))

    # -- writing ----------------------------------------------------------------

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        body: dict[str, Any] = {"name": record["name"], "policy": record["policy"]}
        if record.get("rules"):
            body["rules"] = dict(record["rules"])
        scoped = scoped_connection(
            conn, str(record["project_id"]), purpose="create its server groups", role="member"
        )
        created = call(
            scoped.compute,
            "POST",
            "/os-server-groups",
            json={"server_group": body},
            microversion=MICROVERSION,
        )
        return str(created["server_group"]["id"])

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Delete a group the run created, unless servers have joined it since."""
        url = f"/os-server-groups/{segment(destination_id)}"
        body = call(conn.compute, "GET", url, microversion=MICROVERSION, missing_ok=True)
        if body is None:
            return
        members = body["server_group"].get("members") or []
        if members:
            raise ConflictError(
                f"server group {destination_id} has {len(members)} member(s) on the destination "
                "now; it is left in place (delete it by hand once they are gone)"
            )
        call(conn.compute, "DELETE", url, microversion=MICROVERSION, missing_ok=True)


def _database(db: SqlSource) -> str:
    """Nova API's database, or Liberty's cell database where the groups lived then."""
    from stackhop.dbexport import DatabaseReader

    if not isinstance(db, DatabaseReader):
        return "nova_api"
    if db.configured("nova_api") and db.columns("nova_api", "instance_groups") is not None:
        return "nova_api"
    return "nova"


def _sql(db: SqlSource) -> tuple[str, str]:
    """The SELECTs of the groups and of their policies, for today's schema or Liberty's.

    Today: ``instance_group_policy`` has one row per group with ``rules`` (JSON text).
    Liberty: rows may be soft-deleted (``deleted``), and there are no rules.
    """
    from stackhop.dbexport import DatabaseReader, live

    groups = "SELECT id, uuid, name, project_id, user_id FROM instance_groups"
    policies = "SELECT group_id, policy, rules FROM instance_group_policy ORDER BY id"
    if not isinstance(db, DatabaseReader):
        return f"{groups} ORDER BY id", policies
    database = _database(db)
    group_columns = db.require(
        database, "instance_groups", {"id", "uuid", "name", "project_id", "user_id"}
    )
    policy_columns = db.require(database, "instance_group_policy", {"group_id", "policy"})
    rules = "rules" if "rules" in policy_columns else "NULL AS rules"
    return (
        f"{groups} WHERE {live(group_columns)} ORDER BY id",
        f"SELECT group_id, policy, {rules} FROM instance_group_policy "
        f"WHERE {live(policy_columns)} ORDER BY id",
    )
