"""Pure parts of prepare: database naming, settings text, controller objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop.errors import ConfigError, UsageError
from stackhop.sdn import neutron_db, topology
from stackhop.sdn.prepare import controller_objects, settings_text
from stackhop.sdn.zookeeper import Node, normalise_root

NET = "11111111-2222-3333-4444-555555555555"
OTHER = "99999999-2222-3333-4444-555555555555"


def test_database_from_neutron_conf(tmp_path: Path) -> None:
    conf = tmp_path / "neutron.conf"
    conf.write_text("[database]\nconnection = mysql+pymysql://neutron:s%40cret@db:3307/neutron\n")
    db = neutron_db.from_neutron_conf(conf)
    assert db.key() == "db:3307/neutron" and db.user == "neutron"
    assert "s@cret" not in db.describe()
    text = settings_text(db)
    assert 'cluster.neutron_importer.connection_string : "jdbc:mysql://db:3307/neutron"' in text
    assert 'cluster.neutron_importer.password : "s@cret"' in text


def test_bad_database_inputs() -> None:
    with pytest.raises(UsageError, match="exactly one"):
        neutron_db.resolve(None, None)
    with pytest.raises(UsageError, match="not supported"):
        neutron_db.from_url("sqlite:///x.db")
    with pytest.raises(ConfigError, match="no neutron.conf"):
        neutron_db.from_neutron_conf("/nonexistent/neutron.conf")


def test_controller_objects_are_those_neutron_does_not_own() -> None:
    acl = ((31, "world", "anyone"),)
    tree = {p: Node(p, b"", acl) for p in (
        "/m", "/m/bridges", f"/m/bridges/{NET}", f"/m/bridges/{NET}/ports",
        f"/m/bridges/{OTHER}", f"/m/bridges/{OTHER}/ports", "/m/bridges/not-a-uuid",
        "/m/config", f"/m/config/x/{OTHER}",
    )}
    found = controller_objects(tree, "/m", {NET})
    assert list(found) == [f"bridges/{OTHER}"]
    assert [n.path for n in found[f"bridges/{OTHER}"]] == [
        f"/m/bridges/{OTHER}", f"/m/bridges/{OTHER}/ports"]


def test_data_types_order_and_root() -> None:
    order = topology.DATA_TYPES
    assert order.index("SECURITYGROUP") < order.index("SECURITYGROUPRULE")
    assert order.index("NETWORK") < order.index("SUBNET") < order.index("PORT")
    assert order.index("ROUTER") < order.index("PORT") < order.index("FLOATINGIP")
    assert "ROUTERINTERFACE" not in order  # carried by the interface's PORT task
    assert normalise_root("/midonet/") == "/midonet"
    with pytest.raises(UsageError):
        normalise_root("midonet")


def test_zookeeper_address_from_the_midonet_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stackhop.sdn import zk_address

    conf, rc = tmp_path / "midonet.conf", tmp_path / ".midonetrc"
    monkeypatch.setenv(zk_address.CONF_ENV, str(conf))
    monkeypatch.setenv(zk_address.RC_ENV, str(rc))
    assert zk_address.resolve("10.0.0.1:2181") == "10.0.0.1:2181"
    with pytest.raises(ConfigError) as absent:
        zk_address.resolve(None)
    assert f"{conf} (absent)" in absent.value.message and "--zk" in absent.value.message
    conf.write_text("[zookeeper]\nroot_key = /midonet\n")
    with pytest.raises(ConfigError) as lacking:
        zk_address.resolve(None)
    line = lacking.value.message
    assert f"{conf} (no [zookeeper] zookeeper_hosts)" in line and "\n" not in line
    rc.write_text("[zookeeper]\nzookeeper_hosts = 192.0.2.7:2181\n")
    assert zk_address.resolve(None) == "192.0.2.7:2181"
    conf.write_text("[zookeeper]\nzookeeper_hosts = 127.0.0.1:2181,127.0.0.2:2181\n")
    assert zk_address.resolve(None) == "127.0.0.1:2181,127.0.0.2:2181"


def test_zookeeper_root_from_root_key_of_the_midonet_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stackhop.sdn import zk_address

    conf, rc = tmp_path / "midonet.conf", tmp_path / ".midonetrc"
    monkeypatch.setenv(zk_address.CONF_ENV, str(conf))
    monkeypatch.setenv(zk_address.RC_ENV, str(rc))
    assert zk_address.resolve_root(None) == "/midonet"
    rc.write_text("[zookeeper]\nroot_key = /midonet/v2\n")
    assert zk_address.resolve_root(None) == "/midonet/v2"
    conf.write_text("[zookeeper]\nzookeeper_hosts = 127.0.0.1:2181\nroot_key = /midonet/v1\n")
    assert zk_address.resolve_root(None) == "/midonet/v1"
    assert zk_address.resolve_root("/other") == "/other"


def test_the_normal_mode_settings_turn_the_importer_off() -> None:
    from stackhop.sdn.prepare import normal_settings_text

    lines = [ln for ln in normal_settings_text().splitlines() if not ln.startswith("#")]
    assert lines == ["cluster.neutron_importer.enabled : false"]
