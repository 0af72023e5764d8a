"""``kill -9`` of a networking import at three points, then a re-run with the same journal and
with the journal deleted: no network, subnet, router or router interface twice, none missing.

The src world is made for this module in the seed's ``gamma`` project (which has no
networking of its own): four networks with one or two subnets each, and two routers,
``r0`` with three interfaces on gateway addresses, ``r1`` with four, one of them on a
non-gateway address (attached through a port, as Neutron does for a second router on
a subnet). The routers have no external gateway, and the archive is rewritten without
the external network ``public`` that every networking export carries
(``networking_support.only_ours``): other tests import and roll back dst's ``public``
at the same time, so a test using it cannot tell its own effects from theirs.

The import runs as a child process with one worker (kinds in order: networks,
subnets, routers, router interfaces) and is killed by watching its journal
(``resume_support``, the mechanism of ``test_resources_resume.py``):

- ``networks``: the networks' bulk request (one ``POST`` for all four, Neutron creates
  all or none) journaled ``pending`` and not answered yet, no subnet yet;
- ``subnets``: every subnet finished, not every router;
- ``interfaces``: the first router's interfaces done (``neutron.router_interfaces`` is
  one operation per router), the second router's running.

dst is checked by listing it with openstacksdk (markers counted, interfaces compared
with src's by CIDR and address), then ``verify`` must exit 0. A re-run with the
journal is rolled back with that journal; after a re-run without it, both journals
are rolled back and what is still marked with our source IDs is removed by hand: an
object the killed run created but had not journaled ``done`` is only *found* by the
journal-less re-run (a skip), and no journal says stackhop created it (so those
rollbacks may also fail, on a subnet such an object still uses). Either way dst must
list as it did before.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.functional.networking_support import only_ours
from tests.functional.resume_support import (
    States,
    finished,
    import_command,
    import_killed_when,
    run_to_the_end,
)

from stackhop.archive import ArchiveReader
from stackhop.cli.main import main
from stackhop.clouds import connect
from stackhop.journal import Journal
from stackhop.kinds.base import MARKER_PREFIX, Kind

pytestmark = pytest.mark.functional

PROJECT = "gamma"
SELECT = ("--networks", "--routers")
NETWORK, SUBNET = "neutron.network", "neutron.subnet"
ROUTER, INTERFACES = "neutron.router", "neutron.router_interfaces"
INTERFACE_OWNERS = ("network:router_interface", "network:router_interface_distributed")

#: Network -> its subnets (CIDRs), in gamma on src.
SUBNETS = {
    0: ("10.91.0.0/24", "fd00:91::/64"),
    1: ("10.91.1.0/24",),
    2: ("10.91.2.0/24", "10.91.12.0/24"),
    3: ("10.91.3.0/24",),
}
#: Router -> its interfaces (CIDR, address).
ROUTERS = {
    "r0": (("10.91.0.0/24", "10.91.0.1"), ("10.91.1.0/24", "10.91.1.1"),
           ("10.91.2.0/24", "10.91.2.1")),
    "r1": (("10.91.3.0/24", "10.91.3.1"), ("10.91.12.0/24", "10.91.12.1"),
           ("fd00:91::/64", "fd00:91::1"), ("10.91.0.0/24", "10.91.0.254")),
}


def _mark(obj: Any) -> str | None:
    return Kind.marked_source_id(obj.description)


def _project(conn: Any) -> str:
    found = [p.id for p in conn.identity.projects(name=PROJECT)]
    if not found:
        pytest.fail(f"no project {PROJECT!r} on the testbed; seed it (`make testbed-seed`)")
    return str(found[0])


@pytest.fixture(scope="module")
def world(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The src networking above, its archive, and what each source object is."""
    src = connect("src")
    gamma = _project(src)
    tag = f"shnetkill-{uuid.uuid4().hex[:6]}"
    networks: list[Any] = []
    routers: list[Any] = []
    try:
        subnets: dict[str, Any] = {}
        for index, cidrs in SUBNETS.items():
            network = src.network.create_network(name=f"{tag}-n{index}", project_id=gamma)
            networks.append(network)
            for cidr in cidrs:
                subnets[cidr] = src.network.create_subnet(
                    name=f"{tag}-{cidr}", network_id=network.id, project_id=gamma,
                    ip_version=6 if ":" in cidr else 4, cidr=cidr,
                )
        for name, interfaces in ROUTERS.items():
            router = src.network.create_router(name=f"{tag}-{name}", project_id=gamma)
            routers.append(router)
            for cidr, address in interfaces:
                subnet = subnets[cidr]
                if address == subnet.gateway_ip:
                    src.network.add_interface_to_router(router, subnet=subnet.id)
                    continue
                port = src.network.create_port(
                    network_id=subnet.network_id, project_id=gamma,
                    fixed_ips=[{"subnet_id": subnet.id, "ip_address": address}],
                )
                src.network.add_interface_to_router(router, port=port.id)
        exported = tmp_path_factory.mktemp("netkill") / "net.tar.zst"
        assert main(["export", "--from", "src", "-o", str(exported), *SELECT,
                     "--project", PROJECT]) == 0
        archive = only_ours(exported, tag)
        with ArchiveReader(archive) as reader:
            records = {k: list(reader.records(k)) for k in (NETWORK, SUBNET, ROUTER, INTERFACES)}
        yield {
            "archive": archive,
            "records": records,
            "source_ids": {r["id"] for rs in records.values() for r in rs},
            "tag": tag,
        }
    finally:
        for router in routers:
            for port in src.network.ports(device_id=router.id):
                if port.device_owner in INTERFACE_OWNERS:
                    src.network.remove_interface_from_router(router, port=port.id)
            src.network.delete_router(router, ignore_missing=True)
        for network in networks:
            for port in src.network.ports(network_id=network.id):
                src.network.delete_port(port, ignore_missing=True)
            src.network.delete_network(network, ignore_missing=True)


# -- dst as openstacksdk lists it ----------------------------------------------------------


def _listing(dst: Any, gamma: str, source_ids: set[str]) -> dict[str, list[Any]]:
    """gamma's networking on dst, and whatever else carries one of our markers."""
    net = dst.network
    networks = [n for n in net.networks() if n.project_id == gamma or _mark(n) in source_ids]
    ids = {n.id for n in networks}
    routers = [r for r in net.routers() if r.project_id == gamma or _mark(r) in source_ids]
    router_ids = {r.id for r in routers}
    return {
        "networks": sorted((n.id, n.name, n.description) for n in networks),
        "subnets": sorted(
            (s.id, s.cidr, s.network_id) for s in net.subnets() if s.network_id in ids
        ),
        "routers": sorted((r.id, r.name) for r in routers),
        "ports": sorted(
            (p.id, p.device_owner or "", p.device_id or "")
            for p in net.ports()
            if p.network_id in ids and (p.project_id == gamma or p.device_id in router_ids)
        ),
    }


def assert_complete_without_duplicates(world: dict[str, Any]) -> None:
    """Each source network, subnet and router once on dst; each router's interfaces as on src."""
    dst = connect("dst").network
    records = world["records"]
    networks = [n for n in dst.networks() if _mark(n) is not None]
    by_mark = Counter(_mark(n) for n in networks)
    assert records[NETWORK] and all(r["name"].startswith(world["tag"]) for r in records[NETWORK])
    for record in records[NETWORK]:
        assert by_mark[record["id"]] == 1, f"network {record['name']}: {by_mark[record['id']]}"
    network_of = {_mark(n): n.id for n in networks}
    subnets = [s for s in dst.subnets() if _mark(s) is not None]
    subnet_marks = Counter(_mark(s) for s in subnets)
    cidr_of = {s.id: s.cidr for s in dst.subnets()}
    for record in records[SUBNET]:
        assert subnet_marks[record["id"]] == 1, f"subnet {record['cidr']}"
        found = next(s for s in subnets if _mark(s) == record["id"])
        assert found.cidr == record["cidr"]
        if record["network_id"] in network_of:
            assert found.network_id == network_of[record["network_id"]]
    routers = [r for r in dst.routers() if _mark(r) is not None]
    router_marks = Counter(_mark(r) for r in routers)
    for record in records[ROUTER]:
        assert router_marks[record["id"]] == 1, f"router {record['name']}"
        router = next(r for r in routers if _mark(r) == record["id"])
        name = record["name"].removeprefix(f"{world['tag']}-")
        attached = sorted(
            (cidr_of[ip["subnet_id"]], ip["ip_address"])
            for p in dst.ports(device_id=router.id)
            if p.device_owner in INTERFACE_OWNERS
            for ip in p.fixed_ips
        )
        assert attached == sorted(ROUTERS[name]), f"router {name}'s interfaces"
    # No port the killed run made for an interface and left unattached.
    strays = [p.id for p in dst.ports(device_owner="") if _mark(p) in world["source_ids"]]
    assert strays == []
    archive = str(world["archive"])
    assert main(["verify", "--to", "dst", archive, *SELECT]) == 0


# -- cleaning up -----------------------------------------------------------------------------


def _rollback(journals: tuple[Path, ...]) -> list[int]:
    """Roll back every run of each journal that exists; the exit codes."""
    codes = []
    for journal in journals:
        if not journal.exists():
            continue
        with Journal(journal) as j:
            runs = [a for r in j.runs() for a in ("--run", r.id)]
        codes.append(main(["--journal", str(journal), "rollback", "--to", "dst", *runs]))
    return codes


def _sweep(dst: Any, source_ids: set[str], before: dict[str, list[Any]]) -> None:
    """Delete what carries one of our markers and was not on dst before (journal lost)."""
    known = {row[0] for rows in before.values() for row in rows}
    net = dst.network
    for router in net.routers():
        if _mark(router) in source_ids and router.id not in known:
            for port in net.ports(device_id=router.id):
                if port.device_owner in INTERFACE_OWNERS:
                    net.remove_interface_from_router(router, port=port.id)
            net.delete_router(router, ignore_missing=True)
    for port in net.ports(device_owner=""):
        if _mark(port) in source_ids and port.id not in known:
            net.delete_port(port, ignore_missing=True)
    for network in net.networks():
        if _mark(network) in source_ids and network.id not in known:
            net.delete_network(network, ignore_missing=True)


# -- the kill points -------------------------------------------------------------------------


def _networks_midway(world: dict[str, Any]) -> Callable[[States], bool]:
    # Networks go in one bulk request (Neutron creates all or none): killed while it is out.
    total = len(world["records"][NETWORK])
    return lambda s: s[(NETWORK, "pending")] >= 2 and finished(s, NETWORK) < total


def _after_subnets(world: dict[str, Any]) -> Callable[[States], bool]:
    total = len(world["records"][SUBNET])
    return lambda s: finished(s, SUBNET) >= total


def _interfaces_midway(world: dict[str, Any]) -> Callable[[States], bool]:
    return lambda s: finished(s, INTERFACES) >= 1


POINTS: dict[str, Callable[[dict[str, Any]], Callable[[States], bool]]] = {
    "networks": _networks_midway,
    "subnets": _after_subnets,
    "interfaces": _interfaces_midway,
}


def _check_point(point: str, seen: States, world: dict[str, Any]) -> None:
    """The kill came where it was meant to (the journal's counts when it came)."""
    if point == "networks":
        assert finished(seen, NETWORK) < len(world["records"][NETWORK]), seen
        assert finished(seen, SUBNET) == 0, seen
    elif point == "subnets":
        assert seen[(ROUTER, "done")] < len(world["records"][ROUTER]), seen
    else:
        assert finished(seen, INTERFACES) < len(world["records"][INTERFACES]), seen


#: make test kills at two points, one with its journal and one without (about 50 s); the
#: other four pairings are long (about 80 s more): make test-long.
SHORT = {("interfaces", True), ("subnets", False)}


@pytest.mark.parametrize(
    ("point", "keep_journal"),
    [
        pytest.param(point, keep, id=f"{point}-{'journal' if keep else 'no-journal'}",
                     marks=() if (point, keep) in SHORT else pytest.mark.long)
        for point in sorted(POINTS) for keep in (True, False)
    ],
)
def test_kill_then_rerun(
    world: dict[str, Any], point: str, keep_journal: bool, tmp_path: Path
) -> None:
    dst = connect("dst")
    gamma = _project(dst)
    before = _listing(dst, gamma, world["source_ids"])
    journal, kept = tmp_path / "journal.sqlite", tmp_path / "killed.sqlite"
    command = import_command(world["archive"], journal, SELECT)
    try:
        seen = import_killed_when(command, journal, POINTS[point](world))
        _check_point(point, seen, world)
        if not keep_journal:
            # The re-run starts without the journal (and its WAL); it is kept to clean up.
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{journal}{suffix}").exists():
                    shutil.move(f"{journal}{suffix}", f"{kept}{suffix}")
        completed = run_to_the_end(import_command(world["archive"], journal, SELECT, workers=8))
        assert completed.returncode == 0, completed.stderr
        assert_complete_without_duplicates(world)
    finally:
        codes = _rollback((journal, kept))
        rolled_back = _listing(dst, gamma, world["source_ids"])
        _sweep(dst, world["source_ids"], before)  # a no-op when the rollback undid everything
    if keep_journal:
        assert set(codes) == {0}, codes
        assert rolled_back == before
    assert _listing(dst, gamma, world["source_ids"]) == before


def test_interface_port_left_unattached_is_reused(world: dict[str, Any], tmp_path: Path) -> None:
    """Killed between creating an interface's port and attaching it, journal lost: the re-run
    attaches that port (a new one would be refused: the port holds the address)."""
    dst = connect("dst")
    gamma = _project(dst)
    before = _listing(dst, gamma, world["source_ids"])
    first, second = tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    archive = str(world["archive"])
    try:
        assert main(["--journal", str(first), "import", "--to", "dst", archive, *SELECT]) == 0
        r1 = next(r for r in world["records"][ROUTER] if r["name"].endswith("-r1"))
        router = next(r for r in dst.network.routers() if _mark(r) == r1["id"])
        port = next(
            p for p in dst.network.ports(device_id=router.id)
            if any(ip["ip_address"] == "10.91.0.254" for ip in p.fixed_ips)
        )
        dst.network.remove_interface_from_router(router, port=port.id)  # deletes the port
        fixed = port.fixed_ips[0]
        left = dst.network.create_port(
            network_id=port.network_id, project_id=gamma,
            fixed_ips=[{"subnet_id": fixed["subnet_id"], "ip_address": "10.91.0.254"}],
            description=f"[{MARKER_PREFIX}{r1['id']}]",
        )
        assert main(["--journal", str(second), "import", "--to", "dst", archive, *SELECT]) == 0
        attached = dst.network.get_port(left.id)
        assert (attached.device_id, attached.device_owner) == (router.id, INTERFACE_OWNERS[0])
        assert_complete_without_duplicates(world)
    finally:
        codes = _rollback((second, first))
        rolled_back = _listing(dst, gamma, world["source_ids"])
        _sweep(dst, world["source_ids"], before)
    assert set(codes) == {0}, codes
    assert rolled_back == before
