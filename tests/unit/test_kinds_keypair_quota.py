"""Keypair and quota records, selectors, and the database config reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop import kinds as registry
from stackhop.dbexport import connection_url
from stackhop.errors import ConfigError, UsageError
from stackhop.kinds import get
from stackhop.kinds.keypair import keypair_record
from stackhop.kinds.quota import explicit, quota_record
from stackhop.resources import RecordSet, check_selection, selected_kinds

USER = {"id": "u1", "name": "lina", "domain_name": "ldap"}


def test_keypair_record_and_identity() -> None:
    record = keypair_record(USER, "laptop", "ssh", "ssh-ed25519 AAAA lina\n", fingerprint=None)
    assert record["public_key"] == "ssh-ed25519 AAAA lina" and "fingerprint" not in record
    kind = get("nova.keypair")
    assert kind.identity(record) == "ldap/lina/laptop" and kind.source_id(record) == "u1/laptop"
    assert kind.compare(record, {**record, "public_key": "ssh-ed25519 AAAA lina\n"}) == []
    assert [d.field for d in kind.compare(record, {**record, "public_key": "other"})] == [
        "public_key"
    ]
    assert kind.on_difference([], overwrite=False) == "conflict"


def test_quota_keeps_only_explicit_limits() -> None:
    values = {"id": "p", "instances": 20, "cores": 20, "ram": 1, "flag": True}
    assert explicit(values, {"instances": 10, "cores": 20, "ram": 2}) == {"instances": 20, "ram": 1}
    record = quota_record({"id": "p", "name": "alpha", "domain_name": "Default"}, {"ram": 1})
    kind = get("nova.quota")
    assert kind.identity(record) == "Default/alpha"
    assert kind.on_difference([], overwrite=False) == "update"  # quotas follow the source


def test_selectors() -> None:
    every = [registry.selector_dest(flag) for flag in registry.selectors()]
    # No selector: every kind but the opt-in ones (Keystone's, ``--identity``).
    assert selected_kinds([]) == [k for k in selected_kinds(every) if get(k).default_selected]
    assert selected_kinds([], archive=True) == selected_kinds(every)
    assert sorted(selected_kinds(["quotas"])) == ["cinder.quota", "neutron.quota", "nova.quota"]
    records = RecordSet()
    records.add_kind("nova.keypair")
    assert check_selection(records, selected_kinds([]), explicit=False) == ["nova.keypair"]
    with pytest.raises(UsageError, match="neutron.security_group"):
        check_selection(records, selected_kinds(["security_groups"]), explicit=True)


def test_connection_url_from_config(tmp_path: Path) -> None:
    (tmp_path / "nova").mkdir()
    (tmp_path / "nova" / "nova.conf").write_text(
        "[DEFAULT]\ndebug = true\n[api_database]\nconnection = mysql+pymysql://u:p@h/nova_api\n"
    )
    url, path = connection_url(tmp_path, "nova_api")
    assert url == "mysql+pymysql://u:p@h/nova_api" and path.name == "nova.conf"
    with pytest.raises(ConfigError, match="neutron.conf"):
        connection_url(tmp_path, "neutron")
    (tmp_path / "cinder").mkdir()
    (tmp_path / "cinder" / "cinder.conf").write_text("[database]\n")
    with pytest.raises(ConfigError, match=r"no \[database\] connection"):
        connection_url(tmp_path, "cinder")
