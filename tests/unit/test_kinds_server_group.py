"""``nova.server_group``'s records and matching (the cloud calls are tested on the testbed)."""

from __future__ import annotations

from typing import Any

from stackhop.kinds import get
from stackhop.kinds.server_group import pair, server_group_record

PROJECT = {"id": "p1", "name": "alpha", "domain_name": "Default"}
USER = {"id": "u1", "name": "alice", "domain_name": "Default"}


def _group(gid: str, name: str = "web", policy: str = "anti-affinity", **extra: Any) -> dict:
    return {"id": gid, "name": name, "policy": policy, "rules": {}, "project_id": "p1",
            "user_id": "u1", "members": [], **extra}


def test_record_is_the_same_from_either_microversion_and_the_database() -> None:
    today = server_group_record(
        _group("g1", rules={"max_server_per_host": 2}), PROJECT, USER
    )
    legacy = server_group_record(
        {"id": "g1", "name": "web", "policies": ["anti-affinity"], "project_id": "p1",
         "user_id": "u1"}, PROJECT, USER,
    )
    from_db = server_group_record(
        {**legacy, "policies": ["anti-affinity"], "rules": '{"max_server_per_host": "2"}'},
        PROJECT, USER,
    )
    assert today["policy"] == legacy["policy"] == "anti-affinity"
    assert today["rules"] == from_db["rules"] == {"max_server_per_host": 2}
    assert legacy["rules"] == {}
    kind = get("nova.server_group")
    assert kind.identity(today) == "Default/alpha/web/g1"
    assert today["user_name"] == "alice" and "user_id" in kind.source_only_fields


def test_groups_pair_by_name_in_the_project_preferring_the_same_policy() -> None:
    kind = get("nova.server_group")
    records = [
        server_group_record(_group("s2", policy="affinity"), PROJECT, USER),
        server_group_record(_group("s1"), PROJECT, USER),
        server_group_record(_group("s3", name="db"), PROJECT, USER),
    ]
    on_dst = [_group("d1", policy="affinity"), _group("d2"), _group("d9", name="web")]
    found = pair(records, on_dst)
    assert [f and f["id"] for f in found] == ["d1", "d2", None]
    # One destination group is never the counterpart of two source groups.
    twins = [server_group_record(_group(s), PROJECT, USER) for s in ("s1", "s2")]
    assert [f and f["id"] for f in pair(twins, [_group("d2")])] == ["d2", None]
    # Another project's group of that name is no counterpart.
    assert pair(records[1:2], [{**_group("d5"), "project_id": "p2"}]) == [None]
    # A counterpart with another policy is a difference Nova cannot change: a conflict.
    other = pair(records[1:2], [_group("d7", policy="soft-anti-affinity")])[0]
    assert other is not None
    differences = kind.compare(records[1], other)
    assert [d.field for d in differences] == ["policy"]
    assert kind.on_difference(differences, overwrite=True) == "conflict"
