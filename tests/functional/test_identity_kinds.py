"""``keystone.domain``/``keystone.project``/``keystone.role`` from src to dst (``--identity``).

A test-only domain with a parent and a (disabled, Unicode-named) child project, and
a custom role, are made on src and removed from both clouds at the end; dst is
checked by listing it directly with openstacksdk. Works before and after the
LDAP switch: only SQL objects made here are moved.
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

pytestmark = pytest.mark.functional

KINDS = ("keystone.domain", "keystone.project", "keystone.role")


def _state(conn: Any, tag: str) -> dict[str, Any]:
    """What dst holds of this test's objects, listed directly."""
    domain = next((d for d in conn.identity.domains() if d.name == f"shid-{tag}"), None)
    projects = {}
    if domain is not None:
        for p in conn.identity.projects(domain_id=domain.id):
            projects[p.name] = (p.id, p.parent_id, p.is_enabled, sorted(p.tags or []),
                                p.description)
    roles = sorted(r.id for r in conn.identity.roles() if r.name == f"shid-role-{tag}")
    return {"domain": None if domain is None else domain.id, "projects": projects,
            "roles": roles}


def _remove(conn: Any, tag: str) -> None:
    for role in conn.identity.roles():
        if role.name == f"shid-role-{tag}":
            conn.identity.delete_role(role, ignore_missing=True)
    for domain in conn.identity.domains():
        if domain.name == f"shid-{tag}":
            projects = list(conn.identity.projects(domain_id=domain.id))
            for p in sorted(projects, key=lambda p: p.parent_id == domain.id):
                conn.identity.delete_project(p, ignore_missing=True)
            conn.identity.update_domain(domain, is_enabled=False)
            conn.identity.delete_domain(domain, ignore_missing=True)


@pytest.fixture(scope="module")
def world(seeded: Any) -> Iterator[dict[str, Any]]:
    src, dst = connect("src"), connect("dst")
    tag = uuid.uuid4().hex[:6]
    try:
        domain = src.identity.create_domain(name=f"shid-{tag}", description="tëst domain")
        parent = src.identity.create_project(name="parent", domain_id=domain.id,
                                             description="the parent", tags=["a", "b"])
        src.identity.create_project(name="kind ü", domain_id=domain.id, parent_id=parent.id,
                                    description="child", is_enabled=False)
        src.identity.create_role(name=f"shid-role-{tag}", description="custom")
        yield {"src": src, "dst": dst, "tag": tag, "parent": parent.id}
    finally:
        _remove(src, tag)
        _remove(dst, tag)


def test_identity_moves_verifies_reruns_and_rolls_back(
    world: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    dst, tag = world["dst"], world["tag"]
    archive, journal = tmp_path / "id.tar.zst", str(tmp_path / "journal.sqlite")
    select = ("--identity", "--project", world["parent"])
    assert cli("export", "--from", "src", "-o", str(archive), *select).code == 0
    with ArchiveReader(archive) as reader:
        exported = {k: sorted(reader.records(k), key=lambda r: r["id"]) for k in KINDS}
    assert {p["name"] for p in exported["keystone.project"]} == {"parent", "kind ü"}
    assert [d["name"] for d in exported["keystone.domain"]] == [f"shid-{tag}"]
    assert f"shid-role-{tag}" in {r["name"] for r in exported["keystone.role"]}
    built_in = {"admin", "member", "reader", "manager", "service"}
    assert not built_in & {r["name"] for r in exported["keystone.role"]}

    # The database route reads the same records.
    via_db = tmp_path / "db.tar.zst"
    assert cli("export", "--from", "src", "-o", str(via_db), *select, "--via", "db",
               "--db-config-dir", str(layout.SRC.etc)).code == 0
    with ArchiveReader(via_db) as reader:
        assert {k: sorted(reader.records(k), key=lambda r: r["id"]) for k in KINDS} == exported

    before = _state(dst, tag)
    assert before == {"domain": None, "projects": {}, "roles": []}
    first = cli("--journal", journal, "import", "--to", "dst", str(archive), "-f", "json")
    assert first.code == 0, first.err
    after = _state(dst, tag)
    assert after["domain"] is not None and len(after["roles"]) == 1
    parent, child = after["projects"]["parent"], after["projects"]["kind ü"]
    assert parent[1] == after["domain"] and parent[2] is True and parent[3] == ["a", "b"]
    assert child[1] == parent[0] and child[2] is False  # hierarchy and enabled kept
    assert "stackhop-source:" in child[4] and child[4].startswith("child")

    assert cli("verify", "--to", "dst", str(archive)).code == 0
    # Without the journal a re-run adopts what is there and creates nothing.
    again = cli("--journal", str(tmp_path / "other.sqlite"), "import", "--to", "dst",
                str(archive), "-f", "json")
    assert again.code == 0, again.err
    assert _state(dst, tag) == after

    with Journal(journal) as j:
        runs = [a for r in j.runs() for a in ("--run", r.id)]
    undo = cli("--journal", journal, "rollback", "--to", "dst", *runs, "-f", "json")
    assert undo.code == 0, undo.err
    assert _state(dst, tag) == before


def test_keep_domain_ids_creates_the_domain_with_its_source_id(
    world: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    src, dst, tag = world["src"], world["dst"], world["tag"]
    source_id = next(d.id for d in src.identity.domains() if d.name == f"shid-{tag}")
    archive, journal = tmp_path / "id.tar.zst", str(tmp_path / "journal.sqlite")
    assert cli("export", "--from", "src", "-o", str(archive), "--identity", "--project",
               world["parent"]).code == 0
    plan = cli("plan", "--to", "dst", str(archive), "--keep-domain-ids")
    assert plan.code == 0 and f"with its source ID {source_id}" in plan.out, plan.out
    run = cli("--journal", journal, "import", "--to", "dst", str(archive), "--keep-domain-ids")
    assert run.code == 0, run.err
    assert _state(dst, tag)["domain"] == source_id
    with Journal(journal) as j:
        runs = [a for r in j.runs() for a in ("--run", r.id)]
    assert cli("--journal", journal, "rollback", "--to", "dst", *runs).code == 0
    assert _state(dst, tag) == {"domain": None, "projects": {}, "roles": []}
