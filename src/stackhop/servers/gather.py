"""The gather step: one server as the source's APIs show it, and what cannot be carried.

Read with the operator's (admin) connection: Nova at the microversion openstacksdk
negotiates (up to 2.100) — the flavor embedded in the server (2.47: its shape and
original name, no ID), tags (2.26), server groups (2.71; older clouds: the groups'
member lists), ``user_data`` and the root device name (2.3, admin) —; the volume
attachments in device order with ``delete_on_termination`` (2.79); Neutron's ports of
the server (``device_id``) with their fixed IPs, MAC, security groups, allowed address
pairs and floating IPs.

What the APIs show but a migration cannot carry is listed in
:attr:`ServerRecord.not_carried` (one line each), never dropped silently: files
injected at boot are not readable, a port's QoS policy or trunk is not moved by
stackhop, the contents of a flavor's ephemeral and swap disks are not copied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from openstack import exceptions as sdk_exceptions

from stackhop.errors import ConfigError

#: The flavor fields that make its shape (what the destination flavor must equal).
FLAVOR_SHAPE = ("vcpus", "ram", "disk", "ephemeral", "swap")
#: The metadata key the cutover sets on a source server just before it stops it: the
#: status it had. A re-run whose journal was lost still knows the migration stopped it
#: (its rollback starts it again); it is not carried to the destination.
STOPPED_KEY = "stackhop_stopped_from"
#: Set on the source server by the ``verify`` step: the destination server that replaced
#: it. A re-run whose journal was lost leaves a server so marked alone (its migration is
#: finished); a destination twin without it is an unfinished cutover's.
MIGRATED_KEY = "stackhop_migrated_to"
#: The metadata stackhop puts on a source server (never carried to the destination).
SOURCE_MARKS = (STOPPED_KEY, MIGRATED_KEY)
#: What the cutover adds to a source floating IP's description as it releases it: the
#: port and fixed address it was on, so that a re-run whose journal was lost still moves
#: it, and a rollback gives it back.
_RELEASED = re.compile(r" ?\[stackhop-released-from:([^@\]]+)@([^\]]*)\]")


def released_mark(description: str | None, port_id: str, fixed_ip: str | None) -> str:
    """``description`` with the mark of a floating IP released from ``port_id``."""
    stamp = f"[stackhop-released-from:{port_id}@{fixed_ip or ''}]"
    return f"{description} {stamp}" if description else stamp


def released_from(description: str | None) -> tuple[str, str | None] | None:
    """The (port, fixed IP) a floating IP was released from by a cutover, or None."""
    found = _RELEASED.search(description or "")
    return (found.group(1), found.group(2) or None) if found else None


def without_released_mark(description: str | None) -> str:
    return _RELEASED.sub("", description or "")


@dataclass(frozen=True)
class Attachment:
    """A volume of the server, in the order Nova lists them (the device order)."""

    volume_id: str
    device: str | None
    delete_on_termination: bool
    #: The boot volume of a server booted from a volume (its root device).
    boot: bool = False
    tag: str | None = None


@dataclass(frozen=True)
class FixedIp:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True)
class FloatingIp:
    id: str
    address: str
    network_id: str
    fixed_ip_address: str | None
    description: str = ""
    #: Released from its port by an earlier cutover whose journal is not this run's.
    released: bool = False


@dataclass(frozen=True)
class Port:
    """A port of the server: what its destination twin must have."""

    id: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[FixedIp, ...]
    security_group_ids: tuple[str, ...]
    allowed_address_pairs: tuple[dict[str, str], ...]
    port_security_enabled: bool | None
    floating_ips: tuple[FloatingIp, ...]
    name: str = ""


@dataclass(frozen=True)
class ServerGroup:
    id: str
    name: str
    policy: str


@dataclass
class ServerRecord:
    """Everything the migration of one server needs to know about it on the source."""

    id: str
    name: str
    project_id: str
    status: str
    flavor: dict[str, Any]
    #: ``image`` (its root disk lives on the compute host) or ``volume``.
    boot: str
    image_id: str | None
    attachments: tuple[Attachment, ...]
    ports: tuple[Port, ...]
    key_name: str | None
    metadata: dict[str, str]
    tags: tuple[str, ...] | None
    server_groups: tuple[ServerGroup, ...]
    availability_zone: str | None
    config_drive: bool
    user_data: str | None
    description: str | None
    compute_host: str | None
    not_carried: list[str] = field(default_factory=list)

    @property
    def boot_volume(self) -> Attachment | None:
        return next((a for a in self.attachments if a.boot), None)

    @property
    def data_volumes(self) -> tuple[Attachment, ...]:
        return tuple(a for a in self.attachments if not a.boot)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_server(compute: Any, project_id: str, name_or_id: str) -> Any:
    """The server of ``project_id`` with that ID, or the one so named (exactly one)."""
    try:
        server = compute.get_server(name_or_id)
    except sdk_exceptions.NotFoundException:
        server = None
    if server is not None and server.project_id == project_id:
        return server
    named = [s for s in compute.servers(all_projects=True, project_id=project_id)
             if s.name == name_or_id]
    if len(named) == 1:
        return compute.get_server(named[0].id)
    if named:
        raise ConfigError(f"{len(named)} servers are named {name_or_id!r} in project "
                          f"{project_id}; name it by ID")
    raise ConfigError(f"no server {name_or_id!r} in project {project_id}")


def gather(conn: Any, server: Any) -> ServerRecord:
    """Read ``server`` (an openstacksdk Server of the source) and everything around it."""
    flavor = dict(server.flavor or {})
    image_id = (server.image or {}).get("id") or None
    not_carried: list[str] = []
    attachments = _attachments(conn.compute, server, image_id, not_carried)
    tags = tuple(server.tags) if server.tags is not None else None
    if tags is None:
        not_carried.append("tags: the source's Nova is older than microversion 2.26")
    record = ServerRecord(
        id=server.id,
        name=server.name,
        project_id=server.project_id,
        status=server.status,
        flavor={k: flavor.get(k) for k in ("original_name", *FLAVOR_SHAPE, "extra_specs")},
        boot="image" if image_id else "volume",
        image_id=image_id,
        attachments=attachments,
        ports=tuple(_ports(conn.network, server.id, server.project_id, not_carried)),
        key_name=server.key_name or None,
        metadata={k: v for k, v in (server.metadata or {}).items() if k not in SOURCE_MARKS},
        tags=tags,
        server_groups=tuple(_server_groups(conn.compute, server)),
        availability_zone=server.availability_zone or None,
        config_drive=str(server.has_config_drive or "").lower() in ("true", "1", "yes"),
        user_data=server.user_data or None,
        description=getattr(server, "description", None) or None,
        compute_host=server.compute_host or None,
        not_carried=not_carried,
    )
    if int(flavor.get("ephemeral") or 0) or int(flavor.get("swap") or 0):
        not_carried.append(
            f"the contents of the flavor's ephemeral ({flavor.get('ephemeral') or 0} GiB) and "
            f"swap ({flavor.get('swap') or 0} MiB) disks: they are created empty on dst")
    if server.is_locked:
        not_carried.append("the lock: the destination server is not locked")
    not_carried.append("files injected at boot (personality): the API does not show them")
    return record


def _attachments(compute: Any, server: Any, image_id: str | None,
                 not_carried: list[str]) -> tuple[Attachment, ...]:
    root = server.root_device_name
    listed = list(compute.volume_attachments(server))
    found = tuple(
        Attachment(
            volume_id=a.volume_id, device=a.device,
            delete_on_termination=bool(a.delete_on_termination),
            boot=image_id is None and root is not None and a.device == root,
            tag=a.tag or None,
        )
        for a in listed
    )
    if image_id is None and not any(a.boot for a in found):
        raise ConfigError(f"server {server.id} boots from a volume, but no attachment is on "
                          f"its root device {root!r}; nothing was changed")
    if any(a.delete_on_termination is None for a in listed):
        not_carried.append("delete_on_termination (the source's Nova is older than 2.79): "
                           "False on dst")
    return found


def _ports(network: Any, server_id: str, project_id: str,
           not_carried: list[str]) -> Iterable[Port]:
    released: dict[str, list[FloatingIp]] = {}
    for f in network.ips(project_id=project_id):
        mark = released_from(f.description) if f.port_id is None else None
        if mark:
            released.setdefault(mark[0], []).append(_floating(f, mark[1], released=True))
    for p in sorted(network.ports(device_id=server_id), key=lambda p: p.created_at or ""):
        if p.qos_policy_id:
            not_carried.append(f"port {p.id}: its QoS policy {p.qos_policy_id}")
        if getattr(p, "trunk_details", None):
            not_carried.append(f"port {p.id}: its trunk and subports")
        floating = tuple(_floating(f, f.fixed_ip_address) for f in network.ips(port_id=p.id))
        floating += tuple(released.get(p.id, ()))
        yield Port(
            id=p.id, network_id=p.network_id, mac_address=p.mac_address,
            fixed_ips=tuple(FixedIp(ip["subnet_id"], ip["ip_address"]) for ip in p.fixed_ips),
            security_group_ids=tuple(sorted(p.security_group_ids or ())),
            allowed_address_pairs=tuple(dict(pair) for pair in p.allowed_address_pairs or ()),
            port_security_enabled=p.is_port_security_enabled,
            floating_ips=floating,
            name=p.name or "",
        )


def _floating(f: Any, fixed_ip: str | None, *, released: bool = False) -> FloatingIp:
    return FloatingIp(id=f.id, address=f.floating_ip_address, network_id=f.floating_network_id,
                      fixed_ip_address=fixed_ip, description=f.description or "",
                      released=released)


def _server_groups(compute: Any, server: Any) -> Iterable[ServerGroup]:
    ids = server.server_groups
    if ids is None:  # before 2.71: the groups' member lists say it
        groups = [g for g in compute.server_groups(all_projects=True)
                  if server.id in (g.member_ids or ())]
    else:
        groups = [compute.get_server_group(i) for i in ids]
    for g in groups:
        yield ServerGroup(id=g.id, name=g.name, policy=g.policy or ",".join(g.policies or ()))
