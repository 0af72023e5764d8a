"""The destination side of one server's cutover: ports, boot, attach, floating IPs, verify.

Each function looks at the destination before it acts, so a step cut short by a kill is
simply run again: a port stackhop made carries ``[stackhop-source:<source port ID>]`` in
its description, a server the metadata key :data:`SOURCE_KEY`, a floating IP the marker
of the source floating IP. Every object a step makes is reported (``note``) as soon as it
exists, so a rollback finds it even when the step never finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openstack import exceptions as sdk_exceptions

from stackhop import kinds as registry
from stackhop.errors import ConflictError, StackhopError
from stackhop.kinds.base import MARKER_PREFIX, Kind
from stackhop.kinds.rest import call
from stackhop.servers.gather import FLAVOR_SHAPE, ServerRecord, released_mark
from stackhop.servers.preflight import PortPlan

#: The metadata key a server stackhop booted carries: the source server's ID.
SOURCE_KEY = "stackhop_source"
#: Nova's microversion for tags at boot (2.52) and delete_on_termination updates (2.85).
ATTACHMENT_UPDATE = "2.85"
WAIT = 600

Note = Callable[[dict[str, Any]], None]
FLOATING_IP = registry.get("neutron.floating_ip")


def mark(text: str | None, source_id: str) -> str:
    """``text`` with the marker of ``source_id`` appended."""
    stamp = f"[{MARKER_PREFIX}{source_id}]"
    return f"{text} {stamp}" if text else stamp


def wait_for(what: str, probe: Callable[[], Any], done: Callable[[Any], bool],
             failed: Callable[[Any], str | None] = lambda _: None, timeout: float = WAIT) -> Any:
    """Poll ``probe`` until ``done``; a ``failed`` answer or the timeout raise one line."""
    deadline = time.monotonic() + timeout
    delay = 0.2  # the cutover's waits are downtime: look often at first
    while True:
        seen = probe()
        if done(seen):
            return seen
        reason = failed(seen)
        if reason:
            raise ConflictError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise ConflictError(f"{what}: still not done after {timeout:.0f} s; re-run to "
                                "carry on")
        time.sleep(delay)
        delay = min(delay * 1.25, 3.0)


# -- ports -------------------------------------------------------------------


def ensure_ports(dst: Any, project_id: str, record: ServerRecord, plans: Sequence[PortPlan],
                 created: list[str], note: Note, *, creating: str | None = None) -> dict[str, str]:
    """The destination twin of each source port: source -> dst ID.

    A marked port already there (an earlier attempt's, or the resource import's) is
    taken; a missing one is made, and its ID appended to ``created`` and noted at once.
    Each creation is noted before its call (``creating``: the source port): the twin of
    the port an interrupted attempt was creating (``creating``, from its notes) is
    counted as made by this run when it is found, so a rollback deletes it.
    """
    sources = {p.id: p for p in record.ports}
    made: dict[str, str] = {}
    for plan in plans:
        found = [p for p in dst.network.ports(network_id=plan.network_id, project_id=project_id)
                 if Kind.marked_source_id(p.description) == plan.source_id]
        if found:
            made[plan.source_id] = found[0].id
            if plan.source_id == creating and found[0].id not in created:
                created.append(found[0].id)  # made by the attempt a kill cut short
                note({"ports": dict(made), "created": list(created)})
            continue
        note({"ports": dict(made), "created": list(created), "creating": plan.source_id,
              "creating_in": {"network_id": plan.network_id, "project_id": project_id}})
        source = sources[plan.source_id]
        body: dict[str, Any] = {
            "network_id": plan.network_id,
            "project_id": project_id,
            "name": source.name,
            "description": mark("", plan.source_id),
            "mac_address": plan.mac_address,
            "fixed_ips": [{"subnet_id": s, "ip_address": a} for s, a in plan.fixed_ips],
            "allowed_address_pairs": [dict(pair) for pair in source.allowed_address_pairs],
        }
        if source.port_security_enabled is False:
            body["port_security_enabled"] = False
        else:
            body["security_groups"] = list(plan.security_group_ids)
        port = call(dst.network, "POST", "/ports", json={"port": body})["port"]
        made[plan.source_id] = port["id"]
        created.append(port["id"])
        note({"ports": dict(made), "created": list(created), "creating": None})
    return made


# -- boot --------------------------------------------------------------------


def find_booted(dst: Any, project_id: str, source_id: str) -> Any | None:
    """The destination server stackhop booted for ``source_id`` (its metadata says so)."""
    for server in dst.compute.servers(all_projects=True, project_id=project_id):
        if (server.metadata or {}).get(SOURCE_KEY) == source_id:
            return server
    return None


def boot(dst: Any, scoped: Any, project_id: str, record: ServerRecord, flavor_id: str,
         ports: Sequence[str], boot_volume: str | None, image_id: str | None,
         group_ids: Sequence[str], key_name: str | None, note: Note) -> str:
    """Boot the destination server (unless it is there already); its ID once ACTIVE."""
    server = find_booted(dst, project_id, record.id)
    if server is None:
        attrs: dict[str, Any] = {
            "name": record.name,
            "flavor_id": flavor_id,
            "networks": [{"port": p} for p in ports] or "none",
            "metadata": {**record.metadata, SOURCE_KEY: record.id},
            "config_drive": record.config_drive,
        }
        if boot_volume is not None:
            # Not deleted with the server until verify: a rollback's delete keeps the copy.
            attrs["block_device_mapping"] = [{
                "boot_index": 0, "uuid": boot_volume, "source_type": "volume",
                "destination_type": "volume", "delete_on_termination": False,
            }]
        else:
            attrs["image_id"] = image_id
        if key_name:
            attrs["key_name"] = key_name
        if record.user_data:
            attrs["user_data"] = record.user_data
        if record.description:
            attrs["description"] = record.description
        if record.tags:
            attrs["tags"] = list(record.tags)
        if group_ids:
            attrs["scheduler_hints"] = {"group": group_ids[0]}
        note({"booting": project_id})  # before the call: a rollback looks for what it made
        server = scoped.compute.create_server(**attrs)
    note({"server": server.id})

    def failed(s: Any) -> str | None:
        if s.status == "ERROR":
            return f"Nova put it in ERROR: {(s.fault or {}).get('message', 'no fault given')}"
        return None

    wait_for(f"destination server {server.id}", lambda: dst.compute.get_server(server.id),
             lambda s: s.status == "ACTIVE", failed)
    return str(server.id)


def keypair_for_boot(src: Any, scoped: Any, record: ServerRecord, user_id: str | None,
                     note: Note, *, made_earlier: bool = False) -> tuple[str | None, bool]:
    """The key name to boot with and whether stackhop made that keypair for the boot.

    Nova boots with a keypair of the user who asks, so the operator's user on the
    destination gets one of the source key's name and public key for the boot (removed
    once the server is ACTIVE: the server keeps the key's name and data). It is noted as
    made before the create; ``made_earlier``: an interrupted attempt noted so, and the
    keypair found is that one.
    """
    if not record.key_name:
        return None, False
    try:
        source_key = src.compute.get_keypair(record.key_name, user_id=user_id)
    except sdk_exceptions.NotFoundException:
        return None, False
    existing = scoped.compute.find_keypair(record.key_name, ignore_missing=True)
    if existing is not None:
        if existing.public_key.strip() != source_key.public_key.strip():
            raise ConflictError(
                f"the destination user already has a keypair {record.key_name!r} with another "
                "public key; remove or rename it, then re-run")
        return record.key_name, made_earlier
    note({"keypair": record.key_name, "keypair_made": True})
    scoped.compute.create_keypair(name=record.key_name, public_key=source_key.public_key)
    return record.key_name, True


# -- attach ------------------------------------------------------------------


def attach(dst: Any, scoped: Any, server_id: str,
           volumes: Sequence[tuple[str, str | None]]) -> None:
    """Attach the data volumes (ID, device tag), in the source's device order, each waited
    for."""
    have = {a.volume_id for a in dst.compute.volume_attachments(server_id)}
    for volume_id, tag in volumes:
        if volume_id not in have:
            extra = {"tag": tag} if tag else {}
            scoped.compute.create_volume_attachment(server_id, volume_id=volume_id, **extra)
        wait_for(f"volume {volume_id} attaching to {server_id}",
                 _volume_probe(dst, volume_id), lambda v: v.status == "in-use",
                 lambda v: f"Cinder says {v.status}" if v.status.startswith("error") else None)


def _volume_probe(dst: Any, volume_id: str) -> Callable[[], Any]:
    return lambda: dst.block_storage.get_volume(volume_id)


def set_delete_on_termination(dst: Any, server_id: str, wanted: Mapping[str, bool]) -> None:
    """Each destination volume's ``delete_on_termination`` as ``wanted`` says (Nova 2.85)."""
    for volume_id, value in wanted.items():
        call(dst.compute, "PUT", f"/servers/{server_id}/os-volume_attachments/{volume_id}",
             json={"volumeAttachment": {"volumeId": volume_id,
                                        "delete_on_termination": value}},
             microversion=ATTACHMENT_UPDATE)


def delete_keeping_volumes(dst: Any, server: Any) -> int:
    """Delete a destination server, its volumes first set to outlive it; how many it had."""
    keep = {a.volume_id: False for a in dst.compute.volume_attachments(server.id)}
    set_delete_on_termination(dst, server.id, keep)
    dst.compute.delete_server(server)
    dst.compute.wait_for_delete(server, interval=1, wait=WAIT)
    return len(keep)


# -- floating IPs --------------------------------------------------------------


def move_floating_ips(src: Any, dst: Any, project_id: str, record: ServerRecord,
                      plans: Sequence[PortPlan], ports: Mapping[str, str], release: bool,
                      note: Note, earlier: Sequence[Mapping[str, Any]] = ()
                      ) -> list[dict[str, Any]]:
    """Each source floating IP on the destination port, the same address where free.

    ``release``: the source's floating IP is disassociated first (a cutover); a test copy
    (``--cutover none``) leaves it where it is. What was done is noted as it happens, a
    create before its call (``creating``): the marked floating IP an interrupted attempt
    (``earlier``, its notes) was creating counts as made by this run when it is found.
    """
    was_creating = {e["source"] for e in earlier if e.get("creating") or e.get("created")}
    moved: list[dict[str, Any]] = []
    by_port = {p.source_id: p for p in plans}
    for port in record.ports:
        plan = by_port.get(port.id)
        for fip, network in zip(port.floating_ips, plan.floating_network_ids if plan else (),
                                strict=False):
            entry: dict[str, Any] = {"source": fip.id, "address": fip.address,
                                     "source_port": port.id, "released": False}
            entry["released"] = release or fip.released  # fip.released: by a lost run
            if entry["released"]:
                note({"floating_ips": [*moved, entry]})  # journaled before the call
            if release and not fip.released:
                call(src.network, "PUT", f"/floatingips/{fip.id}", json={"floatingip": {
                    "port_id": None,
                    "description": released_mark(fip.description, port.id,
                                                 fip.fixed_ip_address)}})
            found = [f for f in dst.network.ips(floating_network_id=network)
                     if Kind.marked_source_id(f.description) == fip.id
                     or (f.floating_ip_address == fip.address and f.project_id == project_id)]
            body = {"port_id": ports[port.id]}
            if fip.fixed_ip_address:
                body["fixed_ip_address"] = fip.fixed_ip_address
            if found:
                call(dst.network, "PUT", f"/floatingips/{found[0].id}", json={"floatingip": body})
                ours = (fip.id in was_creating
                        and Kind.marked_source_id(found[0].description) == fip.id)
                entry.update(destination=found[0].id, created=ours,
                             destination_address=found[0].floating_ip_address)
            else:  # the floating IP kind's create: marked, the same address where free
                note({"floating_ips": [*moved, {**entry, "creating": True,
                                                "network": network, "project": project_id}]})
                made = FLOATING_IP.create(dst, {
                    "id": fip.id, "description": "", "project_id": project_id,
                    "floating_network_id": network, "floating_ip_address": fip.address,
                    "port_id": body["port_id"], "fixed_ip_address": fip.fixed_ip_address})
                address = call(dst.network, "GET", f"/floatingips/{made}")["floatingip"][
                    "floating_ip_address"]
                entry.update(destination=made, created=True, destination_address=address)
            moved.append(entry)
            note({"floating_ips": list(moved)})
    return moved


# -- verify --------------------------------------------------------------------


def verify(src: Any, dst: Any, record: ServerRecord, server_id: str, ports: Mapping[str, str],
           expect_source_stopped: bool) -> list[str]:
    """What differs between the source server and its destination twin (empty: equal)."""
    found: list[str] = []
    server = dst.compute.get_server(server_id)
    if server.status != "ACTIVE":
        found.append(f"destination server {server_id} is {server.status}, not ACTIVE")
    flavor = dict(server.flavor or {})
    for key in FLAVOR_SHAPE:
        if int(flavor.get(key) or 0) != int(record.flavor.get(key) or 0):
            found.append(f"flavor {key}: {flavor.get(key)} on dst, {record.flavor.get(key)} "
                         "on src")
    for port in record.ports:
        twin = dst.network.get_port(ports[port.id])
        if twin.mac_address != port.mac_address:
            found.append(f"port {port.id}: MAC {twin.mac_address} on dst")
        want = sorted(ip.ip_address for ip in port.fixed_ips)
        have = sorted(ip["ip_address"] for ip in twin.fixed_ips)
        if want != have:
            found.append(f"port {port.id}: addresses {have} on dst, {want} on src")
        if twin.device_id != server_id:
            found.append(f"port {port.id}: its twin {twin.id} is not bound to {server_id}")
    metadata = {k: v for k, v in (server.metadata or {}).items() if k != SOURCE_KEY}
    if metadata != record.metadata:
        found.append(f"metadata {metadata} on dst, {record.metadata} on src")
    if record.tags is not None and sorted(server.tags or []) != sorted(record.tags):
        found.append(f"tags {sorted(server.tags or [])} on dst, {sorted(record.tags)} on src")
    if expect_source_stopped:
        status = src.compute.get_server(record.id).status
        if status not in ("SHUTOFF", "SHELVED", "SHELVED_OFFLOADED"):
            found.append(f"the source server is {status}, not stopped")
    return found


def check_digests(final: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each volume's final pass verified (its digest read back equal on both sides)."""
    return [f"volume {source}: its final pass has no verified digest"
            for source, facts in final.items() if not facts.get("digest")]


def one_line(exc: BaseException) -> str:
    return exc.message if isinstance(exc, StackhopError) else repr(exc)
