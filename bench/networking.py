"""Benchmark the networking import: stackhop against hand-written clients (sequential, concurrent).

Generates one bench project ``shnb-<tag>`` (made in Default on both clouds
under the same name: stackhop maps projects by name; the admin user gets the
admin role in it on both sides, and its Neutron quotas for networks, subnets,
routers, ports and floating IPs are lifted) and fills it on src with
``--networks`` networks of two IPv4 subnets each, ``--routers`` routers with
their gateway on src's external network ``public`` and two interfaces each
(on subnets of two different networks), ``--ports`` unowned ports on the
networks (no security group, so the networking kinds travel alone; every
tenth with an allowed address pair) and ``--floating-ips`` floating IPs on
``public`` (every other one associated with a port behind a router, while
such ports last). Generation is concurrent, with Neutron's bulk POST for
networks, subnets and ports.

The external network. Every networking export carries the source's external
networks, and on this testbed dst's ``public`` is made and rolled back by the
networking tests running meanwhile (dst has none between them). So, as those
tests do (``tests/functional/networking_support.py``), the archive is
rewritten without ``public`` and the import gets ``--network-map`` pinning
src's ``public`` to a stand-in of the bench's own on dst,
``shnb-<tag>-public`` (flat on a physnet of its own, router:external, the
same subnet and pool as src's ``public``, so the floating IPs keep their
addresses). Before generating, src's ``public`` pool must hold the routers'
gateways and the floating IPs beside what already uses it: if not, the bench
says so and caps the floating IPs (then the routers).

Then the archive (``stackhop export`` with ``--networks --routers --ports
--floating-ips --project shnb-<tag>``) is imported into dst three ways,
dst's bench project emptied between them:

- ``stackhop``: ``stackhop --journal J import --to dst ARCHIVE --network-map
  MAP --log-json`` in a child process (``run_child``: wall time and peak
  RSS), then ``stackhop rollback`` of its run, after which dst's bench
  project must be empty (counted, reported). ``stackhop verify`` runs after
  the first round's import, ``stackhop plan`` once on the empty project.
- ``(a) sequential``: a hand-written client (REST through openstacksdk's
  session) reads the archive (``ArchiveReader``) and creates networks,
  subnets, routers with their gateway, router interfaces, ports and floating
  IPs one request at a time, mapping the IDs itself.
- ``(b) concurrent``: the same client at its best: ``--workers`` requests at
  once, kind after kind (what a kind refers to exists before it starts),
  Neutron's bulk POST for networks, subnets and ports (each kind split in
  ``--workers`` slices of at most ``--bulk-size``, default 100, sent side by
  side).

stackhop and (b) take turns for ``--rounds`` rounds, each judged by its best
(the API servers' speed drifts on the shared machine); (a) runs once. Each
reference is timed from authenticating to its last call (connect, read the
archive, map the project by name on dst, the calls); stackhop's time is its
whole process, interpreter start included.

Bookkeeping share: how much of stackhop's run is not the create calls. The
import's progress events (``--log-json`` on stderr: epoch timestamps of
``run_started``, every ``operation_started`` and ``operation_finished``) are
read after the timed run. The time during which at least one operation was
between its start and its finish event is "calls"; everything else (start-up,
authentication, reading the archive, the planner's destination reads before
the first operation, gaps when nothing was in flight, the floating IP
address listing and exit after the last one) is bookkeeping. It is a lower
bound: an operation's span also holds the journal's pending and done writes
and waiting for a worker, counted as calls. The JSON also has the phases
(start-up, before the first operation, the operations' window, after) and
the separately timed ``stackhop plan`` (its whole process on an empty
destination project: start-up plus the destination reads and planning).

Everything generated is removed at the end on both clouds (the projects,
their quotas and resources, dst's stand-in), unless ``--keep``.
``--clean-stale`` removes what earlier runs left (every ``shnb-*`` project
and its networking, dst's ``shnb-*-public`` stand-ins) and exits.

    .venv/bin/python bench/networking.py        # 50 networks, 20 routers, 200 ports, 50 FIPs
    .venv/bin/python bench/networking.py --networks 3 --routers 2 --ports 6 --floating-ips 3 \\
        --rounds 1                              # a smoke run

Results: ``bench/results/networking-<date>.json`` and ``.md`` (with the command;
``--label smoke`` makes them ``networking-<date>-smoke.*``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.resources import (  # noqa: E402
    DST,
    ROOT,
    SRC,
    parallel,
    patiently,
    run_child,
    stackhop,
)
from keystoneauth1 import exceptions as ksa_exceptions  # noqa: E402
from openstack import exceptions as sdk_exceptions  # noqa: E402
from testbed import layout  # noqa: E402
from tests.functional.networking_support import only_ours  # noqa: E402

from stackhop.archive import ArchiveReader  # noqa: E402
from stackhop.clouds import connect  # noqa: E402
from stackhop.kinds.rest import call, paged  # noqa: E402

PUBLIC = "public"
SELECTORS = ("--networks", "--routers", "--ports", "--floating-ips")
NETWORK, SUBNET, ROUTER = "neutron.network", "neutron.subnet", "neutron.router"
INTERFACES, PORT, FIP = "neutron.router_interfaces", "neutron.port", "neutron.floating_ip"
KINDS = (NETWORK, SUBNET, ROUTER, INTERFACES, PORT, FIP)
QUOTAS = {"network": -1, "subnet": -1, "router": -1, "port": -1, "floatingip": -1}
INTERFACE_OWNERS = ("network:router_interface", "network:router_interface_distributed")
#: At most this many objects in one bulk POST.
BULK = 100


def chunks(items: list[Any], parts: int, most: int = BULK) -> list[list[Any]]:
    """``items`` in at least ``parts`` slices (when there are that many) of at most ``most``."""
    if not items:
        return []
    size = max(1, min(most, -(-len(items) // max(1, parts))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def bulk(
    conn: Any, collection: str, bodies: list[dict[str, Any]], workers: int, most: int = BULK
) -> list[str]:
    """POST ``bodies`` to ``/<collection>`` in bulk requests (``workers`` slices of at most
    ``most``), ``workers`` at once; the new IDs in the order of ``bodies``."""

    def post(part: list[dict[str, Any]]) -> list[str]:
        created = call(conn.network, "POST", f"/{collection}", json={collection: part})
        return [str(item["id"]) for item in created[collection]]

    return [i for ids in parallel(workers, post, chunks(bodies, workers, most)) for i in ids]


def project_id(conn: Any, name: str) -> str | None:
    found = [p.id for p in conn.identity.projects(name=name, domain_id="default")]
    return str(found[0]) if found else None


def pool_room(conn: Any, network_id: str) -> tuple[int, list[dict[str, Any]]]:
    """Free addresses in the allocation pools of ``network_id``'s IPv4 subnets, and those
    subnets."""
    subnets = [
        s
        for s in paged(conn.network, f"/subnets?network_id={network_id}", "subnets")
        if s["ip_version"] == 4
    ]
    pools = [
        (ipaddress.ip_address(p["start"]), ipaddress.ip_address(p["end"]))
        for s in subnets
        for p in s["allocation_pools"]
    ]
    total = sum(int(end) - int(start) + 1 for start, end in pools)
    used = {
        ip["ip_address"]
        for port in paged(conn.network, f"/ports?network_id={network_id}", "ports")
        for ip in port["fixed_ips"]
        if any(start <= ipaddress.ip_address(ip["ip_address"]) <= end for start, end in pools)
    }
    return total - len(used), subnets


# -- the population ----------------------------------------------------------------


class Population:
    """Names and sizes of one generated networking population, in one project."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.tag = f"shnb-{uuid.uuid4().hex[:6]}"
        self.networks = args.networks
        self.routers = min(args.routers, args.networks)  # two subnets of two networks each
        self.ports = args.ports
        self.floating_ips = args.floating_ips
        self.workers = args.workers
        self.capped: list[str] = []
        if self.routers < args.routers:
            self.capped.append(f"routers {args.routers} -> {self.routers} (networks)")

    def make_project(self, conn: Any) -> str:
        """The bench project on one cloud: the admin user an admin in it, quotas lifted."""
        project = conn.identity.create_project(
            name=self.tag, domain_id="default", description="stackhop networking benchmark"
        )
        role = next(r for r in conn.identity.roles() if r.name == "admin")
        conn.identity.assign_project_role_to_user(project.id, conn.current_user_id, role)
        call(conn.network, "PUT", f"/quotas/{project.id}", json={"quota": QUOTAS})
        return str(project.id)

    def fit(self, room: int, where: str) -> None:
        """Cap the floating IPs (then the routers) to ``room`` free addresses of an external
        pool: each router's gateway takes one, each floating IP one."""
        if self.routers + self.floating_ips <= room:
            return
        fips = max(0, room - self.routers)
        routers = min(self.routers, room)
        note = (
            f"{where} has {room} free addresses for {self.routers} router gateways and "
            f"{self.floating_ips} floating IPs: capped to {routers} routers, {fips} floating IPs"
        )
        print(note, flush=True)
        self.capped.append(note)
        self.routers, self.floating_ips = routers, fips

    def stand_in(self, conn: Any, subnets: list[dict[str, Any]]) -> str:
        """dst's external network for src's ``public``: the bench's own, same subnets."""
        created = call(
            conn.network,
            "POST",
            "/networks",
            json={
                "network": {
                    "name": f"{self.tag}-{PUBLIC}",
                    "router:external": True,
                    "provider:network_type": "flat",
                    "provider:physical_network": self.tag,
                }
            },
        )
        net_id = str(created["network"]["id"])
        for s in subnets:
            call(
                conn.network,
                "POST",
                "/subnets",
                json={
                    "subnet": {
                        "name": f"{self.tag}-{s['name']}",
                        "network_id": net_id,
                        "ip_version": 4,
                        "cidr": s["cidr"],
                        "gateway_ip": s["gateway_ip"],
                        "enable_dhcp": False,
                        "allocation_pools": s["allocation_pools"],
                    }
                },
            )
        return net_id

    def fill_source(self, conn: Any, pid: str, public_id: str) -> None:
        w = self.workers
        net_ids = bulk(
            conn,
            "networks",
            [
                {"name": f"{self.tag}-n{i:04d}", "project_id": pid, "description": f"bench {i}"}
                for i in range(self.networks)
            ],
            w,
        )
        # Subnet j of network i: 10.(64j + i // 256).(i % 256).0/24, so none overlap.
        subnet_bodies = [
            {
                "name": f"{self.tag}-n{i:04d}-s{j}",
                "network_id": net_ids[i],
                "project_id": pid,
                "ip_version": 4,
                "cidr": f"10.{64 * j + i // 256}.{i % 256}.0/24",
                **({"dns_nameservers": ["192.0.2.53"]} if j else {}),
            }
            for j in range(2)
            for i in range(self.networks)
        ]
        subnet_ids = bulk(conn, "subnets", subnet_bodies, w)  # subnet j of network i: jN + i
        n = self.networks

        def router(r: int) -> str:
            body = call(
                conn.network,
                "POST",
                "/routers",
                json={
                    "router": {
                        "name": f"{self.tag}-r{r:04d}",
                        "project_id": pid,
                        "external_gateway_info": {"network_id": public_id},
                    }
                },
            )
            return str(body["router"]["id"])

        router_ids = parallel(w, router, range(self.routers))
        # Router r: subnets 2r and 2r+1 in the order (s0 of every network, then s1 of every
        # network), so its two interfaces are on two different networks.
        attached = {subnet_ids[k]: r for r in range(self.routers) for k in (2 * r, 2 * r + 1)}

        def interfaces(r: int) -> None:
            for k in (2 * r, 2 * r + 1):
                call(
                    conn.network,
                    "PUT",
                    f"/routers/{router_ids[r]}/add_router_interface",
                    json={"subnet_id": subnet_ids[k]},
                )

        parallel(w, interfaces, range(self.routers))

        def port_body(k: int) -> dict[str, Any]:
            i, j = k % n, (k // n) % 2
            body: dict[str, Any] = {
                "name": f"{self.tag}-p{k:05d}",
                "project_id": pid,
                "network_id": net_ids[i],
                "fixed_ips": [{"subnet_id": subnet_ids[j * n + i]}],
                "security_groups": [],
            }
            if k % 10 == 0:
                body["allowed_address_pairs"] = [{"ip_address": f"10.200.{k % 250}.1"}]
            return body

        bodies = [port_body(k) for k in range(self.ports)]
        port_ids = bulk(conn, "ports", bodies, w)
        reachable = [
            pid_
            for pid_, body in zip(port_ids, bodies, strict=True)
            if body["fixed_ips"][0]["subnet_id"] in attached
        ]

        def fip(f: int) -> None:
            body: dict[str, Any] = {
                "floating_network_id": public_id,
                "project_id": pid,
                "description": f"bench fip {f}",
            }
            if f % 2 == 0 and f // 2 < len(reachable):
                body["port_id"] = reachable[f // 2]
            call(conn.network, "POST", "/floatingips", json={"floatingip": body})

        parallel(w, fip, range(self.floating_ips))


def listing(conn: Any, pid: str) -> dict[str, list[dict[str, Any]]]:
    """The bench project's networking on one cloud."""
    return {
        "floatingips": paged(conn.network, f"/floatingips?project_id={pid}", "floatingips"),
        "routers": paged(conn.network, f"/routers?project_id={pid}", "routers"),
        "ports": paged(conn.network, f"/ports?project_id={pid}", "ports"),
        "subnets": paged(conn.network, f"/subnets?project_id={pid}", "subnets"),
        "networks": paged(conn.network, f"/networks?project_id={pid}", "networks"),
    }


def counts(conn: Any, pid: str) -> dict[str, int]:
    return {k: len(v) for k, v in listing(conn, pid).items()}


def empty_project(conn: Any, pid: str, workers: int) -> None:
    """Remove the networking of project ``pid``: floating IPs, router interfaces and routes,
    routers, ports, subnets, networks."""
    net = conn.network
    found = listing(conn, pid)
    parallel(
        workers,
        patiently(lambda f: call(net, "DELETE", f"/floatingips/{f['id']}", missing_ok=True)),
        found["floatingips"],
    )

    def router(r: dict[str, Any]) -> None:
        if r.get("routes"):
            call(net, "PUT", f"/routers/{r['id']}", json={"router": {"routes": []}})
        for port in paged(net, f"/ports?device_id={r['id']}", "ports"):
            if port["device_owner"] in INTERFACE_OWNERS:
                call(
                    net,
                    "PUT",
                    f"/routers/{r['id']}/remove_router_interface",
                    json={"port_id": port["id"]},
                    missing_ok=True,
                )
        call(net, "DELETE", f"/routers/{r['id']}", missing_ok=True)

    parallel(workers, patiently(router), found["routers"])
    ports = paged(net, f"/ports?project_id={pid}", "ports")
    parallel(
        workers,
        patiently(lambda p: call(net, "DELETE", f"/ports/{p['id']}", missing_ok=True)),
        [p for p in ports if not str(p["device_owner"]).startswith("network:router")],
    )
    parallel(
        workers,
        patiently(lambda s: call(net, "DELETE", f"/subnets/{s['id']}", missing_ok=True)),
        paged(net, f"/subnets?project_id={pid}", "subnets"),
    )
    parallel(
        workers,
        patiently(lambda n: call(net, "DELETE", f"/networks/{n['id']}", missing_ok=True)),
        paged(net, f"/networks?project_id={pid}", "networks"),
    )


def remove_all(conn: Any, tag: str, workers: int) -> None:
    """Remove every bench project named ``tag*`` (with its networking and quotas) from one
    cloud, and the bench's stand-in external networks named ``tag*``."""
    projects = [p for p in conn.identity.projects() if p.name.startswith(tag)]
    for p in projects:
        empty_project(conn, p.id, workers)
    standins = [
        n
        for n in paged(conn.network, "/networks?router:external=True", "networks")
        if n["name"].startswith(tag) and n["name"].endswith(f"-{PUBLIC}")
    ]
    for n in standins:
        patiently(lambda i: call(conn.network, "DELETE", f"/networks/{i}", missing_ok=True))(
            n["id"]
        )
    for p in projects:
        patiently(lambda i: call(conn.network, "DELETE", f"/quotas/{i}", missing_ok=True))(p.id)
        patiently(lambda q: conn.identity.delete_project(q, ignore_missing=True))(p)


# -- the two reference importers -------------------------------------------------------


class Reference:
    """Import the archive's networking by hand (what other tools do), sequential or concurrent."""

    def __init__(self, conn: Any, archive: Path, tag: str, networks: dict[str, str]) -> None:
        self.conn = conn
        with ArchiveReader(archive) as reader:
            self.records = {k: list(reader.records(k)) for k in reader.kinds()}
        for kind in KINDS:
            self.records.setdefault(kind, [])
        dst_project = project_id(conn, tag)
        self.project = {
            p["id"]: dst_project for p in self.records["identity.project"] if p["name"] == tag
        }
        #: Source ID -> destination ID, every kind (IDs are UUIDs: no clash between kinds).
        self.ids: dict[str, str] = dict(networks)
        self.subnets = {s["id"]: s for s in self.records[SUBNET]}
        #: At most this many objects in one bulk POST of (b).
        self.bulk_size = BULK
        #: Seconds per kind of the last import (kind after kind).
        self.phases: dict[str, float] = {}

    def post(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        singular = collection[:-1]
        return dict(
            call(self.conn.network, "POST", f"/{collection}", json={singular: body})[singular]
        )

    def network_body(self, n: dict[str, Any]) -> dict[str, Any]:
        body = {
            "name": n["name"],
            "description": n["description"],
            "project_id": self.project[n["project_id"]],
            "admin_state_up": n["admin_state_up"],
            "shared": n["shared"],
            "port_security_enabled": n["port_security_enabled"],
        }
        if n.get("mtu"):
            body["mtu"] = n["mtu"]
        return body

    def subnet_body(self, s: dict[str, Any]) -> dict[str, Any]:
        body = {
            "name": s["name"],
            "description": s["description"],
            "project_id": self.project[s["project_id"]],
            "network_id": self.ids[s["network_id"]],
            "ip_version": s["ip_version"],
            "cidr": s["cidr"],
            "gateway_ip": s["gateway_ip"],
            "enable_dhcp": s["enable_dhcp"],
            "dns_nameservers": s["dns_nameservers"],
            "host_routes": s["host_routes"],
        }
        if s["allocation_pools"]:
            body["allocation_pools"] = s["allocation_pools"]
        for mode in ("ipv6_ra_mode", "ipv6_address_mode"):
            if s.get(mode):
                body[mode] = s[mode]
        return body

    def port_body(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": p["name"],
            "description": p["description"],
            "project_id": self.project[p["project_id"]],
            "network_id": self.ids[p["network_id"]],
            "mac_address": p["mac_address"],
            "admin_state_up": p["admin_state_up"],
            "fixed_ips": [
                {
                    "subnet_id": self.ids[p["subnet_ids"][ip["subnet"]]],
                    "ip_address": ip["ip_address"],
                }
                for ip in p["fixed_ips"]
            ],
            "port_security_enabled": p["port_security_enabled"],
            "security_groups": [self.ids[g] for g in p["security_group_ids"]],
            "allowed_address_pairs": p["allowed_address_pairs"],
        }

    def router(self, r: dict[str, Any]) -> tuple[str, str]:
        body: dict[str, Any] = {
            "name": r["name"],
            "description": r["description"],
            "project_id": self.project[r["project_id"]],
            "admin_state_up": r["admin_state_up"],
        }
        if r.get("external_network_id"):
            body["external_gateway_info"] = {
                "network_id": self.ids[r["external_network_id"]],
                "enable_snat": bool(r.get("enable_snat", True)),
            }
        return r["id"], str(self.post("routers", body)["id"])

    def interfaces(self, record: dict[str, Any]) -> None:
        """A router's interfaces (by subnet on its gateway address, else through a port with
        the address), then its static routes."""
        router_id = self.ids[record["router_id"]]
        for i in record["interfaces"]:
            source_subnet = record["subnet_ids"][i["subnet"]]
            subnet_id = self.ids[source_subnet]
            if i["ip_address"] == self.subnets[source_subnet]["gateway_ip"]:
                attach = {"subnet_id": subnet_id}
            else:
                port = self.post(
                    "ports",
                    {
                        "network_id": self.ids[self.subnets[source_subnet]["network_id"]],
                        "project_id": self.project[record["project_id"]],
                        "fixed_ips": [{"subnet_id": subnet_id, "ip_address": i["ip_address"]}],
                    },
                )
                attach = {"port_id": port["id"]}
            call(
                self.conn.network, "PUT", f"/routers/{router_id}/add_router_interface", json=attach
            )
        if record.get("routes"):
            call(
                self.conn.network,
                "PUT",
                f"/routers/{router_id}",
                json={"router": {"routes": record["routes"]}},
            )

    def floating_ip(self, f: dict[str, Any]) -> None:
        body: dict[str, Any] = {
            "description": f["description"],
            "project_id": self.project[f["project_id"]],
            "floating_network_id": self.ids[f["floating_network_id"]],
            "floating_ip_address": f["floating_ip_address"],
        }
        if f.get("port_id") in self.ids:
            body["port_id"] = self.ids[f["port_id"]]
            if f.get("fixed_ip_address"):
                body["fixed_ip_address"] = f["fixed_ip_address"]
        try:
            self.post("floatingips", body)
        except sdk_exceptions.HttpException as exc:
            if exc.status_code not in (400, 409):
                raise
            del body["floating_ip_address"]  # taken on dst: Neutron picks one
            self.post("floatingips", body)

    def ours(self, kind: str) -> list[dict[str, Any]]:
        """The records of ``kind`` in the mapped project (the rewritten archive has no others,
        bar a network a map pins)."""
        return [r for r in self.records[kind] if r.get("project_id") in self.project]

    def objects(self) -> int:
        return sum(len(self.ours(k)) for k in KINDS)

    def timed(self, kind: str, work: Callable[[], Any]) -> None:
        t = time.perf_counter()
        work()
        self.phases[kind] = round(time.perf_counter() - t, 2)

    def sequential(self) -> None:
        """(a): one request at a time."""

        def one_by_one(collection: str, kind: str, make: Callable[..., Any]) -> None:
            for r in self.ours(kind):
                self.ids[r["id"]] = str(self.post(collection, make(r))["id"])

        self.timed(NETWORK, lambda: one_by_one("networks", NETWORK, self.network_body))
        self.timed(SUBNET, lambda: one_by_one("subnets", SUBNET, self.subnet_body))
        self.timed(ROUTER, lambda: self.ids.update(map(self.router, self.ours(ROUTER))))
        self.timed(INTERFACES, lambda: list(map(self.interfaces, self.ours(INTERFACES))))
        self.timed(PORT, lambda: one_by_one("ports", PORT, self.port_body))
        self.timed(FIP, lambda: list(map(self.floating_ip, self.ours(FIP))))

    def concurrent(self, workers: int, bulk_size: int = BULK) -> None:
        """(b): ``workers`` requests at once, kind after kind, bulk networks, subnets, ports."""
        self.bulk_size = bulk_size

        def bulk_kind(
            collection: str, records: list[dict[str, Any]], make: Callable[..., Any]
        ) -> None:
            bodies = [make(r) for r in records]
            ids = bulk(self.conn, collection, bodies, workers, self.bulk_size)
            self.ids.update(zip((r["id"] for r in records), ids, strict=True))

        self.timed(NETWORK, lambda: bulk_kind("networks", self.ours(NETWORK), self.network_body))
        self.timed(SUBNET, lambda: bulk_kind("subnets", self.ours(SUBNET), self.subnet_body))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            self.timed(ROUTER, lambda: self.ids.update(pool.map(self.router, self.ours(ROUTER))))
            self.timed(INTERFACES, lambda: list(pool.map(self.interfaces, self.ours(INTERFACES))))
        self.timed(PORT, lambda: bulk_kind("ports", self.ours(PORT), self.port_body))
        self.timed(FIP, lambda: parallel(workers, self.floating_ip, self.ours(FIP)))


# -- measuring ----------------------------------------------------------------------------


def run_logged(argv: list[str], log: Path) -> tuple[float, float, int, float]:
    """``run_child`` with the child's stderr (its ``--log-json`` events) kept in ``log``:
    (seconds, peak RSS MB, exit code, epoch time of the spawn). ``sh`` execs the child,
    so the measured process is the child itself."""
    wrapped = ["/bin/sh", "-c", 'exec "$@" 2>"$0"', str(log), *argv]
    spawned = time.time()
    try:
        elapsed, rss, code = run_child(wrapped)
    except SystemExit as exc:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise SystemExit(f"{exc}\n{tail}") from None
    return elapsed, rss, code, spawned


def bookkeeping(log: Path, spawned: float, elapsed: float) -> dict[str, Any]:
    """stackhop's time outside its operations, from its ``--log-json`` events (see the
    module's docstring)."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "type" in event:
            events.append(event)
    ended = spawned + elapsed
    opened: dict[tuple[str, str], float] = {}
    spans: list[tuple[float, float]] = []
    windows: dict[str, tuple[float, float]] = {}  # per kind: first start, last finish
    run_started = next((e["timestamp"] for e in events if e["type"] == "run_started"), spawned)
    finished: dict[str, Any] = {}
    for e in events:
        key = (e.get("kind", ""), e.get("identity", ""))
        if e["type"] == "operation_started":
            opened[key] = e["timestamp"]
        elif e["type"] == "operation_finished" and key in opened:
            spans.append((opened.pop(key), e["timestamp"]))
            first_, last_ = windows.get(key[0], (spans[-1][0], spans[-1][1]))
            windows[key[0]] = (min(first_, spans[-1][0]), max(last_, spans[-1][1]))
        elif e["type"] == "run_finished":
            finished = e.get("detail", {})
    if not spans:
        return {"error": "no operation events", "run": finished}
    spans.sort()
    busy, start, end = 0.0, spans[0][0], spans[0][1]
    for s, e in spans[1:]:
        if s > end:
            busy += end - start
            start, end = s, e
        else:
            end = max(end, e)
    busy += end - start
    first, last = spans[0][0], max(e for _, e in spans)
    return {
        "operations": len(spans),
        "startup_s": round(run_started - spawned, 2),
        "before_first_operation_s": round(first - run_started, 2),
        "operations_window_s": round(last - first, 2),
        "idle_in_window_s": round(last - first - busy, 2),
        "after_last_operation_s": round(ended - last, 2),
        "calls_s": round(busy, 2),
        "bookkeeping_s": round(elapsed - busy, 2),
        "bookkeeping_share": round((elapsed - busy) / elapsed, 3),
        "per_kind_window_s": {
            k: [round(a - run_started, 2), round(b - run_started, 2)]
            for k, (a, b) in windows.items()
        },
        "counts": finished.get("counts"),
        "outcome": finished.get("outcome"),
    }


def summary(result: dict[str, Any]) -> str:
    """The results as a short Markdown page (the JSON beside it has every number)."""
    lines = [
        f"# Networking import benchmark, {result['date']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Sizes: {result['sizes']}; objects imported: {result.get('objects', '?')} "
        f"({result.get('objects_by_kind', '')}); generation {result.get('generate_s', '?')} s; "
        f"export {result.get('export_s', '?')} s.",
    ]
    if result.get("capped"):
        lines += ["", "Capped: " + "; ".join(result["capped"])]
    lines += [
        "",
        "Every contender's time runs from authenticating to its last call (the references:"
        " connect, read the archive, map the project by name on dst, the calls; stackhop:"
        " its whole `stackhop import` process, interpreter start included).",
        "",
        "| contender | seconds (best round) | every round | of which setup | objects/s "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("stackhop", "b_concurrent", "a_sequential"):
        row = result.get(name)
        if row and "error" in row:
            lines.append(f"| {name} | failed: {row['error']} | | | | |")
        elif row:
            lines.append(
                f"| {name} | {row['seconds']} | {row.get('rounds', '')} | "
                f"{row.get('setup_s', '')} | {row['objects_per_s']} | "
                f"{row.get('peak_rss_mb', '')} |"
            )
    for name in ("b_concurrent", "a_sequential"):
        if result.get(name, {}).get("per_kind_s"):
            lines += ["", f"{name} per kind (s): " + json.dumps(result[name]["per_kind_s"])]
    if "ratios" in result:
        lines += ["", "ratios: " + ", ".join(f"{k} = {v}" for k, v in result["ratios"].items())]
    if "stackhop" in result:
        book = result["stackhop"].get("bookkeeping", {})
        lines += [
            "",
            "stackhop's bookkeeping (best round; the time no create call was in flight, from"
            " its `--log-json` events, a lower bound): "
            + ", ".join(f"{k} = {v}" for k, v in book.items() if k != "counts")
            + " (per_kind_window_s: each kind's first start and last finish after run_started)",
        ]
        extra = {
            **result.get("after_import", {}),
            "rollback_s": result["stackhop"].get("rollback_s"),
            "left_after_rollback": result["stackhop"].get("left_after_rollback"),
        }
        lines += [
            "",
            "stackhop around the import: " + ", ".join(f"{k} = {v}" for k, v in extra.items()),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=50, help="networks, two subnets each")
    parser.add_argument(
        "--routers", type=int, default=20, help="routers, gateway on public, two interfaces"
    )
    parser.add_argument("--ports", type=int, default=200, help="unowned ports")
    parser.add_argument("--floating-ips", type=int, default=50, help="floating IPs on public")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--bulk-size",
        type=int,
        default=BULK,
        help=f"(b): at most this many objects per bulk POST (default {BULK}; each kind is "
        "split in --workers slices, sent side by side)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="times stackhop and (b) each run, taking turns (each judged by its best)",
    )
    parser.add_argument(
        "--label", help="results go to networking-<date>-LABEL.{json,md} (e.g. smoke)"
    )
    parser.add_argument("--keep", action="store_true", help="leave what was generated in place")
    parser.add_argument(
        "--clean-stale",
        action="store_true",
        help="remove every shnb-* project (with its networking) and stand-in on both clouds",
    )
    args = parser.parse_args()
    # The testbed's clouds unless the caller points elsewhere; children inherit it.
    os.environ.setdefault("OS_CLIENT_CONFIG_FILE", str(layout.CLOUDS_YAML))
    src, dst = connect(SRC), connect(DST)
    if args.clean_stale:
        for conn in (src, dst):
            remove_all(conn, "shnb-", args.workers)
        return
    pop = Population(args)
    result: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sizes": {
            k: getattr(args, k)
            for k in (
                "networks",
                "routers",
                "ports",
                "floating_ips",
                "workers",
                "bulk_size",
                "rounds",
            )
        },
        "tag": pop.tag,
    }
    work = Path(tempfile.mkdtemp(prefix="shnb-"))
    label = f"-{args.label}" if args.label else ""
    out = ROOT / "bench" / "results" / f"networking-{dt.date.today().isoformat()}{label}"

    def save() -> None:
        # After every phase, so a testbed hiccup late in the run keeps what was measured.
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(summary(result))

    try:
        public = [
            n
            for n in paged(src.network, "/networks?router:external=True", "networks")
            if n["name"] == PUBLIC
        ]
        if not public:
            raise SystemExit(f"src has no external network {PUBLIC!r}: seed the testbed")
        public_id = str(public[0]["id"])
        room, public_subnets = pool_room(src, public_id)
        result["src_public_free_addresses"] = room
        pop.fit(room, f"src's {PUBLIC!r}")
        result["capped"] = pop.capped
        result["generated"] = {
            "networks": pop.networks,
            "subnets": 2 * pop.networks,
            "routers": pop.routers,
            "router_interfaces": 2 * pop.routers,
            "ports": pop.ports,
            "floating_ips": pop.floating_ips,
        }

        t = time.perf_counter()
        src_pid = pop.make_project(src)
        dst_pid = pop.make_project(dst)
        standin = pop.stand_in(dst, public_subnets)
        dst_room, _ = pool_room(dst, standin)
        pop.fit(dst_room, f"dst's stand-in {pop.tag}-{PUBLIC}")  # same pool: only if src's grew
        pop.fill_source(src, src_pid, public_id)
        result["generate_s"] = round(time.perf_counter() - t, 1)
        result["generated_on_src"] = counts(src, src_pid)
        print(f"generated {pop.tag} in {result['generate_s']} s: {result['generated_on_src']}")

        exported = work / "export.tar.zst"
        argv = stackhop(
            "export", "--from", SRC, "-o", str(exported), *SELECTORS, "--project", pop.tag
        )
        result["export_s"] = round(run_child(argv)[0], 2)
        archive = only_ours(exported, pop.tag)  # without src's `public` (see the docstring)
        mapping = work / "network-map.yaml"
        mapping.write_text(json.dumps({"networks": {public_id: standin}}) + "\n")
        net_map = ["--network-map", str(mapping)]
        print(f"exported in {result['export_s']} s", flush=True)

        reference = Reference(dst, archive, pop.tag, {public_id: standin})
        objects = reference.objects()
        result["objects"] = objects
        result["objects_by_kind"] = {k: len(reference.ours(k)) for k in KINDS}
        save()

        plan_s, _, _ = run_child(stackhop("plan", "--to", DST, str(archive), *net_map))
        result["after_import"] = {"plan_s_on_empty_dst": round(plan_s, 2)}

        def run_stackhop(round_: int) -> dict[str, Any]:
            journal = work / f"journal-{round_}.sqlite"
            log = work / f"events-{round_}.jsonl"
            elapsed, rss, code, spawned = run_logged(
                stackhop(
                    "--journal", str(journal), "--log-json",
                    "import", "--to", DST, str(archive), *net_map,
                    "--workers", str(args.workers),
                ),
                log,
            )  # fmt: skip
            row: dict[str, Any] = {
                "seconds": round(elapsed, 2),
                "peak_rss_mb": round(rss, 1),
                "objects_per_s": round(objects / elapsed, 1),
                "exit": code,
                "bookkeeping": bookkeeping(log, spawned, elapsed),
                "on_dst": counts(dst, dst_pid),
            }
            if round_ == 0:
                verify_s, _, vcode = run_child(
                    stackhop("verify", "--to", DST, str(archive), *net_map)
                )
                result["after_import"].update(verify_s=round(verify_s, 2), verify_exit=vcode)
            from stackhop.journal import Journal

            with Journal(journal) as j:
                run_ids = [a for r in j.runs() for a in ("--run", r.id)]
            rollback_s, _, _ = run_child(
                stackhop("--journal", str(journal), "rollback", "--to", DST, *run_ids)
            )
            row["rollback_s"] = round(rollback_s, 2)
            left = counts(dst, dst_pid)
            row["left_after_rollback"] = {k: v for k, v in left.items() if v}
            if any(left.values()):
                print(f"stackhop rollback left {left} on dst: removing it", flush=True)
                empty_project(dst, dst_pid, args.workers)
            return row

        def run_reference(method: Callable[[Reference], None]) -> dict[str, Any]:
            t = time.perf_counter()
            try:
                ref = Reference(connect(DST), archive, pop.tag, {public_id: standin})
                setup = time.perf_counter() - t
                method(ref)
            except (ksa_exceptions.ConnectionError, sdk_exceptions.HttpException) as exc:
                # A service restarted under the run (the testbed is shared): keep the rest.
                return {"error": f"{type(exc).__name__}: {exc}"[:300]}
            elapsed = time.perf_counter() - t
            return {
                "seconds": round(elapsed, 2),
                "setup_s": round(setup, 2),
                "objects_per_s": round(objects / elapsed, 1),
                "per_kind_s": ref.phases,
                "on_dst": counts(dst, dst_pid),
            }

        contenders: dict[str, Callable[[int], dict[str, Any]]] = {
            "stackhop": run_stackhop,
            "b_concurrent": lambda _: run_reference(
                lambda ref: ref.concurrent(args.workers, args.bulk_size)
            ),
            "a_sequential": lambda _: run_reference(lambda ref: ref.sequential()),
        }
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
        plan = [(r, n) for r in range(args.rounds) for n in ("stackhop", "b_concurrent")]
        plan.append((0, "a_sequential"))
        for round_, name in plan:
            row = contenders[name](round_)
            rounds[name].append(row)
            print(f"{name} (round {round_ + 1}): {row}", flush=True)
            ok = [r for r in rounds[name] if "seconds" in r]
            result[name] = dict(min(ok, key=lambda r: r["seconds"])) if ok else dict(row)
            result[name]["rounds"] = [r.get("seconds") for r in rounds[name]]
            save()
            if name != "stackhop":
                empty_project(dst, dst_pid, args.workers)

        s = result["stackhop"].get("seconds")
        if s:
            result["ratios"] = {
                f"{name}_over_stackhop": round(result[name]["seconds"] / s, 2)
                for name in ("a_sequential", "b_concurrent")
                if "seconds" in result[name]
            }
    finally:
        if not args.keep:
            for conn in (dst, src):
                remove_all(conn, pop.tag, args.workers)
    save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
