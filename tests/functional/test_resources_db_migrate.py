"""``export --via db`` against src's MariaDB databases, and ``migrate`` in one go."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testbed import layout

from stackhop.archive import ArchiveReader

pytestmark = pytest.mark.functional

SEED_PROJECTS = [a for p in ("alpha", "beta", "gamma", "delta") for a in ("--project", p)]


def src_config_dir() -> Path:
    """The directory holding src's nova/, neutron/ and cinder/ config files."""
    return layout.SRC.etc


def _records(path: Path) -> dict[str, list[dict[str, Any]]]:
    with ArchiveReader(path) as reader:
        return {
            kind: sorted(reader.records(kind), key=lambda r: str(r["id"]))
            for kind in reader.kinds()
        }


def test_api_and_db_exports_hold_the_same_records(
    seeded: Any, cli: Callable[..., Any], tmp_path: Path
) -> None:
    api, db = tmp_path / "api.tar.zst", tmp_path / "db.tar.zst"
    assert cli("export", "--from", "src", "-o", str(api), *SEED_PROJECTS).code == 0
    result = cli(
        "export",
        "--from",
        "src",
        "-o",
        str(db),
        "--via",
        "db",
        "--db-config-dir",
        str(src_config_dir()),
        *SEED_PROJECTS,
    )
    assert result.code == 0, result.err
    from_api, from_db = _records(api), _records(db)
    assert from_api.keys() == from_db.keys()
    for kind in from_api:
        assert from_api[kind] == from_db[kind], kind
    assert len(from_db["nova.keypair"]) >= 13 and len(from_db["neutron.security_group"]) >= 7
    # The archive never holds the database password it read from nova.conf.
    assert b"openstackpw" not in db.read_bytes()


def test_db_export_errors_are_one_line(
    seeded: Any, cli: Callable[..., Any], tmp_path: Path
) -> None:
    missing = cli(
        "export",
        "--from",
        "src",
        "-o",
        str(tmp_path / "a"),
        "--via",
        "db",
        "--db-config-dir",
        str(tmp_path),
    )
    # The first kind read names its service's file (kinds are read in dependency order).
    assert missing.code == 3 and missing.err.count("\n") == 1
    assert any(f"{s}.conf" in missing.err for s in ("nova", "neutron", "cinder"))
    for service in ("nova", "neutron", "cinder"):
        (tmp_path / service).mkdir()
    (tmp_path / "nova" / "nova.conf").write_text(
        "[api_database]\nconnection = mysql+pymysql://openstack:pw@127.0.0.1:1/nova_api\n"
    )
    unreachable = cli(
        "export",
        "--from",
        "src",
        "-o",
        str(tmp_path / "b"),
        "--via",
        "db",
        "--db-config-dir",
        str(tmp_path),
        "--keypairs",
    )
    assert unreachable.code == 3 and unreachable.err.count("\n") == 1
    assert "nova_api" in unreachable.err and "pw@" not in unreachable.err
    assert not (tmp_path / "b").exists()


def test_migrate_moves_and_verifies_in_one_go(
    seeded: Any, cli: Callable[..., Any], tmp_path: Path
) -> None:
    journal = str(tmp_path / "journal.sqlite")
    result = cli(
        "--journal",
        journal,
        "migrate",
        "--from",
        "src",
        "--to",
        "dst",
        "--project",
        "beta",
        "--security-groups",
        "--quotas",
        "-f",
        "json",
    )
    try:
        assert result.code == 0, result.err
        document = result.json()
        assert document["verify"]["mismatches"] == [] and document["verify"]["checked"] > 0
        assert document["run"]["outcome"] == "succeeded"
        assert sum(c["done"] for c in document["run"]["counts"].values()) > 0
    finally:
        from stackhop.journal import Journal

        with Journal(journal) as j:
            runs = [a for r in j.runs() for a in ("--run", r.id)]
        assert cli("--journal", journal, "rollback", "--to", "dst", *runs).code == 0
    again = cli("verify", "--to", "dst", str(tmp_path / "none"))
    assert again.code == 7  # no such archive: one line, archive error
