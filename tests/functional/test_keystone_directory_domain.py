"""A source SQL domain whose name is a directory-backed (LDAP) domain on dst.

dst's ``ldap_users`` domain reads its users from the testbed's LDAP server. On src a
test-only SQL domain of that name holds a project and a user with a role there; moving
them with ``--identity`` adopts dst's domain by name, creates the project, and must stop
the user with a one-line conflict that says the domain is a directory (Keystone itself
answers a bare 403 "not authorized"), creating no user. Everything made here is removed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stackhop.clouds import connect
from stackhop.journal import Journal

pytestmark = pytest.mark.functional

DIRECTORY_DOMAIN = "ldap_users"


@pytest.fixture
def world(seeded: Any) -> Iterator[dict[str, Any]]:
    src, dst = connect("src"), connect("dst")
    if not any(d.name == DIRECTORY_DOMAIN for d in dst.identity.domains()):
        pytest.fail(f"dst has no {DIRECTORY_DOMAIN} domain: the testbed's LDAP domain is missing")
    assert not any(d.name == DIRECTORY_DOMAIN for d in src.identity.domains())
    tag = uuid.uuid4().hex[:6]
    # The same description as dst's, so the domain is adopted, not a conflict.
    same = dst.identity.find_domain(DIRECTORY_DOMAIN).description
    domain = src.identity.create_domain(name=DIRECTORY_DOMAIN, description=same)
    try:
        project = src.identity.create_project(name=f"shdir-{tag}", domain_id=domain.id)
        user = src.identity.create_user(name=f"shdir-{tag}-u", domain_id=domain.id)
        src.identity.assign_project_role_to_user(project, user, src.identity.find_role("member"))
        yield {"src": src, "dst": dst, "tag": tag, "project": project.id}
    finally:
        for project in src.identity.projects(domain_id=domain.id):
            src.identity.delete_project(project, ignore_missing=True)
        for user in src.identity.users(domain_id=domain.id):
            src.identity.delete_user(user, ignore_missing=True)
        src.identity.update_domain(domain, is_enabled=False)
        src.identity.delete_domain(domain, ignore_missing=True)
        target = dst.identity.find_domain(DIRECTORY_DOMAIN)
        for project in dst.identity.projects(domain_id=target.id):
            if project.name == f"shdir-{tag}":
                dst.identity.delete_project(project, ignore_missing=True)


def test_a_user_for_a_directory_domain_is_a_clear_conflict_and_nothing_else_breaks(
    world: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    dst, tag = world["dst"], world["tag"]
    archive, journal = tmp_path / "dir.tar.zst", str(tmp_path / "journal.sqlite")
    assert cli("export", "--from", "src", "-o", str(archive), "--identity", "--project",
               world["project"]).code == 0
    run = cli("--journal", journal, "import", "--to", "dst", str(archive))
    assert run.code != 0
    assert f"domain '{DIRECTORY_DOMAIN}' on the destination is backed by a directory" in (
        run.out + run.err), run.out + run.err
    domain = dst.identity.find_domain(DIRECTORY_DOMAIN)
    assert dst.identity.find_project(f"shdir-{tag}", domain_id=domain.id) is not None
    assert not [u for u in dst.identity.users(domain_id=domain.id)
                if u.name == f"shdir-{tag}-u"]
    with Journal(journal) as j:
        runs = [a for r in j.runs() for a in ("--run", r.id)]
    assert cli("--journal", journal, "rollback", "--to", "dst", *runs).code == 0
    assert dst.identity.find_project(f"shdir-{tag}", domain_id=domain.id) is None
    assert dst.identity.find_domain(DIRECTORY_DOMAIN) is not None  # adopted, never removed
