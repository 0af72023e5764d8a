"""Networks and subnets: ``neutron.network``, ``neutron.subnet``.

Names repeat (two ``net`` networks may live in one project), so a network's
identity is ``<domain>/<project>/<name>/<source id>`` and its destination
counterpart is found by the marker stackhop stamps into the description of
what it creates (``[stackhop-source:<source id>]``), never by name; the stamp
is part of the create request, so a re-run after a kill (journal or not)
finds the network and creates none twice. One exception: an **external**
network (``router:external``) is provider infrastructure that the projects'
routers and floating IPs use: it is exported with any project, and a
destination external network of the same name is adopted (the operator may
also pin it with ``--network-map``: ``networks: {src id: dst id}``).

Segments: a network bound to a physical network (``flat``, ``vlan``) is created
on the mapped physnet (``--network-map``: ``physnets: {src: dst}``; a physnet
no map names keeps its name). Segmentation IDs (VLAN, VXLAN, GRE, Geneve) are
allocated by the destination: the source's IDs say nothing about the
destination's ranges or what is taken there. ``--keep-segmentation-ids`` asks
for the source's IDs instead (overlay segments then become provider segments
of their type); an ID the destination refuses (taken) fails that network with
a one-line error naming the flag.

Subnets are matched the same way (marker, inside the mapped network) and carry
CIDR, gateway, allocation pools, DNS servers, host routes, DHCP and the IPv6
modes; a subnet of a subnet pool is made from the destination's copy of that pool
(:mod:`stackhop.kinds.subnet_pool`), its CIDR asked for explicitly.

``--via db`` reads Neutron's ``networks``, ``networksegments``,
``externalnetworks``, ``networkrbacs``, ``networksecuritybindings``,
``subnets``, ``ipallocationpools``, ``dnsnameservers`` and ``subnetroutes``
tables (descriptions from ``standardattributes``).
"""

from __future__ import annotations

import builtins
import json
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from openstack import exceptions as sdk_exceptions

from stackhop.errors import ConflictError
from stackhop.kinds import register
from stackhop.kinds._neutron import (
    NETWORK,
    PHYSNET,
    SUBNET,
    SUBNET_POOL,
    by_marker,
    find_marked,
    listed,
    neutron_error,
    project_facts,
)
from stackhop.kinds.base import Connection, ExportScope, Kind, Record, SqlSource
from stackhop.kinds.identity import PROJECT
from stackhop.kinds.rest import call, paged

NETWORK_HELP = "networks, their subnets and subnet pools"
KEEP_IDS_HELP = (
    "create networks with the source's segmentation IDs (VLAN, VXLAN, ...); default: "
    "the destination allocates them"
)
PHYSICAL = ("flat", "vlan")
"""Segment types bound to a physical network (created as provider segments on the mapped
physnet)."""


def _sorted_json(value: Any) -> Any:
    """A list of dicts in a stable order (for comparing pools, routes, segments)."""
    if isinstance(value, list | tuple):
        return sorted(json.dumps(v, sort_keys=True) for v in value)
    return value


def _segments(network: Mapping[str, Any]) -> list[dict[str, Any]]:
    if network.get("segments"):
        raw = network["segments"]
    else:
        raw = [network]
    return [
        {
            "network_type": s.get("provider:network_type"),
            "physical_network": s.get("provider:physical_network"),
            "segmentation_id": s.get("provider:segmentation_id"),
        }
        for s in raw
        if s.get("provider:network_type")
    ]


def network_record(
    network: Mapping[str, Any],
    project: Mapping[str, Any] | None,
    segments: builtins.list[dict[str, Any]],
) -> Record:
    """The archive record of one network."""
    physnets = sorted({s["physical_network"] for s in segments if s["physical_network"]})
    return {
        "id": network["id"],
        "name": network["name"],
        "description": network.get("description") or "",
        "admin_state_up": bool(network.get("admin_state_up", True)),
        "shared": bool(network.get("shared", False)),
        "external": bool(network.get("router:external", False)),
        "mtu": network.get("mtu"),
        "port_security_enabled": bool(network.get("port_security_enabled", True)),
        "physical_networks": physnets,
        "segments": sorted(segments, key=lambda s: json.dumps(s, sort_keys=True)),
        **project_facts(project, network["project_id"]),
    }


def subnet_record(subnet: Mapping[str, Any], project: Mapping[str, Any] | None) -> Record:
    """The archive record of one subnet."""
    return {
        "id": subnet["id"],
        "name": subnet["name"],
        "description": subnet.get("description") or "",
        "network_id": subnet["network_id"],
        "ip_version": int(subnet["ip_version"]),
        "cidr": subnet["cidr"],
        "gateway_ip": subnet.get("gateway_ip"),
        "enable_dhcp": bool(subnet.get("enable_dhcp", True)),
        "allocation_pools": sorted(
            ({"start": p["start"], "end": p["end"]} for p in subnet.get("allocation_pools") or []),
            key=lambda p: json.dumps(p, sort_keys=True),
        ),
        "dns_nameservers": list(subnet.get("dns_nameservers") or []),
        "host_routes": sorted(
            (
                {"destination": r["destination"], "nexthop": r["nexthop"]}
                for r in subnet.get("host_routes") or []
            ),
            key=lambda r: json.dumps(r, sort_keys=True),
        ),
        "ipv6_ra_mode": subnet.get("ipv6_ra_mode"),
        "ipv6_address_mode": subnet.get("ipv6_address_mode"),
        "subnetpool_id": subnet.get("subnetpool_id"),
        **project_facts(project, subnet["project_id"]),
    }


def wired_segments(record: Mapping[str, Any], keep_ids: bool) -> builtins.list[dict[str, Any]]:
    """The provider attributes of a resolved network record's segments, for its create request.

    Segments on a physical network go to the mapped physnet (``physical_networks`` is
    resolved, in the order of the source's sorted physnet names); segmentation IDs only
    with ``keep_ids``, which also makes overlay segments provider segments of their type.
    Other overlay segments are left to the destination's tenant network types.
    """
    source_physnets = sorted(
        {s["physical_network"] for s in record.get("segments", []) if s["physical_network"]}
    )
    mapped = dict(zip(source_physnets, record.get("physical_networks") or [], strict=False))
    wired = []
    for segment in record.get("segments", []):
        kept = keep_ids and segment.get("segmentation_id") is not None
        if segment["network_type"] not in PHYSICAL and not kept:
            continue
        attributes: dict[str, Any] = {"provider:network_type": segment["network_type"]}
        if segment["physical_network"]:
            attributes["provider:physical_network"] = mapped.get(segment["physical_network"])
        if kept:
            attributes["provider:segmentation_id"] = segment["segmentation_id"]
        wired.append(attributes)
    return wired


def _segment_ids(record: Mapping[str, Any]) -> str:
    """``vlan 120 on physnet1, vxlan 77``: the record's segmentation IDs, for messages."""
    return ", ".join(
        f"{s['network_type']} {s['segmentation_id']}"
        + (f" on {s['physical_network']}" if s["physical_network"] else "")
        for s in record.get("segments", [])
        if s.get("segmentation_id") is not None
    )


def _scoped(network: Mapping[str, Any], projects: Mapping[str, Any]) -> dict[str, Any]:
    """``network``, without its project when that project is not exported (an external
    network of the provider's: adopted by name, or created owned by stackhop's own project)."""
    if network["project_id"] in projects:
        return dict(network)
    return {**network, "project_id": None}


def _in_scope(scope: ExportScope) -> dict[str, Mapping[str, Any]]:
    return {p["id"]: p for p in scope.projects}


def _identity(record: Mapping[str, Any]) -> str:
    return f"{record['project_domain']}/{record['project_name']}/{record['name']}/{record['id']}"


class _Marked(Kind):
    """What networks and subnets share: a description stamp, update and restore by PUT."""

    #: The Neutron collection (``networks``) and its singular (``network``).
    collection: str = ""
    singular: str = ""
    #: Fields an update (and a restore) PUTs back.
    put_fields: tuple[str, ...] = ()

    def identity(self, record: Mapping[str, Any]) -> str:
        return _identity(record)

    def normalize(self, field: str, value: Any) -> Any:
        if field == "description":
            return Kind.unstamp(value)
        if isinstance(value, list | tuple) and value and isinstance(value[0], dict):
            return _sorted_json(value)
        return super().normalize(field, value)

    def _body(self, record: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
        return {self.singular: {self._wire(f): record.get(f) for f in fields if f in record}}

    @staticmethod
    def _wire(field: str) -> str:
        return {"external": "router:external"}.get(field, field)

    def update(
        self, conn: Connection, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> None:
        body = self._body(record, self.put_fields)
        body[self.singular]["description"] = self.stamp(record.get("description"), record)
        call(conn.network, "PUT", f"/{self.collection}/{existing['id']}", json=body)

    def restore(self, conn: Connection, before: Mapping[str, Any]) -> None:
        """Put back the fields an ``--overwrite`` changed (rollback)."""
        call(
            conn.network,
            "PUT",
            f"/{self.collection}/{before['id']}",
            json=self._body(before, (*self.put_fields, "description")),
        )

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Delete an object stackhop created; one without a stackhop marker is refused."""
        url = f"/{self.collection}/{destination_id}"
        body = call(conn.network, "GET", url, missing_ok=True)
        if body is None:
            return
        if Kind.marked_source_id(body[self.singular].get("description")) is None:
            raise ConflictError(
                f"{self.singular} {destination_id} carries no stackhop marker; it was not "
                "created by stackhop, so it is left in place"
            )
        call(conn.network, "DELETE", url, missing_ok=True)


class _Bulk(_Marked):
    """Kinds created with one plain ``POST`` each, so many at once with Neutron's bulk
    ``POST`` (networks, subnets, ports)."""

    bulk_create = True

    @abstractmethod
    def create_body(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The ``POST`` body creating the resolved record (``{singular: {...}}``)."""

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        created = call(conn.network, "POST", f"/{self.collection}", json=self.create_body(record))
        return str(created[self.singular]["id"])

    def create_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]]
    ) -> builtins.list[str]:
        """One bulk ``POST`` (Neutron creates all of them or none)."""
        bodies = [self.create_body(record)[self.singular] for record in records]
        created = call(conn.network, "POST", f"/{self.collection}", json={self.collection: bodies})
        return [str(item["id"]) for item in created[self.collection]]


@register
class Network(_Bulk):
    name = NETWORK
    service = "network"
    #: ``--network-map``'s ``networks: {src: dst}`` names the destination network itself.
    pinnable = True
    collection, singular = "networks", "network"
    references = {"project_id": PROJECT, "physical_networks": PHYSNET}
    portable_fields = (
        "name",
        "description",
        "admin_state_up",
        "shared",
        "external",
        "mtu",
        "port_security_enabled",
        "physical_networks",
    )
    source_only_fields = ("segments", "project_name", "project_domain")
    put_fields = ("name", "admin_state_up", "shared", "external", "mtu", "port_security_enabled")
    selectors = {"networks": NETWORK_HELP}
    transfer = True
    import_options = {"keep-segmentation-ids": KEEP_IDS_HELP}

    def __init__(self, *, keep_segmentation_ids: bool = False) -> None:
        self.keep_segmentation_ids = keep_segmentation_ids

    def configured(self, options: Mapping[str, bool]) -> Network:
        keep = bool(options.get("keep_segmentation_ids"))
        if keep == self.keep_segmentation_ids:
            return self
        return type(self)(keep_segmentation_ids=keep)

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """Every network owned by one of ``projects`` (``identity.project`` records)."""
        projects = {p["id"]: p for p in filters["projects"]}
        for network in paged(conn.network, "/networks", "networks"):
            if network["project_id"] in projects or network.get("router:external"):
                yield network_record(
                    _scoped(network, projects),
                    projects.get(network["project_id"]),
                    _segments(network),
                )

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        projects = _in_scope(scope)
        segments: dict[str, builtins.list[dict[str, Any]]] = defaultdict(builtins.list)
        for row in db.query(
            "neutron",
            "SELECT network_id, network_type, physical_network, segmentation_id "
            "FROM networksegments ORDER BY network_id, segment_index",
        ):
            segments[row.network_id].append(
                {
                    "network_type": row.network_type,
                    "physical_network": row.physical_network,
                    "segmentation_id": row.segmentation_id,
                }
            )
        external = {
            r.network_id for r in db.query("neutron", "SELECT network_id FROM externalnetworks")
        }
        shared = {
            r.object_id
            for r in db.query(
                "neutron",
                "SELECT object_id FROM networkrbacs "
                "WHERE action = 'access_as_shared' AND target_project = '*'",
            )
        }
        security = {
            r.network_id: bool(r.port_security_enabled)
            for r in db.query(
                "neutron", "SELECT network_id, port_security_enabled FROM networksecuritybindings"
            )
        }
        rows = db.query(
            "neutron",
            "SELECT n.id, n.project_id, n.name, n.admin_state_up, n.mtu, s.description "
            "FROM networks n JOIN standardattributes s ON s.id = n.standard_attr_id ORDER BY s.id",
        )
        for row in rows:
            if row.project_id not in projects and row.id not in external:
                continue
            network = {
                **row._asdict(),
                "router:external": row.id in external,
                "shared": row.id in shared,
                "port_security_enabled": security.get(row.id, True),
            }
            yield network_record(
                _scoped(network, projects), projects.get(row.project_id), segments.get(row.id, [])
            )

    def _view(self, network: Mapping[str, Any]) -> Record:
        segments = _segments(network)
        return network_record(network, None, segments) | {"project_id": network["project_id"]}

    def _match(
        self,
        record: Mapping[str, Any],
        marked: Mapping[str, Mapping[str, Any]],
        external: Iterable[Mapping[str, Any]],
    ) -> Record | None:
        found = marked.get(str(record["id"]))
        if found is not None:
            return self._view(found)
        if record.get("external"):
            for network in external:
                if network["name"] == record["name"]:
                    return self._view(network)
        return None

    def _external(self, conn: Connection, records: Sequence[Mapping[str, Any]]) -> Any:
        if not any(r.get("external") for r in records):
            return []
        return paged(conn.network, "/networks?router:external=True", "networks")

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """The records' projects' networks, and the external ones, in a few listings."""
        mine = listed(
            conn, "/networks", "networks", "project_id", (r["project_id"] or "" for r in records)
        )
        marked = by_marker(mine)
        external = self._external(conn, records)
        return [self._match(r, marked, external) for r in records]

    def create_body(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The ``POST /networks`` body for a resolved record."""
        body: dict[str, Any] = {
            "name": record["name"],
            "description": self.stamp(record.get("description"), record),
            "admin_state_up": record.get("admin_state_up", True),
            "shared": record.get("shared", False),
            "router:external": record.get("external", False),
            "port_security_enabled": record.get("port_security_enabled", True),
        }
        if record.get("project_id"):
            body["project_id"] = record["project_id"]
        if record.get("mtu"):
            body["mtu"] = record["mtu"]
        wired = wired_segments(record, self.keep_segmentation_ids)
        if len(wired) == 1:
            body.update(wired[0])
        elif wired:
            body["segments"] = wired
        return {"network": body}

    def create_detail(self, record: Mapping[str, Any]) -> str:
        ids = _segment_ids(record)
        if not ids:
            return ""
        if self.keep_segmentation_ids:
            return f"segmentation IDs kept: {ids}"
        return f"segmentation IDs allocated by the destination (source: {ids})"

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        try:
            created = call(conn.network, "POST", "/networks", json=self.create_body(record))
        except sdk_exceptions.ConflictException as exc:
            if not (self.keep_segmentation_ids and _segment_ids(record)):
                raise
            raise ConflictError(
                f"network {record['name']!r}: the destination refuses {_segment_ids(record)} "
                f"({neutron_error(exc)[1]}); import it without --keep-segmentation-ids to "
                "let the destination allocate one"
            ) from exc
        return str(created["network"]["id"])


@register
class Subnet(_Bulk):
    name = SUBNET
    service = "network"
    #: A pinned network's subnets are the destination network's own.
    pinned_with = ("network_id", NETWORK)
    collection, singular = "subnets", "subnet"
    references = {"project_id": PROJECT, "network_id": NETWORK, "subnetpool_id": SUBNET_POOL}
    #: The pool is created first; an archive without its pool (written before pools moved)
    #: makes a subnet of no pool, with the same CIDR.
    ordering_references = ("subnetpool_id",)
    portable_fields = (
        "name",
        "description",
        "network_id",
        "ip_version",
        "cidr",
        "gateway_ip",
        "enable_dhcp",
        "allocation_pools",
        "dns_nameservers",
        "host_routes",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "subnetpool_id",
    )
    source_only_fields = ("project_name", "project_domain")
    put_fields = (
        "name",
        "gateway_ip",
        "enable_dhcp",
        "allocation_pools",
        "dns_nameservers",
        "host_routes",
    )
    selectors = {"networks": NETWORK_HELP}
    transfer = True

    def normalize(self, field: str, value: Any) -> Any:
        if field == "dns_nameservers":
            return list(value or [])  # order matters: resolvers are asked in turn
        return super().normalize(field, value)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        projects = _in_scope(scope)
        networks = {n["id"] for n in scope.exported.get(NETWORK, [])}
        for subnet in paged(conn.network, "/subnets", "subnets"):
            if subnet["network_id"] in networks:
                yield subnet_record(_scoped(subnet, projects), projects.get(subnet["project_id"]))

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        projects = {p["id"]: p for p in filters["projects"]}
        for subnet in paged(conn.network, "/subnets", "subnets"):
            if subnet["project_id"] in projects:
                yield subnet_record(subnet, projects[subnet["project_id"]])

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        projects = _in_scope(scope)
        networks = {n["id"] for n in scope.exported.get(NETWORK, [])}
        pools: dict[str, builtins.list[dict[str, str]]] = defaultdict(builtins.list)
        for row in db.query(
            "neutron", "SELECT subnet_id, first_ip, last_ip FROM ipallocationpools"
        ):
            pools[row.subnet_id].append({"start": row.first_ip, "end": row.last_ip})
        dns: dict[str, builtins.list[str]] = defaultdict(builtins.list)
        from stackhop.dbexport import DatabaseReader

        # ``order`` is a reserved word: quoted as the source's dialect wants it.
        order = db.quote("neutron", "order") if isinstance(db, DatabaseReader) else '"order"'
        for row in db.query(
            "neutron", f"SELECT subnet_id, address FROM dnsnameservers ORDER BY subnet_id, {order}"
        ):
            dns[row.subnet_id].append(row.address)
        routes: dict[str, builtins.list[dict[str, str]]] = defaultdict(builtins.list)
        for row in db.query("neutron", "SELECT subnet_id, destination, nexthop FROM subnetroutes"):
            routes[row.subnet_id].append({"destination": row.destination, "nexthop": row.nexthop})
        rows = db.query(
            "neutron",
            "SELECT n.id, n.project_id, n.name, n.network_id, n.ip_version, n.cidr, "
            "n.gateway_ip, n.enable_dhcp, n.ipv6_ra_mode, n.ipv6_address_mode, n.subnetpool_id, "
            "s.description FROM subnets n JOIN standardattributes s ON s.id = n.standard_attr_id "
            "ORDER BY s.id",
        )
        for row in rows:
            if row.network_id not in networks:
                continue
            subnet = {
                **row._asdict(),
                "allocation_pools": pools.get(row.id, []),
                "dns_nameservers": dns.get(row.id, []),
                "host_routes": routes.get(row.id, []),
            }
            yield subnet_record(_scoped(subnet, projects), projects.get(row.project_id))

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """The subnets of the records' (mapped) networks, in a few listings."""
        return find_marked(
            conn, "/subnets", "subnets", "network_id", records,
            lambda subnet: subnet_record(subnet, None),
            lambda record, subnet: subnet["network_id"] == record["network_id"],
        )  # fmt: skip

    def create_body(self, record: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            "name": record["name"],
            "description": self.stamp(record.get("description"), record),
            "network_id": record["network_id"],
            "ip_version": record["ip_version"],
            "cidr": record["cidr"],
            "gateway_ip": record.get("gateway_ip"),
            "enable_dhcp": record.get("enable_dhcp", True),
            "allocation_pools": record.get("allocation_pools") or [],
            "dns_nameservers": record.get("dns_nameservers") or [],
            "host_routes": record.get("host_routes") or [],
        }
        if record.get("project_id"):
            body["project_id"] = record["project_id"]
        if record.get("subnetpool_id"):
            body["subnetpool_id"] = record["subnetpool_id"]
        for mode in ("ipv6_ra_mode", "ipv6_address_mode"):
            if record.get(mode):
                body[mode] = record[mode]
        if not body["allocation_pools"]:
            del body["allocation_pools"]
        return {"subnet": body}
