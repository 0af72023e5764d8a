"""The network topology on src: networks, subnets, routers, ports, floating IPs.

Names identify networks, subnets, routers and ports inside their project; a
floating IP is identified by its address (the seed asks for fixed addresses).
"""

from __future__ import annotations

from typing import Any

from testbed.openstack.neutron import PHYSNET
from testbed.seed import inventory as inv
from testbed.seed.context import SeedContext


def seed(ctx: SeedContext) -> None:
    """Ensure the whole topology of the inventory, in dependency order."""
    networks: dict[str, Any] = {}
    subnets: dict[str, Any] = {}
    for n in inv.NETWORKS:
        networks[n.name] = _ensure_network(ctx, n)
        for s in n.subnets:
            subnets[s.name] = _ensure_subnet(ctx, n, s, networks[n.name].id)
    for r in inv.ROUTERS:
        _ensure_router(ctx, r, networks[r.external_network].id, subnets)
    ports = {p.name: _ensure_port(ctx, p, networks[p.network].id, subnets) for p in inv.PORTS}
    for f in inv.FLOATING_IPS:
        port_id = ports[f.port].id if f.port else None
        _ensure_floating_ip(ctx, f, networks[f.network].id, port_id)


def _ensure_network(ctx: SeedContext, n: inv.Network) -> Any:
    pid = ctx.project_id(n.project)
    found = ctx.conn.network.find_network(n.name, project_id=pid)
    if found is not None:
        ctx.found("network")
        return found
    attrs: dict[str, Any] = {"name": n.name, "project_id": pid}
    if n.external:
        attrs.update(is_router_external=True, provider_network_type="flat",
                     provider_physical_network=PHYSNET)
    made = ctx.conn.network.create_network(**attrs)
    ctx.made("network", f"{n.project}/{n.name}")
    return made


def _ensure_subnet(ctx: SeedContext, n: inv.Network, s: inv.Subnet, network_id: str) -> Any:
    found = ctx.conn.network.find_subnet(s.name, network_id=network_id)
    if found is not None:
        ctx.found("subnet")
        return found
    attrs: dict[str, Any] = {
        "name": s.name, "network_id": network_id, "project_id": ctx.project_id(n.project),
        "ip_version": s.ip_version, "cidr": s.cidr, "is_dhcp_enabled": s.enable_dhcp,
    }
    if s.gateway_ip:
        attrs["gateway_ip"] = s.gateway_ip
    if s.allocation_pool:
        attrs["allocation_pools"] = [{"start": s.allocation_pool[0], "end": s.allocation_pool[1]}]
    made = ctx.conn.network.create_subnet(**attrs)
    ctx.made("subnet", f"{n.name}/{s.name} {s.cidr}")
    return made


def _ensure_router(
    ctx: SeedContext, r: inv.Router, external_id: str, subnets: dict[str, Any]
) -> None:
    net = ctx.conn.network
    pid = ctx.project_id(r.project)
    gateway = {"network_id": external_id}
    router = net.find_router(r.name, project_id=pid)
    if router is None:
        router = net.create_router(name=r.name, project_id=pid, external_gateway_info=gateway)
        ctx.made("router", f"{r.project}/{r.name} (gateway on {r.external_network})")
    elif (router.external_gateway_info or {}).get("network_id") != external_id:
        router = net.update_router(router, external_gateway_info=gateway)
        ctx.changed("router", f"{r.project}/{r.name}: gateway on {r.external_network}")
    else:
        ctx.found("router")
    attached = {
        ip["subnet_id"]
        for p in net.ports(device_id=router.id, device_owner="network:router_interface")
        for ip in p.fixed_ips
    }
    for name in r.interfaces:
        if subnets[name].id in attached:
            ctx.found("router interface")
            continue
        net.add_interface_to_router(router, subnet_id=subnets[name].id)
        ctx.made("router interface", f"{r.name} on {name}")


def _ensure_port(ctx: SeedContext, p: inv.Port, network_id: str, subnets: dict[str, Any]) -> Any:
    net = ctx.conn.network
    pid = ctx.project_id(p.project)
    found = net.find_port(p.name, project_id=pid, network_id=network_id)
    if found is not None:
        ctx.found("port")
        return found
    fixed = [{"subnet_id": subnets[s].id, "ip_address": ip} for s, ip in p.fixed_ips]
    made = net.create_port(name=p.name, network_id=network_id, project_id=pid, fixed_ips=fixed)
    ctx.made("port", f"{p.project}/{p.name}")
    return made


def _ensure_floating_ip(
    ctx: SeedContext, f: inv.FloatingIP, network_id: str, port_id: str | None
) -> None:
    net = ctx.conn.network
    found = next(iter(net.ips(floating_ip_address=f.address, floating_network_id=network_id)), None)
    if found is None:
        attrs: dict[str, Any] = {
            "floating_network_id": network_id, "floating_ip_address": f.address,
            "project_id": ctx.project_id(f.project), "description": f.description,
        }
        if port_id:
            attrs["port_id"] = port_id
        net.create_ip(**attrs)
        ctx.made("floating IP", f"{f.project}/{f.address}")
    elif found.port_id != port_id:
        net.update_ip(found, port_id=port_id)
        ctx.changed("floating IP", f"{f.address} -> port {port_id}")
    else:
        ctx.found("floating IP")
