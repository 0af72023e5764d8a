"""A server of the kind operators move, built in a test's sandbox project on src.

Booted from a volume (``file`` type, so its bytes are files the tests can write and
hash), with a data volume (tag ``db``, deleted with the server), two ports on a network
of its own behind a router to ``public`` — ``front`` with a fixed MAC, a security group,
an allowed address pair and a floating IP, ``back`` with the project's default group —,
a server group, a keypair, metadata, tags and user data. Everything made is removed by
the sandbox's undo steps.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

from tests.functional.volumes_support import Sandbox, wait_status

WAIT = 180
USER_DATA = base64.b64encode(b"#cloud-config\nhostname: moved\n").decode()


@dataclass
class WebServer:
    server: Any
    net: Any
    subnet: Any
    public: Any
    group: Any
    front: Any
    back: Any
    fip: Any
    server_group: Any
    key: Any
    root: Any
    data: Any


def build_web_server(box: Sandbox, name: str = "srv-app") -> WebServer:
    admin, c = box.src, box.scoped("src")
    undo = box.undo
    net = c.network.create_network(name="srv-net")
    undo.append(lambda: admin.network.delete_network(net))
    subnet = c.network.create_subnet(network_id=net.id, cidr="10.77.0.0/24", ip_version=4,
                                     name="srv-v4")
    undo.append(lambda: admin.network.delete_subnet(subnet))
    public = admin.network.find_network("public")
    router = c.network.create_router(name="srv-router",
                                     external_gateway_info={"network_id": public.id})
    undo.append(lambda: admin.network.delete_router(router))
    admin.network.add_interface_to_router(router, subnet_id=subnet.id)
    undo.append(lambda: admin.network.remove_interface_from_router(router, subnet_id=subnet.id))
    group = c.network.create_security_group(name="srv-web")
    undo.append(lambda: admin.network.delete_security_group(group))
    front = c.network.create_port(
        network_id=net.id, name="front", fixed_ips=[{"subnet_id": subnet.id,
                                                     "ip_address": "10.77.0.10"}],
        mac_address="fa:16:3e:77:00:10", security_groups=[group.id],
        allowed_address_pairs=[{"ip_address": "10.77.0.200"}],
    )
    undo.append(lambda: admin.network.delete_port(front))
    back = c.network.create_port(network_id=net.id, name="back",
                                 fixed_ips=[{"subnet_id": subnet.id,
                                             "ip_address": "10.77.0.11"}])
    undo.append(lambda: admin.network.delete_port(back))
    fip = c.network.create_ip(floating_network_id=public.id, port_id=front.id)
    undo.append(lambda: admin.network.delete_ip(fip))
    sgroup = c.compute.create_server_group(name="srv-group", policy="soft-anti-affinity")
    undo.append(lambda: admin.compute.delete_server_group(sgroup))
    key = c.compute.create_keypair(name=f"srv-key-{uuid.uuid4().hex[:6]}")
    undo.append(lambda: c.compute.delete_keypair(key))

    root = box.volume("srv-root")
    box.src.block_storage.set_volume_bootable_status(root, True)
    data = box.volume("srv-data")
    server = c.compute.create_server(
        name=name, flavor_id=admin.compute.find_flavor("m1.tiny").id,
        networks=[{"port": front.id}, {"port": back.id}],
        block_device_mapping=[{"uuid": root.id, "source_type": "volume",
                               "destination_type": "volume", "boot_index": 0,
                               "delete_on_termination": False}],
        key_name=key.name, metadata={"role": "web", "tier": "front"}, tags=["prod", "web"],
        user_data=USER_DATA, scheduler_hints={"group": sgroup.id},
    )

    def delete_server() -> None:
        admin.compute.delete_server(server)
        admin.compute.wait_for_delete(server, interval=1, wait=WAIT)

    undo.append(delete_server)
    server = admin.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                           interval=1, wait=WAIT)
    c.compute.create_volume_attachment(server, volume_id=data.id, tag="db",
                                       delete_on_termination=True)
    wait_status(admin, data.id, ("in-use",))
    return WebServer(server, net, subnet, public, group, front, back, fip, sgroup, key, root,
                     data)


def dst_external_network(box: Sandbox, cidr: str = "172.24.4.0/24") -> Any:
    """dst has no external network of its own (the seed makes none there): one for the test,
    of the tenant type, so that it never holds the physnet an import's "public" needs."""
    dst = box.dst
    network = dst.network.create_network(name="srv-public", is_router_external=True,
                                         project_id=box.ids["dst"])
    box.undo.append(lambda: dst.network.delete_network(network))
    subnet = dst.network.create_subnet(
        network_id=network.id, cidr=cidr, ip_version=4, enable_dhcp=False,
        project_id=box.ids["dst"], name="srv-public-v4")
    box.undo.append(lambda: dst.network.delete_subnet(subnet))
    return network
