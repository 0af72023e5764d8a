"""The Neutron topology in its API representation, assembled from Neutron's tables.

networking-midonet's plugin queued, per API call, a task whose ``data`` is the
JSON of the resource *as the Neutron API returns it* (not a table row), and the
MidoNet cluster's importer reads exactly that. This module reads Neutron's
tables (plain SELECTs, nothing changes) and assembles each object with the
API's fields: a subnet's ``allocation_pools``/``dns_nameservers``/``host_routes``,
a port's ``fixed_ips``/``allowed_address_pairs``/``extra_dhcp_opts``/``binding:*``,
a network's ``router:external``/``shared``/``provider:*``/``subnets``, a router's
``external_gateway_info``/``routes``, a floating IP's ``port_id``, a security
group with its ``security_group_rules``. Table-only columns
(``standard_attr_id``, ``floating_port_id`` ...) are never copied.

Each object also names the IDs it refers to, so that tasks can be queued in an
order where every reference points backwards.
"""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: The importer's data types (networking-midonet's ``task_db`` names), in the
#: order they are queued: each refers only to types before it. Router
#: interfaces are not tasks of their own: the interface's PORT task
#: (``device_owner`` ``network:router_interface``) carries them, and routers
#: come before ports.
DATA_TYPES: tuple[str, ...] = (
    "SECURITYGROUP",
    "SECURITYGROUPRULE",
    "NETWORK",
    "SUBNET",
    "ROUTER",
    "PORT",
    "FLOATINGIP",
)

#: The Neutron tables read by :func:`read_topology` (the privileges to check).
TABLES: tuple[str, ...] = (
    "securitygroups",
    "securitygrouprules",
    "networks",
    "externalnetworks",
    "networkrbacs",
    "networksegments",
    "networksecuritybindings",
    "subnets",
    "ipallocationpools",
    "dnsnameservers",
    "subnetroutes",
    "routers",
    "routerroutes",
    "ports",
    "ipallocations",
    "securitygroupportbindings",
    "portsecuritybindings",
    "allowedaddresspairs",
    "extradhcpopts",
    "ml2_port_bindings",
    "floatingips",
    "standardattributes",
)

#: IP protocol numbers Neutron accepts for the names the importer knows.
PROTOCOL_NAMES: dict[str, str] = {
    "1": "icmp", "6": "tcp", "17": "udp", "58": "ipv6-icmp", "47": "gre", "50": "esp",
    "51": "ah", "112": "vrrp", "132": "sctp", "2": "igmp", "4": "ipip", "33": "dccp",
    "41": "ipv6-encap", "43": "ipv6-route", "44": "ipv6-frag", "59": "ipv6-nonxt",
    "60": "ipv6-opts", "103": "pim", "113": "pgm", "136": "udplite", "89": "ospf",
}


@dataclass(frozen=True)
class NeutronObject:
    """One Neutron object: its data type, ID, API representation and the IDs it refers to."""

    data_type: str
    id: str
    data: Mapping[str, Any]
    refers_to: frozenset[str] = field(default_factory=frozenset)
    project_id: str | None = None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.replace(microsecond=0).isoformat() + "Z"
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _rows(conn: Connection, table: str, order: str) -> list[dict[str, Any]]:
    if not sa.inspect(conn).has_table(table):
        return []  # an extension not loaded in this Neutron: its fields stay empty
    result = conn.execute(sa.text(f"SELECT * FROM `{table}` ORDER BY {order}"))
    return [{k: _plain(v) for k, v in row._mapping.items()} for row in result]


def _refs(*values: Any) -> frozenset[str]:
    return frozenset(v for v in values if isinstance(v, str) and v)


def _group(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row[key]), []).append(row)
    return grouped


def _project(row: Mapping[str, Any]) -> dict[str, Any]:
    project = row.get("project_id", row.get("tenant_id"))
    return {"tenant_id": project, "project_id": project}


def protocol_name(protocol: Any) -> Any:
    """A rule's protocol as a name (``6`` -> ``tcp``); None and names pass unchanged."""
    if protocol is None:
        return None
    return PROTOCOL_NAMES.get(str(protocol), str(protocol))


def _json(value: Any) -> Any:
    if isinstance(value, str) and value:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return {} if value in (None, "") else value


class _Reader:
    """The tables read once; one method per resource building its API representation."""

    def __init__(self, conn: Connection) -> None:
        self.attrs = {r["id"]: r for r in _rows(conn, "standardattributes", "id")}
        self.external = {r["network_id"] for r in _rows(conn, "externalnetworks", "network_id")}
        self.shared = {r["object_id"] for r in _rows(conn, "networkrbacs", "id")
                       if r["action"] == "access_as_shared" and r["target_project"] == "*"}
        self.segments = _group(_rows(conn, "networksegments", "network_id, segment_index"),
                               "network_id")
        self.net_security = {r["network_id"]: bool(r["port_security_enabled"])
                             for r in _rows(conn, "networksecuritybindings", "network_id")}
        self.pools = _group(_rows(conn, "ipallocationpools", "subnet_id, first_ip"), "subnet_id")
        self.dns = _group(_rows(conn, "dnsnameservers", "subnet_id, `order`"), "subnet_id")
        self.subnet_routes = _group(_rows(conn, "subnetroutes", "subnet_id, destination"),
                                    "subnet_id")
        self.router_routes = _group(_rows(conn, "routerroutes", "router_id, destination"),
                                    "router_id")
        self.ips = _group(_rows(conn, "ipallocations", "port_id, ip_address"), "port_id")
        self.port_groups = _group(
            _rows(conn, "securitygroupportbindings", "port_id, security_group_id"), "port_id")
        self.port_security = {r["port_id"]: bool(r["port_security_enabled"])
                              for r in _rows(conn, "portsecuritybindings", "port_id")}
        self.pairs = _group(_rows(conn, "allowedaddresspairs", "port_id, ip_address"), "port_id")
        self.dhcp_opts = _group(_rows(conn, "extradhcpopts", "port_id, opt_name"), "port_id")
        self.bindings = _group(_rows(conn, "ml2_port_bindings", "port_id, host"), "port_id")

    def common(self, row: Mapping[str, Any]) -> dict[str, Any]:
        attrs = self.attrs.get(row.get("standard_attr_id"), {})
        out = {"id": row["id"], **_project(row)}
        if attrs:
            out.update(description=attrs.get("description"),
                       created_at=attrs.get("created_at"), updated_at=attrs.get("updated_at"),
                       revision_number=attrs.get("revision_number"))
        return out

    def rule(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **self.common(row),
            "security_group_id": row["security_group_id"],
            "direction": row["direction"],
            "ethertype": row["ethertype"],
            "protocol": protocol_name(row["protocol"]),
            "port_range_min": row["port_range_min"],
            "port_range_max": row["port_range_max"],
            "remote_group_id": row["remote_group_id"],
            "remote_ip_prefix": row["remote_ip_prefix"],
        }

    def network(self, row: Mapping[str, Any], subnets: list[str]) -> dict[str, Any]:
        segments = self.segments.get(row["id"], [])
        first = segments[0] if segments else {}
        data = {
            **self.common(row),
            "name": row["name"],
            "admin_state_up": bool(row["admin_state_up"]),
            "status": row["status"],
            "mtu": row.get("mtu"),
            "shared": row["id"] in self.shared,
            "router:external": row["id"] in self.external,
            "provider:network_type": first.get("network_type"),
            "provider:physical_network": first.get("physical_network"),
            "provider:segmentation_id": first.get("segmentation_id"),
            "subnets": subnets,
        }
        if row["id"] in self.net_security:
            data["port_security_enabled"] = self.net_security[row["id"]]
        return data

    def subnet(self, row: Mapping[str, Any]) -> dict[str, Any]:
        sid = row["id"]
        return {
            **self.common(row),
            "name": row["name"],
            "network_id": row["network_id"],
            "ip_version": int(row["ip_version"]),
            "cidr": row["cidr"],
            "gateway_ip": row["gateway_ip"],
            "enable_dhcp": bool(row["enable_dhcp"]),
            "ipv6_ra_mode": row.get("ipv6_ra_mode"),
            "ipv6_address_mode": row.get("ipv6_address_mode"),
            "subnetpool_id": row.get("subnetpool_id"),
            "allocation_pools": [{"start": p["first_ip"], "end": p["last_ip"]}
                                 for p in self.pools.get(sid, [])],
            "dns_nameservers": [d["address"] for d in self.dns.get(sid, [])],
            "host_routes": [{"destination": r["destination"], "nexthop": r["nexthop"]}
                            for r in self.subnet_routes.get(sid, [])],
        }

    def port(self, row: Mapping[str, Any]) -> dict[str, Any]:
        pid = row["id"]
        bindings = self.bindings.get(pid, [])
        active = next((b for b in bindings if b.get("status") == "ACTIVE"),
                      bindings[0] if bindings else {})
        data = {
            **self.common(row),
            "name": row["name"],
            "network_id": row["network_id"],
            "mac_address": row["mac_address"],
            "admin_state_up": bool(row["admin_state_up"]),
            "status": row["status"],
            "device_id": row["device_id"],
            "device_owner": row["device_owner"],
            "fixed_ips": [{"subnet_id": a["subnet_id"], "ip_address": a["ip_address"]}
                          for a in self.ips.get(pid, [])],
            "security_groups": [b["security_group_id"] for b in self.port_groups.get(pid, [])],
            "allowed_address_pairs": [{"ip_address": p["ip_address"],
                                       "mac_address": p["mac_address"]}
                                      for p in self.pairs.get(pid, [])],
            "extra_dhcp_opts": [{"opt_name": o["opt_name"], "opt_value": o["opt_value"],
                                 "ip_version": o["ip_version"]}
                                for o in self.dhcp_opts.get(pid, [])],
            "binding:host_id": active.get("host") or "",
            "binding:profile": _json(active.get("profile")),
            "binding:vif_type": active.get("vif_type") or "unbound",
            "binding:vif_details": _json(active.get("vif_details")),
            "binding:vnic_type": active.get("vnic_type") or "normal",
        }
        if pid in self.port_security:
            data["port_security_enabled"] = self.port_security[pid]
        return data

    def router(self, row: Mapping[str, Any], gateway: Mapping[str, Any] | None
               ) -> dict[str, Any]:
        info = None
        if gateway is not None:
            info = {
                "network_id": gateway["network_id"],
                "enable_snat": bool(row["enable_snat"]),
                "external_fixed_ips": [{"subnet_id": a["subnet_id"],
                                        "ip_address": a["ip_address"]}
                                       for a in self.ips.get(gateway["id"], [])],
            }
        return {
            **self.common(row),
            "name": row["name"],
            "admin_state_up": bool(row["admin_state_up"]),
            "status": row["status"],
            "gw_port_id": row["gw_port_id"],
            "external_gateway_info": info,
            "routes": [{"destination": r["destination"], "nexthop": r["nexthop"]}
                       for r in self.router_routes.get(row["id"], [])],
        }

    @staticmethod
    def floating_ip(row: Mapping[str, Any], common: dict[str, Any]) -> dict[str, Any]:
        return {
            **common,
            "floating_ip_address": row["floating_ip_address"],
            "floating_network_id": row["floating_network_id"],
            "router_id": row["router_id"],
            "port_id": row["fixed_port_id"],
            "fixed_ip_address": row["fixed_ip_address"],
            "status": row["status"],
        }


def read_topology(conn: Connection) -> dict[str, list[NeutronObject]]:
    """Every object of every data type of :data:`DATA_TYPES`, each list sorted by ID.

    A security group's task carries its rules (as the API shows the group);
    only rules referring to *another* group get their own SECURITYGROUPRULE
    task, queued after every group so that the reference points backwards.
    Every rule is thus created exactly once.
    """
    read = _Reader(conn)
    out: dict[str, list[NeutronObject]] = {t: [] for t in DATA_TYPES}
    rules = _rows(conn, "securitygrouprules", "id")
    carried: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        data = read.rule(rule)
        remote = rule["remote_group_id"]
        if remote and remote != rule["security_group_id"]:
            out["SECURITYGROUPRULE"].append(NeutronObject(
                "SECURITYGROUPRULE", rule["id"], data,
                _refs(rule["security_group_id"], remote), data["project_id"]))
        else:
            carried.setdefault(rule["security_group_id"], []).append(data)
    for sg in _rows(conn, "securitygroups", "id"):
        data = {**read.common(sg), "name": sg["name"],
                "security_group_rules": carried.get(sg["id"], [])}
        if "stateful" in sg:
            data["stateful"] = bool(sg["stateful"])
        out["SECURITYGROUP"].append(
            NeutronObject("SECURITYGROUP", sg["id"], data, project_id=data["project_id"]))

    subnets = _rows(conn, "subnets", "id")
    per_network = _group(subnets, "network_id")
    for net in _rows(conn, "networks", "id"):
        data = read.network(net, [s["id"] for s in per_network.get(net["id"], [])])
        out["NETWORK"].append(
            NeutronObject("NETWORK", net["id"], data, project_id=data["project_id"]))
    for subnet in subnets:
        data = read.subnet(subnet)
        out["SUBNET"].append(NeutronObject("SUBNET", subnet["id"], data,
                                           _refs(subnet["network_id"]), data["project_id"]))

    ports = _rows(conn, "ports", "id")
    by_id = {p["id"]: p for p in ports}
    for router in _rows(conn, "routers", "id"):
        gateway = by_id.get(router.get("gw_port_id") or "")
        data = read.router(router, gateway)
        refs = _refs(gateway["network_id"] if gateway else None)
        out["ROUTER"].append(
            NeutronObject("ROUTER", router["id"], data, refs, data["project_id"]))
    router_ids = {o.id for o in out["ROUTER"]}
    for port in ports:
        data = read.port(port)
        # A router's own ports (interfaces, gateway) name it as their device;
        # other devices (servers, DHCP) are not part of the Neutron topology.
        device_router = port["device_id"] if port["device_id"] in router_ids else None
        refs = _refs(port["network_id"], device_router, *data["security_groups"],
                     *(f["subnet_id"] for f in data["fixed_ips"]))
        out["PORT"].append(NeutronObject("PORT", port["id"], data, refs, data["project_id"]))
    for fip in _rows(conn, "floatingips", "id"):
        data = read.floating_ip(fip, read.common(fip))
        refs = _refs(fip["floating_network_id"], fip.get("fixed_port_id"), fip.get("router_id"))
        out["FLOATINGIP"].append(
            NeutronObject("FLOATINGIP", fip["id"], data, refs, data["project_id"]))
    for objects in out.values():
        objects.sort(key=lambda o: o.id)
    return out


def neutron_ids(topology: Mapping[str, list[NeutronObject]]) -> set[str]:
    """Every ID of the topology (to tell controller objects Neutron does not own)."""
    ids = {o.id for objects in topology.values() for o in objects}
    for group in topology.get("SECURITYGROUP", []):
        ids |= {r["id"] for r in group.data.get("security_group_rules", [])}
    return ids
