"""The tasks ``prepare`` writes, held against what MidoNet 5.x's importer reads.

The importer (midonet ``SqlNeutronImporter``) reads ``id, type, data_type,
resource_id, transaction_id, data`` in ID order, groups consecutive rows of one
``transaction_id`` into a transaction, looks ``type`` and ``data_type`` up in
fixed upper-case tables (an unknown value stops it) and parses ``data`` as the
Neutron API representation, keys mapped by the part after the last ``:``.
Every task is checked per data type: required keys present with the right
JSON types, protocol names, no table-only columns, references pointing to
earlier tasks; and each object's ``data`` equals what the Neutron API itself
returns for it (one representation). Topologies: the seeded one, and a second
one made here through the src Neutron API (IPv6, host routes, allowed address
pairs, extra DHCP options, router static routes, a floating IP), removed after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest
from tests.functional.test_sdn_support import copy_database, delete_topology, execute, rows

from stackhop.sdn import topology

pytestmark = pytest.mark.functional

Cli = Callable[..., Any]
STR, INT, BOOL, LIST, DICT, NONE = str, int, bool, list, dict, type(None)

#: Per data type: required key -> allowed JSON types (what the importer's messages need).
CONTRACT: dict[str, dict[str, tuple[type, ...]]] = {
    "NETWORK": {"id": (STR,), "name": (STR,), "tenant_id": (STR,), "admin_state_up": (BOOL,),
                "shared": (BOOL,), "router:external": (BOOL,), "subnets": (LIST,),
                "provider:network_type": (STR, NONE), "mtu": (INT, NONE)},
    "SUBNET": {"id": (STR,), "network_id": (STR,), "tenant_id": (STR,), "cidr": (STR,),
               "ip_version": (INT,), "gateway_ip": (STR, NONE), "enable_dhcp": (BOOL,),
               "allocation_pools": (LIST,), "dns_nameservers": (LIST,), "host_routes": (LIST,)},
    "ROUTER": {"id": (STR,), "tenant_id": (STR,), "admin_state_up": (BOOL,),
               "gw_port_id": (STR, NONE), "external_gateway_info": (DICT, NONE),
               "routes": (LIST,)},
    "PORT": {"id": (STR,), "network_id": (STR,), "tenant_id": (STR,), "mac_address": (STR,),
             "admin_state_up": (BOOL,), "device_id": (STR,), "device_owner": (STR,),
             "fixed_ips": (LIST,), "security_groups": (LIST,), "allowed_address_pairs": (LIST,),
             "extra_dhcp_opts": (LIST,), "binding:host_id": (STR,), "binding:profile": (DICT,)},
    "FLOATINGIP": {"id": (STR,), "tenant_id": (STR,), "floating_ip_address": (STR,),
                   "floating_network_id": (STR,), "router_id": (STR, NONE),
                   "port_id": (STR, NONE), "fixed_ip_address": (STR, NONE)},
    "SECURITYGROUP": {"id": (STR,), "tenant_id": (STR,), "name": (STR,),
                      "security_group_rules": (LIST,)},
    "SECURITYGROUPRULE": {"id": (STR,), "security_group_id": (STR,), "direction": (STR,),
                          "ethertype": (STR,), "protocol": (STR, NONE),
                          "port_range_min": (INT, NONE), "port_range_max": (INT, NONE),
                          "remote_group_id": (STR, NONE), "remote_ip_prefix": (STR, NONE)},
}
#: Nested lists: element key -> types.
NESTED: dict[str, dict[str, tuple[type, ...]]] = {
    "allocation_pools": {"start": (STR,), "end": (STR,)},
    "host_routes": {"destination": (STR,), "nexthop": (STR,)},
    "routes": {"destination": (STR,), "nexthop": (STR,)},
    "fixed_ips": {"ip_address": (STR,), "subnet_id": (STR,)},
    "allowed_address_pairs": {"ip_address": (STR,), "mac_address": (STR,)},
    "extra_dhcp_opts": {"opt_name": (STR,), "opt_value": (STR,)},
}
#: Columns of Neutron's tables that the API never shows.
TABLE_ONLY = {"standard_attr_id", "floating_port_id", "fixed_port_id", "ip_allocation",
              "last_known_router_id", "remote_address_group_id", "normalized_cidr",
              "enable_snat", "first_ip", "last_ip", "port_type", "subnet_ids", "qinq"}
PROTOCOLS = {"tcp", "udp", "icmp", "ipv6-icmp", "icmpv6", "gre", "esp", "ah", "vrrp", "sctp",
             "igmp", "ipip", "dccp", "udplite", "ospf", "pim", "pgm"}
API_PATH = {"NETWORK": "networks", "SUBNET": "subnets", "ROUTER": "routers", "PORT": "ports",
            "FLOATINGIP": "floatingips", "SECURITYGROUP": "security-groups",
            "SECURITYGROUPRULE": "security-group-rules"}
API_KEY = {"SECURITYGROUP": "security_group", "SECURITYGROUPRULE": "security_group_rule",
           "FLOATINGIP": "floatingip"}
#: Fields that change by themselves (status, time stamps) or that the API shows
#: only to some callers; everything else must be equal.
VOLATILE = {"status", "updated_at", "revision_number", "created_at", "tags",
            "binding:vif_details", "binding:vif_type"}


def task_rows(url: str) -> list[Any]:
    return rows(url, "SELECT id, type, data_type, resource_id, transaction_id, data, project_id "
                     "FROM midonet_tasks ORDER BY id")


def check_contract(found: list[Any]) -> list[str]:
    """Every violation of the importer's contract among ``found`` (empty: none)."""
    problems: list[str] = []
    seen: set[str] = set()
    order = list(topology.DATA_TYPES)
    for r in found:
        where = f"task {r.id} {r.data_type} {r.resource_id}"
        if r.type != "CREATE" or r.data_type not in CONTRACT:
            problems.append(f"{where}: type {r.type!r} / data_type {r.data_type!r}")
            continue
        if not r.transaction_id or len(r.transaction_id) > 40:
            problems.append(f"{where}: transaction_id {r.transaction_id!r}")
        data = json.loads(r.data)
        uuid.UUID(r.resource_id)
        if data.get("id") != r.resource_id:
            problems.append(f"{where}: data id {data.get('id')} is not the resource id")
        for key, types in CONTRACT[r.data_type].items():
            if key not in data:
                problems.append(f"{where}: no {key}")
            elif not isinstance(data[key], types) or (
                    bool not in types and isinstance(data[key], bool)):
                problems.append(f"{where}: {key}={data[key]!r} is not {types}")
        if TABLE_ONLY & set(data):
            problems.append(f"{where}: table-only column(s) {TABLE_ONLY & set(data)}")
        for key, shape in NESTED.items():
            for item in data.get(key) or []:
                for field, types in shape.items():
                    if not isinstance(item.get(field), types):
                        problems.append(f"{where}: {key} item {item} lacks {field}")
        rules = [data] if r.data_type == "SECURITYGROUPRULE" else (
            data.get("security_group_rules") or [])
        for rule in rules:
            for key, types in CONTRACT["SECURITYGROUPRULE"].items():
                if not isinstance(rule.get(key, ...), types):
                    problems.append(f"{where}: rule {rule.get('id')} {key}={rule.get(key)!r}")
            if rule.get("protocol") is not None and rule["protocol"] not in PROTOCOLS:
                problems.append(f"{where}: rule protocol {rule['protocol']!r} is not a name")
            if rule.get("security_group_id") not in seen | {r.resource_id}:
                problems.append(f"{where}: rule's group not created before")
            remote = rule.get("remote_group_id")
            if remote and remote not in seen | {r.resource_id}:
                problems.append(f"{where}: remote group {remote} not created before")
        refs = [data.get(k) for k in ("network_id", "floating_network_id", "router_id",
                                      "port_id")]
        refs += [f["subnet_id"] for f in data.get("fixed_ips", [])]
        refs += list(data.get("security_groups", []))
        refs.append((data.get("external_gateway_info") or {}).get("network_id"))
        if data.get("device_owner", "").startswith("network:router"):
            refs.append(data["device_id"])
        for ref in filter(None, refs):
            if ref not in seen and ref != r.resource_id:
                problems.append(f"{where}: refers to {ref}, not created before")
        earlier = {x.data_type for x in found if x.id < r.id and x.data_type in CONTRACT}
        if order.index(r.data_type) < max((order.index(t) for t in earlier), default=0):
            problems.append(f"{where}: data type out of order")
        seen.add(r.resource_id)
        seen |= {rule["id"] for rule in data.get("security_group_rules") or []}
    ids = [(r.data_type, r.resource_id) for r in found]
    if len(ids) != len(set(ids)):
        problems.append("an object was queued twice")
    if len({r.transaction_id for r in found}) != len(found):
        problems.append("two objects share one transaction")
    return problems


def api_equal(conn: Any, found: list[Any], ids: set[str]) -> list[str]:
    """For the objects ``ids``: task ``data`` vs the Neutron API's own representation."""
    problems = []
    for r in found:
        if r.resource_id not in ids:
            continue
        kind = API_KEY.get(r.data_type, r.data_type.lower())
        api = conn.network.get(f"/{API_PATH[r.data_type]}/{r.resource_id}").json()[kind]
        data = json.loads(r.data)
        # The one intended difference: the API echoes a protocol as given ("6"),
        # the importer wants its name ("tcp").
        for rule in [api, *api.get("security_group_rules", [])]:
            if "protocol" in rule:
                rule["protocol"] = topology.protocol_name(rule["protocol"])
        if r.data_type == "SECURITYGROUP":
            inline = {x["id"] for x in data["security_group_rules"]}
            api["security_group_rules"] = [x for x in api["security_group_rules"]
                                           if x["id"] in inline]
        for key, value in data.items():
            if key in VOLATILE or key not in api:
                continue
            if not covers(api[key], value):
                problems.append(f"{r.data_type} {r.resource_id} {key}: task {value!r} "
                                f"!= API {api[key]!r}")
    return problems


def covers(api: Any, task: Any) -> bool:
    """``task`` equals ``api`` on every field ``task`` has (dicts), element by element (lists)."""
    if isinstance(task, dict):
        return isinstance(api, dict) and all(
            k in VOLATILE or (k in api and covers(api[k], v)) for k, v in task.items())
    if isinstance(task, list):
        if not isinstance(api, list) or len(api) != len(task):
            return False

        def key(v: Any) -> str:
            if isinstance(v, dict):
                return str(v.get("id") or json.dumps(norm(v), sort_keys=True))
            return json.dumps(v)

        return all(covers(x, y) for x, y in zip(sorted(api, key=key), sorted(task, key=key),
                                                 strict=True))
    return bool(api == task)


def norm(value: Any) -> Any:
    if isinstance(value, list):
        return sorted((norm(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items() if k not in VOLATILE}
    return value


@pytest.fixture(scope="module")
def second_topology(testbed: Any) -> Iterator[set[str]]:
    """IPv6, host routes, address pairs, DHCP options, static routes, a floating IP."""
    prefix = f"sdnc-{uuid.uuid4().hex[:8]}"
    conn = openstack.connect(cloud=testbed.source)
    net = conn.network
    try:
        sg = net.create_security_group(name=f"{prefix}-sg")
        peer = net.create_security_group(name=f"{prefix}-peer")
        net.create_security_group_rule(security_group_id=sg.id, direction="ingress",
                                       ethertype="IPv4", protocol="6", port_range_min=22,
                                       port_range_max=22, remote_ip_prefix="192.0.2.0/24")
        net.create_security_group_rule(security_group_id=sg.id, direction="ingress",
                                       ethertype="IPv6", protocol="ipv6-icmp",
                                       remote_group_id=peer.id)
        ext = net.create_network(name=f"{prefix}-ext", is_router_external=True)
        net.create_subnet(name=f"{prefix}-ext-sub", network_id=ext.id, ip_version=4,
                          cidr="203.0.113.0/24", is_dhcp_enabled=False)
        inner = net.create_network(name=f"{prefix}-net")
        v4 = net.create_subnet(
            name=f"{prefix}-v4", network_id=inner.id, ip_version=4, cidr="10.232.8.0/24",
            is_dhcp_enabled=False, dns_nameservers=["192.0.2.53", "192.0.2.54"],
            host_routes=[{"destination": "10.99.0.0/16", "nexthop": "10.232.8.254"}],
            allocation_pools=[{"start": "10.232.8.10", "end": "10.232.8.99"},
                              {"start": "10.232.8.150", "end": "10.232.8.200"}])
        v6 = net.create_subnet(name=f"{prefix}-v6", network_id=inner.id, ip_version=6,
                               cidr="2001:db8:232::/64", is_dhcp_enabled=True,
                               ipv6_address_mode="slaac", ipv6_ra_mode="slaac")
        router = net.create_router(name=f"{prefix}-router",
                                   external_gateway_info={"network_id": ext.id})
        net.add_interface_to_router(router, subnet=v4.id)
        net.add_interface_to_router(router, subnet=v6.id)
        net.update_router(router, routes=[{"destination": "10.98.0.0/16",
                                           "nexthop": "10.232.8.254"}])
        port = net.create_port(
            name=f"{prefix}-port", network_id=inner.id, security_group_ids=[sg.id],
            fixed_ips=[{"subnet_id": v4.id}, {"subnet_id": v6.id}],
            allowed_address_pairs=[{"ip_address": "10.232.8.240/28"},
                                   {"ip_address": "10.232.8.77",
                                    "mac_address": "fa:16:3e:00:11:22"}],
            extra_dhcp_opts=[{"opt_name": "tftp-server", "opt_value": "192.0.2.9"},
                             {"opt_name": "bootfile-name", "opt_value": "pxelinux.0"}])
        net.create_ip(floating_network_id=ext.id, port_id=port.id,
                      fixed_ip_address=next(f["ip_address"] for f in port.fixed_ips
                                            if ":" not in f["ip_address"]))
        names = (prefix,)
        ids = {n.id for n in net.networks() if n.name.startswith(names)}
        ids |= {s.id for s in net.subnets() if s.network_id in ids}
        ids |= {p.id for p in net.ports() if p.network_id in ids}
        ids |= {r.id for r in net.routers() if r.name.startswith(names)}
        ids |= {f.id for f in net.ips() if f.floating_network_id in ids}
        groups = {g.id for g in net.security_groups() if g.name.startswith(names)}
        ids |= groups | {r.id for r in net.security_group_rules() if r.security_group_id in groups}
        yield ids
    finally:
        for router in net.routers():
            if router.name.startswith(prefix):  # static routes pin the interfaces
                net.update_router(router, routes=[])
        delete_topology(conn, prefix)
        conn.close()


def prepare_args(url: str, data_dir: Path) -> tuple[str, ...]:
    return ("prepare", "--neutron-db", url, "--data-dir", str(data_dir))


def test_every_task_meets_the_importer_contract_and_matches_the_api(
    cli: Cli, tmp_path: Path, testbed: Any, second_topology: set[str]
) -> None:
    with copy_database() as url:
        done = cli("--journal", str(tmp_path / "j.sqlite"), "sdn", "midonet",
                   *prepare_args(url, tmp_path / "d"))
        assert done.code == 0, done.err
        found = task_rows(url)
        assert check_contract(found) == []
        queued = {r.resource_id for r in found}
        for r in found:
            if r.data_type == "SECURITYGROUP":
                queued |= {x["id"] for x in json.loads(r.data)["security_group_rules"]}
        assert second_topology <= queued, second_topology - queued
        assert {r.data_type for r in found} == set(CONTRACT)
        # Seeded topology too: more than the second topology's objects were queued.
        assert len(queued - second_topology) > 10
        projects = rows(url, "SELECT id, project_id FROM networks")
        per_id = {r.id: r.project_id for r in projects}
        assert all(r.project_id == per_id[r.resource_id] for r in found
                   if r.data_type == "NETWORK")
        conn = openstack.connect(cloud=testbed.source)
        try:
            assert api_equal(conn, found, second_topology) == []
        finally:
            conn.close()
        by_id = {r.resource_id: json.loads(r.data) for r in found}
        port = next(d for d in by_id.values() if d.get("name", "").endswith("-port")
                    and d["id"] in second_topology)
        assert len(port["allowed_address_pairs"]) == 2 and len(port["extra_dhcp_opts"]) == 2
        assert any(":" in f["ip_address"] for f in port["fixed_ips"])
        router = next(d for d in by_id.values() if d.get("name", "").endswith("-router")
                      and d["id"] in second_topology)
        assert router["routes"] == [{"destination": "10.98.0.0/16", "nexthop": "10.232.8.254"}]
        assert router["external_gateway_info"]["enable_snat"] is True


def test_contract_check_catches_what_the_importer_cannot_read() -> None:
    class Row:
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    net = str(uuid.uuid4())
    good = {"id": net, "name": "n", "tenant_id": "p", "admin_state_up": True, "shared": False,
            "router:external": False, "subnets": [], "provider:network_type": None, "mtu": 1500}
    rule = {"id": str(uuid.uuid4()), "security_group_id": net, "direction": "ingress",
            "ethertype": "IPv4", "protocol": "6", "port_range_min": 1, "port_range_max": 2,
            "remote_group_id": None, "remote_ip_prefix": None}
    base = {"type": "CREATE", "transaction_id": "t1", "project_id": "p"}
    assert check_contract([Row(id=1, data_type="NETWORK", resource_id=net,
                               data=json.dumps(good), **base)]) == []
    bad = check_contract([
        Row(id=1, data_type="network", resource_id=net, data=json.dumps(good), **base),
        Row(id=2, data_type="NETWORK", resource_id=net,
            data=json.dumps({**good, "standard_attr_id": 3, "shared": 0}), **base),
        Row(id=3, data_type="SECURITYGROUPRULE", resource_id=rule["id"],
            data=json.dumps(rule), **{**base, "transaction_id": "t3"}),
    ])
    text = "\n".join(bad)
    assert "data_type 'network'" in text and "table-only" in text and "shared=0" in text
    assert "not a name" in text and "share one transaction" in text


def test_integer_generation_and_kilo_generation(cli: Cli, tmp_path: Path, testbed: Any) -> None:
    with copy_database(generation="integer") as url:
        result = cli("--journal", str(tmp_path / "j.sqlite"), "sdn", "midonet",
                     *prepare_args(url, tmp_path / "d"))
        assert result.code == 3, result.err
        lines = [ln for ln in result.err.splitlines() if ln.startswith("stackhop: ")]
        assert len(lines) == 1 and "integer generation" in lines[0]
        assert "neutron-db-manage" in lines[0]
        assert rows(url, "SELECT COUNT(*) FROM midonet_tasks")[0][0] == 0
        assert not (tmp_path / "d").exists()
    with copy_database(generation=None) as url:
        result = cli("--journal", str(tmp_path / "j.sqlite"), "sdn", "midonet",
                     *prepare_args(url, tmp_path / "d"))
        assert result.code == 3 and "has no midonet_tasks table" in result.err
        assert rows(url, "SHOW TABLES LIKE 'midonet%'") == []
    with copy_database(generation="kilo") as url:
        result = cli("--journal", str(tmp_path / "j2.sqlite"), "sdn", "midonet",
                     *prepare_args(url, tmp_path / "d"), "-f", "json")
        assert result.code == 0, result.err
        assert result.json()["task_table"] == "string generation, tenant_id"
        found = rows(url, "SELECT t.tenant_id, n.project_id FROM midonet_tasks t "
                          "JOIN networks n ON n.id = t.resource_id")
        assert found and all(r.tenant_id == r.project_id for r in found)


SLOW_PORTS = (
    "CREATE TRIGGER sdn_slow_ports BEFORE INSERT ON midonet_tasks FOR EACH ROW "
    "IF NEW.data_type = 'PORT' THEN SET @slept = SLEEP(0.2); END IF"
)


def test_kill_9_mid_prepare_then_rerun_no_duplicate_valid_order(
    tmp_path: Path, testbed: Any
) -> None:
    with copy_database() as url:
        execute(url, SLOW_PORTS)
        journal, data_dir = tmp_path / "j.sqlite", tmp_path / "d"
        command = [str(Path(sys.executable).parent / "stackhop"), "--journal", str(journal), "sdn",
                   "midonet", *prepare_args(url, data_dir)]
        env = {**os.environ}
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            # Wait until the groups before PORT are committed and the PORT group is under way.
            while time.monotonic() < deadline and process.poll() is None:
                found = rows(url, "SELECT COUNT(*) FROM midonet_tasks WHERE data_type = 'ROUTER'")
                if found[0][0]:
                    time.sleep(1.0)
                    break
                time.sleep(0.1)
            assert process.poll() is None, "prepare ended before it could be killed"
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        before = task_rows(url)
        assert before and "PORT" not in {r.data_type for r in before}
        execute(url, "DROP TRIGGER sdn_slow_ports")
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        after = task_rows(url)
        assert [r.id for r in after[: len(before)]] == [r.id for r in before]
        assert check_contract(after) == []
        assert {r.data_type for r in after} >= {"PORT", "FLOATINGIP"}
