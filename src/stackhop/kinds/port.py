"""Ports not owned by a server or a router: ``neutron.port``; floating IPs: ``neutron.floating_ip``.

A port moves when nothing owns it (an empty ``device_owner``: a port made
ahead for a server, a VIP): its network, fixed IPs (subnet, address), MAC
address, allowed address pairs, security groups (mapped, so move them too:
``--security-groups``), port security and admin state. Ports owned by servers
move with their servers; those of routers and DHCP are made by Neutron.

A floating IP keeps its address when that address is free in the mapped external
network, otherwise it gets a new one: the create asks for the address, and when
Neutron refuses it (held by another floating IP, a router's gateway, any port;
or not in the network's subnets) asks again without it. The ID map has source ->
destination IDs; as Neutron cannot move a floating IP to another address, a
floating IP that differs only in its address is kept as it is (a skip naming
the field, so a re-run and ``verify`` pass). Its port is mapped when that port
moved; a floating IP of a port that did not (a server's) is created unassociated.

Both are found by the marker stamped into their description in the create
request, never by name or address: a re-run, journal or not, creates none
twice, and rollback deletes only marked objects.

``--via db`` reads Neutron's ``ports``, ``ipallocations``,
``securitygroupportbindings``, ``portsecuritybindings``, ``allowedaddresspairs``
and ``floatingips`` tables (descriptions from ``standardattributes``).
"""

from __future__ import annotations

import builtins
import ipaddress
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from openstack import exceptions as sdk_exceptions

from stackhop.kinds import register
from stackhop.kinds._neutron import (
    NETWORK,
    ROUTER,
    ROUTER_INTERFACES,
    SUBNET,
    address_refused,
    find_marked,
    listed,
    project_facts,
)
from stackhop.kinds.base import (
    Connection,
    Decision,
    Difference,
    ExportScope,
    Record,
    SqlSource,
)
from stackhop.kinds.identity import PROJECT
from stackhop.kinds.network import _Bulk, _Marked
from stackhop.kinds.rest import call, paged

PORT = "neutron.port"
FLOATING_IP = "neutron.floating_ip"
GROUP = "neutron.security_group"
#: Neutron's refusals of a requested floating IP address that a new address answers.
def port_record(port: Mapping[str, Any], project: Mapping[str, Any] | None) -> Record:
    """The archive record of one port; each fixed IP's ``subnet`` indexes ``subnet_ids``."""
    pairs = sorted({(ip["subnet_id"], ip["ip_address"]) for ip in port.get("fixed_ips") or []})
    subnet_ids = sorted({s for s, _ in pairs})
    return {
        "id": port["id"],
        "name": port.get("name") or "",
        "description": port.get("description") or "",
        "network_id": port["network_id"],
        "mac_address": port["mac_address"],
        "admin_state_up": bool(port.get("admin_state_up", True)),
        "port_security_enabled": bool(port.get("port_security_enabled", True)),
        "subnet_ids": subnet_ids,
        "fixed_ips": [{"subnet": subnet_ids.index(s), "ip_address": a} for s, a in pairs],
        "security_group_ids": sorted(port.get("security_groups") or []),
        "allowed_address_pairs": sorted(
            (
                {"ip_address": p["ip_address"], "mac_address": p.get("mac_address")}
                for p in port.get("allowed_address_pairs") or []
            ),
            key=lambda p: json.dumps(p, sort_keys=True),
        ),
        **project_facts(project, port["project_id"]),
    }


def floating_subnets(fip: Mapping[str, Any], subnets: Iterable[Mapping[str, Any]]) -> list[str]:
    """The exported subnets of the floating IP's network that hold its address: the floating
    IP waits for them on import, and goes before them on rollback."""
    address = ipaddress.ip_address(fip["floating_ip_address"])
    return sorted(
        s["id"]
        for s in subnets
        if s["network_id"] == fip["floating_network_id"]
        and address.version == s["ip_version"]
        and address in ipaddress.ip_network(s["cidr"], strict=False)
    )


def fip_record(
    fip: Mapping[str, Any],
    project: Mapping[str, Any] | None,
    subnets: Iterable[Mapping[str, Any]] = (),
) -> Record:
    """The archive record of one floating IP (``subnets``: the exported subnet records)."""
    return {
        "id": fip["id"],
        "name": fip["floating_ip_address"],
        "description": fip.get("description") or "",
        "floating_network_id": fip["floating_network_id"],
        "floating_ip_address": fip["floating_ip_address"],
        "port_id": fip.get("port_id"),
        "fixed_ip_address": fip.get("fixed_ip_address"),
        "router_id": fip.get("router_id"),
        "via_router_id": fip.get("router_id"),
        "floating_subnet_ids": floating_subnets(fip, subnets),
        **project_facts(project, fip["project_id"]),
    }


def _fixed(record: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
    """The fixed IPs as (destination subnet ID, address) dicts, as Neutron takes them."""
    return [
        {"subnet_id": record["subnet_ids"][ip["subnet"]], "ip_address": ip["ip_address"]}
        for ip in record["fixed_ips"]
    ]


@register
class Port(_Bulk):
    name = PORT
    service = "network"
    collection, singular = "ports", "port"
    references = {
        "project_id": PROJECT,
        "network_id": NETWORK,
        "subnet_ids": SUBNET,
        "security_group_ids": GROUP,
    }
    portable_fields = (
        "name",
        "description",
        "network_id",
        "mac_address",
        "admin_state_up",
        "port_security_enabled",
        "fixed_ips",
        "security_group_ids",
        "allowed_address_pairs",
    )
    source_only_fields = ("project_name", "project_domain")
    put_fields = ("name", "admin_state_up", "allowed_address_pairs")
    selectors = {"ports": "ports no server or router owns (fixed IPs, MACs, address pairs)"}
    transfer = True

    def compare(self, record: Mapping[str, Any], existing: Mapping[str, Any]) -> Any:
        return super().compare({**record, "fixed_ips": _fixed(record)}, existing)

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        projects = {p["id"]: p for p in filters["projects"]}
        for port in paged(conn.network, "/ports?device_owner=", "ports"):
            if port["project_id"] in projects and not port.get("device_owner"):
                yield port_record(port, projects[port["project_id"]])

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        projects = {p["id"]: p for p in scope.projects}
        extra: dict[str, dict[str, builtins.list[Any]]] = defaultdict(lambda: defaultdict(list))
        for row in db.query("neutron", "SELECT port_id, subnet_id, ip_address FROM ipallocations"):
            extra[row.port_id]["fixed_ips"].append(
                {"subnet_id": row.subnet_id, "ip_address": row.ip_address}
            )
        for row in db.query(
            "neutron", "SELECT port_id, security_group_id FROM securitygroupportbindings"
        ):
            extra[row.port_id]["security_groups"].append(row.security_group_id)
        for row in db.query(
            "neutron", "SELECT port_id, ip_address, mac_address FROM allowedaddresspairs"
        ):
            extra[row.port_id]["allowed_address_pairs"].append(
                {"ip_address": row.ip_address, "mac_address": row.mac_address}
            )
        security = {
            r.port_id: bool(r.port_security_enabled)
            for r in db.query(
                "neutron", "SELECT port_id, port_security_enabled FROM portsecuritybindings"
            )
        }
        rows = db.query(
            "neutron",
            "SELECT p.id, p.project_id, p.name, p.network_id, p.mac_address, p.admin_state_up, "
            "s.description FROM ports p JOIN standardattributes s ON s.id = p.standard_attr_id "
            "WHERE p.device_owner = '' ORDER BY s.id",
        )
        for row in rows:
            if row.project_id in projects:
                port = {
                    **row._asdict(),
                    **extra.get(row.id, {}),
                    "port_security_enabled": security.get(row.id, True),
                }
                yield port_record(port, projects[row.project_id])

    def _view(self, port: Mapping[str, Any]) -> Record:
        view = port_record(port, None)
        view["fixed_ips"] = _fixed(view)
        return view

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """The ports of the records' (mapped) networks, in a few listings."""
        return find_marked(conn, "/ports", "ports", "network_id", records, self._view)

    def create_body(self, record: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            "name": record["name"],
            "description": self.stamp(record.get("description"), record),
            "project_id": record["project_id"],
            "network_id": record["network_id"],
            "mac_address": record["mac_address"],
            "admin_state_up": record.get("admin_state_up", True),
            "fixed_ips": _fixed(record),
            "port_security_enabled": record.get("port_security_enabled", True),
            "security_groups": record.get("security_group_ids") or [],
            "allowed_address_pairs": record.get("allowed_address_pairs") or [],
        }
        return {"port": body}


@register
class FloatingIP(_Marked):
    name = FLOATING_IP
    service = "network"
    collection, singular = "floatingips", "floatingip"
    references = {
        "project_id": PROJECT,
        "floating_network_id": NETWORK,
        "port_id": PORT,
        "router_id": ROUTER_INTERFACES,
        "via_router_id": ROUTER,
        "floating_subnet_ids": SUBNET,
    }
    #: A floating IP of a port that does not move (a server's) is created unassociated;
    #: one behind a router waits for that router's interfaces (Neutron refuses to
    #: associate a port whose subnet does not reach the external network).
    #: ``via_router_id`` (the same router) makes a rollback delete the floating IP before
    #: the router, whose interface Neutron keeps while a floating IP needs it;
    #: ``floating_subnet_ids`` (its address's subnet) makes an unassociated one wait for
    #: that subnet (Neutron has no address to give on a network without a subnet) and a
    #: rollback delete it before the subnet (in use while the floating IP exists).
    ordering_references = ("port_id", "router_id", "via_router_id", "floating_subnet_ids")
    portable_fields = ("description", "floating_network_id", "floating_ip_address", "port_id")
    source_only_fields = (
        "fixed_ip_address",
        "router_id",
        "via_router_id",
        "floating_subnet_ids",
        "project_name",
        "project_domain",
    )
    put_fields = ("port_id",)
    selectors = {"floating-ips": "floating IPs (same address when free, else a new one)"}
    transfer = True
    alias_kind = "neutron.floating_ip.address"

    def aliases(self, conn: Connection, destination_ids: Mapping[str, str]) -> dict[str, str]:
        """Each floating IP's destination address, by source ID (one listing per 40)."""
        found = listed(conn, "/floatingips", "floatingips", "id", destination_ids.values())
        address = {f["id"]: f["floating_ip_address"] for f in found}
        return {s: address[d] for s, d in destination_ids.items() if d in address}

    def identity(self, record: Mapping[str, Any]) -> str:
        return f"{record['project_domain']}/{record['project_name']}/{record['id']}"

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        return self.list(conn, projects=scope.projects, subnets=scope.exported.get(SUBNET, []))

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        projects = {p["id"]: p for p in filters["projects"]}
        subnets = filters.get("subnets", [])
        for fip in paged(conn.network, "/floatingips", "floatingips"):
            if fip["project_id"] in projects:
                yield fip_record(fip, projects[fip["project_id"]], subnets)

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        projects = {p["id"]: p for p in scope.projects}
        subnets = scope.exported.get(SUBNET, [])
        rows = db.query(
            "neutron",
            "SELECT f.id, f.project_id, f.floating_network_id, f.floating_ip_address, "
            "f.fixed_port_id AS port_id, f.fixed_ip_address, f.router_id, s.description "
            "FROM floatingips f "
            "JOIN standardattributes s ON s.id = f.standard_attr_id ORDER BY s.id",
        )
        for row in rows:
            if row.project_id in projects:
                yield fip_record(row._asdict(), projects[row.project_id], subnets)

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        return self.find_many(conn, [record])[0]

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """The floating IPs of the records' projects, in a few listings."""
        return find_marked(
            conn, "/floatingips", "floatingips", "project_id", records,
            lambda fip: fip_record(fip, None),
        )  # fmt: skip

    def on_difference(self, differences: builtins.list[Difference], overwrite: bool) -> Decision:
        """An address alone differs when the source's was taken on the destination: kept."""
        if all(d.field == "floating_ip_address" for d in differences):
            return "skip"
        return super().on_difference(differences, overwrite)

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        body: dict[str, Any] = {
            "description": self.stamp(record.get("description"), record),
            "project_id": record["project_id"],
            "floating_network_id": record["floating_network_id"],
            "floating_ip_address": record["floating_ip_address"],
        }
        if record.get("port_id"):
            body["port_id"] = record["port_id"]
            if record.get("fixed_ip_address"):
                body["fixed_ip_address"] = record["fixed_ip_address"]
        try:
            created = call(conn.network, "POST", "/floatingips", json={"floatingip": body})
        except sdk_exceptions.HttpException as exc:
            if not address_refused(exc):
                raise
            del body["floating_ip_address"]  # taken there: Neutron picks one
            created = call(conn.network, "POST", "/floatingips", json={"floatingip": body})
        return str(created["floatingip"]["id"])
