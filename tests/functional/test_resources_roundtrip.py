"""Keypairs, quotas and security groups from src to dst: export, plan, import, verify, rollback.

One scenario on the seeded testbed, in order (the tests of this module share
one export and one journal): plan, import, verify, the second import, what
was remapped and what was left alone, and finally rollback, which must leave
dst exactly as it was before, for the other tests that share it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed.openstack import keystone_ldap
from testbed.seed import inventory

from stackhop.clouds import connect
from stackhop.kinds.rest import call, paged

pytestmark = pytest.mark.functional

#: Objects of the seed the import cannot carry: SQL users missing on dst, lina's
#: conflicting key (lina is a person of the directory: Default on src, ldap_users on dst).
EXPECTED_CONFLICTS = {
    "Default/erin/erin-laptop",
    "Default/frank/frank-deploy",
    "Default/lina/lina-laptop",
}
#: The SOC6 -> SOC7 move: src's Default people are dst's ldap_users people.
DOMAIN_MAP = ("--domain-map", f"Default={inventory.LDAP_USERS_DOMAIN}")


def seed_users(conn: Any, cloud: str) -> dict[str, str]:
    """ID by name of the inventory's users on ``cloud``, listed per domain."""
    domains = {d.name: d.id for d in conn.identity.domains()}
    ids: dict[str, str] = {}
    for u in inventory.USERS:
        for found in conn.identity.users(domain_id=domains[u.domain_on(cloud)], name=u.name):
            # src's hybrid Default has SQL alice and the directory's alice: take the SQL one.
            if u.name not in ids or (not u.person and len(found.id) == 32):
                ids[u.name] = found.id
    return ids


def dst_state(conn: Any) -> dict[str, Any]:
    """What the scenario may change on dst: the seed users' keypairs, quotas, groups, rules."""
    projects = {p.name: p.id for p in conn.identity.projects()}
    keypairs = {}
    for name, user_id in sorted(seed_users(conn, "dst").items()):
        body = call(conn.compute, "GET", f"/os-keypairs?user_id={user_id}", microversion="2.10")
        keypairs[name] = sorted(
            (k["keypair"]["name"], k["keypair"]["public_key"]) for k in body["keypairs"]
        )
    quotas = {}
    for name in ("alpha", "beta", "delta"):
        pid = projects[name]
        quotas[name] = (
            call(conn.compute, "GET", f"/os-quota-sets/{pid}", microversion="2.36")["quota_set"],
            call(conn.network, "GET", f"/quotas/{pid}")["quota"],
            call(conn.block_storage, "GET", f"/os-quota-sets/{pid}")["quota_set"],
        )
    seed_projects = {projects[n] for n in ("alpha", "beta", "delta", "gamma")}
    groups = sorted(
        (g["project_id"], g["name"], g["description"], g["id"])
        for g in paged(conn.network, "/security-groups", "security_groups")
        if g["project_id"] in seed_projects
    )
    group_ids = {g[3] for g in groups}
    rules = sorted(
        (
            r["security_group_id"],
            r["direction"],
            r["ethertype"],
            str(r["protocol"]),
            str(r["port_range_min"]),
            str(r["port_range_max"]),
            str(r["remote_ip_prefix"]),
            str(r["remote_group_id"]),
            r["description"],
        )
        for r in paged(conn.network, "/security-group-rules", "security_group_rules")
        if r["security_group_id"] in group_ids
    )
    return {"keypairs": keypairs, "quotas": quotas, "groups": groups, "rules": rules}


@pytest.fixture(scope="module")
def scenario(seeded: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The export of src, a journal, and dst's state before anything was imported."""
    work = tmp_path_factory.mktemp("resources")
    dst = connect("dst")
    state: dict[str, Any] = {
        "archive": work / "src.tar.zst",
        "journal": str(work / "journal.sqlite"),
        "before": dst_state(dst),
        "dst": dst,
        "runs": [],
    }
    yield state
    # Whatever happened, leave dst as it was for the tests that share it.
    if state["runs"] and not state.get("rolled_back"):
        from stackhop.cli.main import main

        main(
            [
                "--journal",
                state["journal"],
                "rollback",
                "--to",
                "dst",
                *[a for r in state["runs"] for a in ("--run", r)],
            ]
        )


def test_export_writes_every_kind(scenario: dict[str, Any], cli: Callable[..., Any]) -> None:
    # Only the seed's projects: other tests add groups of their own to admin's meanwhile.
    projects = [a for p in ("alpha", "beta", "gamma", "delta") for a in ("--project", p)]
    result = cli("export", "--from", "src", "-o", str(scenario["archive"]), *projects)
    assert result.code == 0, result.err
    from stackhop.archive import ArchiveReader

    with ArchiveReader(scenario["archive"]) as reader:
        counts = reader.manifest.record_counts
        keypairs = list(reader.records("nova.keypair"))
        rules = list(reader.records("neutron.security_group_rules"))
    src_keypairs = [k for k in inventory.KEYPAIRS if k.cloud == inventory.SRC]
    assert counts["nova.keypair"] == len(src_keypairs)
    assert {k["name"] for k in keypairs} == {k.name for k in src_keypairs}
    assert all("private" not in key for k in keypairs for key in k)
    assert counts["nova.quota"] == counts["neutron.quota"] == counts["cinder.quota"] == 3
    # The db group's rules point at both "web" groups by index into remote_group_ids.
    db = next(r for r in rules if r["group_name"] == "db" and r["project_name"] == "alpha")
    assert len(db["remote_group_ids"]) == 2
    assert sum(1 for r in db["rules"] if r["remote_group"] is not None) == 3


def test_plan_then_import_do_the_same(scenario: dict[str, Any], cli: Callable[..., Any]) -> None:
    plan = cli("plan", "--to", "dst", str(scenario["archive"]), *DOMAIN_MAP, "-f", "json")
    assert plan.code == 0, plan.err
    planned = {(op["kind"], op["identity"]): op["action"] for op in plan.json()["operations"]}
    assert {i for (_, i), a in planned.items() if a == "conflict"} == EXPECTED_CONFLICTS
    assert "Default/erin" in plan.err and "Default/frank" in plan.err  # unmapped, by name
    assert "lars" not in plan.err  # a person: mapped into ldap_users by name

    result = cli(
        "--journal",
        scenario["journal"],
        "import",
        "--to",
        "dst",
        str(scenario["archive"]),
        *DOMAIN_MAP,
        "-f",
        "json",
    )
    scenario["runs"].append(result.json()["run_id"])
    assert result.code == 10, result.err  # conflicts: the exit code says so
    counts = result.json()["counts"]
    for kind, per in counts.items():
        acting = sum(1 for (k, _), a in planned.items() if k == kind and a in ("create", "update"))
        assert per["done"] == acting, kind
        assert per["failed"] == 0, result.json()["errors"]
        assert per["conflict"] == sum(
            1 for (k, _), a in planned.items() if k == kind and a == "conflict"
        )


def test_verify_matches_except_the_conflicts(
    scenario: dict[str, Any], cli: Callable[..., Any]
) -> None:
    ok = cli("verify", "--to", "dst", str(scenario["archive"]), "--security-groups", "--quotas")
    assert ok.code == 0, ok.out + ok.err
    full = cli("verify", "--to", "dst", str(scenario["archive"]), *DOMAIN_MAP, "-f", "json")
    assert full.code == 13
    assert {m["identity"] for m in full.json()["mismatches"]} == EXPECTED_CONFLICTS


def test_ldap_users_get_their_keypairs_under_their_dst_ids(scenario: dict[str, Any]) -> None:
    dst, src = scenario["dst"], connect("src")
    src_ids, dst_ids = seed_users(src, "src"), seed_users(dst, "dst")
    ldap_users = dst.identity.find_domain(inventory.LDAP_USERS_DOMAIN).id
    for name in ("leo", "lina", "lucy", "lars"):
        src_id, dst_id = src_ids[name], dst_ids[name]
        assert src_id == name  # the raw LDAP ID of the hybrid shape
        assert dst_id == keystone_ldap.public_id(ldap_users, name)  # generated on dst
        body = call(dst.compute, "GET", f"/os-keypairs?user_id={dst_id}", microversion="2.10")
        names = {k["keypair"]["name"] for k in body["keypairs"]}
        expected = {k.name for k in inventory.KEYPAIRS if k.user == name and k.cloud == "src"}
        assert expected <= names


def test_dst_objects_that_existed_are_untouched(scenario: dict[str, Any]) -> None:
    after = dst_state(scenario["dst"])
    assert after["keypairs"]["lina"] != []
    lina_before = dict(scenario["before"]["keypairs"]["lina"])
    assert dict(after["keypairs"]["lina"])["lina-laptop"] == lina_before["lina-laptop"]
    # dst's own "web" group in alpha: same ID, description and rules as before.
    before_groups = {g[3]: g for g in scenario["before"]["groups"]}
    for gid, group in before_groups.items():
        assert group in after["groups"]
        if group[1] != "default":
            old = [r for r in scenario["before"]["rules"] if r[0] == gid]
            assert [r for r in after["rules"] if r[0] == gid] == old
    # Two groups named "web" from src plus dst's own: three, none doubled.
    alpha = next(p.id for p in scenario["dst"].identity.projects(name="alpha"))
    webs = [g for g in after["groups"] if g[0] == alpha and g[1] == "web"]
    assert len(webs) == 3


def test_map_names_the_dst_objects_the_import_made(
    scenario: dict[str, Any], cli: Callable[..., Any]
) -> None:
    shown = cli("--journal", scenario["journal"], "map", "--kind", "neutron.", "--json")
    assert shown.code == 0, shown.err
    groups = [m for m in shown.json() if m["kind"] == "neutron.security_group"]
    assert groups and all(m["scope"] == "dst" for m in groups)
    on_dst = {
        g["id"]: g for g in paged(scenario["dst"].network, "/security-groups", "security_groups")
    }
    for m in groups:  # every mapped group exists on dst; those stackhop made carry the marker
        group = on_dst[m["destination_id"]]
        if group["name"] != "default":  # a project's default group is matched, not created
            assert f"[stackhop-source:{m['source_id']}]" in group["description"]
    assert any(on_dst[m["destination_id"]]["name"] != "default" for m in groups)
    one = groups[0]
    by_dst = cli("--journal", scenario["journal"], "map", one["destination_id"], "--json")
    # The group and its rules (one record per group, keyed by the group) map alike.
    assert {(m["kind"], m["source_id"]) for m in by_dst.json()} <= {
        ("neutron.security_group", one["source_id"]),
        ("neutron.security_group_rules", one["source_id"]),
    }
    assert ("neutron.security_group", one["source_id"]) in {
        (m["kind"], m["source_id"]) for m in by_dst.json()
    }


def test_second_import_is_all_skips(scenario: dict[str, Any], cli: Callable[..., Any]) -> None:
    result = cli(
        "--journal",
        scenario["journal"],
        "import",
        "--to",
        "dst",
        str(scenario["archive"]),
        *DOMAIN_MAP,
        "-f",
        "json",
    )
    scenario["runs"].append(result.json()["run_id"])
    assert result.code == 10
    counts = result.json()["counts"]
    assert sum(c["done"] for c in counts.values()) == 0
    assert sum(c["failed"] for c in counts.values()) == 0


def test_rollback_returns_dst_to_its_state_before(
    scenario: dict[str, Any], cli: Callable[..., Any]
) -> None:
    runs = [a for r in scenario["runs"] for a in ("--run", r)]
    dry = cli(
        "--journal",
        scenario["journal"],
        "rollback",
        "--to",
        "dst",
        *runs,
        "--dry-run",
        "-f",
        "json",
    )
    assert dry.code == 0 and dry.json()["steps"]
    result = cli("--journal", scenario["journal"], "rollback", "--to", "dst", *runs, "-f", "json")
    assert result.code == 0, result.out + result.err
    scenario["rolled_back"] = True
    undo_run = result.json()["run"]["run_id"]
    # The rollback is a run of its own, and the journal keeps what it undid.
    status = cli("--journal", scenario["journal"], "status", "-f", "json").json()
    assert undo_run in [r["id"] for r in status["runs"] if r["command"] == "rollback"]
    undone = {e["run_id"]: e["operations"] for e in status["rolled_back"]}
    assert undone and all(e["rolled_back_by"] == undo_run for e in status["rolled_back"])
    assert sum(k["rolled_back"] for k in status["kinds"]) == sum(undone.values())
    assert len(dry.json()["steps"]) == sum(undone.values())
    again = cli("--journal", scenario["journal"], "rollback", "--to", "dst", *runs, "-f", "json")
    assert again.code == 0 and again.json()["steps"] == []  # nothing left to undo
    after = dst_state(scenario["dst"])
    before = scenario["before"]
    assert after["keypairs"] == before["keypairs"]
    assert after["groups"] == before["groups"]
    assert after["rules"] == before["rules"]
    for name, (nova, neutron, cinder) in before["quotas"].items():
        assert after["quotas"][name] == (nova, neutron, cinder), name


def test_bad_inputs_fail_with_one_line(
    scenario: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered.tar.zst"
    data = bytearray(scenario["archive"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    result = cli("plan", "--to", "dst", str(tampered))
    assert result.code in (7, 8) and result.err.count("\n") == 1
    wrong = cli("plan", "--to", "nowhere", str(scenario["archive"]))
    assert wrong.code == 3 and "nowhere" in wrong.err
    export = tmp_path / "kp.tar.zst"
    assert cli("export", "--from", "src", "-o", str(export), "--keypairs").code == 0
    missing = cli("plan", "--to", "dst", str(export), "--security-groups")
    assert missing.code == 2 and "neutron.security_group" in missing.err
