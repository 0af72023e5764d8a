"""``keystone.user`` from src to dst (``--identity``) with each ``--user-passwords`` mode.

Two SQL users of Default (one Unicode-named), with a role on a test-only project of
Default, are made on src and removed from both clouds at the end. Each mode imports
them into dst, checks them there directly with openstacksdk (a random or file password
logs in), re-runs without the journal (nothing new), and rolls back (they are gone).
Only objects named with this test's tag are touched.
"""

from __future__ import annotations

import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack
import openstack.exceptions
import pytest
import yaml
from testbed import layout

from stackhop.archive import ArchiveReader
from stackhop.clouds import cloud_config, connect
from stackhop.journal import Journal

pytestmark = pytest.mark.functional


def _names(tag: str) -> tuple[str, str]:
    return f"shu-{tag}-a", f"shu-{tag}-ü"


def _users(conn: Any, tag: str) -> dict[str, Any]:
    """This test's users on a cloud, by name, listed directly."""
    return {u.name: u for u in conn.identity.users(domain_id="default")
            if u.name.startswith(f"shu-{tag}-")}


def _remove(conn: Any, tag: str) -> None:
    for user in _users(conn, tag).values():
        conn.identity.delete_user(user, ignore_missing=True)
    for project in conn.identity.projects(domain_id="default"):
        if project.name == f"shu-{tag}":
            conn.identity.delete_project(project, ignore_missing=True)


def _logs_in(name: str, password: str) -> bool:
    """Whether ``name`` of Default gets a token from dst's Keystone with ``password``."""
    auth = {"auth_url": cloud_config(layout.DST.name).auth_url, "username": name,
            "password": password, "user_domain_id": "default"}
    try:
        openstack.connect(auth=auth, auth_type="password").authorize()
    except openstack.exceptions.SDKException as exc:  # authorize() wraps keystoneauth's 401
        if "HTTP 401" not in str(exc):
            raise
        return False
    return True


@pytest.fixture(scope="module")
def world(seeded: Any) -> Iterator[dict[str, Any]]:
    src, dst = connect("src"), connect("dst")
    tag = uuid.uuid4().hex[:6]
    first, unicode_name = _names(tag)
    try:
        project = src.identity.create_project(name=f"shu-{tag}", domain_id="default")
        member = src.identity.find_role("member")
        src.identity.create_user(name=first, domain_id="default", email=f"{first}@example.org",
                                 description="first user", default_project_id=project.id,
                                 options={"ignore_password_expiry": True}, password="x" * 20)
        src.identity.create_user(name=unicode_name, domain_id="default", is_enabled=False)
        for user in _users(src, tag).values():
            src.identity.assign_project_role_to_user(project, user, member)
        yield {"src": src, "dst": dst, "tag": tag, "project": project.id}
    finally:
        _remove(src, tag)
        _remove(dst, tag)


@pytest.fixture
def archive(world: dict[str, Any], cli: Callable[..., Any],
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export of the test project with --identity (made once, by the first test that
    asks); checked against the --via db one."""
    if "archive" not in world:
        world["archive"] = _export(world, cli, tmp_path_factory.mktemp("users"))
    return Path(world["archive"])


def _export(world: dict[str, Any], cli: Callable[..., Any], tmp: Path) -> Path:
    path = tmp / "users.tar.zst"
    select = ("--identity", "--project", world["project"])
    assert cli("export", "--from", "src", "-o", str(path), *select).code == 0
    via_db = tmp / "db.tar.zst"
    assert cli("export", "--from", "src", "-o", str(via_db), *select, "--via", "db",
               "--db-config-dir", str(layout.SRC.etc)).code == 0
    with ArchiveReader(path) as reader:
        users = sorted(reader.records("keystone.user"), key=lambda r: r["id"])
    with ArchiveReader(via_db) as reader:
        assert sorted(reader.records("keystone.user"), key=lambda r: r["id"]) == users
    first, unicode_name = _names(world["tag"])
    by_name = {u["name"]: u for u in users}
    assert set(by_name) == {first, unicode_name}  # the project's SQL users, no one else
    assert by_name[first]["email"] == f"{first}@example.org"
    assert by_name[first]["options"] == {"ignore_password_expiry": True}
    assert by_name[first]["default_project_id"] == world["project"]
    assert by_name[unicode_name]["enabled"] is False
    assert not any("password" in u for u in users)  # Keystone never gives one
    return path


def _import_and_check(world: dict[str, Any], cli: Callable[..., Any], archive: Path,
                      tmp_path: Path, *password_args: str) -> dict[str, Any]:
    """Import, re-run without the journal (nothing new), return dst's users; the caller
    checks the passwords, then :func:`_roll_back`."""
    dst, tag = world["dst"], world["tag"]
    first, unicode_name = _names(tag)
    assert _users(dst, tag) == {}
    journal = str(tmp_path / "journal.sqlite")
    run = cli("--journal", journal, "import", "--to", "dst", str(archive), "-f", "json",
              *password_args)
    assert run.code == 0, run.err
    created = _users(dst, tag)
    assert set(created) == {first, unicode_name}
    user = created[first]
    assert user.email == f"{first}@example.org" and user.is_enabled
    assert user.description.startswith("first user [stackhop-source:")
    assert user.options == {"ignore_password_expiry": True}
    dst_project = dst.identity.find_project(f"shu-{tag}", domain_id="default")
    assert user.default_project_id == dst_project.id
    assert created[unicode_name].is_enabled is False
    assert cli("verify", "--to", "dst", str(archive)).code == 0

    again = cli("--journal", str(tmp_path / "other.sqlite"), "import", "--to", "dst",
                str(archive), "-f", "json", *password_args)
    assert again.code == 0, again.err
    assert {n: u.id for n, u in _users(dst, tag).items()} == {
        n: u.id for n, u in created.items()}
    return {"journal": journal, "users": created}


def _roll_back(world: dict[str, Any], cli: Callable[..., Any], journal: str) -> None:
    with Journal(journal) as j:
        runs = [a for r in j.runs() for a in ("--run", r.id)]
    undo = cli("--journal", journal, "rollback", "--to", "dst", *runs, "-f", "json")
    assert undo.code == 0, undo.err
    assert _users(world["dst"], world["tag"]) == {}
    assert world["dst"].identity.find_project(f"shu-{world['tag']}", domain_id="default") is None


def test_random_passwords_go_to_a_private_file_and_log_in(
    world: dict[str, Any], cli: Callable[..., Any], archive: Path, tmp_path: Path
) -> None:
    passwords = tmp_path / "passwords.yaml"
    done = _import_and_check(world, cli, archive, tmp_path, "--user-passwords", "random",
                             "--user-passwords-file", str(passwords))
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    given = yaml.safe_load(passwords.read_text())
    first, unicode_name = _names(world["tag"])
    # one line per created user: the re-run created nobody, so wrote nothing
    assert set(given) == {f"Default/{first}", f"Default/{unicode_name}"}
    assert given[f"Default/{first}"] != given[f"Default/{unicode_name}"]
    assert _logs_in(first, given[f"Default/{first}"])
    assert not _logs_in(first, "not-" + given[f"Default/{first}"])
    journal_text = Path(done["journal"]).read_bytes()
    assert given[f"Default/{first}"].encode() not in journal_text
    _roll_back(world, cli, done["journal"])


def test_file_passwords_log_in(
    world: dict[str, Any], cli: Callable[..., Any], archive: Path, tmp_path: Path
) -> None:
    first, unicode_name = _names(world["tag"])
    passwords = tmp_path / "given.yaml"
    passwords.write_text(yaml.safe_dump(
        {first: "first-secret-42", f"Default/{unicode_name}": "ü-secret-42"},
        allow_unicode=True), encoding="utf-8")
    done = _import_and_check(world, cli, archive, tmp_path, "--user-passwords", "file",
                             "--user-passwords-file", str(passwords))
    assert _logs_in(first, "first-secret-42")
    _roll_back(world, cli, done["journal"])


def test_no_password_by_default(
    world: dict[str, Any], cli: Callable[..., Any], archive: Path, tmp_path: Path
) -> None:
    first, _ = _names(world["tag"])
    done = _import_and_check(world, cli, archive, tmp_path)
    assert not _logs_in(first, "x" * 20)  # the source's password does not travel
    _roll_back(world, cli, done["journal"])


def test_a_users_keypair_moves_in_the_run_that_creates_the_user(
    world: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    """The keypair refers to ``identity.user``; the user is one ``keystone.user`` creates in
    the same run: one run moves both (the planner orders and maps the keypair through the
    created user), and rollback removes both."""
    import subprocess

    from stackhop.kinds.rest import call

    src, dst, tag = world["src"], world["dst"], world["tag"]
    first, _ = _names(tag)
    owner = _users(src, tag)[first]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    public = (tmp_path / "k.pub").read_text().strip()
    name = f"shu-{tag}-key"
    call(src.compute, "POST", "/os-keypairs", microversion="2.10",
         json={"keypair": {"name": name, "public_key": public, "user_id": owner.id}})
    try:
        archive = tmp_path / "keys.tar.zst"
        assert cli("export", "--from", "src", "-o", str(archive), "--identity", "--keypairs",
                   "--project", world["project"]).code == 0
        journal = str(tmp_path / "journal.sqlite")
        run = cli("--journal", journal, "import", "--to", "dst", str(archive), "-f", "json")
        assert run.code == 0, run.err + run.out
        created = _users(dst, tag)[first]
        moved = call(dst.compute, "GET", f"/os-keypairs/{name}?user_id={created.id}",
                     microversion="2.10")
        assert moved["keypair"]["public_key"].strip() == public
        assert moved["keypair"]["user_id"] == created.id
        _roll_back(world, cli, journal)
        gone = call(dst.compute, "GET", f"/os-keypairs/{name}?user_id={created.id}",
                    microversion="2.10", missing_ok=True)
        assert gone is None
    finally:
        call(src.compute, "DELETE", f"/os-keypairs/{name}?user_id={owner.id}",
             microversion="2.10", missing_ok=True)
