"""Subnet pools: ``neutron.subnet_pool``.

A subnet pool holds the prefixes subnets are carved from. It moves with the
networks (``--networks``): its prefixes, default/min/max prefix lengths,
default quota, description and whether it is shared; subnets made from it are
created from the destination's copy, with their own CIDR asked for explicitly
(Neutron then checks it lies within the pool and overlaps nothing the pool
gave out).

Like networks, a pool of an exported project is matched by the marker stamped
into its description, never by name. A **shared** pool of a project the export
does not cover is provider infrastructure (the way external networks are): it
is exported with any project, and a shared destination pool of the same name is
adopted, else it is created.

Left as the destination has them: ``is_default`` (one default pool per IP
version and cloud, the destination's choice) and the address scope (not
moved; a pool is created without one). A pool whose prefixes differ on the
destination is reported (``verify``), never shrunk or grown in place.

``--via db`` reads Neutron's ``subnetpools``, ``subnetpoolprefixes`` and
``subnetpoolrbacs`` tables (the ``shared`` column before Ussuri added RBAC for
pools), the description from ``standardattributes``.
"""

from __future__ import annotations

import builtins
import ipaddress
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from stackhop.kinds import register
from stackhop.kinds._neutron import SUBNET_POOL, by_marker, project_facts
from stackhop.kinds.base import Connection, ExportScope, Record, SqlSource
from stackhop.kinds.identity import PROJECT
from stackhop.kinds.network import NETWORK_HELP, _in_scope, _Marked, _scoped
from stackhop.kinds.rest import call, paged

#: Fields a create sends as they are (besides name, description, prefixes and project).
_SETTINGS = ("default_prefixlen", "min_prefixlen", "max_prefixlen", "default_quota", "shared")


def _prefixes(prefixes: Any) -> builtins.list[str]:
    """The prefixes in canonical form and a stable order."""
    networks = sorted(
        (ipaddress.ip_network(p, strict=False) for p in prefixes or []),
        key=lambda n: (n.version, n),
    )
    return [str(n) for n in networks]


def pool_record(pool: Mapping[str, Any], project: Mapping[str, Any] | None) -> Record:
    """The archive record of one subnet pool."""
    quota = pool.get("default_quota")
    return {
        "id": pool["id"],
        "name": pool["name"],
        "description": pool.get("description") or "",
        "prefixes": _prefixes(pool.get("prefixes")),
        "default_prefixlen": int(pool["default_prefixlen"]),
        "min_prefixlen": int(pool["min_prefixlen"]),
        "max_prefixlen": int(pool["max_prefixlen"]),
        "default_quota": None if quota is None else int(quota),
        "shared": bool(pool.get("shared", False)),
        "ip_version": int(pool["ip_version"]),
        "is_default": bool(pool.get("is_default", False)),
        "address_scope_id": pool.get("address_scope_id"),
        **project_facts(project, pool["project_id"]),
    }


def _exported(pool: Mapping[str, Any], projects: Mapping[str, Any]) -> bool:
    """A pool of an exported project, or a shared one (provider infrastructure)."""
    return pool["project_id"] in projects or bool(pool.get("shared"))


@register
class SubnetPool(_Marked):
    name = SUBNET_POOL
    service = "network"
    collection, singular = "subnetpools", "subnetpool"
    references = {"project_id": PROJECT}
    portable_fields = (
        "name",
        "description",
        "prefixes",
        "default_prefixlen",
        "min_prefixlen",
        "max_prefixlen",
        "default_quota",
        "shared",
    )
    source_only_fields = (
        "ip_version",
        "is_default",
        "address_scope_id",
        "project_name",
        "project_domain",
    )
    put_fields = ("name", "default_prefixlen", "min_prefixlen", "max_prefixlen", "default_quota")
    selectors = {"networks": NETWORK_HELP}
    transfer = True

    def normalize(self, field: str, value: Any) -> Any:
        if field == "prefixes":
            return _prefixes(value)
        return super().normalize(field, value)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        projects = _in_scope(scope)
        for pool in paged(conn.network, "/subnetpools", "subnetpools"):
            if _exported(pool, projects):
                yield pool_record(_scoped(pool, projects), projects.get(pool["project_id"]))

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        projects = {p["id"]: p for p in filters["projects"]}
        for pool in paged(conn.network, "/subnetpools", "subnetpools"):
            if pool["project_id"] in projects:
                yield pool_record(pool, projects[pool["project_id"]])

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        projects = _in_scope(scope)
        prefixes: dict[str, builtins.list[str]] = defaultdict(builtins.list)
        for row in db.query("neutron", "SELECT subnetpool_id, cidr FROM subnetpoolprefixes"):
            prefixes[row.subnetpool_id].append(row.cidr)
        shared = _shared_in_db(db)
        rows = db.query(
            "neutron",
            "SELECT p.id, p.project_id, p.name, p.ip_version, p.default_prefixlen, "
            "p.min_prefixlen, p.max_prefixlen, p.default_quota, p.is_default, "
            "p.address_scope_id, p.shared, s.description FROM subnetpools p "
            "JOIN standardattributes s ON s.id = p.standard_attr_id ORDER BY s.id",
        )
        for row in rows:
            pool = {
                **row._asdict(),
                "prefixes": prefixes.get(row.id, []),
                "shared": row.id in shared if shared is not None else bool(row.shared),
            }
            if _exported(pool, projects):
                yield pool_record(_scoped(pool, projects), projects.get(row.project_id))

    def _view(self, pool: Mapping[str, Any]) -> Record:
        return pool_record(pool, None)

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """Every destination pool in one listing: by marker, a provider's shared one by name."""
        pools = list(paged(conn.network, "/subnetpools", "subnetpools"))
        marked = by_marker(pools)
        shared = {p["name"]: p for p in pools if p.get("shared")}
        found: builtins.list[Record | None] = []
        for record in records:
            pool = marked.get(str(record["id"]))
            if pool is None and record.get("project_id") is None:
                pool = shared.get(record["name"])
            found.append(self._view(pool) if pool is not None else None)
        return found

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        body: dict[str, Any] = {
            "name": record["name"],
            "description": self.stamp(record.get("description"), record),
            "prefixes": list(record["prefixes"]),
            **{f: record[f] for f in _SETTINGS if record.get(f) is not None},
        }
        if record.get("project_id"):
            body["project_id"] = record["project_id"]
        created = call(conn.network, "POST", "/subnetpools", json={"subnetpool": body})
        return str(created["subnetpool"]["id"])


def _shared_in_db(db: SqlSource) -> set[str] | None:
    """The pools shared with every project by RBAC (Ussuri and later), or None when the
    schema predates ``subnetpoolrbacs`` (then the pool row's ``shared`` column says it)."""
    from stackhop.dbexport import DatabaseReader

    if isinstance(db, DatabaseReader) and db.columns("neutron", "subnetpoolrbacs") is None:
        return None
    return {
        r.object_id
        for r in db.query(
            "neutron",
            "SELECT object_id FROM subnetpoolrbacs "
            "WHERE action = 'access_as_shared' AND target_project = '*'",
        )
    }
