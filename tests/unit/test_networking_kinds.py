"""The networking kinds without a cloud: records, the resolver's network map and optional
references (the real moves are in tests/functional/test_networking.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop import kinds as registry
from stackhop.errors import ConfigError, UnmappedReferenceError
from stackhop.kinds.port import fip_record
from stackhop.kinds.router import interfaces_record, router_record
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
    assert selectors["networks"][1] == ("neutron.network", "neutron.subnet")
    assert selectors["routers"][1] == ("neutron.router", "neutron.router_interfaces")
    order = [k.name for k in registry.transfer_kinds()]
    assert order.index("neutron.subnet") < order.index("neutron.router")
    assert order.index("neutron.router_interfaces") < order.index("neutron.floating_ip")
    assert order.index("neutron.port") < order.index("neutron.floating_ip")
