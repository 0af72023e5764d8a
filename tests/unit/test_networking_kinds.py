"""The networking kinds without a cloud: records, the resolver's network map and optional
references (the real moves are in tests/functional/test_networking.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop import kinds as registry
from stackhop.cli.main import build_parser
from stackhop.cli.options import chosen_options
from stackhop.errors import ConfigError, UnmappedReferenceError
from stackhop.kinds.network import KEEP_IDS_HELP
from stackhop.kinds.port import fip_record
from stackhop.kinds.router import interfaces_record, router_record
from stackhop.plan import plan
from stackhop.resolve import NETWORK, PHYSNET, PROJECT, Resolver, load_network_map

ALPHA = {"id": "p1", "name": "alpha", "domain_name": "Default"}
ROUTER = {
    "id": "r1",
    "name": "edge",
    "project_id": "p1",
    "routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.9"}],
    "external_gateway_info": {
        "network_id": "ext",
        "enable_snat": True,
        "external_fixed_ips": [{"subnet_id": "ext-sub", "ip_address": "172.24.4.9"}],
    },
}


def test_network_map_file(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text("physnets: {physnet1: datacentre}\nnetworks: {ext: dst-ext}\n")
    assert load_network_map(path) == {
        PHYSNET: {"physnet1": "datacentre"},
        NETWORK: {"ext": "dst-ext"},
    }
    assert load_network_map(None) == {}
    path.write_text("routers: {a: b}\n")
    with pytest.raises(ConfigError, match="only 'physnets"):
        load_network_map(path)


def test_router_needs_its_external_network_mapped() -> None:
    kind = registry.get("neutron.router")
    record = router_record(ROUTER, ALPHA)
    assert record["external_subnet_ids"] == ["ext-sub"]
    resolver = Resolver("dst", keep_ids=frozenset({PROJECT}))
    with pytest.raises(UnmappedReferenceError, match="--network-map"):
        resolver.resolve(kind, record)
    # Mapped: the gateway moves; the external subnets nothing maps are only dropped.
    mapped = Resolver("dst", maps={NETWORK: {"ext": "dst-ext"}}, keep_ids=frozenset({PROJECT}))
    resolved = mapped.resolve(kind, record)
    assert resolved["external_network_id"] == "dst-ext" and resolved["external_subnet_ids"] == []


def test_physnets_keep_their_name_unless_mapped() -> None:
    kind = registry.get("neutron.network")
    record = {"id": "n1", "project_id": "p1", "physical_networks": ["physnet1", "physnet2"]}
    resolver = Resolver(
        "dst", maps={PHYSNET: {"physnet2": "tenant"}}, keep_ids=frozenset({PROJECT})
    )
    assert resolver.resolve(kind, record)["physical_networks"] == ["physnet1", "tenant"]


def test_interfaces_and_floating_ip_records() -> None:
    ports = [
        {
            "fixed_ips": [
                {"subnet_id": "s2", "ip_address": "10.0.1.1"},
                {"subnet_id": "s1", "ip_address": "10.0.0.1"},
            ]
        }
    ]
    record = interfaces_record(ROUTER, ports, ALPHA)
    assert record["subnet_ids"] == ["s1", "s2"]
    assert record["interfaces"] == [
        {"subnet": 0, "ip_address": "10.0.0.1"},
        {"subnet": 1, "ip_address": "10.0.1.1"},
    ]
    fip = fip_record(
        {
            "id": "f1",
            "floating_ip_address": "172.24.4.10",
            "project_id": "p1",
            "floating_network_id": "ext",
            "port_id": "gone",
            "router_id": "r1",
        },
        ALPHA,
    )
    # A floating IP whose port and router did not move is created unassociated, not refused.
    resolved = Resolver(
        "dst", maps={NETWORK: {"ext": "dst-ext"}}, keep_ids=frozenset({PROJECT})
    ).resolve(registry.get("neutron.floating_ip"), fip)
    assert resolved["port_id"] is None and resolved["floating_network_id"] == "dst-ext"


def test_selectors_and_order() -> None:
    selectors = registry.selectors()
    assert selectors["networks"][1] == ("neutron.network", "neutron.subnet_pool", "neutron.subnet")
    assert selectors["routers"][1] == ("neutron.router", "neutron.router_interfaces")
    order = [k.name for k in registry.transfer_kinds()]
    assert order.index("neutron.subnet") < order.index("neutron.router")
    assert order.index("neutron.subnet_pool") < order.index("neutron.subnet")
    assert order.index("neutron.router_interfaces") < order.index("neutron.floating_ip")
    assert order.index("neutron.port") < order.index("neutron.floating_ip")


#: A network with a VLAN segment on physnet1 and a VXLAN one, resolved (physnet1 mapped to
#: datacentre), as ``Network.create`` receives it.
SEGMENTED = {
    "id": "n1",
    "name": "multi",
    "description": "",
    "project_id": "p1",
    "physical_networks": ["datacentre"],
    "segments": [
        {"network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 120},
        {"network_type": "vxlan", "physical_network": None, "segmentation_id": 77},
    ],
}


def test_the_destination_allocates_segmentation_ids_by_default() -> None:
    network = registry.get("neutron.network")
    wired = network.create_body(SEGMENTED)["network"]
    # The VLAN segment goes to the mapped physnet without its ID; the overlay one is left
    # to the destination's tenant network types.
    assert (wired["provider:network_type"], wired["provider:physical_network"]) == (
        "vlan", "datacentre")
    assert "provider:segmentation_id" not in wired and "segments" not in wired
    assert network.create_detail(SEGMENTED) == (
        "segmentation IDs allocated by the destination (source: vlan 120 on physnet1, vxlan 77)"
    )


def test_keep_segmentation_ids_sends_every_segments_id() -> None:
    network = registry.get("neutron.network").configured({"keep_segmentation_ids": True})
    assert network is not registry.get("neutron.network")  # the registry's stays as it was
    body = network.create_body(SEGMENTED)["network"]
    assert body["segments"] == [
        {"provider:network_type": "vlan", "provider:physical_network": "datacentre",
         "provider:segmentation_id": 120},
        {"provider:network_type": "vxlan", "provider:segmentation_id": 77},
    ]
    flat = {**SEGMENTED, "segments": [
        {"network_type": "flat", "physical_network": "physnet1", "segmentation_id": None}]}
    assert "provider:segmentation_id" not in network.create_body(flat)["network"]
    assert network.create_detail(SEGMENTED) == (
        "segmentation IDs kept: vlan 120 on physnet1, vxlan 77"
    )
    assert network.create_detail(flat) == ""
    off = network.configured({"keep_segmentation_ids": False})
    assert "provider:segmentation_id" not in str(off.create_body(SEGMENTED))


def test_keep_segmentation_ids_is_a_flag_of_plan_import_and_migrate() -> None:
    assert registry.import_options()["keep-segmentation-ids"] == (
        KEEP_IDS_HELP, ("neutron.network",)
    )
    parser = build_parser()
    for argv in (["plan", "--to", "dst", "a"], ["import", "--to", "dst", "a"],
                 ["migrate", "--from", "src", "--to", "dst"],
                 ["project", "migrate", "--from", "src", "--to", "dst", "--project", "p"]):
        args = parser.parse_args([*argv, "--keep-segmentation-ids"])
        assert chosen_options(args)["keep_segmentation_ids"], argv
    args = parser.parse_args(["import", "--to", "dst", "a"])
    assert not chosen_options(args)["keep_segmentation_ids"]


def test_plan_shows_the_choice() -> None:
    record = {**SEGMENTED, "physical_networks": ["physnet1"], "project_name": "alpha",
              "project_domain": "Default"}
    resolver = Resolver("dst", keep_ids=frozenset({PROJECT}))
    for keep, shown in ((True, "kept"), (False, "allocated by the destination")):
        kind = registry.get("neutron.network").configured({"keep_segmentation_ids": keep})
        (operation,) = plan({kind: [record]}, lambda kind, record: None, resolver)
        assert operation.action == "create" and shown in operation.as_dict()["detail"]


def test_a_floating_ip_refers_to_the_subnet_of_its_address() -> None:
    subnets = [
        {"id": "v4", "network_id": "ext", "ip_version": 4, "cidr": "172.24.4.0/24"},
        {"id": "v4b", "network_id": "ext", "ip_version": 4, "cidr": "172.24.5.0/24"},
        {"id": "v6", "network_id": "ext", "ip_version": 6, "cidr": "2001:db8::/64"},
        {"id": "other", "network_id": "net", "ip_version": 4, "cidr": "172.24.4.0/24"},
    ]
    fip = {"id": "f1", "floating_ip_address": "172.24.4.10", "project_id": "p1",
           "floating_network_id": "ext"}
    record = fip_record(fip, ALPHA, subnets)
    assert record["floating_subnet_ids"] == ["v4"]
    assert fip_record(fip, ALPHA)["floating_subnet_ids"] == []  # networks not exported
    kind = registry.get("neutron.floating_ip")
    # Waits for that subnet's create (a reference), and a subnet nothing maps is dropped.
    assert "neutron.subnet" in kind.dependencies()
    resolved = Resolver("dst", maps={NETWORK: {"ext": "dst-ext"}},
                        keep_ids=frozenset({PROJECT})).resolve(kind, record)
    assert resolved["floating_subnet_ids"] == []


def test_a_network_the_map_pins_is_the_destinations_with_its_subnets() -> None:
    """``networks: {ext: dst-ext}`` with the external network exported too: it and its
    subnets are skipped (the destination's), never created; the router's gateway and the
    project's own network are as without the map."""
    facts = {"project_name": "alpha", "project_domain": "Default", "description": ""}
    ext = {**facts, "id": "ext", "name": "public", "project_id": "p1",
           "physical_networks": [], "segments": []}
    own = {**facts, "id": "n1", "name": "alpha-net", "project_id": "p1",
           "physical_networks": [], "segments": []}
    subnet = {**facts, "project_id": "p1", "ip_version": 4, "subnetpool_id": None}
    ext_sub = {**subnet, "id": "ext-sub", "name": "public-v4", "network_id": "ext",
               "cidr": "172.24.4.0/24"}
    own_sub = {**subnet, "id": "s1", "name": "alpha-v4", "network_id": "n1",
               "cidr": "10.0.0.0/24"}
    router = router_record(ROUTER, ALPHA)
    resolver = Resolver("dst", maps={NETWORK: {"ext": "dst-ext"}},
                        keep_ids=frozenset({PROJECT}))
    kinds = {name: registry.get(name) for name in
             ("neutron.network", "neutron.subnet", "neutron.router")}
    planned = plan({kinds["neutron.network"]: [ext, own],
                    kinds["neutron.subnet"]: [ext_sub, own_sub],
                    kinds["neutron.router"]: [router]},
                   lambda kind, record: None, resolver)
    by_id = {op.source_id: op for op in planned}
    assert (by_id["ext"].action, by_id["ext"].destination_id) == ("skip", "dst-ext")
    assert "pinned to dst-ext" in by_id["ext"].describe()
    assert (by_id["ext-sub"].action, by_id["ext-sub"].destination_id) == ("skip", None)
    assert by_id["n1"].action == by_id["s1"].action == by_id["r1"].action == "create"
    assert by_id["r1"].resolved["external_network_id"] == "dst-ext"
    assert by_id["r1"].resolved["external_subnet_ids"] == []  # the pinned network's own
    assert by_id["s1"].depends_on and not by_id["r1"].depends_on
