"""Routers and their interfaces: ``neutron.router``, ``neutron.router_interfaces``.

A router is found on the destination by the marker stackhop stamps into its
description (names repeat), and is created with its external gateway on the
mapped external network: the network's own record when it is exported too (an
external network on the destination of the same name is adopted), else the
operator's ``--network-map`` (``networks: {src id: dst id}``). A router whose
external network nothing maps is a conflict naming the map to fix, and nothing
of it (nor its interfaces) is created. ``enable_snat`` is kept; ``ha`` and
``distributed`` are source-only facts: the destination's defaults apply (both
are admin-only and depend on the destination's L3 agents).

Interfaces travel as one ``neutron.router_interfaces`` record per router,
applied after the subnets exist: each interface is a (subnet, IP address)
pair. An interface on the subnet's gateway address is added by subnet; one on
another address through a port with that address, stamped with the marker.
The router's static routes (``routes``) go with the interfaces, as their next
hops must be on an attached subnet. On rollback, interfaces go with their
router (``deleted_with``): deleting a router stackhop created first detaches
every interface and clears its routes, as Neutron refuses to delete a router
that still has interfaces.

``--via db`` reads Neutron's ``routers``, ``routerports``, ``routerroutes``,
``ports``, ``ipallocations`` and ``router_extra_attributes`` tables.
"""

from __future__ import annotations

import builtins
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from openstack import exceptions as sdk_exceptions

from stackhop.errors import ConflictError
from stackhop.kinds import register
from stackhop.kinds._neutron import (
    NETWORK,
    ROUTER,
    ROUTER_INTERFACES,
    SUBNET,
    address_refused,
    find_marked,
    listed,
    owned,
    project_facts,
)
from stackhop.kinds.base import Connection, ExportScope, Kind, Record, SqlSource
from stackhop.kinds.identity import PROJECT
from stackhop.kinds.rest import call, paged

ROUTER_HELP = "routers, their interfaces and static routes"
INTERFACE_OWNERS = (
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
)


def router_record(router: Mapping[str, Any], project: Mapping[str, Any] | None) -> Record:
    """The archive record of one router, without its interfaces and routes."""
    gateway = router.get("external_gateway_info") or {}
    return {
        "id": router["id"],
        "name": router["name"],
        "description": router.get("description") or "",
        "admin_state_up": bool(router.get("admin_state_up", True)),
        "external_network_id": gateway.get("network_id"),
        "enable_snat": bool(gateway.get("enable_snat", True)) if gateway else None,
        "external_subnet_ids": sorted(
            {ip["subnet_id"] for ip in gateway.get("external_fixed_ips") or []}
        ),
        # The gateway's (SNAT) addresses: firewalls outside the cloud often allow them.
        "external_ips": sorted(
            {ip["ip_address"] for ip in gateway.get("external_fixed_ips") or []}
        ),
        "ha": router.get("ha"),
        "distributed": router.get("distributed"),
        **project_facts(project, router["project_id"]),
    }


def interfaces_record(
    router: Mapping[str, Any],
    ports: Sequence[Mapping[str, Any]],
    project: Mapping[str, Any] | None,
) -> Record:
    """The archive record of one router's interfaces (subnet, address) and static routes.

    Each interface's ``subnet`` indexes ``subnet_ids``, which the resolver maps.
    """
    pairs = sorted(
        {(ip["subnet_id"], ip["ip_address"]) for port in ports for ip in port["fixed_ips"]}
    )
    subnet_ids = sorted({subnet for subnet, _ in pairs})
    return {
        "id": router["id"],
        "router_id": router["id"],
        "router_name": router["name"],
        "subnet_ids": subnet_ids,
        "interfaces": [
            {"subnet": subnet_ids.index(subnet), "ip_address": address} for subnet, address in pairs
        ],
        "routes": _routes(router.get("routes")),
        **project_facts(project, router["project_id"]),
    }


def _routes(routes: Any) -> builtins.list[dict[str, str]]:
    return sorted(
        ({"destination": r["destination"], "nexthop": r["nexthop"]} for r in routes or []),
        key=lambda r: json.dumps(r, sort_keys=True),
    )


def _identity(record: Mapping[str, Any], name_field: str = "name") -> str:
    return (
        f"{record['project_domain']}/{record['project_name']}/{record[name_field]}/{record['id']}"
    )


def _interface_ports(conn: Connection, router_ids: Sequence[str]) -> builtins.list[Any]:
    ports = listed(conn, "/ports", "ports", "device_id", router_ids)
    return [p for p in ports if p.get("device_owner") in INTERFACE_OWNERS]


@register
class Router(Kind):
    name = ROUTER
    service = "network"
    references = {
        "project_id": PROJECT,
        "external_network_id": NETWORK,
        "external_subnet_ids": SUBNET,
    }
    #: Neutron refuses a gateway on a network without a subnet: the router waits for the
    #: external subnets this run creates; ones nothing maps (a mapped external network's)
    #: are dropped rather than failing the router.
    ordering_references = ("external_subnet_ids",)
    portable_fields = (
        "name",
        "description",
        "admin_state_up",
        "external_network_id",
        "enable_snat",
    )
    source_only_fields = (
        "ha",
        "distributed",
        "external_subnet_ids",
        "external_ips",
        "project_name",
        "project_domain",
    )
    selectors = {"routers": ROUTER_HELP}
    transfer = True

    def identity(self, record: Mapping[str, Any]) -> str:
        return _identity(record)

    def normalize(self, field: str, value: Any) -> Any:
        if field == "description":
            return Kind.unstamp(value)
        return super().normalize(field, value)

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        projects = {p["id"]: p for p in filters["projects"]}
        for router in paged(conn.network, "/routers", "routers"):
            if router["project_id"] in projects:
                yield router_record(router, projects[router["project_id"]])

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        projects = {p["id"]: p for p in scope.projects}
        for row in _router_rows(db):
            if row["project_id"] in projects:
                yield router_record(row, projects[row["project_id"]])

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """The routers of the records' projects, in a few listings."""
        return find_marked(
            conn, "/routers", "routers", "project_id", records,
            lambda router: router_record(router, None),
        )  # fmt: skip

    def _gateway(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        if not record.get("external_network_id"):
            return None
        return {
            "network_id": record["external_network_id"],
            "enable_snat": bool(record.get("enable_snat", True)),
        }

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        body: dict[str, Any] = {
            "name": record["name"],
            "description": self.stamp(record.get("description"), record),
            "project_id": record["project_id"],
            "admin_state_up": record.get("admin_state_up", True),
        }
        gateway = self._gateway(record)
        if gateway is not None and record.get("external_ips"):
            # The source's gateway addresses where the destination has them free; where one
            # is taken or outside the network's subnets, Neutron picks the gateway's address.
            # (A refused gateway deletes the router it came with: nothing is left over.)
            pinned = [{"ip_address": a} for a in record["external_ips"]]
            body["external_gateway_info"] = {**gateway, "external_fixed_ips": pinned}
            try:
                created = call(conn.network, "POST", "/routers", json={"router": body})
                return str(created["router"]["id"])
            except sdk_exceptions.HttpException as exc:
                if not address_refused(exc):
                    raise
        if gateway is not None:
            body["external_gateway_info"] = gateway
        created = call(conn.network, "POST", "/routers", json={"router": body})
        return str(created["router"]["id"])

    def update(
        self, conn: Connection, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> None:
        self._put(
            conn,
            str(existing["id"]),
            {**record, "description": self.stamp(record.get("description"), record)},
        )

    def restore(self, conn: Connection, before: Mapping[str, Any]) -> None:
        """Put back what an ``--overwrite`` changed (rollback)."""
        self._put(conn, str(before["id"]), before)

    def _put(self, conn: Connection, router_id: str, values: Mapping[str, Any]) -> None:
        call(
            conn.network,
            "PUT",
            f"/routers/{router_id}",
            json={
                "router": {
                    "name": values["name"],
                    "description": values.get("description") or "",
                    "admin_state_up": values.get("admin_state_up", True),
                    "external_gateway_info": self._gateway(values) or {},
                }
            },
        )

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Detach the interfaces and routes of a router stackhop created, then delete it."""
        body = call(conn.network, "GET", f"/routers/{destination_id}", missing_ok=True)
        if body is None:
            return
        if Kind.marked_source_id(body["router"].get("description")) is None:
            raise ConflictError(
                f"router {destination_id} carries no stackhop marker; it was not created by "
                "stackhop, so it is left in place"
            )
        _detach_all(conn, destination_id, body["router"])
        call(conn.network, "DELETE", f"/routers/{destination_id}", missing_ok=True)


def _detach_all(conn: Connection, router_id: str, router: Mapping[str, Any]) -> None:
    if router.get("routes"):
        call(conn.network, "PUT", f"/routers/{router_id}", json={"router": {"routes": []}})
    for port in _interface_ports(conn, [router_id]):
        call(
            conn.network,
            "PUT",
            f"/routers/{router_id}/remove_router_interface",
            json={"port_id": port["id"]},
            missing_ok=True,
        )


@register
class RouterInterfaces(Kind):
    """All interfaces and static routes of one router; found only when nothing is missing."""

    name = ROUTER_INTERFACES
    service = "network"
    references = {"router_id": ROUTER, "subnet_ids": SUBNET, "project_id": PROJECT}
    portable_fields = ("interfaces", "routes")
    source_only_fields = ("router_name", "project_name", "project_domain")
    updatable = False
    selectors = {"routers": ROUTER_HELP}
    transfer = True
    deleted_with = ROUTER

    def identity(self, record: Mapping[str, Any]) -> str:
        return _identity(record, "router_name")

    def normalize(self, field: str, value: Any) -> Any:
        return sorted(json.dumps(v, sort_keys=True) for v in value or [])

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        routers = scope.exported.get(ROUTER, [])
        return self.list(conn, routers=routers, projects=scope.projects)

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        projects = {p["id"]: p for p in filters["projects"]}
        wanted = {r["id"] for r in filters["routers"]}
        by_router: dict[str, builtins.list[Any]] = defaultdict(builtins.list)
        for port in _interface_ports(conn, sorted(wanted)):
            by_router[port["device_id"]].append(port)
        for router in paged(conn.network, "/routers", "routers"):
            if router["id"] in wanted:
                yield interfaces_record(
                    router, by_router.get(router["id"], []), projects.get(router["project_id"])
                )

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        projects = {p["id"]: p for p in scope.projects}
        wanted = {r["id"] for r in scope.exported.get(ROUTER, [])}
        owners = ", ".join(f"'{o}'" for o in INTERFACE_OWNERS)
        ports: dict[str, dict[str, Any]] = {}
        for row in db.query(
            "neutron",
            "SELECT rp.router_id, a.port_id, a.subnet_id, a.ip_address FROM routerports rp "
            "JOIN ipallocations a ON a.port_id = rp.port_id "
            f"WHERE rp.port_type IN ({owners})",
        ):
            port = ports.setdefault(row.port_id, {"device_id": row.router_id, "fixed_ips": []})
            port["fixed_ips"].append({"subnet_id": row.subnet_id, "ip_address": row.ip_address})
        by_router: dict[str, builtins.list[Any]] = defaultdict(builtins.list)
        for port in ports.values():
            by_router[port["device_id"]].append(port)
        routes: dict[str, builtins.list[dict[str, str]]] = defaultdict(builtins.list)
        for row in db.query("neutron", "SELECT router_id, destination, nexthop FROM routerroutes"):
            routes[row.router_id].append({"destination": row.destination, "nexthop": row.nexthop})
        for router in _router_rows(db):
            if router["id"] in wanted:
                router["routes"] = routes.get(router["id"], [])
                yield interfaces_record(
                    router, by_router.get(router["id"], []), projects.get(router["project_id"])
                )

    def _state(self, router: Mapping[str, Any], ports: Sequence[Any]) -> Record:
        view = interfaces_record(router, ports, None)
        # Interfaces as (destination subnet ID, address), comparable with a resolved record.
        view["interfaces"] = [
            {"subnet": view["subnet_ids"][i["subnet"]], "ip_address": i["ip_address"]}
            for i in view["interfaces"]
        ]
        return view

    @staticmethod
    def _wanted(record: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        return [
            {"subnet": record["subnet_ids"][i["subnet"]], "ip_address": i["ip_address"]}
            for i in record["interfaces"]
        ]

    def compare(self, record: Mapping[str, Any], existing: Mapping[str, Any]) -> builtins.list[Any]:
        return super().compare({**record, "interfaces": self._wanted(record)}, existing)

    def observe(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self._observe_many(conn, [record])[0]

    def _observe_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]]
    ) -> builtins.list[Record | None]:
        ids = [str(r["router_id"]) for r in records]
        routers = {r["id"]: r for r in listed(conn, "/routers", "routers", "id", ids)}
        by_router: dict[str, builtins.list[Any]] = defaultdict(builtins.list)
        for port in _interface_ports(conn, ids):
            by_router[port["device_id"]].append(port)
        return [
            self._state(routers[i], by_router.get(i, [])) if i in routers else None for i in ids
        ]

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """The records' routers and their interface ports in two listings."""
        states = self._observe_many(conn, records)
        return [
            state if state is not None and not self.compare(record, state) else None
            for record, state in zip(records, states, strict=True)
        ]

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        """Attach the missing interfaces, then set the static routes."""
        router_id = str(record["router_id"])
        state = self.observe(conn, record)
        if state is None:
            raise ConflictError(
                f"{self.name} {self.identity(record)!r}: router {router_id} is gone from the "
                "destination; re-run the import to create it again"
            )
        have = {(i["subnet"], i["ip_address"]) for i in state["interfaces"]}
        missing = [w for w in self._wanted(record) if (w["subnet"], w["ip_address"]) not in have]
        # The missing interfaces' subnets in one listing (gateway address, network).
        needed = [w["subnet"] for w in missing]
        subnets = {s["id"]: s for s in listed(conn, "/subnets", "subnets", "id", needed)}
        for wanted in missing:
            subnet_id = wanted["subnet"]
            subnet = subnets.get(subnet_id)
            if subnet is None:
                raise ConflictError(
                    f"{self.name} {self.identity(record)!r}: subnet {subnet_id} is gone from "
                    "the destination; re-run the import to create it again"
                )
            if wanted["ip_address"] == subnet.get("gateway_ip"):
                attach: dict[str, str] = {"subnet_id": subnet_id}
            else:
                attach = {"port_id": self._interface_port(conn, record, subnet, wanted)}
            call(conn.network, "PUT", f"/routers/{router_id}/add_router_interface", json=attach)
        if _routes(record.get("routes")) != state["routes"]:
            call(
                conn.network,
                "PUT",
                f"/routers/{router_id}",
                json={"router": {"routes": record.get("routes") or []}},
            )
        return router_id

    def _interface_port(
        self,
        conn: Connection,
        record: Mapping[str, Any],
        subnet: Mapping[str, Any],
        wanted: Mapping[str, Any],
    ) -> str:
        """The port of an interface on a non-gateway address: the marked one an interrupted
        attempt left unattached (it holds the address, so a new port would be refused), or
        a new one."""
        fixed = {"subnet_id": subnet["id"], "ip_address": wanted["ip_address"]}
        for port in paged(
            conn.network, f"/ports?network_id={subnet['network_id']}&device_owner=", "ports"
        ):
            if owned(port, self.source_id(record)) and fixed in port.get("fixed_ips", []):
                return str(port["id"])
        port = call(
            conn.network,
            "POST",
            "/ports",
            json={
                "port": {
                    "network_id": subnet["network_id"],
                    "project_id": record["project_id"],
                    "fixed_ips": [fixed],
                    "description": self.stamp("", record),
                }
            },
        )
        return str(port["port"]["id"])

    def delete(self, conn: Connection, destination_id: str) -> None:
        """Detach the interfaces and routes of router ``destination_id`` (rollback)."""
        body = call(conn.network, "GET", f"/routers/{destination_id}", missing_ok=True)
        if body is None:
            return
        if Kind.marked_source_id(body["router"].get("description")) is None:
            raise ConflictError(
                f"router {destination_id} carries no stackhop marker; its interfaces are left"
            )
        _detach_all(conn, destination_id, body["router"])


def _router_rows(db: SqlSource) -> builtins.list[dict[str, Any]]:
    """Neutron's routers as API-shaped dicts (gateway from the gateway port's network)."""
    ha = {
        r.router_id: (r.ha, r.distributed)
        for r in db.query(
            "neutron", "SELECT router_id, ha, distributed FROM router_extra_attributes"
        )
    }
    gateway_ips: dict[str, builtins.list[dict[str, str]]] = defaultdict(builtins.list)
    for row in db.query(
        "neutron",
        "SELECT r.id AS router_id, a.subnet_id, a.ip_address FROM routers r "
        "JOIN ipallocations a ON a.port_id = r.gw_port_id",
    ):
        gateway_ips[row.router_id].append(
            {"subnet_id": row.subnet_id, "ip_address": row.ip_address}
        )
    rows = db.query(
        "neutron",
        "SELECT r.id, r.project_id, r.name, r.admin_state_up, r.enable_snat, p.network_id, "
        "s.description FROM routers r JOIN standardattributes s ON s.id = r.standard_attr_id "
        "LEFT JOIN ports p ON p.id = r.gw_port_id ORDER BY s.id",
    )
    found = []
    for row in rows:
        extra = ha.get(row.id, (None, None))
        found.append(
            {
                "id": row.id,
                "project_id": row.project_id,
                "name": row.name,
                "description": row.description,
                "admin_state_up": bool(row.admin_state_up),
                "external_gateway_info": (
                    {
                        "network_id": row.network_id,
                        "enable_snat": bool(row.enable_snat),
                        "external_fixed_ips": gateway_ips.get(row.id, []),
                    }
                    if row.network_id
                    else None
                ),
                "ha": None if extra[0] is None else bool(extra[0]),
                "distributed": None if extra[1] is None else bool(extra[1]),
            }
        )
    return found
