"""What the destination allocates: VLAN IDs (kept only with ``--keep-segmentation-ids``) and
floating IP addresses (a new one when the source's is taken on dst).

Made for this module in src's ``gamma`` project: two VLAN networks on ``physnet1`` (the
testbed's VLAN range is 100-199 on both clouds) with IDs free on both clouds, an
external network of its own (VLAN too, with a TEST-NET-3 subnet) and a floating IP on
it. The archive is rewritten without the testbed's ``public`` (``only_ours``: other
tests import and roll it back at the same time). What each test takes on dst first (a
VLAN ID, the address) and what the imports make there is removed at the end; dst is
checked by listing it with openstacksdk, and must list as before afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.functional.networking_support import only_ours

from stackhop.cli.main import main
from stackhop.clouds import connect
from stackhop.journal import Journal
from stackhop.kinds.base import Kind

pytestmark = pytest.mark.functional

PROJECT = "gamma"
PHYSNET = "physnet1"
VLANS = range(100, 200)
EXTERNAL_CIDR = "203.0.113.0/24"
ADDRESS = "203.0.113.50"


def _mark(obj: Any) -> str | None:
    return Kind.marked_source_id(obj.description)


def _project(conn: Any) -> str:
    found = [p.id for p in conn.identity.projects(name=PROJECT)]
    if not found:
        pytest.fail(f"no project {PROJECT!r} on the testbed; seed it (`make testbed-seed`)")
    return str(found[0])


def _vlans_in_use(conn: Any) -> set[int]:
    return {
        n.provider_segmentation_id
        for n in conn.network.networks()
        if n.provider_network_type == "vlan" and n.provider_physical_network == PHYSNET
    }


@pytest.fixture(scope="module")
def world(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    src, dst = connect("src"), connect("dst")
    gamma = _project(src)
    tag = f"shalloc-{uuid.uuid4().hex[:6]}"
    free = sorted(set(VLANS) - _vlans_in_use(src) - _vlans_in_use(dst), reverse=True)
    made: list[Any] = []
    fip = None
    try:
        for name, vlan in (("a", free[0]), ("b", free[1]), ("ext", free[2])):
            made.append(src.network.create_network(
                name=f"{tag}-{name}", project_id=gamma, provider_network_type="vlan",
                provider_physical_network=PHYSNET, provider_segmentation_id=vlan,
                is_router_external=name == "ext",
            ))
        external = made[-1]
        src.network.create_subnet(
            name=f"{tag}-ext", network_id=external.id, project_id=gamma, ip_version=4,
            cidr=EXTERNAL_CIDR, enable_dhcp=False,
        )
        fip = src.network.create_ip(
            floating_network_id=external.id, project_id=gamma, floating_ip_address=ADDRESS,
            description=f"{tag} front",
        )
        exported = tmp_path_factory.mktemp("alloc") / "net.tar.zst"
        assert main(["export", "--from", "src", "-o", str(exported), "--networks",
                     "--floating-ips", "--project", PROJECT]) == 0
        archive = only_ours(exported, tag)
        yield {
            "archive": str(archive), "gamma": gamma, "tag": tag, "vlans": (free[0], free[1]),
            "networks": {n.name: n for n in made}, "fip": fip, "address": ADDRESS,
            "source_ids": {n.id for n in made} | {fip.id},
        }
    finally:
        if fip is not None:
            src.network.delete_ip(fip, ignore_missing=True)
        for network in made:
            src.network.delete_network(network, ignore_missing=True)


def _listing(dst: Any, world: dict[str, Any]) -> dict[str, list[Any]]:
    """gamma's networks and floating IPs on dst, and every network marked with our IDs."""
    net, gamma = dst.network, world["gamma"]
    return {
        "networks": sorted(
            (n.id, n.name, n.provider_segmentation_id or 0)
            for n in net.networks()
            if n.project_id == gamma or _mark(n) in world["source_ids"]
        ),
        "floating_ips": sorted(
            (f.id, f.floating_ip_address) for f in net.ips() if f.project_id == gamma
        ),
    }


def _rollback(journal: Path) -> int:
    with Journal(journal) as j:
        runs = [a for r in j.runs() for a in ("--run", r.id)]
    return main(["--journal", str(journal), "rollback", "--to", "dst", *runs])


def _run(*argv: str) -> tuple[int, Any]:
    """``stackhop ARGV -f json`` in-process: (exit code, what it printed, decoded)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "-f", "json"])
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else None


def _import(journal: Path, archive: str, *flags: str) -> tuple[int, Any]:
    return _run("--journal", str(journal), "import", "--to", "dst", archive, *flags)


def test_vlan_ids_are_allocated_by_dst_unless_kept(world: dict[str, Any], tmp_path: Path) -> None:
    dst = connect("dst")
    before = _listing(dst, world)
    vlan_a, vlan_b = world["vlans"]
    a, b = (world["networks"][f"{world['tag']}-{n}"] for n in "ab")
    journal = tmp_path / "journal.sqlite"
    taken = dst.network.create_network(
        name=f"{world['tag']}-taken", provider_network_type="vlan",
        provider_physical_network=PHYSNET, provider_segmentation_id=vlan_a,
    )
    try:
        code, plan = _run("plan", "--to", "dst", world["archive"], "--networks",
                          "--keep-segmentation-ids")
        assert code == 0
        details = {op["source_id"]: op["detail"] for op in plan["operations"]}
        assert details[b.id] == f"segmentation IDs kept: vlan {vlan_b} on {PHYSNET}"

        # Kept: b gets its ID; a's is taken on dst, a one-line error naming the flag.
        code, result = _import(journal, world["archive"], "--networks", "--keep-segmentation-ids")
        assert code == 12, result
        (error,) = result["errors"]
        assert error["kind"] == "neutron.network" and f"{world['tag']}-a" in error["identity"]
        assert "--keep-segmentation-ids" in error["error"] and str(vlan_a) in error["error"]
        assert "\n" not in error["error"]
        ours = {_mark(n): n for n in dst.network.networks() if _mark(n) is not None}
        assert a.id not in ours
        assert (ours[b.id].provider_network_type, ours[b.id].provider_physical_network,
                ours[b.id].provider_segmentation_id) == ("vlan", PHYSNET, vlan_b)

        # The default: dst allocates, so a's taken ID is no obstacle.
        code, result = _import(journal, world["archive"], "--networks")
        assert code == 0, result
        ours = {_mark(n): n for n in dst.network.networks() if _mark(n) is not None}
        assert ours[a.id].provider_network_type == "vlan"
        assert ours[a.id].provider_physical_network == PHYSNET
        assert ours[a.id].provider_segmentation_id in VLANS
        assert ours[a.id].provider_segmentation_id != vlan_a
        assert main(["verify", "--to", "dst", world["archive"], "--networks"]) == 0
    finally:
        code = _rollback(journal) if journal.exists() else 0
        dst.network.delete_network(taken, ignore_missing=True)
    assert code == 0
    assert _listing(dst, world) == before


def test_floating_ip_taken_on_dst_gets_a_new_address(
    world: dict[str, Any], tmp_path: Path
) -> None:
    dst = connect("dst")
    before = _listing(dst, world)
    journal = tmp_path / "journal.sqlite"
    address, fip = world["address"], world["fip"]
    holder = None
    try:
        code, result = _import(journal, world["archive"], "--networks")
        assert code == 0, result
        source_external = world["networks"][f"{world['tag']}-ext"]
        external = next(n for n in dst.network.networks() if _mark(n) == source_external.id)
        # The address is held on dst by a plain port (as a router's gateway would hold it).
        holder = dst.network.create_port(
            network_id=external.id, name=f"{world['tag']}-holder",
            fixed_ips=[{"ip_address": address}],
        )
        code, result = _import(journal, world["archive"], "--floating-ips")
        assert code == 0, result
        (moved,) = [f for f in dst.network.ips() if _mark(f) == fip.id]
        assert moved.floating_network_id == external.id
        assert moved.floating_ip_address != address
        assert moved.project_id == world["gamma"]

        # The ID map says where it went and at which address, as JSON too.
        code, pairs = _run("--journal", str(journal), "map", fip.id)
        assert code == 0
        assert {(p["kind"], p["destination_id"]) for p in pairs} == {
            ("neutron.floating_ip", moved.id),
            ("neutron.floating_ip.address", moved.floating_ip_address),
        }

        # A re-run keeps it (Neutron cannot move a floating IP), and verify passes.
        code, result = _import(journal, world["archive"], "--floating-ips")
        assert code == 0 and result["counts"]["neutron.floating_ip"]["done"] == 0, result
        verify = ["verify", "--to", "dst", world["archive"], "--networks", "--floating-ips"]
        assert main(verify) == 0
    finally:
        if holder is not None:
            dst.network.delete_port(holder, ignore_missing=True)
        code = _rollback(journal) if journal.exists() else 0
    assert code == 0
    assert _listing(dst, world) == before
    # Rolled back: neither the floating IP nor its address is in the ID map any more.
    with Journal(journal) as j:
        assert j.mappings(ids=[fip.id]) == []
