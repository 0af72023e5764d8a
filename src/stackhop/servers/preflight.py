"""The preflight step: can these servers start on the destination? Asked before anything
stops or is created.

For the servers of one project (their :class:`~stackhop.servers.gather.ServerRecord`),
on the destination project:

- the flavor: ``--flavor-map SRC=DST`` (names), else the flavor of the source's name;
  its shape (vCPUs, RAM, disk, ephemeral, swap) must equal the source's — a server is
  never started on another size without the operator saying so;
- each port's network, subnets and security groups mapped (the journal's ID map of the
  networking and security-group kinds, or ``--network-map``: move them first with
  ``project migrate`` or ``migrate --networking --security-groups``), each fixed IP free
  in its mapped subnet (a port stackhop made for this source port, found by its marker,
  does not count: a re-run), each floating IP's network mapped to an external network;
- each server group mapped (``nova.server_group``);
- quotas with room for all the servers together: instances, cores and RAM (Nova's
  limits), ports and floating IPs (Neutron's quota details); volumes are checked by the
  volume copy's own preflight.

The answer is a :class:`Preflight`: what each source object becomes, and the problems,
one line each; any problem stops the migration there, with nothing stopped nor created.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackhop.kinds.base import Kind
from stackhop.kinds.rest import call
from stackhop.resolve import Resolver
from stackhop.servers.gather import FLAVOR_SHAPE, ServerRecord

NETWORK = "neutron.network"
SUBNET = "neutron.subnet"
SECURITY_GROUP = "neutron.security_group"
SERVER_GROUP = "nova.server_group"


@dataclass(frozen=True)
class PortPlan:
    """A source port and what its destination twin gets."""

    source_id: str
    network_id: str
    fixed_ips: tuple[tuple[str, str], ...]  # (destination subnet ID, address)
    security_group_ids: tuple[str, ...]
    mac_address: str
    floating_network_ids: tuple[str, ...]


@dataclass
class ServerPreflight:
    server_id: str
    flavor_id: str | None = None
    ports: list[PortPlan] = field(default_factory=list)
    server_group_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Preflight:
    servers: list[ServerPreflight]
    #: Problems of the servers together (quotas).
    problems: list[str] = field(default_factory=list)

    @property
    def all_problems(self) -> list[str]:
        return self.problems + [f"server {s.server_id}: {p}" for s in self.servers
                                for p in s.problems]

    @property
    def ok(self) -> bool:
        return not self.all_problems


def preflight(dst: Any, dst_project_id: str, records: Sequence[ServerRecord],
              resolver: Resolver, flavor_map: Mapping[str, str] | None = None,
              counted: Sequence[ServerRecord] | None = None) -> Preflight:
    """Check ``records`` against the destination (``dst``: the operator's connection).

    ``counted``: the records the quotas must have room for (default: all; a re-run
    leaves out the servers an earlier run booted).
    """
    flavors = {f.name: f for f in dst.compute.flavors(is_public=None)}
    result = Preflight([_one(dst, r, resolver, flavors, flavor_map or {}) for r in records])
    result.problems += _quotas(dst, dst_project_id, records if counted is None else counted)
    return result


def _one(dst: Any, record: ServerRecord, resolver: Resolver, flavors: Mapping[str, Any],
         flavor_map: Mapping[str, str]) -> ServerPreflight:
    out = ServerPreflight(record.id)
    source_name = record.flavor.get("original_name") or ""
    name = flavor_map.get(source_name, source_name)
    flavor = flavors.get(name)
    if flavor is None:
        out.problems.append(f"no flavor {name!r} on the destination (move flavors first, or "
                            f"--flavor-map {source_name}=DST_FLAVOR)")
    else:
        have = {"vcpus": flavor.vcpus, "ram": flavor.ram, "disk": flavor.disk,
                "ephemeral": flavor.ephemeral, "swap": flavor.swap or 0}
        want = {k: record.flavor.get(k) or 0 for k in FLAVOR_SHAPE}
        differs = [f"{k} {have[k]} not {want[k]}" for k in FLAVOR_SHAPE
                   if int(have[k] or 0) != int(want[k])]
        if differs:
            out.problems.append(f"flavor {name!r} on the destination has another shape ("
                                f"{', '.join(differs)}); map it to one of the source's shape")
        else:
            out.flavor_id = flavor.id
    for port in record.ports:
        plan = _port(dst, port, resolver, out.problems)
        if plan is not None:
            out.ports.append(plan)
    for group in record.server_groups:
        mapped = resolver.lookup(SERVER_GROUP, group.id)
        if mapped is None:
            out.problems.append(f"server group {group.name!r} ({group.id}) is not on the "
                                "destination: move server groups first")
        else:
            out.server_group_ids.append(mapped)
    return out


def _port(dst: Any, port: Any, resolver: Resolver, problems: list[str]) -> PortPlan | None:
    network = resolver.lookup(NETWORK, port.network_id)
    if network is None:
        problems.append(f"port {port.id}: its network {port.network_id} is not mapped (move "
                        "the project's networks first, or map it in --network-map)")
        return None
    fixed = []
    for ip in port.fixed_ips:
        subnet = resolver.lookup(SUBNET, ip.subnet_id)
        if subnet is None:
            problems.append(f"port {port.id}: its subnet {ip.subnet_id} is not mapped")
            continue
        holders = [p for p in dst.network.ports(fixed_ips=[f"subnet_id={subnet}",
                                                           f"ip_address={ip.ip_address}"])
                   if Kind.marked_source_id(p.description) != port.id]
        if holders:
            problems.append(f"port {port.id}: {ip.ip_address} is taken on the destination "
                            f"by port {holders[0].id} ({holders[0].device_owner or 'no owner'})")
        fixed.append((subnet, ip.ip_address))
    groups = []
    for group in port.security_group_ids:
        mapped = resolver.lookup(SECURITY_GROUP, group)
        if mapped is None:
            problems.append(f"port {port.id}: security group {group} is not mapped (move "
                            "security groups first)")
        else:
            groups.append(mapped)
    floating = []
    for fip in port.floating_ips:
        mapped = resolver.lookup(NETWORK, fip.network_id)
        if mapped is None:
            problems.append(f"floating IP {fip.address}: its network {fip.network_id} is not "
                            "mapped (map the external network in --network-map)")
        elif not getattr(dst.network.find_network(mapped, ignore_missing=True),
                         "is_router_external", False):
            problems.append(f"floating IP {fip.address}: its network maps to {mapped}, not "
                            "an external network on the destination")
        else:
            floating.append(mapped)
    return PortPlan(port.id, network, tuple(fixed), tuple(groups), port.mac_address,
                    tuple(floating))


def _quotas(dst: Any, project_id: str, records: Sequence[ServerRecord]) -> list[str]:
    if not records:
        return []
    need = {
        "instances": len(records),
        "cores": sum(int(r.flavor.get("vcpus") or 0) for r in records),
        "RAM (MiB)": sum(int(r.flavor.get("ram") or 0) for r in records),
        "ports": sum(len(r.ports) for r in records),
        "floating IPs": sum(len(p.floating_ips) for r in records for p in r.ports),
    }
    absolute = call(dst.compute, "GET", f"/limits?tenant_id={project_id}")["limits"]["absolute"]
    quota = call(dst.network, "GET", f"/quotas/{project_id}/details")["quota"]
    room = {
        "instances": (absolute["maxTotalInstances"], absolute["totalInstancesUsed"]),
        "cores": (absolute["maxTotalCores"], absolute["totalCoresUsed"]),
        "RAM (MiB)": (absolute["maxTotalRAMSize"], absolute["totalRAMUsed"]),
        "ports": (quota["port"]["limit"], quota["port"]["used"] + quota["port"]["reserved"]),
        "floating IPs": (quota["floatingip"]["limit"],
                         quota["floatingip"]["used"] + quota["floatingip"]["reserved"]),
    }
    problems = []
    for what, wanted in need.items():
        limit, used = room[what]
        if limit is not None and int(limit) >= 0 and used + wanted > int(limit):
            problems.append(f"the destination project's {what} quota is {limit}, {used} used: "
                            f"{wanted} more do not fit (raise it, or move fewer servers)")
    return problems
