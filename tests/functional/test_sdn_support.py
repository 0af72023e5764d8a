"""Shared pieces of the SDN functional tests: a Neutron topology, DB copies, ZooKeeper trees.

Every test works on its own copy database (``sdn_test_<hex>``) holding a
snapshot of the src cloud's Neutron topology tables, and under its own
ZooKeeper path, so tests never touch ``src_neutron`` or each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from kazoo.client import KazooClient
from kazoo.security import ACL, Id
from testbed.midonet import task_tables

from stackhop.sdn import topology

DB_PREFIX = os.environ.get(
    "STACKHOP_DB_URL_PREFIX", "mysql+pymysql://openstack:openstackpw@127.0.0.1:33306"
)
ZK = os.environ.get("STACKHOP_ZOOKEEPER", "127.0.0.1:42181")
SOURCE_DB = "src_neutron"


def server_engine(prefix: str = DB_PREFIX) -> sa.Engine:
    return sa.create_engine(prefix + "/", pool_pre_ping=True)


@contextmanager
def copy_database(prefix: str = DB_PREFIX, *, source_engine: sa.Engine | None = None,
                  generation: task_tables.Generation | None = "newton") -> Iterator[str]:
    """A fresh database with a snapshot of the Neutron topology tables; its URL; dropped after.

    The MidoNet task tables are created as networking-midonet's migrations of
    ``generation`` leave them (None: no task tables).

    ``source_engine`` is the server holding ``src_neutron`` (default: the
    same server as ``prefix``); the copy is made table by table in Python
    when the servers differ.
    """
    name = "sdn_test_" + uuid.uuid4().hex[:10]
    target = server_engine(prefix)
    source = source_engine or target
    with target.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        with source.connect() as src, target.begin() as dst:
            for table in topology.TABLES:
                ddl = src.execute(sa.text(f"SHOW CREATE TABLE `{SOURCE_DB}`.`{table}`")).one()[1]
                # Keys yes, foreign keys no: the copy is a snapshot, not a live schema.
                lines = [ln for ln in ddl.splitlines() if "FOREIGN KEY" not in ln]
                ddl = "\n".join(lines).replace(",\n)", "\n)")
                dst.execute(sa.text(f"USE `{name}`"))
                dst.execute(sa.text(ddl))
                rows = src.execute(sa.text(f"SELECT * FROM `{SOURCE_DB}`.`{table}`")).all()
                if rows:
                    cols = list(rows[0]._mapping)
                    dst.execute(
                        sa.text(
                            f"INSERT INTO `{name}`.`{table}` ({', '.join(f'`{c}`' for c in cols)}) "
                            f"VALUES ({', '.join(':' + c for c in cols)})"
                        ),
                        [dict(r._mapping) for r in rows],
                    )
            if generation is not None:
                task_tables.create(dst, generation)
        yield f"{prefix}/{name}"
    finally:
        with target.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        target.dispose()


def rows(url: str, query: str, **params: Any) -> list[sa.Row[Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query), params))
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for s in statements:
                conn.execute(sa.text(s))
    finally:
        engine.dispose()


@dataclass(frozen=True)
class NeutronTopology:
    """IDs of the objects a test created in the src cloud."""

    security_groups: list[str]
    rules: list[str]
    networks: list[str]
    subnets: list[str]
    router: str
    ports: list[str]
    floating_ip: str

    def all_ids(self) -> set[str]:
        return {*self.security_groups, *self.rules, *self.networks, *self.subnets,
                self.router, *self.ports, self.floating_ip}


def create_topology(conn: Any, prefix: str) -> NeutronTopology:
    """Networks, subnets, a router with gateway and interface, a port, a floating IP, SGs."""
    net = conn.network
    sg = net.create_security_group(name=f"{prefix}-web")
    peer = net.create_security_group(name=f"{prefix}-peer")
    rules = [
        net.create_security_group_rule(security_group_id=sg.id, direction="ingress",
                                       ethertype="IPv4", protocol="tcp", port_range_min=80,
                                       port_range_max=80, remote_ip_prefix="0.0.0.0/0").id,
        net.create_security_group_rule(security_group_id=sg.id, direction="ingress",
                                       ethertype="IPv4", remote_group_id=peer.id).id,
    ]
    rules += [r.id for r in net.security_group_rules(security_group_id=sg.id)
              if r.id not in rules]
    rules += [r.id for r in net.security_group_rules(security_group_id=peer.id)]
    ext = net.create_network(name=f"{prefix}-ext", is_router_external=True)
    ext_subnet = net.create_subnet(name=f"{prefix}-ext-sub", network_id=ext.id, ip_version=4,
                                   cidr="198.51.100.0/24", is_dhcp_enabled=False)
    inner = net.create_network(name=f"{prefix}-net")
    subnet = net.create_subnet(name=f"{prefix}-sub", network_id=inner.id, ip_version=4,
                               cidr="10.231.7.0/24", is_dhcp_enabled=False)
    router = net.create_router(name=f"{prefix}-router",
                               external_gateway_info={"network_id": ext.id})
    interface = net.add_interface_to_router(router, subnet_id=subnet.id)
    port = net.create_port(name=f"{prefix}-port", network_id=inner.id,
                           security_group_ids=[sg.id])
    fip = net.create_ip(floating_network_id=ext.id, port_id=port.id)
    router = net.get_router(router.id)
    gw_ports = [p.id for p in net.ports(device_id=router.id)]
    return NeutronTopology(
        security_groups=[sg.id, peer.id],
        rules=rules,
        networks=[ext.id, inner.id],
        subnets=[ext_subnet.id, subnet.id],
        router=router.id,
        ports=sorted({port.id, interface["port_id"], fip.port_id or port.id, *gw_ports}),
        floating_ip=fip.id,
    )


def delete_topology(conn: Any, prefix: str) -> None:
    """Remove everything named ``prefix-*``, in dependency order."""
    net = conn.network
    ours = {n.id for n in net.networks() if n.name.startswith(prefix)}
    for fip in net.ips():
        if fip.floating_network_id in ours:
            net.delete_ip(fip)
    for router in net.routers():
        if router.name.startswith(prefix):
            for p in net.ports(device_id=router.id, device_owner="network:router_interface"):
                net.remove_interface_from_router(router, port_id=p.id)
            net.update_router(router, external_gateway_info={})
            net.delete_router(router)
    for port in net.ports():
        if port.name.startswith(prefix):
            net.delete_port(port)
    for network in net.networks():
        if network.name.startswith(prefix):
            net.delete_network(network)
    for group in net.security_groups():
        if group.name.startswith(prefix):
            net.delete_security_group(group)


# -- ZooKeeper ----------------------------------------------------------------

OPEN = [ACL(31, Id("world", "anyone"))]
LOOPBACK_READ = [ACL(31, Id("world", "anyone")), ACL(1, Id("ip", "127.0.0.1"))]


def seed_legacy_tree(client: KazooClient, root: str, topo: NeutronTopology) -> dict[str, str]:
    """A legacy MidoNet-like tree: Neutron's objects and some the controller owns alone.

    Returns the ``collection/uuid`` keys of the non-Neutron objects.
    """
    client.create(root, b"legacy-v1", makepath=True)
    for network in topo.networks:
        client.create(f"{root}/bridges/{network}", b'{"name": "bridge"}', makepath=True)
        client.create(f"{root}/bridges/{network}/ports", b"")
    client.create(f"{root}/routers/{topo.router}", b'{"name": "router"}', makepath=True)
    provider = str(uuid.uuid4())
    zone = str(uuid.uuid4())
    host = str(uuid.uuid4())
    client.create(f"{root}/routers/{provider}", b'{"name": "provider"}')
    client.create(f"{root}/routers/{provider}/routes/r1", b"0.0.0.0/0", makepath=True)
    client.create(f"{root}/tunnel_zones/{zone}", b'{"type": "vxlan"}', makepath=True,
                  acl=LOOPBACK_READ)
    client.create(f"{root}/hosts/{host}", b"\x00\xffbinary", makepath=True)
    client.create(f"{root}/hosts/{host}/alive", b"", ephemeral=True)
    client.create(f"{root}/config/seq-", b"s", makepath=True, sequence=True)
    return {"routers": provider, "tunnel_zones": zone, "hosts": host}


def mutate_tree(client: KazooClient, root: str, topo: NeutronTopology) -> None:
    """What an importer run does to the tree: adds, changes and deletes nodes, changes an ACL."""
    client.create(f"{root}/neutron/networks/{topo.networks[0]}", b"imported", makepath=True)
    client.set(root, b"new-model-v5")
    client.delete(f"{root}/bridges/{topo.networks[1]}", recursive=True)
    zones = client.get_children(f"{root}/tunnel_zones")
    client.set_acls(f"{root}/tunnel_zones/{zones[0]}", OPEN)
    client.set(f"{root}/routers/{topo.router}", b'{"name": "changed"}')


@contextmanager
def zk_client() -> Iterator[KazooClient]:
    client = KazooClient(hosts=ZK, timeout=10)
    client.start(timeout=10)
    try:
        yield client
    finally:
        client.stop()
        client.close()
