"""Endpoint rewriting: only the port of the one URL changes, every other byte stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop.errors import ConfigError, UsageError
from stackhop.sdn import endpoints
from stackhop.sdn.errors import ConfigEditedError


def rewrite(content: bytes, section: str = "MIDONET", key: str = "midonet_uri") -> bytes:
    return endpoints.rewrite_endpoint(content, section, key, 8181, "f")


def test_only_the_port_of_the_key_in_its_section_changes() -> None:
    before = (b"[DEFAULT]\nmidonet_uri = http://a:8080/x\n\r\n[midonet]\r\n"
              b"# midonet_uri = http://comment:8080\r\n"
              b"  midonet_uri\t=  https://h:8080/api?q=1  \r\n"
              b"[z]\nmidonet_uri=http://z:8080")
    after = rewrite(before)
    assert after == before.replace(b"https://h:8080/api?q=1", b"https://h:8181/api?q=1")


def test_url_without_port_and_ipv6_and_userinfo() -> None:
    assert rewrite(b"[MIDONET]\nmidonet_uri=http://h/api") == (
        b"[MIDONET]\nmidonet_uri=http://h:8181/api")
    assert rewrite(b"[MIDONET]\nmidonet_uri=http://[::1]:8080/a") == (
        b"[MIDONET]\nmidonet_uri=http://[::1]:8181/a")
    assert rewrite(b"[MIDONET]\nmidonet_uri=http://u:p@h:1/a") == (
        b"[MIDONET]\nmidonet_uri=http://u:p@h:8181/a")


def test_colon_separator_of_midonetrc() -> None:
    assert rewrite(b"[cli]\napi_url: http://localhost:8080/midonet-api\n", "cli", "api_url") == (
        b"[cli]\napi_url: http://localhost:8181/midonet-api\n")


def test_missing_key_or_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"no \[MIDONET\] midonet_uri"):
        rewrite(b"[other]\nmidonet_uri=http://h:1/\n")
    with pytest.raises(ConfigError, match="not an http"):
        rewrite(b"[MIDONET]\nmidonet_uri=not-a-url\n")


def test_switch_then_revert_round_trip_and_refusals(tmp_path: Path) -> None:
    (tmp_path / "etc/neutron").mkdir(parents=True)
    plugin = tmp_path / "etc/neutron/plugin.ini"
    original = b"[MIDONET]\nmidonet_uri = http://h:8080/midonet-api\nx=1"
    plugin.write_bytes(original)
    manifest = endpoints.plan_switch(tmp_path, 8181)
    assert list(manifest["files"]) == ["etc/neutron/plugin.ini"]
    assert plugin.read_bytes() == original, "planning writes nothing"
    endpoints.save_backups(tmp_path, manifest)
    entry = manifest["files"]["etc/neutron/plugin.ini"]
    assert endpoints.switch_file(tmp_path, "etc/neutron/plugin.ini", entry, 8181) == "switched"
    assert endpoints.switch_file(tmp_path, "etc/neutron/plugin.ini", entry, 8181) == (
        "already switched")
    with pytest.raises(UsageError, match="already switched to port 8181"):
        endpoints.plan_switch(tmp_path, 9999)
    plugin.write_bytes(b"edited")
    with pytest.raises(ConfigEditedError):
        endpoints.revert_file(tmp_path, "etc/neutron/plugin.ini", entry, force=False)
    assert endpoints.revert_file(tmp_path, "etc/neutron/plugin.ini", entry, force=True) == (
        "reverted")
    assert plugin.read_bytes() == original
    assert endpoints.reverted_correctly(tmp_path, manifest) == []
    endpoints.drop_backups(tmp_path)
    assert endpoints.read_manifest(tmp_path) is None


def test_config_root_without_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no etc/neutron/plugin.ini or .midonetrc"):
        endpoints.plan_switch(tmp_path, 8181)
    with pytest.raises(UsageError, match="not a TCP port"):
        endpoints.plan_switch(tmp_path, 70000)
