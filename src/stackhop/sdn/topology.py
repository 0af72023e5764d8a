"""The Neutron topology as MidoNet's importer wants it, read straight from Neutron's tables.

Reading is read-only (plain SELECTs). Each object becomes a :class:`NeutronObject`
of one *data type* (``network``, ``port`` ...), with the IDs it refers to, so
that tasks can be queued in an order where every reference points backwards.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: The order in which data types are queued: each refers only to types before it.
#: Security groups first (ports and rules refer to them), then the L2 world
#: (networks, subnets), routers (their gateway refers to a network), ports
#: (network, subnets, security groups, device router), router interfaces
#: (router, port, subnet), floating IPs (network, port, router).
DATA_TYPES: tuple[str, ...] = (
    "security_group",
    "security_group_rule",
    "network",
    "subnet",
    "router",
    "port",
    "router_interface",
    "floating_ip",
)

#: The Neutron tables read by :func:`read_topology` (the privileges to check).
TABLES: tuple[str, ...] = (
    "securitygroups",
    "securitygrouprules",
    "networks",
    "externalnetworks",
    "subnets",
    "routers",
    "ports",
    "ipallocations",
    "securitygroupportbindings",
    "routerports",
    "floatingips",
)

ROUTER_INTERFACE_OWNER = "network:router_interface"


@dataclass(frozen=True)
class NeutronObject:
    """One Neutron object: its data type, ID, the resource as JSON-ready data, its references."""

    data_type: str
    id: str
    data: Mapping[str, Any]
    refers_to: frozenset[str] = field(default_factory=frozenset)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _rows(conn: Connection, table: str, order: str = "id") -> list[dict[str, Any]]:
    result = conn.execute(sa.text(f"SELECT * FROM `{table}` ORDER BY {order}"))
    return [{k: _plain(v) for k, v in row._mapping.items()} for row in result]


def _refs(*values: Any) -> frozenset[str]:
    return frozenset(v for v in values if isinstance(v, str) and v)


def _group(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row[key]), []).append(row)
    return grouped


def read_topology(conn: Connection) -> dict[str, list[NeutronObject]]:
    """Every object of every data type of :data:`DATA_TYPES`, each list sorted by ID."""
    external = {r["network_id"] for r in _rows(conn, "externalnetworks", "network_id")}
    ips = _group(_rows(conn, "ipallocations", "port_id, ip_address"), "port_id")
    port_groups = _group(
        _rows(conn, "securitygroupportbindings", "port_id, security_group_id"), "port_id"
    )
    ports = _rows(conn, "ports")
    port_network = {p["id"]: p["network_id"] for p in ports}
    out: dict[str, list[NeutronObject]] = {t: [] for t in DATA_TYPES}

    for sg in _rows(conn, "securitygroups"):
        out["security_group"].append(NeutronObject("security_group", sg["id"], sg))
    for rule in _rows(conn, "securitygrouprules"):
        refs = _refs(rule["security_group_id"], rule.get("remote_group_id"))
        out["security_group_rule"].append(
            NeutronObject("security_group_rule", rule["id"], rule, refs)
        )
    for net in _rows(conn, "networks"):
        data = {**net, "router:external": net["id"] in external}
        out["network"].append(NeutronObject("network", net["id"], data))
    for subnet in _rows(conn, "subnets"):
        out["subnet"].append(
            NeutronObject("subnet", subnet["id"], subnet, _refs(subnet["network_id"]))
        )
    for router in _rows(conn, "routers"):
        gateway_net = port_network.get(router.get("gw_port_id") or "")
        data = {
            **router,
            "external_gateway_info": {"network_id": gateway_net} if gateway_net else None,
        }
        out["router"].append(NeutronObject("router", router["id"], data, _refs(gateway_net)))
    router_ids = {o.id for o in out["router"]}
    for port in ports:
        fixed_ips = [
            {"subnet_id": a["subnet_id"], "ip_address": a["ip_address"]}
            for a in ips.get(port["id"], [])
        ]
        groups = [b["security_group_id"] for b in port_groups.get(port["id"], [])]
        # A router's own ports name it as their device; other devices
        # (servers, DHCP) are not part of the Neutron topology.
        device_router = port["device_id"] if port["device_id"] in router_ids else None
        refs = _refs(
            port["network_id"], device_router, *groups, *(f["subnet_id"] for f in fixed_ips)
        )
        data = {**port, "fixed_ips": fixed_ips, "security_groups": groups}
        out["port"].append(NeutronObject("port", port["id"], data, refs))
    for rp in _rows(conn, "routerports", "router_id, port_id"):
        if rp["port_type"] != ROUTER_INTERFACE_OWNER:
            continue
        subnets = [a["subnet_id"] for a in ips.get(rp["port_id"], [])]
        data = {
            "id": rp["port_id"],
            "router_id": rp["router_id"],
            "port_id": rp["port_id"],
            "subnet_ids": subnets,
        }
        refs = _refs(rp["router_id"], rp["port_id"], *subnets)
        # The interface is identified by its port: a port is on one router at most.
        out["router_interface"].append(
            NeutronObject("router_interface", rp["port_id"], data, refs)
        )
    for fip in _rows(conn, "floatingips"):
        refs = _refs(
            fip["floating_network_id"],
            fip["floating_port_id"],
            fip.get("fixed_port_id"),
            fip.get("router_id"),
        )
        out["floating_ip"].append(NeutronObject("floating_ip", fip["id"], fip, refs))
    for objects in out.values():
        objects.sort(key=lambda o: o.id)
    return out


def neutron_ids(topology: Mapping[str, list[NeutronObject]]) -> set[str]:
    """Every ID of the topology (to tell controller objects Neutron does not own)."""
    return {o.id for objects in topology.values() for o in objects}
