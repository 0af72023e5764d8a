"""Security group records: rule content, remote-group indexes, missing and extra rules."""

from __future__ import annotations

from typing import Any

from stackhop.kinds import get
from stackhop.kinds.base import MARKER_PREFIX
from stackhop.kinds.security_group import group_record, rules_record
from stackhop.resolve import Resolver

PROJECT = {"id": "p1", "name": "alpha", "domain_name": "Default"}


def rule(rid: str, port: int | None, remote: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "security_group_id": "g1",
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": "TCP" if port else None,
        "port_range_min": port,
        "port_range_max": port,
        "remote_ip_prefix": None if remote else "10.0.0.0/8",
        "remote_group_id": remote,
        "description": extra.get("description", ""),
    }


GROUP = {"id": "g1", "project_id": "p1", "name": "db", "description": "Databases"}


def test_rules_point_at_remote_groups_by_index() -> None:
    record = rules_record(
        GROUP, [rule("r1", 22, "web"), rule("r2", 80), rule("r3", 5432, "app")], PROJECT
    )
    assert record["remote_group_ids"] == ["app", "web"]
    by_id = {r["id"]: r for r in record["rules"]}
    assert by_id["r1"]["remote_group"] == 1 and by_id["r3"]["remote_group"] == 0
    assert by_id["r2"]["remote_group"] is None
    assert by_id["r1"]["protocol"] == "tcp"  # normalised case


def test_resolver_maps_remote_groups_and_rules_follow() -> None:
    kind = get("neutron.security_group_rules")
    record = rules_record(GROUP, [rule("r1", 22, "web")], PROJECT)
    resolver = Resolver(
        "dst",
        maps={
            "neutron.security_group": {"g1": "G1", "web": "WEB"},
            "identity.project": {"p1": "P1"},
        },
        keep_ids=frozenset(),
    )
    resolved = resolver.resolve(kind, record)
    assert resolved["security_group_id"] == "G1" and resolved["remote_group_ids"] == ["WEB"]
    state = kind._state(
        {**resolved, "security_group_id_source": "g1"}, {"id": "G1", "description": ""}, []
    )
    assert [r["id"] for r in state["missing"]] == ["r1"]
    dst_rule = {**rule("x", 22, "WEB"), "protocol": "tcp"}
    state = kind._state(
        {**resolved, "security_group_id_source": "g1"}, {"id": "G1", "description": ""}, [dst_rule]
    )
    assert state["missing"] == [] and kind.compare(resolved, state) == []


def test_extra_rules_count_only_on_groups_stackhop_made() -> None:
    kind = get("neutron.security_group_rules")
    record = {**rules_record(GROUP, [rule("r1", 22)], PROJECT), "security_group_id_source": "g1"}
    extra = rule("e1", 8443)
    foreign = kind._state(record, {"id": "G1", "description": "theirs"}, [rule("d", 22), extra])
    assert foreign["extra"] == [] and foreign["missing"] == []
    ours = kind._state(
        record, {"id": "G1", "description": f"x [{MARKER_PREFIX}g1]"}, [rule("d", 22), extra]
    )
    assert [r["id"] for r in ours["extra"]] == ["e1"]
    assert kind.compare(record, ours)


def test_group_description_is_compared_without_the_marker() -> None:
    kind = get("neutron.security_group")
    record = group_record(GROUP, PROJECT)
    stamped = {**record, "description": kind.stamp(record["description"], record)}
    assert MARKER_PREFIX + "g1" in stamped["description"]
    assert kind.compare(record, stamped) == []
    assert kind.identity(record) == "Default/alpha/db/g1"
    assert [d.field for d in kind.compare(record, {**stamped, "name": "other"})] == ["name"]
