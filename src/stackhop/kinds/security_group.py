"""Security groups and their rules: ``neutron.security_group``, ``neutron.security_group_rules``.

Names repeat (a project may hold two groups called ``web``), so a group's
identity is ``<domain>/<project>/<name>/<source id>`` and its destination
counterpart is found only by the marker stackhop stamps into the description
of the groups it creates (``[stackhop-source:<source id>]``), never by name:
a destination group of the same name that stackhop did not create is left
alone. The stamp is part of the create request itself, so even with the
journal lost a re-run finds every group it made and creates none twice.

A project's ``default`` group is merged: it is matched with the destination
project's own ``default`` (which Neutron creates on first listing) and only
its missing rules are added.

Rules travel as one ``neutron.security_group_rules`` record per group, applied
after every group exists (the kind depends on the group kind), so a rule that
names a remote group is re-pointed to that group's destination ID. The missing
rules of a group are created in one bulk request, which Neutron applies in
one transaction: after a kill either all of them exist or none. A rule is
identified by its content (Neutron refuses duplicates), so a re-run adds
exactly what is still missing. Rules stackhop adds carry the marker of their
source rule in their description, which is how rollback finds them. On
rollback, the rules of a group stackhop created go with the group
(``deleted_with``); rules it added to a group that was there before are
removed one by one.

``--via db`` reads Neutron's ``securitygroups`` and ``securitygrouprules``
tables, today's schema (``project_id``, descriptions in ``standardattributes``)
or Liberty's (``tenant_id``, the group's description on its row, rules
without descriptions, every group stateful), decided by reflection.
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from openstack import exceptions as sdk_exceptions

from stackhop.errors import ConflictError
from stackhop.kinds import register
from stackhop.kinds.base import (
    Connection,
    Difference,
    ExportScope,
    Kind,
    Record,
    SqlSource,
    concurrently,
)
from stackhop.kinds.identity import PROJECT
from stackhop.kinds.rest import call, paged

GROUP = "neutron.security_group"
RULES = "neutron.security_group_rules"
DEFAULT = "default"
SELECTOR_HELP = "security groups and their rules"

#: Rule fields compared between clouds (with the remote group mapped); descriptions are not.
RULE_FIELDS = (
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
)

Rules = list[Any]
"""Neutron rule dicts as the API returns them."""


def _project_facts(project: Mapping[str, Any] | None, project_id: str) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "project_name": project["name"] if project else project_id,
        "project_domain": project["domain_name"] if project else "?",
    }


def group_record(group: Mapping[str, Any], project: Mapping[str, Any] | None) -> Record:
    """The archive record of one group, without its rules."""
    return {
        "id": group["id"],
        "name": group["name"],
        "description": group.get("description") or "",
        "stateful": bool(group.get("stateful", True)),
        **_project_facts(project, group["project_id"]),
    }


def rules_record(
    group: Mapping[str, Any], rules: Iterable[Mapping[str, Any]], project: Mapping[str, Any] | None
) -> Record:
    """The archive record of one group's rules; a remote group is an index.

    Each rule's ``remote_group`` indexes ``remote_group_ids``.

    The indirection lets the resolver map ``remote_group_ids`` like any other
    reference list while each rule keeps pointing at its entry.
    """
    ordered = sorted(rules, key=lambda r: (_content(r, r.get("remote_group_id")), r["id"]))
    remotes = sorted({r["remote_group_id"] for r in ordered if r.get("remote_group_id")})
    return {
        "id": group["id"],
        "security_group_id": group["id"],
        "group_name": group["name"],
        "remote_group_ids": remotes,
        "rules": [
            {
                "id": r["id"],
                **{f: _normal(f, r.get(f)) for f in RULE_FIELDS},
                "remote_group": (
                    remotes.index(r["remote_group_id"]) if r.get("remote_group_id") else None
                ),
                "description": r.get("description") or "",
            }
            for r in ordered
        ],
        **_project_facts(project, group["project_id"]),
    }


def _normal(field: str, value: Any) -> Any:
    if field == "protocol" and isinstance(value, str):
        return value.lower()
    return value


def _content(rule: Mapping[str, Any], remote_group_id: str | None) -> tuple[Any, ...]:
    """What makes a rule the rule it is (Neutron's duplicate check looks at the same)."""
    return (*(str(_normal(f, rule.get(f))) for f in RULE_FIELDS), str(remote_group_id))


def _wanted(record: Mapping[str, Any]) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    """The resolved record's rules by content, remote groups as destination IDs."""
    remotes = record["remote_group_ids"]
    wanted = {}
    for rule in record["rules"]:
        index = rule.get("remote_group")
        wanted[_content(rule, None if index is None else remotes[index])] = rule
    return wanted


def _marked(description: str | None, source_id: str) -> bool:
    return Kind.marked_source_id(description) == source_id


@register
class SecurityGroup(Kind):
    name = GROUP
    service = "network"
    references = {"project_id": PROJECT}
    portable_fields = ("name", "description", "stateful")
    source_only_fields = ("project_name", "project_domain")
    selectors = {"security-groups": SELECTOR_HELP}
    transfer = True

    def identity(self, record: Mapping[str, Any]) -> str:
        return (
            f"{record['project_domain']}/{record['project_name']}/{record['name']}/{record['id']}"
        )

    def normalize(self, field: str, value: Any) -> Any:
        if field == "description":
            return Kind.unstamp(value)
        return super().normalize(field, value)

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """Every group of the projects in ``projects`` (``identity.project`` records)."""
        projects = {p["id"]: p for p in filters["projects"]}
        for group in paged(conn.network, "/security-groups", "security_groups"):
            if group["project_id"] in projects:
                yield group_record(group, projects[group["project_id"]])

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        by_id = {p["id"]: p for p in scope.projects}
        for row in db.query("neutron", _groups_sql(db)):
            if row.project_id in by_id:
                yield group_record(row._asdict(), by_id[row.project_id])

    def _view(self, group: Mapping[str, Any]) -> Record:
        return {
            "id": group["id"],
            "name": group["name"],
            "description": group.get("description") or "",
            "stateful": bool(group.get("stateful", True)),
            "project_id": group["project_id"],
        }

    def _match(
        self, record: Mapping[str, Any], groups: Iterable[Mapping[str, Any]]
    ) -> Record | None:
        for group in groups:
            if group["project_id"] != record["project_id"]:
                continue
            if record["name"] == DEFAULT and group["name"] == DEFAULT:
                return self._view(group)
            if _marked(group.get("description"), record["id"]):
                return self._view(group)
        return None

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self._match(record, _groups_of(conn, str(record["project_id"])))

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """The groups of the records' projects in a few listings; ``default`` groups not there
        yet are asked for project by project, which makes Neutron create them."""
        groups = _listed(conn, "/security-groups", "security_groups", "project_id", records)
        by_project: dict[str, builtins.list[Mapping[str, Any]]] = defaultdict(builtins.list)
        for group in groups:
            by_project[group["project_id"]].append(group)
        found = [self._match(r, by_project.get(r["project_id"], [])) for r in records]
        missing = sorted(
            {str(r["project_id"]) for r, f in zip(records, found, strict=True) if f is None}
            & {str(r["project_id"]) for r in records if r["name"] == DEFAULT}
        )
        for project_groups in concurrently(workers, lambda p: _groups_of(conn, p), missing):
            for group in project_groups:
                by_project[group["project_id"]].append(group)
        return [
            f
            if f is not None or r["name"] != DEFAULT
            else self._match(r, by_project[r["project_id"]])
            for r, f in zip(records, found, strict=True)
        ]

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        if record["name"] == DEFAULT:
            found = self.find(conn, record)
            if found is not None:
                return str(found["id"])
        body = call(
            conn.network,
            "POST",
            "/security-groups",
            json={
                "security_group": {
                    "name": record["name"],
                    "description": self.stamp(record.get("description"), record),
                    "stateful": record.get("stateful", True),
                    "project_id": record["project_id"],
                }
            },
        )
        return str(body["security_group"]["id"])

    def update(
        self, conn: Connection, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> None:
        description = record.get("description") or ""
        if existing["name"] != DEFAULT:
            description = self.stamp(description, record)
        call(
            conn.network,
            "PUT",
            f"/security-groups/{existing['id']}",
            json={
                "security_group": {
                    "name": record["name"],
                    "description": description,
                }
            },
        )

    def restore(self, conn: Connection, before: Mapping[str, Any]) -> None:
        """Put back the name and description an ``--overwrite`` changed (rollback)."""
        call(
            conn.network,
            "PUT",
            f"/security-groups/{before['id']}",
            json={
                "security_group": {
                    "name": before["name"],
                    "description": before.get("description") or "",
                }
            },
        )

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Delete a group stackhop created; one without a stackhop marker is refused."""
        body = call(conn.network, "GET", f"/security-groups/{destination_id}", missing_ok=True)
        if body is None:
            return
        if Kind.marked_source_id(body["security_group"].get("description")) is None:
            raise ConflictError(
                f"security group {destination_id} carries no stackhop marker; it was not "
                "created by stackhop, so it is left in place"
            )
        call(conn.network, "DELETE", f"/security-groups/{destination_id}", missing_ok=True)


@register
class SecurityGroupRules(Kind):
    """All rules of one group; ``find`` returns the group only when no source rule is missing."""

    name = RULES
    service = "network"
    references = {
        "security_group_id": GROUP,
        "remote_group_ids": GROUP,
        "project_id": PROJECT,
    }
    portable_fields = ("rules",)
    source_only_fields = ("group_name", "project_name", "project_domain")
    updatable = False
    selectors = {"security-groups": SELECTOR_HELP}
    transfer = True
    deleted_with = GROUP

    def identity(self, record: Mapping[str, Any]) -> str:
        return (
            f"{record['project_domain']}/{record['project_name']}/{record['group_name']}"
            f"/{record['id']}"
        )

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """The rules of every group in ``groups`` (``neutron.security_group`` records)."""
        groups = {g["id"]: g for g in filters["groups"]}
        projects = {p["id"]: p for p in filters["projects"]}
        by_group: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for rule in paged(conn.network, "/security-group-rules", "security_group_rules"):
            if rule["security_group_id"] in groups:
                by_group[rule["security_group_id"]].append(rule)
        for group_id, group in groups.items():
            yield rules_record(group, by_group.get(group_id, []), projects.get(group["project_id"]))

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        return self.list(conn, groups=scope.exported.get(GROUP, []), projects=scope.projects)

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        by_id = {g["id"]: g for g in scope.exported.get(GROUP, [])}
        by_project = {p["id"]: p for p in scope.projects}
        by_group: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in db.query("neutron", _rules_sql(db)):
            if row.security_group_id in by_id:
                by_group[row.security_group_id].append(row._asdict())
        for group_id, group in by_id.items():
            yield rules_record(
                group, by_group.get(group_id, []), by_project.get(group["project_id"])
            )

    # -- comparing ------------------------------------------------------------

    def _state(self, record: Mapping[str, Any], group: Mapping[str, Any], rules: Rules) -> Record:
        """The destination group's rules as a record: what is missing and what is extra."""
        wanted = _wanted(record)
        have = {_content(r, r.get("remote_group_id")): r for r in rules}
        # Only on a group stackhop created do extra rules (Neutron's automatic egress
        # rules the source had deleted) count; elsewhere the destination's rules stay.
        own = _marked(group.get("description"), record["security_group_id_source"])
        extra = [r for key, r in have.items() if key not in wanted] if own else []
        return {
            "id": group["id"],
            "security_group_id": group["id"],
            "missing": [rule for key, rule in wanted.items() if key not in have],
            "extra": extra,
        }

    def compare(
        self, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> builtins.list[Difference]:
        differences = []
        if existing.get("missing"):
            differences.append(Difference("rules", existing["missing"], "missing"))
        if existing.get("extra"):
            differences.append(Difference("rules", "absent", existing["extra"]))
        return differences

    def _rules_of(self, conn: Connection, group_id: str) -> Rules:
        url = f"/security-group-rules?security_group_id={group_id}"
        return paged(conn.network, url, "security_group_rules")

    def _group(self, conn: Connection, group_id: str) -> Mapping[str, Any] | None:
        body = call(conn.network, "GET", f"/security-groups/{group_id}", missing_ok=True)
        return None if body is None else body["security_group"]

    def observe(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        """The destination group's rules compared with the record (None: no such group)."""
        group = self._group(conn, record["security_group_id"])
        if group is None:
            return None
        return self._state(_with_source(record), group, self._rules_of(conn, group["id"]))

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        state = self.observe(conn, record)
        if state is None or state["missing"] or state["extra"]:
            return None
        return state

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """The records' groups and their rules in a few listings (filtered by group ID)."""
        groups = {
            g["id"]: g
            for g in _listed(
                conn, "/security-groups", "security_groups", "id", records, "security_group_id"
            )
        }
        rules: dict[str, Rules] = defaultdict(builtins.list)
        for rule in _listed(
            conn,
            "/security-group-rules",
            "security_group_rules",
            "security_group_id",
            [{"security_group_id": gid} for gid in groups],
        ):
            rules[rule["security_group_id"]].append(rule)
        found: builtins.list[Record | None] = []
        for record in records:
            group = groups.get(record["security_group_id"])
            state = None
            if group is not None:
                state = self._state(_with_source(record), group, rules.get(group["id"], []))
            found.append(None if state is None or state["missing"] or state["extra"] else state)
        return found

    # -- writing --------------------------------------------------------------

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        """Add the group's missing rules in one request; drop extras on groups stackhop made.

        The common case, a group this run just created, is sent optimistically:
        every source rule except the egress pair Neutron adds to a new group, in
        one bulk request and without reading the group first. If any of those
        rules exists already Neutron refuses the whole bulk (409, nothing
        created); then the group's rules are read and only the missing ones sent.
        """
        group_id = str(record["security_group_id"])
        rules = record["rules"]
        if sum(1 for rule in rules if _automatic_egress(rule)) == 2:
            try:
                self._post(conn, record, [r for r in rules if not _automatic_egress(r)])
                return group_id
            except sdk_exceptions.ConflictException:
                pass  # some rule is there already: look, then send what is missing
        state = self.observe(conn, record)
        if state is None:
            raise ConflictError(
                f"{self.name} {self.identity(record)!r}: group {group_id} is gone from the "
                "destination; re-run the import to create it again"
            )
        self._post(conn, record, state["missing"])
        for rule in state["extra"]:
            call(conn.network, "DELETE", f"/security-group-rules/{rule['id']}", missing_ok=True)
        return group_id

    def _post(self, conn: Connection, record: Mapping[str, Any], rules: Rules) -> None:
        remotes = record["remote_group_ids"]
        bodies = [
            {
                "security_group_id": record["security_group_id"],
                "project_id": record["project_id"],
                **{f: rule.get(f) for f in RULE_FIELDS},
                "remote_group_id": (
                    None if rule.get("remote_group") is None else remotes[rule["remote_group"]]
                ),
                "description": self.stamp(rule.get("description"), rule),
            }
            for rule in rules
        ]
        if bodies:
            call(
                conn.network, "POST", "/security-group-rules", json={"security_group_rules": bodies}
            )

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Remove the rules stackhop added to group ``destination_id`` (rollback)."""
        for rule in self._rules_of(conn, destination_id):
            if Kind.marked_source_id(rule.get("description")) is not None:
                call(conn.network, "DELETE", f"/security-group-rules/{rule['id']}", missing_ok=True)


def _automatic_egress(rule: Mapping[str, Any]) -> bool:
    """One of the two rules (IPv4, IPv6) Neutron gives every new group: egress to anywhere."""
    return rule["direction"] == "egress" and all(
        rule.get(f) is None
        for f in (
            "protocol",
            "port_range_min",
            "port_range_max",
            "remote_ip_prefix",
            "remote_group",
        )
    )


def _groups_sql(db: SqlSource) -> str:
    """The SELECT of every group, for today's schema or Liberty's (decided by reflection).

    Today: ``project_id``, ``stateful`` and the description in
    ``standardattributes``. Liberty: ``tenant_id``, the description on the
    group row (moved to ``standardattributes`` by Mitaka's ``4ffceebfcdc``),
    no ``stateful`` (every group was stateful).
    """
    from stackhop.dbexport import DatabaseReader

    if not isinstance(db, DatabaseReader):
        return (
            "SELECT g.id, g.project_id, g.name, g.stateful, s.description "
            "FROM securitygroups g JOIN standardattributes s ON s.id = g.standard_attr_id "
            "ORDER BY s.id"
        )
    columns = db.require("neutron", "securitygroups", {"id", "name"})
    project = "g.project_id" if "project_id" in columns else "g.tenant_id"
    db.require("neutron", "securitygroups", {project[2:]})
    stateful = "g.stateful" if "stateful" in columns else "TRUE"
    if "standard_attr_id" in columns:
        db.require("neutron", "standardattributes", {"id", "description"})
        return (
            f"SELECT g.id, {project} AS project_id, g.name, {stateful} AS stateful, "
            "s.description FROM securitygroups g "
            "JOIN standardattributes s ON s.id = g.standard_attr_id ORDER BY s.id"
        )
    description = "g.description" if "description" in columns else "NULL"
    return (
        f"SELECT g.id, {project} AS project_id, g.name, {stateful} AS stateful, "
        f"{description} AS description FROM securitygroups g ORDER BY g.id"
    )


#: The rule columns read from ``securitygrouprules`` besides the description.
_RULE_COLUMNS = ("id", "security_group_id", "remote_group_id", *RULE_FIELDS)


def _rules_sql(db: SqlSource) -> str:
    """The SELECT of every rule, for today's schema or Liberty's (decided by reflection).

    A Liberty rule has no description (rule descriptions came with Mitaka's
    ``standardattributes.description``): it is read as empty.
    """
    from stackhop.dbexport import DatabaseReader

    selected = ", ".join(f"r.{c}" for c in _RULE_COLUMNS)
    if not isinstance(db, DatabaseReader):
        return (
            f"SELECT {selected}, s.description "
            "FROM securitygrouprules r JOIN standardattributes s ON s.id = r.standard_attr_id"
        )
    columns = db.require("neutron", "securitygrouprules", set(_RULE_COLUMNS))
    if "standard_attr_id" in columns:
        db.require("neutron", "standardattributes", {"id", "description"})
        return (
            f"SELECT {selected}, s.description "
            "FROM securitygrouprules r JOIN standardattributes s ON s.id = r.standard_attr_id"
        )
    return f"SELECT {selected}, NULL AS description FROM securitygrouprules r"


#: Values per filter in one listing request (keeps the URL well under 8 KiB).
_FILTER_CHUNK = 40


def _groups_of(conn: Connection, project_id: str) -> Rules:
    # Listing one project's groups makes Neutron create its ``default`` if missing.
    return paged(conn.network, f"/security-groups?project_id={project_id}", "security_groups")


def _listed(
    conn: Connection,
    url: str,
    key: str,
    filter_name: str,
    records: Iterable[Mapping[str, Any]],
    field: str | None = None,
) -> Rules:
    """Every object of a Neutron listing whose ``filter_name`` is one of the records' values.

    ``field`` names the records' field holding the value (default: ``filter_name``).
    """
    values = sorted({str(r[field or filter_name]) for r in records})
    found: Rules = []
    for start in range(0, len(values), _FILTER_CHUNK):
        chunk = values[start : start + _FILTER_CHUNK]
        query = "&".join(f"{filter_name}={quote(v, safe='')}" for v in chunk)
        found.extend(paged(conn.network, f"{url}?{query}", key))
    return found


def _with_source(record: Mapping[str, Any]) -> Record:
    """The record plus its group's source ID (the marker of a group stackhop created)."""
    return {**record, "security_group_id_source": record["id"]}
