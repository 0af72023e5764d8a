"""A router's gateway keeps its external (SNAT) address where the destination has it free.

Firewalls outside a cloud often allow a router's SNAT address, so the import asks Neutron
for the source's gateway address; where that address is taken on the destination (or
outside its external network), Neutron picks one and the router is made all the same.
Before this was built, a gateway's address came from Neutron's random pick, and now and
then took the address a floating IP of the same import wanted.

On src, in a project of the test's own: an external network with two routers pinned to
two addresses. On dst: an external network of the same range (the operator's
``--network-map`` pins it: exported too, it is the destination's, never created), one of
the two addresses taken by a port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed.undo import undo_migration
from tests.functional.volumes_support import Sandbox

from stackhop.journal import Journal

pytestmark = pytest.mark.functional

CIDR = "203.0.113.0/24"
KEPT, TAKEN = "203.0.113.21", "203.0.113.22"


@pytest.fixture
def box(testbed: Any) -> Iterator[Sandbox]:
    with Sandbox.create("gwtest") as sandbox:
        yield sandbox


def _external(conn: Any, project_id: str, undo: list[Callable[[], Any]]) -> tuple[Any, Any]:
    """An external network (the tenant type: no physnet held) with one subnet in CIDR."""
    net = conn.network.create_network(name="gw-ext", is_router_external=True,
                                      project_id=project_id)
    undo.append(lambda: conn.network.delete_network(net))
    subnet = conn.network.create_subnet(
        network_id=net.id, cidr=CIDR, ip_version=4, enable_dhcp=False, name="gw-ext-v4",
        project_id=project_id, allocation_pools=[{"start": "203.0.113.10",
                                                  "end": "203.0.113.60"}],
    )
    undo.append(lambda: conn.network.delete_subnet(subnet))
    return net, subnet


def _gateway_address(conn: Any, project_id: str, name: str) -> str:
    (router,) = [r for r in conn.network.routers(project_id=project_id) if r.name == name]
    (fixed,) = router.external_gateway_info["external_fixed_ips"]
    return str(fixed["ip_address"])


def test_gateway_addresses_kept_where_free_and_picked_where_taken(
    box: Sandbox, cli: Callable[..., Any], tmp_path: Path
) -> None:
    src, dst, undo = box.src, box.dst, box.undo
    snet, ssub = _external(src, box.ids["src"], undo)
    for name, address in (("gw-kept", KEPT), ("gw-taken", TAKEN)):
        router = src.network.create_router(
            name=name, project_id=box.ids["src"],
            external_gateway_info={"network_id": snet.id, "external_fixed_ips": [
                {"subnet_id": ssub.id, "ip_address": address}]},
        )
        undo.append(lambda r=router: src.network.delete_router(r))
    dnet, dsub = _external(dst, box.ids["dst"], undo)
    squatter = dst.network.create_port(network_id=dnet.id, project_id=box.ids["dst"],
                                       fixed_ips=[{"subnet_id": dsub.id, "ip_address": TAKEN}])
    undo.append(lambda: dst.network.delete_port(squatter))

    archive = tmp_path / "routers.tar.zst"
    assert cli("export", "--from", "src", "-o", str(archive), "--networks", "--routers",
               "--project", box.name).code == 0
    network_map = tmp_path / "network-map.yaml"
    network_map.write_text(f"networks: {{{snet.id}: {dnet.id}}}\n")
    journal = str(tmp_path / "journal.sqlite")
    undo.append(lambda: undo_migration(Path(journal)))  # also when an assertion fails
    done = cli("--journal", journal, "import", "--to", "dst", str(archive),
               "--network-map", str(network_map), "-f", "json")
    assert done.code == 0, done.err

    assert _gateway_address(dst, box.ids["dst"], "gw-kept") == KEPT
    picked = _gateway_address(dst, box.ids["dst"], "gw-taken")
    assert picked != TAKEN and picked.startswith("203.0.113.")
    # The pinned network is the destination's, with its subnets: nothing made beside it.
    assert [n.id for n in dst.network.networks(project_id=box.ids["dst"])] == [dnet.id]
    assert [s.id for s in dst.network.subnets(project_id=box.ids["dst"])] == [dsub.id]
    # Exactly the two routers: the refused try left no router of its own behind.
    assert sorted(r.name for r in dst.network.routers(project_id=box.ids["dst"])) == [
        "gw-kept", "gw-taken"]

    # The address alone differing is no difference: a re-run changes nothing.
    again = cli("--journal", journal, "import", "--to", "dst", str(archive),
                "--network-map", str(network_map), "-f", "json")
    assert again.code == 0, again.err
    assert all(c.get("done", 0) == 0 for c in again.json()["counts"].values())

    with Journal(journal) as jr:
        runs = [arg for r in jr.runs() for arg in ("--run", r.id)]
    undone = cli("--journal", journal, "rollback", "--to", "dst", *runs, "-f", "json")
    assert undone.code == 0, undone.err
    assert list(dst.network.routers(project_id=box.ids["dst"])) == []
