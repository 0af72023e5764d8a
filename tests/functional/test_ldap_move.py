"""Issue 21 on the shared clouds: the SOC6 -> SOC7 move of the directory's people.

src's Keystone is the hybrid shape (Default = SQL users + the LDAP directory's
people under their raw LDAP IDs), dst's reads the same directory as the
domain-specific domain ``ldap_users`` (generated IDs). For this module, a
project ``ldm-<tag>`` on each cloud (Default, same name: mapped by name) where
on src some people and the SQL user ``alice`` have a role and a keypair each:

- ``zoe`` (zoë) and ``lilei`` (李雷): Unicode names, carried;
- ``alice`` the person and ``alice`` the SQL user: each keypair lands with its
  own owner on dst;
- ``dora``, disabled in the directory: carried, or skipped on request;
- ``juergen`` (jürgen): removed from the directory after the export, before the
  import: named, skipped, the exit code says so (and put back after).

dst is checked with openstacksdk, never through stackhop; every run is rolled
back, and what was made on src is deleted.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ldap
import ldap.modlist
import pytest
from testbed import layout
from testbed.infra import ldap_directory
from testbed.openstack import keystone_ldap

from stackhop.archive import ArchiveReader
from stackhop.clouds import connect
from stackhop.kinds import identity
from stackhop.kinds.rest import call

pytestmark = pytest.mark.functional

#: (keypair owner's uid or "sql-alice", person?) of the module's keypairs on src.
OWNERS = ("zoe", "lilei", "alice", "dora", "juergen", "sql-alice")
DOMAIN_MAP = ("--domain-map", f"Default={layout.LDAP_DOMAIN}")
#: A throwaway public key (ed25519; nobody holds the private half).
PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBw3S0aNsIkCOBO8iH7q3mXf6l8J5S3rZB0SBN4S6h1T "
    "stackhop-ldap-move"
)


def _keypairs(conn: Any, user_id: str) -> dict[str, str]:
    body = call(conn.compute, "GET", f"/os-keypairs?user_id={user_id}", microversion="2.10")
    return {k["keypair"]["name"]: k["keypair"]["public_key"] for k in body["keypairs"]}


def _sql_alice(conn: Any) -> str:
    return next(u.id for u in conn.identity.users(domain_id="default", name="alice")
                if identity.is_sql_id(u.id))


def _directory_admin() -> Any:
    conn = ldap.initialize(layout.LDAP_URL)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5)
    conn.simple_bind_s(layout.LDAP_ADMIN_DN, layout.LDAP_ADMIN_PASSWORD)
    return conn


@pytest.fixture(scope="module")
def world(seeded: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    src, dst = connect("src"), connect("dst")
    tag = uuid.uuid4().hex[:6]
    name = f"ldm-{tag}"
    work = tmp_path_factory.mktemp("ldapmove")
    ldap_users = dst.identity.find_domain(layout.LDAP_DOMAIN).id
    src_ids = {uid: uid for uid in OWNERS if uid != "sql-alice"} | {"sql-alice": _sql_alice(src)}
    dst_ids = {uid: keystone_ldap.public_id(ldap_users, uid) for uid in OWNERS
               if uid != "sql-alice"} | {"sql-alice": _sql_alice(dst)}
    member = next(r.id for r in src.identity.roles() if r.name == "member")
    src_project = src.identity.create_project(name=name, domain_id="default")
    dst_project = dst.identity.create_project(name=name, domain_id="default")
    keypairs = {owner: f"{name}-{owner}" for owner in OWNERS}
    try:
        for owner, user_id in src_ids.items():
            src.identity.assign_project_role_to_user(src_project, user_id, member)
            call(src.compute, "POST", "/os-keypairs", microversion="2.10", json={
                "keypair": {"name": keypairs[owner], "public_key": PUBLIC_KEY,
                            "type": "ssh", "user_id": user_id}})
        before = {owner: _keypairs(dst, uid) for owner, uid in dst_ids.items()}
        yield {"src": src, "dst": dst, "tag": tag, "project": name, "work": work,
               "src_ids": src_ids, "dst_ids": dst_ids, "keypairs": keypairs, "before": before}
    finally:
        for owner, user_id in src_ids.items():
            call(src.compute, "DELETE", f"/os-keypairs/{keypairs[owner]}?user_id={user_id}",
                 microversion="2.10", missing_ok=True)
        src.identity.delete_project(src_project)
        dst.identity.delete_project(dst_project)


@pytest.fixture(scope="module")
def archive(world: dict[str, Any]) -> Path:
    from stackhop.cli.main import main

    path = world["work"] / "src.stackhop"
    code = main(["export", "--from", "src", "-o", str(path), "--project", world["project"],
                 "--keypairs"])
    assert code == 0
    return path


def _import(cli: Callable[..., Any], world: dict[str, Any], archive: Path, journal: Path,
            *extra: str) -> Any:
    result = cli("--journal", str(journal), "import", "--to", "dst", str(archive),
                 *DOMAIN_MAP, *extra, "-f", "json")
    return result


def _rollback(cli: Callable[..., Any], journal: Path, run_id: str) -> None:
    done = cli("--journal", str(journal), "rollback", "--to", "dst", "--run", run_id)
    assert done.code == 0, done.err


def _dst_keypairs(world: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {owner: _keypairs(world["dst"], uid) for owner, uid in world["dst_ids"].items()}


def test_export_names_people_by_raw_id_and_keeps_both_alices(
    world: dict[str, Any], archive: Path
) -> None:
    with ArchiveReader(archive) as reader:
        users = {u["id"]: u for u in reader.records(identity.USER)}
        keypairs = {(k["user_id"], k["name"]) for k in reader.records("nova.keypair")}
    ours = {k for k in keypairs if k[1].startswith(world["project"])}  # alice has seed keys too
    assert {(world["src_ids"][o], world["keypairs"][o]) for o in OWNERS} == ours
    assert users["zoe"]["name"] == "zoë" and users["lilei"]["name"] == "李雷"
    assert users["dora"]["enabled"] is False and users["zoe"]["enabled"] is True
    # Two users named alice in src's Default: the person (raw ID) and the SQL user.
    alices = [u for u in users.values() if u["name"] == "alice"]
    assert sorted(u["id"] for u in alices) == sorted(["alice", world["src_ids"]["sql-alice"]])


def test_people_land_under_their_dst_ids_and_verify_passes(
    world: dict[str, Any], archive: Path, cli: Callable[..., Any]
) -> None:
    journal = world["work"] / "carry.sqlite"
    result = _import(cli, world, archive, journal)
    assert result.code == 0, result.err
    try:
        after = _dst_keypairs(world)
        for owner in OWNERS:
            # Each keypair under its owner's dst ID (people: generated; SQL alice: the same).
            assert after[owner].get(world["keypairs"][owner]) == PUBLIC_KEY, owner
        # Person alice's key did not go to SQL alice, nor the other way round.
        assert world["keypairs"]["alice"] not in after["sql-alice"]
        assert world["keypairs"]["sql-alice"] not in after["alice"]
        ok = cli("verify", "--to", "dst", str(archive), *DOMAIN_MAP)
        assert ok.code == 0, ok.out + ok.err
    finally:
        _rollback(cli, journal, result.json()["run_id"])
    assert _dst_keypairs(world) == world["before"]


def test_disabled_people_stay_behind_when_the_operator_says_skip(
    world: dict[str, Any], archive: Path, cli: Callable[..., Any]
) -> None:
    journal = world["work"] / "skip.sqlite"
    result = _import(cli, world, archive, journal, "--disabled-users", "skip")
    try:
        assert result.code == 10, result.err  # objects left behind: the exit code says so
        assert "Default/dora (disabled on the source)" in result.err
        after = _dst_keypairs(world)
        assert world["keypairs"]["dora"] not in after["dora"]
        assert after["zoe"].get(world["keypairs"]["zoe"]) == PUBLIC_KEY
    finally:
        _rollback(cli, journal, result.json()["run_id"])
    assert _dst_keypairs(world) == world["before"]


def test_person_removed_from_the_directory_is_named_and_skipped(
    world: dict[str, Any], archive: Path, cli: Callable[..., Any]
) -> None:
    dn = ldap_directory.person_dn("juergen")
    entry = next(e for e in ldap_directory.entries() if e.dn == dn)
    admin = _directory_admin()
    admin.delete_s(dn)
    journal = world["work"] / "removed.sqlite"
    try:
        result = _import(cli, world, archive, journal)
        assert result.code == 10, result.err
        assert "Default/jürgen" in result.err
        after = _dst_keypairs(world)
        assert world["keypairs"]["juergen"] not in after["juergen"]
        assert after["lilei"].get(world["keypairs"]["lilei"]) == PUBLIC_KEY
        _rollback(cli, journal, result.json()["run_id"])
    finally:
        attrs = {k: [v.encode() for v in vs] for k, vs in entry.attrs.items()}
        admin.add_s(dn, ldap.modlist.addModlist(attrs))
    assert _dst_keypairs(world) == world["before"]


def _liberty_postgresql(root: Path) -> Path:
    """A --db-config-dir whose nova.conf names the Liberty-shaped nova database on PostgreSQL."""
    url = (f"postgresql://{layout.DB_USER}:{layout.DB_PASSWORD}@{layout.HOST}:"
           f"{layout.POSTGRES_PORT}/src_liberty_nova")
    (root / "nova").mkdir(parents=True)
    (root / "nova" / "nova.conf").write_text(f"[database]\nconnection = {url}\n",
                                              encoding="utf-8")
    return root


def _keypair_records(path: Path) -> list[tuple[str, str, str]]:
    with ArchiveReader(path) as reader:
        return sorted((k["user_id"], k["name"], k["public_key"])
                      for k in reader.records("nova.keypair"))


@pytest.mark.parametrize("source", ["mariadb", "postgresql-liberty"])
def test_db_route_exports_the_peoples_keypairs_as_the_api_does(
    world: dict[str, Any], archive: Path, cli: Callable[..., Any], source: str
) -> None:
    if source == "mariadb":
        config = layout.SRC.etc
    else:  # SOC6's shape: keypairs in Nova's main database, on PostgreSQL
        refresh = subprocess.run([sys.executable, "-m", "testbed", "legacy-dbs"],
                                 cwd=layout.REPO_DIR, capture_output=True, text=True, timeout=900)
        assert refresh.returncode == 0, refresh.stderr[-2000:]
        config = _liberty_postgresql(world["work"] / source)
    via_db = world["work"] / f"via-{source}.stackhop"
    made = cli("export", "--from", "src", "-o", str(via_db), "--project", world["project"],
               "--keypairs", "--via", "db", "--db-config-dir", str(config))
    assert made.code == 0, made.err
    assert _keypair_records(via_db) == _keypair_records(archive)
    if source == "mariadb":
        return
    # And what SOC7 gets from it: the people's keypairs under their ldap_users IDs.
    journal = world["work"] / "liberty.sqlite"
    result = _import(cli, world, via_db, journal)
    assert result.code == 0, result.err
    try:
        after = _dst_keypairs(world)
        for owner in OWNERS:
            assert after[owner].get(world["keypairs"][owner]) == PUBLIC_KEY, owner
    finally:
        _rollback(cli, journal, result.json()["run_id"])
    assert _dst_keypairs(world) == world["before"]


def test_both_clouds_list_every_person_one_domain_at_a_time(world: dict[str, Any]) -> None:
    people = ldap_directory.BULK_PEOPLE + len(ldap_directory.NAMED_PEOPLE)
    src_users = list(identity.list_users(world["src"]))
    dst_users = list(identity.list_users(world["dst"]))
    # Both listings page past slapd's size limit (500).
    assert len([u for u in src_users if not identity.is_sql_id(u["id"])]) == people
    assert len([u for u in dst_users if u["domain_name"] == layout.LDAP_DOMAIN]) == people
