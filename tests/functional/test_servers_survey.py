"""``servers migrate``'s gather and preflight steps on the testbed's Nova, Neutron, Cinder.

A server booted from a volume, with a data volume (deleted with the server, tagged), two
ports (one with a floating IP, allowed address pairs and its own security group), a
server group, a keypair, metadata, tags and user data: everything read back as the
source's APIs show it, the boot volume told from the data volume by the root device.
Then checked against dst: unmapped networks and groups, a fixed IP taken, a quota full.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.functional.servers_support import USER_DATA, build_web_server, dst_external_network
from tests.functional.volumes_support import Sandbox

from stackhop.resolve import Resolver
from stackhop.servers.gather import find_server, gather
from stackhop.servers.preflight import preflight

pytestmark = pytest.mark.functional



@pytest.fixture
def box(testbed: Any) -> Iterator[Sandbox]:
    """A project of our own on src and dst; ``box.undo`` steps run after the test."""
    with Sandbox.create("srvtest") as sandbox:
        yield sandbox


@pytest.mark.long  # 31 s; make test keeps its short form: test_servers_migrate.py's gather
# and preflight (a cores quota refused before anything stops) on the same server.
def test_gather_then_preflight_a_volume_booted_server_with_ports_fip_group_and_volumes(
    box: Sandbox, cli: Callable[..., Any], tmp_path: Path,
) -> None:
    admin, undo = box.src, box.undo
    web = build_web_server(box)
    server, subnet, group, fip, sgroup, key = (web.server, web.subnet, web.group, web.fip,
                                               web.server_group, web.key)
    root, data, net, public, front, back = (web.root, web.data, web.net, web.public,
                                            web.front, web.back)
    user_data = USER_DATA

    found = find_server(admin.compute, box.ids["src"], "srv-app")
    assert found.id == server.id
    record = gather(admin, found)

    assert (record.boot, record.image_id) == ("volume", None)
    assert record.boot_volume is not None and record.boot_volume.volume_id == root.id
    assert record.boot_volume.delete_on_termination is False
    (extra,) = record.data_volumes
    assert (extra.volume_id, extra.delete_on_termination, extra.tag) == (data.id, True, "db")
    assert [a.volume_id for a in record.attachments] == [root.id, data.id]  # device order
    assert record.flavor["original_name"] == "m1.tiny"
    assert {k: record.flavor[k] for k in ("vcpus", "ram", "disk")} == {
        "vcpus": 1, "ram": 512, "disk": 1}
    ports = {p.name: p for p in record.ports}
    assert set(ports) == {"front", "back"}
    assert ports["front"].mac_address == "fa:16:3e:77:00:10"
    assert [(f.subnet_id, f.ip_address) for f in ports["front"].fixed_ips] == [
        (subnet.id, "10.77.0.10")]
    assert ports["front"].security_group_ids == (group.id,)
    assert [p["ip_address"] for p in ports["front"].allowed_address_pairs] == ["10.77.0.200"]
    assert [(f.id, f.address) for f in ports["front"].floating_ips] == [
        (fip.id, fip.floating_ip_address)]
    assert ports["back"].floating_ips == ()
    assert record.key_name == key.name
    assert record.metadata == {"role": "web", "tier": "front"}
    assert sorted(record.tags or ()) == ["prod", "web"]
    assert [(g.id, g.policy) for g in record.server_groups] == [
        (sgroup.id, "soft-anti-affinity")]
    assert record.user_data == user_data
    assert record.compute_host  # where an image-booted server's disk would be read
    assert any("personality" in line for line in record.not_carried)

    # Preflight on dst: nothing is mapped yet.
    dst_admin, d = box.dst, box.scoped("dst")
    unmapped = preflight(dst_admin, box.ids["dst"], [record], Resolver("dst"))
    problems = "\n".join(unmapped.all_problems)
    assert "is not mapped" in problems and f"server group 'srv-group' ({sgroup.id})" in problems
    assert "flavor" not in problems  # m1.tiny is on dst with the same shape

    # Mapped by the operator's maps; the front address taken on dst, no instance left.
    dnet = d.network.create_network(name="srv-net")
    undo.append(lambda: dst_admin.network.delete_network(dnet))
    dsub = d.network.create_subnet(network_id=dnet.id, cidr="10.77.0.0/24", ip_version=4)
    undo.append(lambda: dst_admin.network.delete_subnet(dsub))
    dgroup = d.network.create_security_group(name="srv-web")
    undo.append(lambda: dst_admin.network.delete_security_group(dgroup))
    dsgroup = d.compute.create_server_group(name="srv-group", policy="soft-anti-affinity")
    undo.append(lambda: dst_admin.compute.delete_server_group(dsgroup))
    squatter = d.network.create_port(network_id=dnet.id, fixed_ips=[
        {"subnet_id": dsub.id, "ip_address": "10.77.0.10"}])
    undo.append(lambda: dst_admin.network.delete_port(squatter))
    dst_admin.compute.update_quota_set(box.ids["dst"], instances=0)
    dpublic = dst_external_network(box)
    maps = {"neutron.network": {net.id: dnet.id, public.id: dpublic.id},
            "neutron.subnet": {subnet.id: dsub.id},
            "neutron.security_group": {group.id: dgroup.id, **{
                g: next(dst_admin.network.security_groups(project_id=box.ids["dst"],
                                                          name="default")).id
                for g in ports["back"].security_group_ids}},  # the projects' default groups
            "nova.server_group": {sgroup.id: dsgroup.id}}
    wrong = preflight(dst_admin, box.ids["dst"], [record], Resolver("dst", maps={
        **maps, "neutron.network": {net.id: dnet.id, public.id: dnet.id}}))
    assert [p for p in wrong.all_problems if "floating IP" in p] == [
        f"server {server.id}: floating IP {fip.floating_ip_address}: its network maps to "
        f"{dnet.id}, not an external network on the destination"]
    blocked = preflight(dst_admin, box.ids["dst"], [record], Resolver("dst", maps=maps))
    assert len(blocked.all_problems) == 2, blocked.all_problems
    assert "10.77.0.10 is taken on the destination by port " + squatter.id in (
        blocked.all_problems[1])
    assert blocked.all_problems[0].startswith("the destination project's instances quota is 0")

    dst_admin.network.delete_port(squatter)
    dst_admin.compute.update_quota_set(box.ids["dst"], instances=10)
    ready = preflight(dst_admin, box.ids["dst"], [record], Resolver("dst", maps=maps))
    assert ready.ok, ready.all_problems
    (plan,) = ready.servers
    assert plan.flavor_id == dst_admin.compute.find_flavor("m1.tiny").id
    assert plan.server_group_ids == [dsgroup.id]
    front_plan = next(p for p in plan.ports if p.source_id == front.id)
    assert front_plan.network_id == dnet.id
    assert front_plan.fixed_ips == ((dsub.id, "10.77.0.10"),)
    assert front_plan.security_group_ids == (dgroup.id,)
    assert front_plan.mac_address == "fa:16:3e:77:00:10"

    # The command: the same gather and preflight, from a journal that maps nothing yet.
    plan = cli("--journal", str(tmp_path / "j.sqlite"), "servers", "plan", "--from", "src",
               "--to", "dst", "--project", box.name, "--server", "srv-app", "-f", "json")
    assert plan.code == 10, plan.err
    assert len(plan.err.strip().splitlines()) == 1 and "nothing was changed" in plan.err
    (shown,) = plan.json()["servers"]
    assert shown["id"] == server.id and shown["boot"] == "volume"
    assert any("is not mapped" in p for p in shown["preflight"]["problems"])
    assert sorted(p["mac_address"] for p in shown["ports"]) == sorted(
        [front.mac_address, back.mac_address])
