"""Networks, subnets, routers and router interfaces from src to dst, checked many ways.

One module-scoped scenario (the functional time budget): the seeded networking of
project ``alpha`` and the ``admin`` project's external network ``public``, plus, made
for this test on src, two networks of the same name in ``alpha`` (one with DNS servers,
host routes and a narrowed pool), and on dst a subnet in project ``beta`` whose CIDR
overlaps ``alpha-v4``. dst is checked by listing it with openstacksdk, never through
stackhop (the projects the test touches: others' tests may run meanwhile); everything
made here is removed at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import layout
from testbed.undo import undo_migration

from stackhop.archive import ArchiveReader
from stackhop.clouds import connect
from stackhop.journal import Journal

pytestmark = pytest.mark.functional

KINDS = (
    "neutron.network",
    "neutron.subnet_pool",
    "neutron.subnet",
    "neutron.router",
    "neutron.router_interfaces",
    "neutron.port",
    "neutron.floating_ip",
)
SELECT = ("--networks", "--routers", "--ports", "--floating-ips", "--security-groups",
          "--project", "alpha", "--project", "admin")


#: The dst projects this test moves into or builds on: the listing is of them only, as
#: other tests (their own projects) may create and remove networking meanwhile.
LISTED = ("alpha", "admin", "beta")


def _listing(conn: Any) -> dict[str, Any]:
    """dst's networking in :data:`LISTED` as plain data: networks, subnets, routers, ports."""
    net = conn.network
    mine = {p.id for p in conn.identity.projects() if p.name in LISTED}

    def of(items: Any) -> list[Any]:
        return [i for i in items if i.project_id in mine]

    return {
        "networks": sorted((n.id, n.name, n.project_id) for n in of(net.networks())),
        "subnet_pools": sorted(
            (p.id, p.name, tuple(p.prefixes), p.is_shared) for p in of(net.subnet_pools())
        ),
        "subnets": sorted(
            (s.id, s.name, s.cidr, s.network_id, s.subnet_pool_id or "")
            for s in of(net.subnets())
        ),
        "routers": sorted(
            (r.id, r.name, tuple(sorted(r.routes or []))) for r in of(net.routers())
        ),
        "ports": sorted((p.id, p.device_owner or "", p.network_id) for p in of(net.ports())),
        "floating_ips": sorted(
            (f.id, f.floating_ip_address, f.port_id or "") for f in of(net.ips())
        ),
        # Neutron makes a project's ``default`` group on first listing: not ours to undo.
        "groups": sorted(
            (g.id, g.name) for g in of(net.security_groups()) if g.name != "default"
        ),
    }


def _project(conn: Any, name: str) -> str:
    return str(next(p.id for p in conn.identity.projects() if p.name == name))


@pytest.fixture(scope="module")
def world(seeded: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    src, dst = connect("src"), connect("dst")
    journal = tmp_path_factory.mktemp("networking") / "journal.sqlite"
    tag = uuid.uuid4().hex[:6]
    dup = f"sh-dup-{tag}"
    made_src: list[Any] = []
    made_dst: list[Any] = []
    pools: list[tuple[Any, Any]] = []
    try:
        alpha = _project(src, "alpha")
        first = src.network.create_network(name=dup, project_id=alpha, description="first")
        second = src.network.create_network(name=dup, project_id=alpha, mtu=1400)
        made_src += [first, second]
        src.network.create_subnet(
            name=f"{dup}-a", network_id=first.id, project_id=alpha, ip_version=4,
            cidr="10.77.1.0/24", dns_nameservers=["192.0.2.53", "192.0.2.54"],
            host_routes=[{"destination": "198.51.100.0/24", "nexthop": "10.77.1.254"}],
            allocation_pools=[{"start": "10.77.1.50", "end": "10.77.1.99"}],
        )
        src.network.create_port(
            name=f"{dup}-vip", network_id=first.id, project_id=alpha,
            fixed_ips=[{"ip_address": "10.77.1.60"}], port_security_enabled=False,
        )
        src.network.create_port(
            name=f"{dup}-pair", network_id=first.id, project_id=alpha,
            allowed_address_pairs=[{"ip_address": "10.77.1.200"}],
        )
        src.network.create_subnet(
            name=f"{dup}-b", network_id=second.id, project_id=alpha, ip_version=6,
            cidr="fd00:77::/64", ipv6_ra_mode="slaac", ipv6_address_mode="slaac",
        )
        # A pool of alpha's with a subnet carved from it, and a shared one of admin's.
        pool = src.network.create_subnet_pool(
            name=f"{dup}-pool", project_id=alpha, prefixes=["10.78.0.0/16"],
            default_prefix_length=26, minimum_prefix_length=24, maximum_prefix_length=28,
            default_quota=1024, description="alpha's pool",
        )
        shared = src.network.create_subnet_pool(
            name=f"{dup}-shared", project_id=_project(src, "admin"),
            prefixes=["10.79.0.0/16", "10.80.0.0/16"], default_prefix_length=24, is_shared=True,
        )
        pools += [(src, pool), (src, shared)]
        # (Neutron: a network's subnets of one IP version all come from one pool, or none.)
        pooled = src.network.create_network(name=f"{dup}-pooled", project_id=alpha)
        made_src.append(pooled)
        src.network.create_subnet(
            name=f"{dup}-c", network_id=pooled.id, project_id=alpha, ip_version=4,
            cidr="10.78.4.0/24", subnetpool_id=pool.id,
        )
        src.network.create_subnet(
            name=f"{dup}-d", network_id=second.id, project_id=alpha, ip_version=4,
            cidr="10.79.7.0/24", subnetpool_id=shared.id,
        )
        beta = _project(dst, "beta")
        theirs = dst.network.create_network(name=f"sh-overlap-{tag}", project_id=beta)
        made_dst.append(theirs)
        dst.network.create_subnet(name=f"sh-overlap-{tag}", network_id=theirs.id,
                                  project_id=beta, ip_version=4, cidr="10.10.1.0/24")
        yield {"src": src, "dst": dst, "dup": dup, "before": _listing(dst),
               "journal": str(journal)}
    finally:
        if journal.exists():  # a test that failed midway: what it moved is undone all the same
            undo_migration(journal)
        for conn, made in ((src, made_src), (dst, made_dst)):
            for network in made:
                _remove_network(conn, network.id)
        for conn, pool in pools:
            conn.network.delete_subnet_pool(pool, ignore_missing=True)


def _remove_network(conn: Any, network_id: str) -> None:
    """Delete a network this test made, with the ports made on it first."""
    for port in conn.network.ports(network_id=network_id, device_owner=""):
        conn.network.delete_port(port, ignore_missing=True)
    conn.network.delete_network(network_id, ignore_missing=True)


def _records(archive: Path) -> dict[str, list[dict[str, Any]]]:
    with ArchiveReader(archive) as reader:
        return {k: sorted(reader.records(k), key=lambda r: r["id"]) for k in KINDS
                if k in reader.kinds()}


def test_networking_moves_verifies_reruns_and_rolls_back(
    world: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    dst, dup = world["dst"], world["dup"]

    # A router whose external network is not exported and not mapped: a conflict naming
    # the map to fix, and nothing is created.
    alone = tmp_path / "routers.tar.zst"
    assert cli("export", "--from", "src", "-o", str(alone), "--routers",
               "--project", "alpha").code == 0
    refused = cli("--journal", str(tmp_path / "refused.sqlite"), "import", "--to", "dst",
                  str(alone), "-f", "json")
    assert refused.code == 10, refused.err
    assert "--network-map" in refused.out + refused.err
    assert _listing(dst) == world["before"]

    archive = tmp_path / "net.tar.zst"
    journal = world["journal"]
    assert cli("export", "--from", "src", "-o", str(archive), *SELECT).code == 0
    exported = _records(archive)
    names = [n["name"] for n in exported["neutron.network"]]
    assert names.count(dup) == 2 and "public" in names and "alpha-net" in names

    # The database route reads the same records.
    via_db = tmp_path / "db.tar.zst"
    assert cli("export", "--from", "src", "-o", str(via_db), *SELECT, "--via", "db",
               "--db-config-dir", str(layout.SRC.etc)).code == 0
    assert _records(via_db) == exported

    # A shared pool of a project the export does not cover is the provider's: exported
    # without its project, and a shared dst pool of its name is adopted, never copied.
    alpha_only = tmp_path / "alpha.tar.zst"
    assert cli("export", "--from", "src", "-o", str(alpha_only), "--networks",
               "--project", "alpha").code == 0
    (provider,) = [r for r in _records(alpha_only)["neutron.subnet_pool"]
                   if r["name"] == f"{dup}-shared"]
    assert (provider["project_id"], provider["project_name"]) == (None, "(provider)")
    theirs = dst.network.create_subnet_pool(
        name=f"{dup}-shared", prefixes=["10.79.0.0/16", "10.80.0.0/16"],
        default_prefix_length=24, is_shared=True,
    )
    try:
        planned = cli("plan", "--to", "dst", str(alpha_only), "-f", "json")
        assert planned.code == 0, planned.err
        (op,) = [o for o in planned.json()["operations"] if o["source_id"] == provider["id"]]
        assert (op["action"], op["destination_id"]) == ("skip", theirs.id)
    finally:
        dst.network.delete_subnet_pool(theirs)

    first = cli("--journal", journal, "import", "--to", "dst", str(archive), "-f", "json")
    assert first.code == 0, first.err
    net = dst.network
    mine = {n.name: n for n in net.networks()}
    assert len([n for n in net.networks() if n.name == dup]) == 2
    assert {n.mtu for n in net.networks() if n.name == dup} == {1400, 1450}
    public = mine["public"]
    assert public.is_router_external and public.provider_network_type == "flat"
    subnets = {s.name: s for s in net.subnets()}
    a = subnets[f"{dup}-a"]
    assert a.dns_nameservers == ["192.0.2.53", "192.0.2.54"]
    assert a.host_routes == [{"destination": "198.51.100.0/24", "nexthop": "10.77.1.254"}]
    assert a.allocation_pools == [{"start": "10.77.1.50", "end": "10.77.1.99"}]
    assert (subnets[f"{dup}-b"].ipv6_ra_mode, subnets[f"{dup}-b"].ipv6_address_mode) == (
        "slaac", "slaac")
    assert subnets["alpha-v4"].cidr == "10.10.1.0/24"  # overlaps beta's, in another project
    # The pools, and the subnets carved from them with their own CIDRs.
    pools = {p.name: p for p in net.subnet_pools()}
    pool, shared = pools[f"{dup}-pool"], pools[f"{dup}-shared"]
    assert (pool.prefixes, pool.default_prefix_length, pool.minimum_prefix_length,
            pool.maximum_prefix_length, pool.default_quota, pool.is_shared) == (
        ["10.78.0.0/16"], 26, 24, 28, 1024, False)
    assert pool.project_id == _project(dst, "alpha")
    assert (sorted(shared.prefixes), shared.is_shared) == (["10.79.0.0/16", "10.80.0.0/16"], True)
    assert (subnets[f"{dup}-c"].cidr, subnets[f"{dup}-c"].subnet_pool_id) == (
        "10.78.4.0/24", pool.id)
    assert (subnets[f"{dup}-d"].cidr, subnets[f"{dup}-d"].subnet_pool_id) == (
        "10.79.7.0/24", shared.id)
    router = next(r for r in net.routers() if r.name == "alpha-router")
    assert router.external_gateway_info["network_id"] == public.id
    src_router = next(r for r in world["src"].network.routers() if r.name == "alpha-router")
    assert router.external_gateway_info["external_fixed_ips"][0]["ip_address"] == (
        src_router.external_gateway_info["external_fixed_ips"][0]["ip_address"])  # SNAT kept
    attached = {
        (ip["subnet_id"], ip["ip_address"])
        for p in net.ports(device_id=router.id, device_owner="network:router_interface")
        for ip in p.fixed_ips
    }
    assert attached == {
        (subnets["alpha-v4"].id, "10.10.1.1"), (subnets["alpha-db-v4"].id, "10.10.2.1"),
        (subnets["alpha-v6"].id, "fd00:a1::"),
    }

    src_ports = {p.name: p for p in world["src"].network.ports(device_owner="")}
    dst_ports = {p.name: p for p in net.ports(device_owner="")}
    for name in ("alpha-web-port", "alpha-db-port", f"{dup}-vip", f"{dup}-pair"):
        assert dst_ports[name].mac_address == src_ports[name].mac_address, name
        assert sorted(i["ip_address"] for i in dst_ports[name].fixed_ips) == sorted(
            i["ip_address"] for i in src_ports[name].fixed_ips), name
    assert dst_ports[f"{dup}-vip"].is_port_security_enabled is False
    assert dst_ports[f"{dup}-pair"].allowed_address_pairs[0]["ip_address"] == "10.77.1.200"
    fips = {f.floating_ip_address: f for f in net.ips()}
    assert fips["172.24.4.110"].port_id == dst_ports["alpha-web-port"].id  # same address
    assert fips["172.24.4.111"].port_id is None

    verify = cli("verify", "--to", "dst", str(archive))
    assert verify.code == 0, verify.out + verify.err
    after = _listing(dst)

    # A re-run changes nothing, with the journal and without it (markers).
    for j in (journal, str(tmp_path / "lost.sqlite")):
        again = cli("--journal", j, "import", "--to", "dst", str(archive), "-f", "json")
        assert again.code == 0, again.err
        counts = again.json()["counts"]
        assert all(c.get("done", 0) == 0 for c in counts.values()), counts
        assert _listing(dst) == after

    with Journal(journal) as jr:
        runs = [arg for r in jr.runs() for arg in ("--run", r.id)]
    undo = cli("--journal", journal, "rollback", "--to", "dst", *runs, "-f", "json")
    assert undo.code == 0, undo.err
    assert _listing(dst) == world["before"]
