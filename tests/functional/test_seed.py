"""``python -m testbed seed`` leaves exactly the inventory of testbed/seed/inventory.py.

Every check reads the real clouds (and the real Ceph and file backends) and
compares with the inventory module, the same data the seed worked from. On
src the seeded projects must hold exactly the inventory; on dst the identity
is exact and the pre-existing objects must be there (later migration tests
may add to dst). A second seed, run here through the CLI, must change nothing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import openstack.config
import pytest
from openstack.connection import Connection
from testbed import layout
from testbed.openstack import keystone_ldap
from testbed.openstack.cinder import CEPH_POOL
from testbed.seed import inventory as inv
from testbed.seed.context import Directory
from testbed.seed.security_groups import rule_key, wanted_key

pytestmark = pytest.mark.functional

MIB = 1024 * 1024
GIB = 1024 * MIB


def _connect(name: str) -> Connection:
    config = openstack.config.OpenStackConfig(config_files=[str(layout.CLOUDS_YAML)])
    return Connection(config=config.get_one(cloud=name))


@dataclass
class Cloud:
    """An admin connection to one cloud with name -> ID lookups of the seeded identity."""

    layout: layout.CloudLayout
    conn: Connection
    projects: dict[str, str]
    users: dict[str, str]

    @classmethod
    def open(cls, c: layout.CloudLayout) -> Cloud:
        conn = _connect(c.name)
        # Users listed per domain (dst's ldap_users is a domain-specific driver); where
        # src's hybrid Default holds a name twice (alice), the SQL user is the seed's.
        ids = Directory()
        ids.load(conn)
        domains = {**ids.domains, "Default": "default"}
        projects = {
            p.name: ids.projects[(domains[p.domain], p.name)]
            for p in inv.PROJECTS
            if p.domain in domains and (domains[p.domain], p.name) in ids.projects
        }
        projects[inv.ADMIN_PROJECT] = conn.identity.find_project(inv.ADMIN_PROJECT).id
        users = {}
        for u in inv.USERS:
            key = (domains.get(u.domain_on(c.name), "-"), u.name)
            if key in ids.users:
                users[u.name] = ids.users[key]
        return cls(c, conn, projects, users)


@pytest.fixture(scope="module")
def src(seeded: Any) -> Cloud:
    return Cloud.open(layout.SRC)


@pytest.fixture(scope="module")
def dst(seeded: Any) -> Cloud:
    return Cloud.open(layout.DST)


# -- a snapshot of everything seeded, to compare two runs ---------------------------------


def snapshot(cloud: Cloud) -> dict[str, list[tuple[Any, ...]]]:
    """Identity and ID of every object the inventory declares on ``cloud`` (sorted, per kind).

    Only declared objects: other suites (migrations into dst) add and remove
    their own objects while this module runs.
    """
    conn, name = cloud.conn, cloud.layout.name
    on_src = name == inv.SRC
    keypairs = {(k.user, k.name) for k in inv.on(name, inv.KEYPAIRS)}
    groups = {(g.project, g.name, None if g.name == "default" else g.stamped_description)
              for g in inv.on(name, inv.SECURITY_GROUPS)}
    by_pid = {v: k for k, v in cloud.projects.items()}

    def named(items: Any, names: set[str]) -> list[tuple[Any, ...]]:
        return sorted((by_pid.get(x.project_id), x.name, x.id) for x in items if x.name in names
                      and x.project_id in by_pid)

    return {
        "projects": sorted(cloud.projects.items()),
        "users": sorted(cloud.users.items()),
        "keypairs": sorted(
            (user, k.name, k.fingerprint)
            for user, uid in cloud.users.items() for k in conn.compute.keypairs(user_id=uid)
            if (user, k.name) in keypairs
        ),
        "security groups": sorted(
            (by_pid[g.project_id], g.name, g.description, g.id,
             tuple(sorted(r["id"] for r in g.security_group_rules)))
            for g in conn.network.security_groups()
            if (by_pid.get(g.project_id), g.name,
                None if g.name == "default" else g.description) in groups
        ),
        "networks": named(conn.network.networks(), {n.name for n in inv.NETWORKS} if on_src
                          else set()),
        "subnets": named(conn.network.subnets(), {s.name for n in inv.NETWORKS for s in n.subnets}
                         if on_src else set()),
        "routers": named(conn.network.routers(), {r.name for r in inv.ROUTERS} if on_src
                         else set()),
        "ports": named(conn.network.ports(), {p.name for p in inv.PORTS} if on_src else set()),
        "floating ips": sorted(
            (f.floating_ip_address, f.id, f.port_id) for f in conn.network.ips()
            if on_src and f.floating_ip_address in {x.address for x in inv.FLOATING_IPS}
        ),
        "images": sorted((i.name, i.id, i.updated_at) for i in conn.image.images(visibility="all")
                         if on_src and i.name in {x.name for x in inv.IMAGES}
                         and i.owner in by_pid),
        "volumes": named(conn.block_storage.volumes(all_projects=True),
                         {v.name for v in inv.VOLUMES} if on_src else set()),
        "servers": sorted(
            (s.name, s.id, s.status) for deleted in (False, True)
            for s in conn.compute.servers(all_projects=True, deleted_only=deleted)
            if on_src and s.name in {x.name for x in inv.SERVERS} and s.project_id in by_pid
        ),
    }


@dataclass(frozen=True)
class SecondRun:
    code: int
    output: str
    seconds: float
    before: dict[str, Any]
    after: dict[str, Any]


@pytest.fixture(scope="module")
def second_run(src: Cloud, dst: Cloud) -> SecondRun:
    """Snapshot, ``python -m testbed seed`` again (a subprocess), snapshot again."""
    before = {"src": snapshot(src), "dst": snapshot(dst)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "testbed", "seed"], cwd=layout.REPO_DIR,
                          capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    after = {"src": snapshot(Cloud.open(layout.SRC)), "dst": snapshot(Cloud.open(layout.DST))}
    return SecondRun(proc.returncode, proc.stdout + proc.stderr, seconds, before, after)


# -- identity ------------------------------------------------------------------------------


def test_projects_exist_on_both_clouds_with_the_same_ids(src: Cloud, dst: Cloud) -> None:
    for p in inv.PROJECTS:
        assert p.name in src.projects, p.name
        assert dst.projects.get(p.name) == src.projects[p.name], p.name
    assert src.conn.identity.find_domain("ldap").id == dst.conn.identity.find_domain("ldap").id


def test_sql_users_keep_their_ids_and_people_get_generated_ones(src: Cloud, dst: Cloud) -> None:
    ldap_users = dst.conn.identity.find_domain(inv.LDAP_USERS_DOMAIN).id
    for u in inv.USERS:
        assert u.name in src.users, u.name
        if not u.on_dst:
            assert u.name not in dst.users, f"{u.name} is a src-only user"
        elif u.person:
            # src: the hybrid Default shows the raw LDAP ID; dst: Keystone's generated one.
            assert src.users[u.name] == u.name, u.name
            assert dst.users[u.name] == keystone_ldap.public_id(ldap_users, u.name), u.name
        else:
            assert dst.users[u.name] == src.users[u.name], u.name
    assert {u.domain_on("dst") for u in inv.USERS if u.on_dst} == {
        "Default", inv.LDAP_USERS_DOMAIN
    }
    assert any(not u.on_dst for u in inv.USERS)


@pytest.mark.parametrize("user, project", [("alice", "alpha"), ("lina", "delta")])
def test_users_log_in_on_dst_with_their_src_password(dst: Cloud, user: str, project: str) -> None:
    u = next(x for x in inv.USERS if x.name == user)
    p = next(x for x in inv.PROJECTS if x.name == project)
    conn = Connection(
        auth_url=layout.DST.keystone_url, username=u.name, password=u.password,
        user_domain_name=u.domain_on("dst"), project_name=p.name, project_domain_name=p.domain,
        region_name=layout.REGION, identity_api_version="3",
    )
    assert conn.session.get_user_id() == dst.users[user]
    assert conn.session.get_project_id() == dst.projects[project]


@pytest.mark.parametrize("which", ["src", "dst"])
def test_role_assignments_are_exactly_the_inventory(src: Cloud, dst: Cloud, which: str) -> None:
    cloud = src if which == "src" else dst
    roles = {r.id: r.name for r in cloud.conn.identity.roles()}
    by_id = {v: k for k, v in cloud.projects.items()}
    for u in inv.USERS:
        if which == "dst" and not u.on_dst:
            continue
        have = {
            (by_id.get(a.scope["project"]["id"], a.scope["project"]["id"]), roles[a.role["id"]])
            for a in cloud.conn.identity.role_assignments(user_id=cloud.users[u.name])
            if "project" in (a.scope or {})
        }
        assert have == set(u.roles), u.name


# -- keypairs and quotas ----------------------------------------------------------------------


def _keypairs(cloud: Cloud, user: str) -> dict[str, str]:
    return {k.name: k.public_key.strip()
            for k in cloud.conn.compute.keypairs(user_id=cloud.users[user])}


def test_keypairs_are_exactly_the_inventory(src: Cloud, dst: Cloud) -> None:
    for u in inv.USERS:
        wanted = {k.name: k.public_key for k in inv.on(inv.SRC, inv.KEYPAIRS) if k.user == u.name}
        assert _keypairs(src, u.name) == wanted, f"src: keypairs of {u.name}"
    # dst: migration suites may add keypairs there; the pre-existing ones must be as declared.
    for k in inv.on(inv.DST, inv.KEYPAIRS):
        assert _keypairs(dst, k.user).get(k.name) == k.public_key, f"dst: {k.user}/{k.name}"
    types = {k.key_type for k in inv.KEYPAIRS}
    assert types == {"ssh-rsa", "ssh-ed25519"}
    src_lina = next(k for k in inv.KEYPAIRS if k.cloud == inv.SRC and k.name == "lina-laptop")
    dst_lina = next(k for k in inv.KEYPAIRS if k.cloud == inv.DST and k.name == "lina-laptop")
    assert src_lina.public_key != dst_lina.public_key


def test_quotas_are_set_on_src(src: Cloud) -> None:
    for q in inv.QUOTAS:
        pid = src.projects[q.project]
        for current, wanted in (
            (src.conn.compute.get_quota_set(pid), q.compute),
            (src.conn.network.get_quota(pid), q.network),
            (src.conn.block_storage.get_quota_set(pid), q.block_storage),
        ):
            assert {k: getattr(current, k) for k in wanted} == dict(wanted), q.project


# -- security groups ------------------------------------------------------------------------


def _groups(cloud: Cloud, project: str) -> list[Any]:
    pid = cloud.projects[project]
    return [g for g in cloud.conn.network.security_groups(project_id=pid)]


def test_security_groups_and_rules_on_src_are_exactly_the_inventory(src: Cloud) -> None:
    declared = inv.on(inv.SRC, inv.SECURITY_GROUPS)
    for project in sorted({g.project for g in declared}):
        groups = _groups(src, project)
        mine = [g for g in declared if g.project == project]
        expected_names = sorted([g.name for g in mine if g.name != "default"] + ["default"])
        assert sorted(g.name for g in groups) == expected_names, project
        ids: dict[str, str] = {}
        for g in mine:
            (match,) = [s for s in groups if s.name == g.name and (
                g.name == "default" or s.description == g.stamped_description)]
            ids[g.key] = match.id
        for g in mine:
            match = next(s for s in groups if s.id == ids[g.key])
            have = {rule_key(r) for r in match.security_group_rules}
            assert {wanted_key(r, ids) for r in g.rules} <= have, g.key
            auto = inv.AUTO_RULES_DEFAULT_GROUP if g.name == "default" else inv.AUTO_RULES_NEW_GROUP
            assert len(match.security_group_rules) == len(g.rules) + auto, g.key
    web = [g for g in _groups(src, "alpha") if g.name == "web"]
    assert len(web) == 2, "two groups named web in alpha"


def test_security_group_rules_cover_the_interesting_cases() -> None:
    rules = [r for g in inv.on(inv.SRC, inv.SECURITY_GROUPS) for r in g.rules]
    assert {r.ethertype for r in rules} == {"IPv4", "IPv6"}
    assert any(r.protocol == "icmp" and r.port_min is not None for r in rules)
    assert any(r.remote_group for r in rules) and any(r.remote_ip_prefix for r in rules)
    assert any(r.port_min and r.port_max and r.port_max > r.port_min for r in rules)
    assert any(r.direction == "egress" for r in rules)


def test_dst_holds_its_own_security_group_of_the_same_name(dst: Cloud) -> None:
    (declared,) = inv.on(inv.DST, inv.SECURITY_GROUPS)
    (group,) = [g for g in _groups(dst, declared.project)
                if g.name == declared.name and g.description == declared.stamped_description]
    assert group.description == declared.stamped_description
    have = {rule_key(r) for r in group.security_group_rules}
    assert {wanted_key(r, {}) for r in declared.rules} <= have
    assert len(group.security_group_rules) == len(declared.rules) + inv.AUTO_RULES_NEW_GROUP
    assert declared.name in {g.name for g in inv.on(inv.SRC, inv.SECURITY_GROUPS)
                             if g.project == declared.project}


# -- network topology -----------------------------------------------------------------------


def test_network_topology_on_src(src: Cloud) -> None:
    net = src.conn.network
    networks = {}
    for n in inv.NETWORKS:
        pid = src.projects[n.project]
        (found,) = list(net.networks(name=n.name, project_id=pid))
        networks[n.name] = found
        assert bool(found.is_router_external) == n.external, n.name
        if n.external:
            assert found.provider_network_type == "flat"
        subnets = {s.name: s for s in net.subnets(network_id=found.id)}
        assert sorted(subnets) == sorted(s.name for s in n.subnets), n.name
        for s in n.subnets:
            assert subnets[s.name].cidr == s.cidr
            assert subnets[s.name].ip_version == s.ip_version
    assert {s.ip_version for n in inv.NETWORKS for s in n.subnets} == {4, 6}
    for r in inv.ROUTERS:
        (router,) = list(net.routers(name=r.name, project_id=src.projects[r.project]))
        assert router.external_gateway_info["network_id"] == networks[r.external_network].id
        attached = {ip["subnet_id"] for p in net.ports(device_id=router.id,
                                                       device_owner="network:router_interface")
                    for ip in p.fixed_ips}
        names = {s.id: s.name for s in net.subnets() if s.id in attached}
        assert sorted(names.values()) == sorted(r.interfaces), r.name
    ports = {}
    for p in inv.PORTS:
        (port,) = list(net.ports(name=p.name, project_id=src.projects[p.project]))
        ports[p.name] = port
        addresses = sorted(ip["ip_address"] for ip in port.fixed_ips)
        assert addresses == sorted(a for _, a in p.fixed_ips), p.name
    fips = [f for f in net.ips() if f.floating_network_id == networks[inv.PUBLIC_NETWORK].id]
    addresses = sorted(f.floating_ip_address for f in fips)
    assert addresses == sorted(f.address for f in inv.FLOATING_IPS)
    for f in inv.FLOATING_IPS:
        (found,) = [x for x in fips if x.floating_ip_address == f.address]
        assert found.project_id == src.projects[f.project]
        assert found.port_id == (ports[f.port].id if f.port else None)


# -- images ---------------------------------------------------------------------------------


def test_images_are_exactly_the_inventory(src: Cloud) -> None:
    glance = src.conn.image
    seeded_owners = {src.projects[i.project] for i in inv.IMAGES} - {src.projects["admin"]}
    owned = [i for i in glance.images(visibility="all") if i.owner in seeded_owners]
    assert sorted(i.name for i in owned) == sorted(
        i.name for i in inv.IMAGES if i.project != inv.ADMIN_PROJECT)
    for want in inv.IMAGES:
        (image,) = [i for i in glance.images(visibility="all", name=want.name)
                    if i.owner == src.projects[want.project]]
        record = glance.get(f"/images/{image.id}").json()
        assert record["status"] == "active"
        assert record["visibility"] == want.visibility
        assert record["protected"] is want.protected
        assert (record["min_disk"], record["min_ram"]) == (want.min_disk, want.min_ram)
        assert sorted(record["tags"]) == sorted(want.tags)
        assert {k: record.get(k) for k in want.properties} == dict(want.properties)
        assert record["stores"] == want.store
        assert record["os_hash_value"] == hashlib.sha512(want.content.data()).hexdigest()
        members = {m.member_id: m.status for m in glance.members(image.id)} if want.members else {}
        assert members == {src.projects[p]: "accepted" for p in want.members}, want.name
    assert sum(i.protected for i in inv.IMAGES) == 1
    assert any(b == 0 for i in inv.IMAGES for b in i.content.data()[:MIB])


# -- volumes --------------------------------------------------------------------------------


def _volume(src: Cloud, v: inv.Volume) -> Any:
    pid = src.projects[v.project]
    (found,) = [x for x in src.conn.block_storage.volumes(all_projects=True, name=v.name)
                if x.project_id == pid]
    return found


def _content_sha256_and_allocated(v: inv.Volume, volume_id: str) -> tuple[str, int]:
    """Read the whole volume from its backend: sha256 of the bytes, bytes allocated."""
    h = hashlib.sha256()
    if v.volume_type == "file":
        path = layout.SRC.file_backend_dir / f"volume-{volume_id}"
        with path.open("rb") as f:
            while chunk := f.read(4 * MIB):
                h.update(chunk)
        return h.hexdigest(), path.stat().st_blocks * 512
    conf = ["--conf", str(layout.SRC.ceph_conf)]
    image = f"{CEPH_POOL}/volume-{volume_id}"
    with subprocess.Popen(["rbd", *conf, "export", image, "-"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(4 * MIB):
            h.update(chunk)
    assert proc.returncode == 0, f"rbd export {image} failed"
    du = subprocess.run(["rbd", *conf, "du", image, "--format", "json"], capture_output=True,
                        text=True, check=True, timeout=120)
    return h.hexdigest(), int(json.loads(du.stdout)["images"][0]["used_size"])


@pytest.mark.parametrize("v", inv.VOLUMES, ids=lambda v: v.name)
def test_volume_has_its_type_flags_and_exact_content(src: Cloud, v: inv.Volume) -> None:
    vol = _volume(src, v)
    assert vol.volume_type == v.volume_type
    assert vol.size == v.size_gib
    assert bool(vol.is_bootable) == v.bootable
    assert dict(vol.metadata or {}) == dict(v.metadata)
    digest, allocated = _content_sha256_and_allocated(v, vol.id)
    assert digest == inv.volume_sha256(v.name)
    if v.dense:
        assert allocated >= v.size_gib * GIB
    else:
        assert allocated <= 64 * MIB, f"{v.name} should be sparse, {allocated} bytes allocated"


def test_volume_inventory_covers_both_backends_and_kinds() -> None:
    for backend in ("ceph", "file"):
        kinds = {v.dense for v in inv.VOLUMES if v.volume_type == backend}
        assert kinds == {True, False}, backend
    assert sum(v.bootable for v in inv.VOLUMES) == 1
    assert any(v.metadata for v in inv.VOLUMES) and any(v.attached_to for v in inv.VOLUMES)


def test_attached_volume_is_in_use_by_its_server(src: Cloud) -> None:
    for v in (v for v in inv.VOLUMES if v.attached_to):
        vol = _volume(src, v)
        assert vol.status == "in-use"
        (server,) = list(src.conn.compute.servers(all_projects=True, name=f"^{v.attached_to}$"))
        assert [a["server_id"] for a in vol.attachments] == [server.id]


# -- servers and usage ----------------------------------------------------------------------


def test_servers_live_and_gone_with_usage_history(src: Cloud) -> None:
    compute = src.conn.compute
    for project in sorted({s.project for s in inv.SERVERS}):
        pid = src.projects[project]
        mine = [s for s in inv.SERVERS if s.project == project]
        live = {s.name: s.status for s in compute.servers(all_projects=True, project_id=pid)}
        assert live == {s.name: "ACTIVE" for s in mine if not s.deleted}, project
        gone = {s.name for s in compute.servers(all_projects=True, project_id=pid,
                                                  deleted_only=True)}
        assert gone == {s.name for s in mine if s.deleted}, project
        start, end = inv.USAGE_PERIOD
        usage = compute.get(f"/os-simple-tenant-usage/{pid}?start={start}&end={end}").json()
        usage = usage["tenant_usage"]
        assert usage["total_hours"] > 0, project
        by_name = {u["name"]: u for u in usage["server_usages"]}
        assert set(by_name) == {s.name for s in mine}, project
        for s in mine:
            assert by_name[s.name]["started_at"].startswith(s.launched_at), s.name
            if s.deleted:
                assert by_name[s.name]["ended_at"].startswith(s.terminated_at or "-"), s.name


# -- re-running -----------------------------------------------------------------------------


# About 50 s (a second seed, both clouds snapshotted twice); make test runs the seed twice
# itself (`make testbed-seed` then the session fixture), without the snapshots.
@pytest.mark.long
def test_second_seed_changes_nothing(second_run: SecondRun) -> None:
    assert second_run.code == 0, second_run.output
    assert "nothing to do" in second_run.output, second_run.output
    for cloud in ("src", "dst"):
        for kind, before in second_run.before[cloud].items():
            assert second_run.after[cloud][kind] == before, f"{cloud} {kind} changed"


# Guards the test above and shares its fixture: long with it.
@pytest.mark.long
def test_snapshot_sees_the_seed(second_run: SecondRun) -> None:
    """Guards the test above: an empty snapshot would compare equal too."""
    src = second_run.before["src"]
    assert len(src["keypairs"]) == len(inv.on(inv.SRC, inv.KEYPAIRS))
    assert len(src["volumes"]) == len(inv.VOLUMES)
    assert len(src["servers"]) == len(inv.SERVERS)
    assert len(src["floating ips"]) == len(inv.FLOATING_IPS)
