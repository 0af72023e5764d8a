"""The issue-21 worlds of the testbed, exercised for real: slapd, PostgreSQL, Liberty shapes.

The directory is read the way Keystone reads it (bound as Keystone's DN,
paging past slapd's size limit, people binding as themselves); the
PostgreSQL mirror and the Liberty-shaped databases are compared row by row
with src's MariaDB databases they were made from.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import ldap
import psycopg
import pymysql
import pytest
from ldap.controls import SimplePagedResultsControl
from testbed import layout
from testbed.infra import ldap_directory, mariadb, postgresql, slapd
from testbed.legacy_db import liberty, pg_mirror
from testbed.openstack import keystone_ldap, keystone_private, runtime

pytestmark = pytest.mark.functional
SRC = layout.SRC


# -- helpers -------------------------------------------------------------------------------


def _ldap(dn: str = layout.LDAP_BIND_DN, pw: str = layout.LDAP_BIND_PASSWORD) -> Any:
    conn = ldap.initialize(layout.LDAP_URL)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5)
    conn.simple_bind_s(dn, pw)
    return conn


def _paged_people(conn: Any, page: int = 200) -> list[tuple[str, dict[str, list[bytes]]]]:
    ctrl = SimplePagedResultsControl(True, size=page, cookie="")
    out: list[tuple[str, dict[str, list[bytes]]]] = []
    while True:
        msgid = conn.search_ext(layout.LDAP_USERS_DN, ldap.SCOPE_ONELEVEL,
                                "(objectClass=inetOrgPerson)", ["uid", "cn"],
                                serverctrls=[ctrl])
        _, data, _, controls = conn.result3(msgid)
        out += data
        cookie = next(c.cookie for c in controls
                      if c.controlType == SimplePagedResultsControl.controlType)
        if not cookie:
            return out
        ctrl.cookie = cookie


def _maria(db: str) -> Any:
    return pymysql.connect(host=layout.HOST, port=layout.MARIADB_PORT, user=layout.DB_USER,
                           password=layout.DB_PASSWORD, database=db, charset="utf8mb4")


def _pg(db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(postgresql.url(db), connect_timeout=5)


def _rows(conn: Any, statement: str) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    cur.execute(statement)
    return [tuple(r) for r in cur.fetchall()]


def _columns(conn: Any, db: str, table: str, schema: str) -> dict[str, str]:
    """Column name -> its type as the server's information schema names it."""
    field = "COLUMN_TYPE" if schema == "maria" else "udt_name"
    where = "TABLE_SCHEMA = %s" if schema == "maria" else "table_catalog = %s"
    return dict(_rows(conn, f"SELECT column_name, {field} FROM information_schema.columns "
                            f"WHERE {where} AND table_name = '{table}'"
                      .replace("%s", f"'{db}'")))


@pytest.fixture(scope="module")
def legacy_dbs(seeded: object) -> None:
    """``python -m testbed legacy-dbs`` after the seed, as an operator runs it."""
    proc = subprocess.run([sys.executable, "-m", "testbed", "legacy-dbs"], cwd=layout.REPO_DIR,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- slapd ---------------------------------------------------------------------------------


def test_status_lists_slapd_and_postgresql() -> None:
    proc = subprocess.run([sys.executable, "-m", "testbed", "status"], cwd=layout.REPO_DIR,
                          capture_output=True, text=True, timeout=300)
    lines = {line[:30].strip(): line[30:].split() for line in proc.stdout.splitlines()}
    assert lines["slapd"][0] == "answers", proc.stdout
    assert lines["postgresql"][0] == "answers", proc.stdout
    assert lines["postgresql tcp"][0] == "ok", proc.stdout


def test_directory_pages_past_the_size_limit() -> None:
    conn = _ldap()
    with pytest.raises(ldap.SIZELIMIT_EXCEEDED):
        conn.search_s(layout.LDAP_USERS_DN, ldap.SCOPE_ONELEVEL, "(objectClass=inetOrgPerson)",
                      ["uid"])
    people = _paged_people(conn)
    uids = {attrs["uid"][0].decode() for _, attrs in people}
    assert len(people) == len(uids) == ldap_directory.BULK_PEOPLE + len(
        ldap_directory.NAMED_PEOPLE)
    assert len(people) > 2 * slapd.SIZE_LIMIT
    assert {"lina", "alice", "dora", "user0001", "user1200"} <= uids


def test_directory_keeps_unicode_names_and_the_disabled_person() -> None:
    conn = _ldap()
    names = {attrs["uid"][0].decode(): attrs["cn"][0].decode()
             for _, attrs in conn.search_s(layout.LDAP_USERS_DN, ldap.SCOPE_ONELEVEL,
                                           "(|(uid=zoe)(uid=lilei)(uid=juergen))", ["uid", "cn"])}
    assert names == {"zoe": "zoë", "lilei": "李雷", "juergen": "jürgen"}
    # Found by its Unicode name too (Keystone searches by user_name_attribute).
    found = conn.search_s(layout.LDAP_USERS_DN, ldap.SCOPE_ONELEVEL, "(cn=李雷)", ["uid"])
    assert [a["uid"][0] for _, a in found] == [b"lilei"]
    (_, enabled), = conn.search_s(layout.LDAP_ENABLED_DN, ldap.SCOPE_BASE, attrlist=["member"])
    members = {m.decode() for m in enabled["member"]}
    assert ldap_directory.person_dn("dora") not in members
    assert ldap_directory.person_dn("lina") in members
    assert len(members) == ldap_directory.BULK_PEOPLE + len(ldap_directory.NAMED_PEOPLE) - 1


def test_directory_binds_and_access_rules() -> None:
    dn = ldap_directory.person_dn("zoe")
    assert _ldap(dn, ldap_directory.password("zoe")).whoami_s() == f"dn:{dn}"
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        _ldap(dn, "wrong")
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        _ldap(layout.LDAP_BIND_DN, "wrong")
    # Keystone's DN reads people but never their password hashes; anonymous reads nothing.
    (_, attrs), = _ldap().search_s(dn, ldap.SCOPE_BASE, attrlist=["*"])
    assert "userPassword" not in attrs and attrs["mail"] == [b"zoe@ldap.example.org"]
    anon = ldap.initialize(layout.LDAP_URL)
    with pytest.raises(ldap.NO_SUCH_OBJECT):
        anon.search_s(layout.LDAP_USERS_DN, ldap.SCOPE_ONELEVEL, "(uid=zoe)")


# -- PostgreSQL mirror ---------------------------------------------------------------------

#: Tables the seed fills and no service rewrites on its own (no heartbeats).
MIRRORED = {
    "keystone": ["project", "user", "local_user", "assignment", "role"],
    "nova_api": ["key_pairs", "quotas", "flavors", "cell_mappings"],
    "nova_cell1": ["instances", "instance_actions"],
    "cinder": ["quotas", "volumes", "volume_types"],
    "neutron": ["securitygroups", "securitygrouprules", "quotas", "standardattributes",
                "networks", "ports"],
}


def _mirror_matches(service: str, table: str) -> tuple[list[Any], list[Any]]:
    db = SRC.db_name(service)
    with _maria(db) as m, _pg(db) as p:
        # The copied cell mappings are re-pointed at PostgreSQL: not compared.
        cols = [c for c in _columns(m, db, table, "maria") if c != "database_connection"]
        maria = _rows(m, f"SELECT {', '.join(f'`{c}`' for c in cols)} FROM `{table}`")
        pg = _rows(p, f"SELECT {', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)} "
                      f'FROM "{table}"')

    def norm(rows: list[tuple[Any, ...]]) -> list[tuple[str, ...]]:
        out = []
        for r in rows:
            out.append(tuple("" if v is None else str(int(v)) if isinstance(v, bool)
                             else v.decode() if isinstance(v, bytes) else str(v) for v in r))
        return sorted(out)

    return norm(maria), norm(pg)


@pytest.mark.parametrize("service,table", [(s, t) for s, ts in MIRRORED.items() for t in ts])
def test_postgresql_mirror_holds_srcs_rows(legacy_dbs: None, service: str, table: str) -> None:
    maria, pg = _mirror_matches(service, table)
    if maria != pg:  # another checkout changed src since the copy: copy again, compare again
        pg_mirror.mirror(report=lambda line: None)
        maria, pg = _mirror_matches(service, table)
    assert maria, f"{service}.{table} is empty on MariaDB: the seed did not run?"
    assert maria == pg


def test_postgresql_schemas_come_from_the_services_migrations(legacy_dbs: None) -> None:
    for service in ("keystone", "nova_api", "nova_cell1", "cinder", "neutron"):
        db = SRC.db_name(service)
        with _maria(db) as m, _pg(db) as p:
            assert sorted(_rows(m, "SELECT version_num FROM alembic_version")) == sorted(
                _rows(p, "SELECT version_num FROM alembic_version")), service
    with _pg(SRC.db_name("cinder")) as p:
        assert _columns(p, SRC.db_name("cinder"), "quotas", "pg")["deleted"] == "bool"
    with _pg(SRC.db_name("nova_api")) as p:
        urls = [u for (u,) in _rows(p, "SELECT database_connection FROM cell_mappings")]
    assert urls and all(u.startswith("postgresql://") and f":{layout.POSTGRES_PORT}/" in u
                        for u in urls)


def test_second_run_does_not_remake_schemas(legacy_dbs: None) -> None:
    lines: list[str] = []
    pg_mirror.mirror(report=lines.append)
    assert len(lines) == len(pg_mirror.DATABASES)
    assert not [line for line in lines if "schema made" in line]


# -- Liberty shapes ------------------------------------------------------------------------

SERVERS = pytest.mark.parametrize("server", ["maria", "pg"])


def _liberty(server: str, service: str) -> Any:
    db = liberty.db_name(service)
    return _maria(db) if server == "maria" else _pg(db)


@SERVERS
def test_liberty_tables_have_libertys_columns(legacy_dbs: None, server: str) -> None:
    nova, neutron, cinder = (liberty.db_name(s) for s in liberty.SERVICES)
    with _liberty(server, "nova") as c:
        kp = _columns(c, nova, "key_pairs", server)
        q = _columns(c, nova, "quotas", server)
    with _liberty(server, "neutron") as c:
        where = f"'{neutron}'" if server == "maria" else "'public'"
        tables = {t for (t,) in _rows(c, "SELECT table_name FROM information_schema.tables "
                                         f"WHERE table_schema = {where}")}
        sg = _columns(c, neutron, "securitygroups", server)
        rule = _columns(c, neutron, "securitygrouprules", server)
        nq = _columns(c, neutron, "quotas", server)
    with _liberty(server, "cinder") as c:
        cq = _columns(c, cinder, "quotas", server)
    if server == "maria":
        assert kp["deleted"] == "int(11)" and kp["type"] == "enum('ssh','x509')"
        assert q["deleted"] == "int(11)" and cq["deleted"] == "tinyint(1)"
    else:
        assert kp["deleted"] == "int4" and kp["type"] == "keypair_types"
        assert q["deleted"] == "int4" and cq["deleted"] == "bool"
    # Liberty had no standardattributes (Mitaka): the group's description is its own column.
    assert tables == {"securitygroups", "securitygrouprules", "quotas", "default_security_group"}
    for cols in (sg, rule, nq):
        assert "tenant_id" in cols and "project_id" not in cols
    assert "description" in sg and "limit" in nq and "allocated" in cq


@SERVERS
def test_liberty_rows_are_srcs_plus_one_soft_deleted_twin(legacy_dbs: None, server: str) -> None:
    with _maria(SRC.db_name("nova_api")) as m:
        live = sorted(_rows(m, "SELECT user_id, name, fingerprint, type FROM key_pairs"))
    with _liberty(server, "nova") as c:
        kept = sorted(_rows(c, "SELECT user_id, name, fingerprint, type FROM key_pairs "
                               "WHERE deleted = 0"))
        deleted = _rows(c, "SELECT id, deleted, deleted_at FROM key_pairs WHERE deleted <> 0")
    assert kept == live and live
    ((row_id, marker, when),) = deleted
    assert marker == row_id and isinstance(when, datetime.datetime)
    with _liberty(server, "cinder") as c:
        trap = _rows(c, "SELECT hard_limit FROM quotas WHERE deleted = TRUE")
    assert trap == [(1,)]
    with _maria(SRC.db_name("neutron")) as m:
        groups = sorted(_rows(m, "SELECT g.project_id, g.id, g.name, s.description FROM "
                                 "securitygroups g JOIN standardattributes s "
                                 "ON s.id = g.standard_attr_id"))
    with _liberty(server, "neutron") as c:
        assert sorted(_rows(c, "SELECT tenant_id, id, name, description FROM securitygroups")
                      ) == groups



@dataclass(frozen=True)
class SharedKeystone:
    """A shared cloud's Keystone, as the checks below use it (like a PrivateKeystone)."""

    cloud: layout.CloudLayout

    @property
    def name(self) -> str:
        return self.cloud.db_name("keystone")

    def connection(self, **auth: str) -> Any:
        import openstack.connection

        creds: dict[str, Any] = {
            "username": "admin", "password": layout.ADMIN_PASSWORD, "project_name": "admin",
            "user_domain_name": "Default", "project_domain_name": "Default", **auth,
        }
        return openstack.connection.Connection(
            auth_url=self.cloud.keystone_url, identity_api_version="3",
            region_name=layout.REGION, **creds,
        )


# -- dst's Keystone: a domain-specific LDAP domain ------------------------------------------


@pytest.fixture(scope="module")
def ldap_keystone(seeded: object) -> SharedKeystone:
    return SharedKeystone(layout.DST)


def test_ldap_domain_lists_every_person_with_generated_ids(ldap_keystone: SharedKeystone) -> None:
    ident: Any = ldap_keystone.connection().identity
    domain = ident.find_domain(layout.LDAP_DOMAIN)
    users = {u.name: u for u in ident.users(domain_id=domain.id)}  # pages through slapd
    assert len(users) == ldap_directory.BULK_PEOPLE + len(ldap_directory.NAMED_PEOPLE)
    for uid, name in ldap_directory.NAMED_PEOPLE:
        assert users[name].id == keystone_ldap.public_id(domain.id, uid) != uid
    assert {"zoë", "jürgen", "李雷"} <= set(users)
    assert users["dora"].is_enabled is False and users["lina"].is_enabled is True
    assert users["lina"].email == "lina@ldap.example.org"
    # alice: an SQL user of Default and a person of the directory, two IDs.
    sql_alice = ident.find_user("alice", domain_id="default")
    assert sql_alice is not None and sql_alice.id != users["alice"].id
    # Without domain_id, a project-scoped token lists its project's domain only.
    unscoped = {u.name for u in ident.users()}
    assert "alice" in unscoped and "lina" not in unscoped and "user0001" not in unscoped
    mapped = mariadb.sql(
        f"SELECT COUNT(*) FROM id_mapping WHERE domain_id = '{domain.id}' AND entity_type = 'user'",
        database=ldap_keystone.name,
    )
    assert int(mapped) == len(users)


def test_ldap_people_log_in_and_the_disabled_one_does_not(ldap_keystone: SharedKeystone) -> None:
    for uid, name in (("lina", "lina"), ("lilei", "李雷")):
        conn = ldap_keystone.connection(
            username=name, password=ldap_directory.password(uid),
            user_domain_name=layout.LDAP_DOMAIN, project_name="", project_domain_name="",
        )
        assert conn.session.get_token()
    dora = ldap_keystone.connection(
        username="dora", password=ldap_directory.password("dora"),
        user_domain_name=layout.LDAP_DOMAIN, project_name="", project_domain_name="",
    )
    with pytest.raises(Exception, match="401|[Uu]nauthori"):
        dora.session.get_token()


def test_wrong_bind_password_breaks_only_that_domain(seeded: object) -> None:
    with keystone_private.private_keystone(
        layout.DST, "badbind", ldap_bind_password="not-the-password", slot=1
    ) as ks:
        ident: Any = ks.connection().identity
        domain = ident.find_domain(layout.LDAP_DOMAIN)
        assert ident.find_user("alice", domain_id="default") is not None
        with pytest.raises(Exception) as failure:
            list(ident.users(domain_id=domain.id))
        log = runtime.log_since_start(ks.daemon)
    assert "Invalid credentials" in log or "INVALID_CREDENTIALS" in log, str(failure.value)


# -- src's Keystone: the hybrid shape ---------------------------------------------------------


@pytest.fixture(scope="module")
def hybrid_keystone(seeded: object) -> SharedKeystone:
    return SharedKeystone(layout.SRC)


def test_hybrid_default_domain_holds_sql_users_and_people_with_raw_ids(
    hybrid_keystone: SharedKeystone,
) -> None:
    ident: Any = hybrid_keystone.connection().identity
    users = list(ident.users(domain_id="default"))
    by_name: dict[str, list[Any]] = {}
    for u in users:
        by_name.setdefault(u.name, []).append(u)
    people = ldap_directory.BULK_PEOPLE + len(ldap_directory.NAMED_PEOPLE)
    for uid, name in ldap_directory.NAMED_PEOPLE:
        assert uid in {u.id for u in by_name[name]}, name  # the raw LDAP ID
    assert {u.domain_id for u in users} == {"default"}
    assert len([u for u in users if not _is_hex_id(u.id)]) == people
    # Service users and the seed's SQL users stay SQL users of Default.
    assert {"admin", "nova", "cinder", "bob"} <= set(by_name)
    assert sorted(_is_hex_id(u.id) for u in by_name["alice"]) == [False, True]
    assert [u.is_enabled for u in by_name["dora"]] == [False]
    mapped = mariadb.sql("SELECT COUNT(*) FROM id_mapping", database=hybrid_keystone.name)
    assert int(mapped) == 0


def test_hybrid_logins_and_role_assignment(hybrid_keystone: SharedKeystone) -> None:
    ident: Any = hybrid_keystone.connection().identity
    for name, pw in (("lina", ldap_directory.password("lina")), ("alice", "alice-seed-pw")):
        conn = hybrid_keystone.connection(username=name, password=pw, project_name="",
                                          project_domain_name="")
        assert conn.session.get_token(), name
    with pytest.raises(Exception, match="401|[Uu]nauthori"):
        hybrid_keystone.connection(username="alice", password=ldap_directory.password("alice"),
                                   project_name="", project_domain_name="").session.get_token()
    project = ident.find_project("alpha", domain_id="default")
    role = ident.find_role("member")
    ident.assign_project_role_to_user(project, "zoe", role)
    try:
        assert [a.scope["project"]["id"] for a in ident.role_assignments(user_id="zoe")] == [
            project.id]
    finally:
        ident.unassign_project_role_from_user(project, "zoe", role)


def _is_hex_id(value: str) -> bool:
    return len(value) == 32 and all(ch in "0123456789abcdef" for ch in value)
