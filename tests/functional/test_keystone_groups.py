"""``keystone.group``, ``keystone.group_member`` and ``keystone.role_assignment`` src -> dst.

On src, in Default: a test-only project, two SQL users (one Unicode-named), a custom
role and a group holding both users; assignments of every shape the kind moves: a
user's built-in role on the project, the group's custom role on the project, and the
group's inherited ``reader`` on the Default domain. All of it is removed from both
clouds at the end; dst is checked by listing it directly with openstacksdk.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import layout

from stackhop.archive import ArchiveReader
from stackhop.clouds import connect
from stackhop.journal import Journal
from stackhop.kinds.rest import call

pytestmark = pytest.mark.functional

KINDS = ("keystone.group", "keystone.group_member", "keystone.role_assignment")


def _users(conn: Any, tag: str) -> dict[str, Any]:
    return {u.name: u for u in conn.identity.users(domain_id="default")
            if u.name.startswith(f"shg-{tag}-")}


def _state(conn: Any, tag: str) -> dict[str, Any]:
    """This test's objects on a cloud, by name, with their members and direct assignments
    (names, not IDs: the same on both clouds when the move is right)."""
    users = _users(conn, tag)
    names = {u.id: u.name for u in users.values()}
    groups = {g.name: g for g in conn.identity.groups(domain_id="default")
              if g.name.startswith(f"shg-{tag}")}
    project = conn.identity.find_project(f"shg-{tag}", domain_id="default")
    roles = {r.id: r.name for r in conn.identity.roles()}
    assignments = set()
    if project is not None or groups:
        for item in call(conn.identity, "GET", "/role_assignments")["role_assignments"]:
            actor = item.get("user") or item.get("group") or {}
            who = names.get(actor.get("id")) or next(
                (n for n, g in groups.items() if g.id == actor.get("id")), None)
            if who is None:
                continue
            scope = item["scope"]
            where = ("project" if project is not None and scope.get("project", {}).get("id")
                     == project.id else scope.get("domain", {}).get("id"))
            assignments.add((who, where, roles.get(item["role"]["id"]),
                             scope.get("OS-INHERIT:inherited_to") == "projects"))
    members = {
        name: sorted(names.get(u.id, u.name) for u in conn.identity.group_users(group))
        for name, group in groups.items()
    }
    return {"users": sorted(users), "groups": {n: g.description for n, g in groups.items()},
            "members": members, "assignments": assignments,
            "project": None if project is None else project.id}


def _remove(conn: Any, tag: str) -> None:
    for group in conn.identity.groups(domain_id="default"):
        if group.name.startswith(f"shg-{tag}"):
            conn.identity.delete_group(group, ignore_missing=True)
    for user in _users(conn, tag).values():
        conn.identity.delete_user(user, ignore_missing=True)
    project = conn.identity.find_project(f"shg-{tag}", domain_id="default")
    if project is not None:
        conn.identity.delete_project(project, ignore_missing=True)
    for role in conn.identity.roles():
        if role.name == f"shg-role-{tag}":
            conn.identity.delete_role(role, ignore_missing=True)


@pytest.fixture(scope="module")
def world(seeded: Any) -> Iterator[dict[str, Any]]:
    src, dst = connect("src"), connect("dst")
    tag = uuid.uuid4().hex[:6]
    try:
        project = src.identity.create_project(name=f"shg-{tag}", domain_id="default")
        member, reader = src.identity.find_role("member"), src.identity.find_role("reader")
        custom = src.identity.create_role(name=f"shg-role-{tag}")
        first = src.identity.create_user(name=f"shg-{tag}-a", domain_id="default")
        second = src.identity.create_user(name=f"shg-{tag}-ü", domain_id="default")
        group = src.identity.create_group(name=f"shg-{tag}-team", domain_id="default",
                                          description="the tëam")
        for user in (first, second):
            src.identity.add_user_to_group(user, group)
            src.identity.assign_project_role_to_user(project, user, member)
        src.identity.assign_project_role_to_group(project, group, custom)
        call(src.identity, "PUT", f"/OS-INHERIT/domains/default/groups/{group.id}/roles/"
             f"{reader.id}/inherited_to_projects")
        yield {"src": src, "dst": dst, "tag": tag, "project": project.id}
    finally:
        _remove(src, tag)
        _remove(dst, tag)


def test_groups_members_and_assignments_move_verify_rerun_and_roll_back(
    world: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    src, dst, tag = world["src"], world["dst"], world["tag"]
    before = _state(dst, tag)
    assert before["groups"] == {} and before["users"] == []
    select = ("--identity", "--project", world["project"])
    archive, via_db = tmp_path / "api.tar.zst", tmp_path / "db.tar.zst"
    assert cli("export", "--from", "src", "-o", str(archive), *select).code == 0
    assert cli("export", "--from", "src", "-o", str(via_db), *select, "--via", "db",
               "--db-config-dir", str(layout.SRC.etc)).code == 0
    with ArchiveReader(archive) as api, ArchiveReader(via_db) as db:
        exported = {k: list(api.records(k)) for k in KINDS}
        assert exported == {k: list(db.records(k)) for k in KINDS}  # the two routes agree
    assert [g["name"] for g in exported["keystone.group"]] == [f"shg-{tag}-team"]
    assert len(exported["keystone.group_member"]) == 2
    shapes = {(a["actor"].split(":")[0], a["target"].split(":")[0], a["role_name"],
               a["inherited"]) for a in exported["keystone.role_assignment"]}
    assert shapes == {("user", "project", "member", False),
                      ("group", "project", f"shg-role-{tag}", False),
                      ("group", "domain", "reader", True)}

    journal = str(tmp_path / "journal.sqlite")
    run = cli("--journal", journal, "import", "--to", "dst", str(archive), "-f", "json")
    assert run.code == 0, run.err + run.out
    moved, source = _state(dst, tag), _state(src, tag)
    assert moved["members"] == source["members"]
    assert {(w, "project" if p == moved["project"] else p, r, i)
            for w, p, r, i in moved["assignments"]} == {
        (w, "project" if p == source["project"] else p, r, i)
        for w, p, r, i in source["assignments"]}
    assert moved["groups"][f"shg-{tag}-team"].startswith("the tëam [stackhop-source:")
    assert cli("verify", "--to", "dst", str(archive)).code == 0

    again = cli("--journal", str(tmp_path / "other.sqlite"), "import", "--to", "dst",
                str(archive), "-f", "json")
    assert again.code == 0, again.err
    assert _state(dst, tag) == moved  # the journal lost: nothing new, nothing doubled

    with Journal(journal) as j:
        runs = [a for r in j.runs() for a in ("--run", r.id)]
    undo = cli("--journal", journal, "rollback", "--to", "dst", *runs, "-f", "json")
    assert undo.code == 0, undo.err
    after = _state(dst, tag)
    assert after["groups"] == {} and after["users"] == [] and after["project"] is None
    assert not any(w.startswith(f"shg-{tag}") for w, *_ in after["assignments"])
