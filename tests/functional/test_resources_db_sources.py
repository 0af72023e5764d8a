"""Issue 21: ``--via db`` on the four database shapes gives the API's records.

src's MariaDB databases (today), their PostgreSQL mirror (today's schema by
the services' own migrations) and the Liberty-shaped ``src_liberty_*`` on
both servers (keypairs in Nova's cell database with soft-deleted rows;
Neutron's groups and rules with ``tenant_id`` and no ``standardattributes``);
the reader decides by reflection which tables to read. One scenario, read-only.

Liberty's rules had no description (Mitaka added it): on the Liberty sources
the rules' descriptions are compared as empty, every other field as the API
gives it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testbed import layout

from stackhop import kinds as registry
from stackhop.archive import ArchiveReader
from stackhop.clouds import connect
from stackhop.dbexport import DatabaseReader, SchemaError
from stackhop.kinds.base import ExportScope
from stackhop.kinds.identity import list_projects, list_users
from stackhop.kinds.security_group import GROUP, RULES

pytestmark = pytest.mark.functional

MARIA = f"mysql://{layout.DB_USER}:{layout.DB_PASSWORD}@{layout.HOST}:{layout.MARIADB_PORT}"
PG = f"postgresql://{layout.DB_USER}:{layout.DB_PASSWORD}@{layout.HOST}:{layout.POSTGRES_PORT}"


def _config_dir(root: Path, nova: dict[str, str], others: dict[str, str] | None = None) -> Path:
    """A --db-config-dir: nova.conf with the sections given (section -> URL), and
    neutron.conf / cinder.conf with ``[database]`` URLs (service -> URL)."""
    files = {"nova": nova, **{svc: {"database": url} for svc, url in (others or {}).items()}}
    for service, sections in files.items():
        (root / service).mkdir(parents=True)
        text = "".join(f"[{section}]\nconnection = {url}\n" for section, url in sections.items())
        (root / service / f"{service}.conf").write_text(text, encoding="utf-8")
    return root


def _canonical(records: object) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in records)  # type: ignore[attr-defined]


def _without_rule_descriptions(records: list[str]) -> list[str]:
    """The rules records as Liberty held them: no rule description."""
    out = []
    for text in records:
        record = json.loads(text)
        record["rules"] = [{**r, "description": ""} for r in record["rules"]]
        out.append(json.dumps(record, sort_keys=True, default=str))
    return sorted(out)


def test_db_export_matches_the_api_on_every_source(seeded: object, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "testbed", "legacy-dbs"],
        cwd=layout.REPO_DIR,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    conn = connect("src")
    scope = ExportScope(
        users=list(list_users(conn)), projects=list(list_projects(conn)), exported={}
    )
    names = ("nova.keypair", "nova.quota", "neutron.quota", "cinder.quota")
    from_api = {k: _canonical(registry.get(k).export(conn, scope)) for k in names}
    groups = list(registry.get(GROUP).export(conn, scope))
    from_api[GROUP] = _canonical(groups)
    rules_scope = ExportScope(users=scope.users, projects=scope.projects, exported={GROUP: groups})
    from_api[RULES] = _canonical(registry.get(RULES).export(conn, rules_scope))
    assert all(from_api.values())  # the seed's keypairs, quotas, groups and rules
    # The seed's rules carry descriptions: the Liberty comparison below is not vacuous.
    assert from_api[RULES] != _without_rule_descriptions(from_api[RULES])
    kind = registry.get("nova.keypair")
    sources = {
        "mariadb": {"api_database": f"{MARIA}/src_nova_api", "database": f"{MARIA}/src_nova_cell1"},
        "postgresql": {"api_database": f"{PG}/src_nova_api", "database": f"{PG}/src_nova_cell1"},
        "mariadb-liberty": {"database": f"{MARIA}/src_liberty_nova"},
        "postgresql-liberty": {"database": f"{PG}/src_liberty_nova"},
    }
    for name, nova in sources.items():
        server, db = (MARIA if name.startswith("mariadb") else PG), "src_liberty_"
        if not name.endswith("liberty"):
            db = "src_"
        others = {"neutron": f"{server}/{db}neutron", "cinder": f"{server}/{db}cinder"}
        reader = DatabaseReader(_config_dir(tmp_path / name, nova, others))
        try:
            for k in names:
                got = _canonical(registry.get(k).read_db(reader, scope))
                assert got == from_api[k], (name, k)
            db_groups = list(registry.get(GROUP).read_db(reader, scope))
            assert _canonical(db_groups) == from_api[GROUP], (name, GROUP)
            db_scope = ExportScope(scope.users, scope.projects, exported={GROUP: db_groups})
            got = _canonical(registry.get(RULES).read_db(reader, db_scope))
            want = from_api[RULES]
            if name.endswith("liberty"):
                want = _without_rule_descriptions(want)
            assert got == want, (name, RULES)
        finally:
            reader.close()
    # A schema stackhop does not know: a one-line error naming table and column.
    reader = DatabaseReader(_config_dir(tmp_path / "unknown", {"database": f"{MARIA}/src_neutron"}))
    try:
        with pytest.raises(SchemaError, match="no table key_pairs"):
            list(kind.read_db(reader, scope))
    finally:
        reader.close()


NETWORKING = ("--networks", "--routers", "--ports", "--floating-ips")


def test_networking_reads_the_same_from_postgresql_as_from_mariadb(
    seeded: object, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """The networking kinds' ``--via db`` on PostgreSQL (reserved words quoted its way)."""
    proc = subprocess.run([sys.executable, "-m", "testbed", "legacy-dbs"], cwd=layout.REPO_DIR,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The seed's projects only: other tests make networks of their own in admin's meanwhile.
    projects = [a for p in ("alpha", "beta", "delta") for a in ("--project", p)]
    records: dict[str, dict[str, list[str]]] = {}
    for name, server in (("mariadb", MARIA), ("postgresql", PG)):
        config = _config_dir(tmp_path / name, {"api_database": f"{server}/src_nova_api"},
                             {"neutron": f"{server}/src_neutron"})
        archive = tmp_path / f"{name}.tar.zst"
        made = cli("export", "--from", "src", "-o", str(archive), "--via", "db",
                   "--db-config-dir", str(config), *projects, *NETWORKING)
        assert made.code == 0, (name, made.err)
        with ArchiveReader(archive) as reader:
            records[name] = {k: _canonical(reader.records(k)) for k in reader.kinds()}
    assert records["postgresql"] == records["mariadb"]
    # Not vacuous: the seed's v4 and v6 subnets, routers with interfaces, ports.
    subnets = [json.loads(s) for s in records["mariadb"]["neutron.subnet"]]
    assert {s["ip_version"] for s in subnets} == {4, 6}
    assert records["mariadb"]["neutron.router_interfaces"]
    assert records["mariadb"]["neutron.port"]
