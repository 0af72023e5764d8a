"""``stackhop clouds [--check]`` against the testbed's real ``src`` and ``dst`` clouds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from testbed import layout

from stackhop import clouds
from stackhop.errors import AuthError, CloudUnknownError

pytestmark = pytest.mark.functional

CLOUDS = pytest.mark.parametrize("cloud", [layout.SRC, layout.DST], ids=lambda c: c.name)


def test_clouds_lists_the_testbed_clouds_without_passwords(testbed, cli) -> None:
    r = cli("clouds", "-f", "json")
    assert r.code == 0, r.err
    rows = {row["Name"]: row for row in r.json()}
    for c in layout.CLOUDS:
        assert rows[c.name]["Auth URL"] == c.keystone_url
        assert rows[c.name]["User"] == "admin"
        assert rows[c.name]["Region"] == layout.REGION
        assert rows[f"{c.name}-demo"]["User"] == "demo"
    for secret in (layout.ADMIN_PASSWORD, layout.DEMO_PASSWORD):
        assert secret not in r.out + r.err


def test_check_src_and_dst_succeeds(testbed, cli) -> None:
    r = cli("clouds", "--check", "src", "dst")
    assert r.code == 0, r.err
    assert r.err == ""
    for name in ("src", "dst"):
        assert f"Cloud {name}" in r.out
    for section in ("Endpoints", "API versions", "What stackhop needs"):
        assert r.out.count(section) == 2
    need = next(line for line in r.out.splitlines() if "compute microversion >= 2.10" in line)
    assert "present" in need


@CLOUDS
def test_check_json_reports_what_stackhop_needs(testbed, cli, cloud) -> None:
    r = cli("clouds", "--check", cloud.name, "-f", "json")
    assert r.code == 0, r.err
    (report,) = r.json()
    assert report["ok"] is True and report["error"] is None
    assert report["auth_url"] == cloud.keystone_url

    services = set(report["services"])
    assert {"identity", "compute", "image", "network"} <= services
    assert services & {"block-storage", "volumev3"}
    local = f"http://{layout.HOST}:"
    assert all(e["url"].startswith(local) for e in report["endpoints"])

    apis = {a["service_type"]: a for a in report["apis"]}
    assert set(clouds.CORE_SERVICES) <= set(apis)
    assert clouds.version_at_least(apis["compute"]["max_microversion"], "2.10")
    assert apis["identity"]["version"].startswith("3.")
    assert apis["image"]["version"].startswith("2.")

    caps = {c["name"]: c for c in report["capabilities"]}
    for name in (
        "compute microversion >= 2.10",
        "image multi-store",
        "image import copy-image",
        "compute os-simple-tenant-usage",
        "admin role",
    ):
        assert caps[name]["present"] is True, caps[name]
    assert report["missing"] == []
    assert {"fast", "slow"} <= set(report["image_stores"])
    assert "copy-image" in report["image_import_methods"]
    assert "admin" in report["roles"]


def test_check_marks_what_a_member_lacks(testbed, cli) -> None:
    r = cli("--log-json", "clouds", "--check", "src-demo", "-f", "yaml")
    assert r.code == 0, r.err
    (report,) = yaml.safe_load(r.out)
    caps = {c["name"]: c for c in report["capabilities"]}
    assert caps["admin role"]["present"] is False
    assert "admin role" in report["missing"]
    assert caps["compute microversion >= 2.10"]["present"] is True
    # Each missing capability is also a warning event, here as JSON lines on stderr.
    events = [json.loads(line) for line in r.err.splitlines()]
    warnings = [e for e in events if e["type"] == "warning" and e["identity"] == "src-demo"]
    assert any(e["message"].startswith("lacks admin role") for e in warnings)
    assert len(warnings) == len(report["missing"])


def test_wrong_password_is_one_line_auth_error(testbed, cli, tmp_path: Path, monkeypatch) -> None:
    config = yaml.safe_load(testbed.clouds_yaml.read_text())
    src = config["clouds"]["src"]
    src["auth"]["password"] = "wrong-password-for-test"
    bad = tmp_path / "clouds.yaml"
    bad.write_text(yaml.safe_dump({"clouds": {"src": src}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(bad))

    r = cli("clouds", "--check", "src")
    assert r.code == AuthError.exit_code
    assert r.err.count("\n") == 1
    assert r.err.startswith("stackhop: cannot authenticate to cloud 'src': ")
    assert "(HTTP 401)" in r.err
    assert "Traceback" not in r.err
    assert "wrong-password-for-test" not in r.out + r.err

    with pytest.raises(AuthError):
        clouds.connect("src")


def test_unknown_cloud_is_one_line(testbed, cli) -> None:
    r = cli("clouds", "--check", "nosuch")
    assert r.code == CloudUnknownError.exit_code
    assert r.err.count("\n") == 1
    assert r.err.startswith("stackhop: cloud 'nosuch' is not configured; known clouds: ")
    for c in layout.CLOUDS:
        assert c.name in r.err


def test_a_sourced_openrc_works(testbed, cli, monkeypatch) -> None:
    """OS_* variables alone (no clouds.yaml) make the ``envvars`` cloud, as for `openstack`."""
    src = yaml.safe_load(testbed.clouds_yaml.read_text())["clouds"]["src"]
    monkeypatch.delenv("OS_CLIENT_CONFIG_FILE")
    for key, value in src["auth"].items():
        monkeypatch.setenv(f"OS_{key.upper()}", str(value))
    monkeypatch.setenv("OS_REGION_NAME", src["region_name"])
    monkeypatch.setenv("OS_IDENTITY_API_VERSION", "3")

    conn = clouds.connect(None)
    try:
        assert conn.config.name == "envvars"
        assert conn.current_project_id
    finally:
        conn.close()

    r = cli("clouds", "--check", "-f", "json")
    assert r.code == 0, r.err
    (report,) = r.json()
    assert report["cloud"] == "envvars"
    assert report["auth_url"] == layout.SRC.keystone_url


def test_os_cloud_selects_the_default_cloud(testbed, monkeypatch) -> None:
    monkeypatch.setenv("OS_CLOUD", "dst")
    conn = clouds.connect(None)
    try:
        assert conn.config.name == "dst"
        assert str(layout.DST.keystone_port) in conn.session.get_endpoint(
            service_type="identity", interface="public"
        )
    finally:
        conn.close()
