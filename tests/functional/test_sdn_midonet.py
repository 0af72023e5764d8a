"""``stackhop sdn midonet``: against the real ZooKeeper, MariaDB and the src cloud's Neutron.

The topology is created in the src Neutron through its API (names
``sdnt-<hex>-*``, removed after); each test snapshots Neutron's topology
tables into its own database and works under its own ZooKeeper path.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest
from tests.functional.test_sdn_support import (
    ZK,
    NeutronTopology,
    copy_database,
    create_topology,
    delete_topology,
    execute,
    mutate_tree,
    rows,
    seed_legacy_tree,
    zk_client,
)

from stackhop.sdn import backup_file, tasks, topology, zookeeper

pytestmark = pytest.mark.functional

Cli = Callable[..., Any]  # the `cli` fixture of conftest.py
CliResult = Any

PLUGIN_INI = (
    b"# MidoNet plugin\r\n[DEFAULT]\nverbose=True\n\n[MIDONET]\n"
    b"# the API of the cluster\nmidonet_uri =  http://192.0.2.10:8080/midonet-api  \n"
    b"username = admin\npassword = secret\n[other]\nmidonet_uri = http://keep:8080/x"
)
MIDONETRC = b"[cli]\napi_url: http://localhost:8080/midonet-api\nusername=admin\n"


@pytest.fixture(autouse=True)
def no_home_midonetrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch also rewrites the operator's ~/.midonetrc: never the real one in tests."""
    monkeypatch.setenv("STACKHOP_MIDONETRC", str(tmp_path / "no-home-midonetrc"))


@pytest.fixture(scope="module")
def neutron_topology(testbed: Any) -> Iterator[NeutronTopology]:
    prefix = f"sdnt-{uuid.uuid4().hex[:8]}"
    conn = openstack.connect(cloud=testbed.source)
    try:
        yield create_topology(conn, prefix)
    finally:
        delete_topology(conn, prefix)
        conn.close()


@pytest.fixture
def neutron_db(neutron_topology: NeutronTopology) -> Iterator[str]:
    with copy_database() as url:
        yield url


@pytest.fixture
def zk_root() -> Iterator[str]:
    top = f"/stackhop-test-{uuid.uuid4().hex[:10]}"
    try:
        yield f"{top}/midonet"
    finally:
        with zk_client() as client:
            client.delete(top, recursive=True)


@pytest.fixture
def config_root(tmp_path: Path) -> Path:
    root = tmp_path / "config"
    (root / "etc/neutron").mkdir(parents=True)
    (root / "etc/neutron/plugin.ini").write_bytes(PLUGIN_INI)
    (root / "etc/neutron/plugin.ini").chmod(0o640)
    (root / ".midonetrc").write_bytes(MIDONETRC)
    return root


def neutron_conf(tmp_path: Path, url: str) -> Path:
    conf = tmp_path / "neutron.conf"
    conf.write_text(f"[DEFAULT]\ncore_plugin = ml2\n\n[database]\nconnection = {url}\n")
    return conf


def sdn(cli: Cli, journal: Path, *args: str) -> CliResult:
    """``stackhop --journal J [--log-json] sdn midonet ARGS`` (global flags go first)."""
    flags = [a for a in args if a == "--log-json"]
    rest = [a for a in args if a != "--log-json"]
    return cli("--journal", str(journal), *flags, "sdn", "midonet", *rest)


def one_line_error(result: CliResult, code: int) -> str:
    assert result.code == code, (result.code, result.out, result.err)
    lines = [ln for ln in result.err.splitlines() if ln.startswith("stackhop: ")]
    assert len(lines) == 1, result.err
    return lines[0]


def task_rows(url: str) -> list[Any]:
    return rows(
        url,
        "SELECT id, data_type, resource_id, data, type, transaction_id, project_id "
        "FROM midonet_tasks ORDER BY id",
    )


def neutron_counts(url: str) -> dict[str, int]:
    counts = {
        "SECURITYGROUP": "securitygroups",
        "NETWORK": "networks",
        "SUBNET": "subnets",
        "ROUTER": "routers",
        "PORT": "ports",
        "FLOATINGIP": "floatingips",
    }
    out = {k: rows(url, f"SELECT COUNT(*) FROM {t}")[0][0] for k, t in counts.items()}
    # Rules referring to another group are tasks of their own; the others ride in their group.
    out["SECURITYGROUPRULE"] = rows(
        url, "SELECT COUNT(*) FROM securitygrouprules "
        "WHERE remote_group_id IS NOT NULL AND remote_group_id <> security_group_id")[0][0]
    return {k: v for k, v in out.items() if v}


def references(data: dict[str, Any]) -> set[str]:
    keys = ("network_id", "security_group_id", "remote_group_id", "router_id", "port_id",
            "floating_network_id")
    refs = {data[k] for k in keys if data.get(k)}
    refs |= {f["subnet_id"] for f in data.get("fixed_ips", [])}
    refs |= set(data.get("security_groups", []))
    gateway = data.get("external_gateway_info") or {}
    if gateway.get("network_id"):
        refs.add(gateway["network_id"])
    if data.get("device_owner", "").startswith("network:router"):
        refs.add(data["device_id"])
    return refs


def assert_one_task_per_object_in_order(url: str, topo: NeutronTopology) -> list[Any]:
    found = task_rows(url)
    assert all(r.type == "CREATE" for r in found)
    # One importer transaction per object, as the plugin wrote one per API request.
    assert len({r.transaction_id for r in found}) == len(found)
    per_type: dict[str, list[str]] = {}
    for r in found:
        per_type.setdefault(r.data_type, []).append(r.resource_id)
    expected = neutron_counts(url)
    assert {k: len(v) for k, v in per_type.items()} == expected
    for ids in per_type.values():
        assert len(ids) == len(set(ids)), "an object was queued twice"
    queued = {r.resource_id for r in found}
    for r in found:
        if r.data_type == "SECURITYGROUP":
            queued |= {rule["id"] for rule in json.loads(r.data)["security_group_rules"]}
    assert topo.all_ids() <= queued, topo.all_ids() - queued
    # Dependency order: every reference to a queued object points to a lower task ID.
    first_task = {}
    for r in found:
        first_task.setdefault(r.resource_id, r.id)
    for r in found:
        for ref in references(json.loads(r.data)) - {r.resource_id}:
            if ref in first_task:
                assert first_task[ref] < r.id, (r.data_type, r.resource_id, ref)
    order = [topology.DATA_TYPES.index(r.data_type) for r in found]
    assert order == sorted(order)
    return found


def test_prepare_queues_one_create_task_per_object_in_dependency_order_once(
    cli: Cli, tmp_path: Path, neutron_db: str, neutron_topology: NeutronTopology, zk_root: str
) -> None:
    with zk_client() as client:
        extra = seed_legacy_tree(client, zk_root, neutron_topology)
    journal, data_dir = tmp_path / "journal.sqlite", tmp_path / "data"
    conf = neutron_conf(tmp_path, neutron_db)
    args = ("prepare", "--neutron-conf", str(conf), "--data-dir", str(data_dir),
            "--zk", ZK, "--root", zk_root, "-f", "json")

    first = sdn(cli, journal, *args)
    assert first.code == 0, first.err
    found = assert_one_task_per_object_in_order(neutron_db, neutron_topology)
    assert first.json()["task_table"] == "string generation, project_id"

    settings = data_dir / "mn-conf.settings"
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    text = settings.read_text()
    assert "cluster.neutron_importer.enabled : true" in text
    assert f'"jdbc:mysql://127.0.0.1:33306/{neutron_db.rsplit("/", 1)[1]}"' in text
    assert 'cluster.neutron_importer.user : "openstack"' in text
    assert 'cluster.neutron_importer.password : "openstackpw"' in text
    exported = {p.relative_to(data_dir / "controller-objects").with_suffix("").as_posix()
                for p in (data_dir / "controller-objects").rglob("*.json")}
    assert exported == {f"{k}/{v}" for k, v in extra.items()}
    provider = json.loads((data_dir / f"controller-objects/routers/{extra['routers']}.json")
                          .read_text())
    assert [n["path"].rsplit("/", 1)[1] for n in provider["nodes"]] == [
        extra["routers"], "routes", "r1"]

    again = sdn(cli, journal, *args)
    assert again.code == 0, again.err
    assert set(again.json()["queued"].values()) == {"0 queued"}
    assert [r.id for r in task_rows(neutron_db)] == [r.id for r in found]


def test_prepare_failing_mid_way_resumes_without_duplicates(
    cli: Cli, tmp_path: Path, neutron_db: str, neutron_topology: NeutronTopology
) -> None:
    journal, data_dir = tmp_path / "journal.sqlite", tmp_path / "data"
    engine_url = neutron_db
    with_tables(engine_url)
    execute(engine_url, FAIL_ON_PORTS)
    args = ("prepare", "--neutron-db", neutron_db, "--data-dir", str(data_dir))

    failed = sdn(cli, journal, *args)
    line = one_line_error(failed, 3)
    assert "queueing PORT tasks failed" in line and "injected" in line
    types = {r.data_type for r in task_rows(neutron_db)}
    assert types == {"SECURITYGROUP", "SECURITYGROUPRULE", "NETWORK", "SUBNET", "ROUTER"}
    assert not (data_dir / "mn-conf.settings").exists()

    execute(engine_url, "DROP TRIGGER sdn_fail_ports")
    resumed = sdn(cli, journal, "--log-json", *args)
    assert resumed.code == 0, resumed.err
    events = [json.loads(ln) for ln in resumed.err.splitlines() if ln.startswith("{")]
    skipped = {e["identity"] for e in events if e.get("outcome") == "skipped"}
    assert {"queue SECURITYGROUP", "queue ROUTER"} <= skipped
    assert "queue PORT" not in skipped
    assert_one_task_per_object_in_order(neutron_db, neutron_topology)


FAIL_ON_PORTS = (
    "CREATE TRIGGER sdn_fail_ports BEFORE INSERT ON midonet_tasks FOR EACH ROW "
    "IF NEW.data_type = 'PORT' THEN "
    "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure on ports'; END IF"
)
FAIL_ON_DELETE = (
    "CREATE TRIGGER sdn_fail_delete BEFORE DELETE ON midonet_tasks FOR EACH ROW "
    "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure on delete'"
)


def with_tables(url: str, last_processed: int = 0) -> None:
    """The data state as a running cluster leaves it (the tables come with the copy)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(tasks.data_state.update().values(
                last_processed_task_id=last_processed or None, readonly=False))
    finally:
        engine.dispose()


def tree(root: str) -> dict[str, zookeeper.Node]:
    with zk_client() as client:
        return zookeeper.read_tree(client, root)


def test_failure_mid_way_then_rollback_restores_everything(
    cli: Cli, tmp_path: Path, neutron_db: str, neutron_topology: NeutronTopology,
    zk_root: str, config_root: Path,
) -> None:
    journal, data_dir, backup = tmp_path / "j.sqlite", tmp_path / "data", tmp_path / "zk.backup"
    with zk_client() as client:
        seed_legacy_tree(client, zk_root, neutron_topology)
    with_tables(neutron_db)
    state_before = rows(neutron_db, "SELECT * FROM midonet_data_state")
    plugin_before = (config_root / "etc/neutron/plugin.ini").read_bytes()

    made = sdn(cli, journal, "backup", "--zk", ZK, "--root", zk_root, "-o", str(backup),
               "--neutron-db", neutron_db, "-f", "json")
    assert made.code == 0, made.err
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    tree_before = tree(zk_root)
    assert backup_file.read(backup).nodes == tree_before
    assert sdn(cli, journal, "switch-endpoints", "--config-root", str(config_root)).code == 0
    assert (config_root / "etc/neutron/plugin.ini").read_bytes() != plugin_before

    execute(neutron_db, FAIL_ON_PORTS)
    failed = sdn(cli, journal, "prepare", "--neutron-db", neutron_db, "--data-dir", str(data_dir))
    one_line_error(failed, 3)
    # The importer ran on what was queued: the tree and the state moved on.
    highest = max(r.id for r in task_rows(neutron_db))
    with zk_client() as client:
        mutate_tree(client, zk_root, neutron_topology)
    execute(neutron_db, f"UPDATE midonet_data_state SET last_processed_task_id = {highest}, "
                        "readonly = 1")
    assert zookeeper.differences(tree_before, tree(zk_root))

    done = sdn(cli, journal, "rollback", "--zk", ZK, "--backup", str(backup),
               "--neutron-db", neutron_db, "--config-root", str(config_root), "-f", "json")
    assert done.code == 0, done.err
    assert done.json()["verified"] is True
    after = tree(zk_root)
    assert zookeeper.persistent(after) == zookeeper.persistent(tree_before)
    assert task_rows(neutron_db) == []
    assert rows(neutron_db, "SELECT * FROM midonet_data_state") == state_before
    assert (config_root / "etc/neutron/plugin.ini").read_bytes() == plugin_before
    assert (config_root / ".midonetrc").read_bytes() == MIDONETRC
    assert not (config_root / ".stackhop-sdn/endpoints").exists()

    # The sequence was not reset: the next task, whoever writes it, gets a new ID.
    execute(neutron_db, "DROP TRIGGER sdn_fail_ports",
            "INSERT INTO midonet_tasks (type, data_type, data, resource_id, "
            "transaction_id, created_at) VALUES ('CREATE', 'NETWORK', '{}', 'x', 'neutron', "
            "NOW())")
    assert rows(neutron_db, "SELECT MAX(id) FROM midonet_tasks")[0][0] > highest

    # The rolled-back prepare starts over: everything queued once, above the old IDs.
    execute(neutron_db, "DELETE FROM midonet_tasks")
    again = sdn(cli, journal, "prepare", "--neutron-db", neutron_db, "--data-dir", str(data_dir))
    assert again.code == 0, again.err
    found = assert_one_task_per_object_in_order(neutron_db, neutron_topology)
    assert min(r.id for r in found) > highest + 1


def test_rollback_failing_mid_way_resumes_and_checks(
    cli: Cli, tmp_path: Path, neutron_db: str, neutron_topology: NeutronTopology, zk_root: str
) -> None:
    journal, backup = tmp_path / "j.sqlite", tmp_path / "zk.backup"
    with zk_client() as client:
        seed_legacy_tree(client, zk_root, neutron_topology)
    assert sdn(cli, journal, "prepare", "--neutron-db", neutron_db,
               "--data-dir", str(tmp_path / "d")).code == 0
    assert sdn(cli, journal, "backup", "--zk", ZK, "--root", zk_root, "-o", str(backup),
               "--neutron-db", neutron_db).code == 0
    tree_before = tree(zk_root)
    with zk_client() as client:
        mutate_tree(client, zk_root, neutron_topology)
    execute(neutron_db, FAIL_ON_DELETE)
    args = ("rollback", "--zk", ZK, "--backup", str(backup), "--neutron-db", neutron_db)

    failed = sdn(cli, journal, *args)
    assert "injected failure on delete" in one_line_error(failed, 3)
    assert zookeeper.persistent(tree(zk_root)) == zookeeper.persistent(tree_before)
    assert task_rows(neutron_db), "the failed delete must have left the tasks"

    execute(neutron_db, "DROP TRIGGER sdn_fail_delete")
    resumed = sdn(cli, journal, "--log-json", *args, "-f", "json")
    assert resumed.code == 0, resumed.err
    events = [json.loads(ln) for ln in resumed.err.splitlines() if ln.startswith("{")]
    outcomes = {e["identity"]: e.get("outcome") for e in events if "identity" in e}
    assert outcomes["restore zookeeper"] == "skipped"
    assert outcomes["remove queued tasks"] == "done"
    assert outcomes["verify"] == "done"
    assert task_rows(neutron_db) == []


def test_backup_refuses_overwrite_and_errors_change_nothing(
    cli: Cli, tmp_path: Path, neutron_db: str, neutron_topology: NeutronTopology,
    zk_root: str, config_root: Path,
) -> None:
    journal, backup = tmp_path / "j.sqlite", tmp_path / "zk.backup"
    with zk_client() as client:
        seed_legacy_tree(client, zk_root, neutron_topology)
    assert sdn(cli, journal, "prepare", "--neutron-db", neutron_db,
               "--data-dir", str(tmp_path / "d")).code == 0
    backup_args = ("backup", "--zk", ZK, "--root", zk_root, "-o", str(backup))
    assert sdn(cli, journal, *backup_args).code == 0
    original = backup.read_bytes()
    assert "--force" in one_line_error(sdn(cli, journal, *backup_args), 3)
    assert backup.read_bytes() == original
    assert sdn(cli, journal, *backup_args, "--force").code == 0

    switch = ("switch-endpoints", "--config-root", str(config_root), "--backup")
    assert "no backup file" in one_line_error(sdn(cli, journal, *switch, str(tmp_path / "no")), 3)
    assert (config_root / "etc/neutron/plugin.ini").read_bytes() == PLUGIN_INI
    assert sdn(cli, journal, *switch, str(backup)).code == 0
    switched = (config_root / "etc/neutron/plugin.ini").read_bytes()
    with zk_client() as client:
        mutate_tree(client, zk_root, neutron_topology)
    tasks_before = task_rows(neutron_db)
    tree_before = tree(zk_root)

    def unchanged() -> None:
        assert task_rows(neutron_db) == tasks_before
        assert tree(zk_root) == tree_before
        assert (config_root / "etc/neutron/plugin.ini").read_bytes() == switched

    rollback = ("rollback", "--neutron-db", neutron_db, "--config-root", str(config_root))
    # ZooKeeper does not answer (nothing listens on that loopback port).
    line = one_line_error(sdn(cli, journal, *rollback, "--zk", "127.0.0.1:1",
                              "--backup", str(backup)), 5)
    assert "cannot reach ZooKeeper at 127.0.0.1:1" in line
    unchanged()
    line = one_line_error(sdn(cli, journal, "backup", "--zk", "127.0.0.1:1", "--root", zk_root,
                              "-o", str(tmp_path / "other.backup")), 5)
    assert not (tmp_path / "other.backup").exists()
    # A missing backup file.
    line = one_line_error(sdn(cli, journal, *rollback, "--zk", ZK,
                              "--backup", str(tmp_path / "nope")), 3)
    assert "no backup file" in line
    unchanged()
    # A tampered backup: one byte of one node's data changed, checksum left as is.
    tampered = tmp_path / "tampered.backup"
    raw = bytearray(backup.read_bytes())
    raw[raw.index(b'"data": "') + 9] ^= 0x01
    tampered.write_bytes(bytes(raw))
    line = one_line_error(sdn(cli, journal, *rollback, "--zk", ZK, "--backup", str(tampered)), 8)
    assert "damaged or was modified" in line
    one_line_error(sdn(cli, journal, "switch-endpoints", "--config-root", str(tmp_path / "c2"),
                       "--backup", str(tampered)), 8)
    # Truncated.
    tampered.write_bytes(original[: len(original) // 2])
    assert "truncated" in one_line_error(
        sdn(cli, journal, *rollback, "--zk", ZK, "--backup", str(tampered)), 8)
    unchanged()
    # Bad input.
    assert "HOST:PORT" in one_line_error(
        sdn(cli, journal, *rollback, "--zk", "nohost", "--backup", str(backup)), 2)
    assert "absolute" in one_line_error(
        sdn(cli, journal, "backup", "--zk", ZK, "--root", "rel", "-o", str(tmp_path / "x")), 2)
    assert "no neutron.conf" in one_line_error(
        sdn(cli, journal, "rollback", "--zk", ZK, "--backup", str(backup),
            "--neutron-conf", str(tmp_path / "absent.conf")), 3)
    assert "not a directory" in one_line_error(
        sdn(cli, journal, "prepare", "--neutron-db", neutron_db, "--data-dir", str(backup)), 3)
    assert "not supported" in one_line_error(
        sdn(cli, journal, "prepare", "--neutron-db", "sqlite:///x", "--data-dir", "d"), 2)
    unchanged()


@pytest.fixture
def limited_user(neutron_db: str) -> Iterator[tuple[str, str]]:
    """Two users of the copy DB: one may only SELECT, the other has no privilege there."""
    name = neutron_db.rsplit("/", 1)[1]
    prefix = neutron_db.rsplit("/", 1)[0]
    reader, nobody = f"sdnr{uuid.uuid4().hex[:8]}", f"sdnn{uuid.uuid4().hex[:8]}"
    execute(prefix + "/", f"CREATE USER '{reader}'@'%' IDENTIFIED BY 'pw'",
            f"GRANT SELECT ON `{name}`.* TO '{reader}'@'%'",
            f"CREATE USER '{nobody}'@'%' IDENTIFIED BY 'pw'")
    host = prefix.split("@", 1)[1]
    try:
        yield (f"mysql+pymysql://{reader}:pw@{host}/{name}",
               f"mysql+pymysql://{nobody}:pw@{host}/{name}")
    finally:
        execute(prefix + "/", f"DROP USER IF EXISTS '{reader}'@'%'",
                f"DROP USER IF EXISTS '{nobody}'@'%'")


def test_database_without_permissions_is_a_clear_error_and_changes_nothing(
    cli: Cli, tmp_path: Path, neutron_db: str, limited_user: tuple[str, str], zk_root: str,
    neutron_topology: NeutronTopology,
) -> None:
    reader, nobody = limited_user
    journal = tmp_path / "j.sqlite"
    line = one_line_error(sdn(cli, journal, "prepare", "--neutron-db", reader,
                              "--data-dir", str(tmp_path / "d")), 4)
    assert "lacks" in line and "INSERT on midonet_tasks" in line and "nothing was changed" in line
    assert rows(neutron_db, "SELECT COUNT(*) FROM midonet_tasks")[0][0] == 0
    assert not (tmp_path / "d").exists()
    line = one_line_error(sdn(cli, journal, "prepare", "--neutron-db", nobody,
                              "--data-dir", str(tmp_path / "d")), 4)
    assert "lacks access" in line and "pw" not in line.replace("lacks", "")

    # Rollback with a read-only user: refused before ZooKeeper or the tasks are touched.
    backup = tmp_path / "zk.backup"
    with zk_client() as client:
        seed_legacy_tree(client, zk_root, neutron_topology)
    assert sdn(cli, journal, "prepare", "--neutron-db", neutron_db,
               "--data-dir", str(tmp_path / "d")).code == 0
    assert sdn(cli, journal, "backup", "--zk", ZK, "--root", zk_root,
               "-o", str(backup)).code == 0
    with zk_client() as client:
        mutate_tree(client, zk_root, neutron_topology)
    tree_before, tasks_before = tree(zk_root), task_rows(neutron_db)
    line = one_line_error(sdn(cli, journal, "rollback", "--zk", ZK, "--backup", str(backup),
                              "--neutron-db", reader), 4)
    assert "DELETE on midonet_tasks" in line
    assert tree(zk_root) == tree_before and task_rows(neutron_db) == tasks_before


def test_switch_endpoints_and_revert_are_byte_exact(
    cli: Cli, tmp_path: Path, config_root: Path
) -> None:
    journal = tmp_path / "j.sqlite"
    plugin = config_root / "etc/neutron/plugin.ini"
    switched = sdn(cli, journal, "switch-endpoints", "--config-root", str(config_root),
                   "--port", "8181", "-f", "json")
    assert switched.code == 0, switched.err
    assert plugin.read_bytes() == PLUGIN_INI.replace(
        b"http://192.0.2.10:8080/midonet-api", b"http://192.0.2.10:8181/midonet-api")
    assert (config_root / ".midonetrc").read_bytes() == MIDONETRC.replace(b":8080", b":8181")
    assert stat.S_IMODE(plugin.stat().st_mode) == 0o640
    assert (config_root / ".stackhop-sdn/endpoints/etc__neutron__plugin.ini.orig"
            ).read_bytes() == PLUGIN_INI
    again = sdn(cli, journal, "switch-endpoints", "--config-root", str(config_root), "-f", "json")
    assert set(again.json()["files"].values()) == {"already switched"}

    reverted = sdn(cli, journal, "switch-endpoints", "--config-root", str(config_root),
                   "--revert")
    assert reverted.code == 0, reverted.err
    assert plugin.read_bytes() == PLUGIN_INI
    assert (config_root / ".midonetrc").read_bytes() == MIDONETRC
    assert stat.S_IMODE(plugin.stat().st_mode) == 0o640

    # An edit made after the switch is never overwritten silently.
    assert sdn(cli, journal, "switch-endpoints", "--config-root", str(config_root)).code == 0
    edited = plugin.read_bytes() + b"\n# operator note\n"
    plugin.write_bytes(edited)
    line = one_line_error(sdn(cli, journal, "switch-endpoints", "--config-root",
                              str(config_root), "--revert"), 10)
    assert "was edited" in line and "--force" in line
    assert plugin.read_bytes() == edited
    assert sdn(cli, journal, "switch-endpoints", "--config-root", str(config_root),
               "--revert", "--force").code == 0
    assert plugin.read_bytes() == PLUGIN_INI

    (config_root / ".midonetrc").write_bytes(b"[cli]\nusername=admin\n")
    line = one_line_error(sdn(cli, journal, "switch-endpoints", "--config-root",
                              str(config_root)), 3)
    assert "no [cli] api_url" in line
    assert plugin.read_bytes() == PLUGIN_INI, "a bad second file must stop before the first"


def test_hooks_run_around_steps_and_a_failing_pre_hook_changes_nothing(
    cli: Cli, tmp_path: Path, config_root: Path
) -> None:
    journal, log = tmp_path / "j.sqlite", tmp_path / "hooks.log"
    plugin = config_root / "etc/neutron/plugin.ini"
    ok = sdn(cli, journal, "switch-endpoints", "--config-root", str(config_root),
             "--pre-hook", f'echo "pre $STACKHOP_SDN_STEP" >> {log}',
             "--post-hook", f'echo "post $STACKHOP_SDN_STEP" >> {log}')
    assert ok.code == 0, ok.err
    assert log.read_text() == "pre switch-endpoints\npost switch-endpoints\n"
    line = one_line_error(sdn(cli, journal, "switch-endpoints", "--config-root",
                              str(config_root), "--revert", "--pre-hook", "exit 7"), 12)
    assert "exit code 7" in line and "nothing was changed" in line
    assert plugin.read_bytes() != PLUGIN_INI


def test_status_shows_prepared_backed_up_switched(
    cli: Cli, tmp_path: Path, neutron_db: str, zk_root: str, config_root: Path,
    neutron_topology: NeutronTopology,
) -> None:
    journal, backup, data = tmp_path / "j.sqlite", tmp_path / "zk.backup", tmp_path / "d"
    with zk_client() as client:
        seed_legacy_tree(client, zk_root, neutron_topology)
    assert sdn(cli, journal, "prepare", "--neutron-db", neutron_db, "--data-dir", str(data),
               "--zk", ZK, "--root", zk_root).code == 0
    assert sdn(cli, journal, "backup", "--zk", ZK, "--root", zk_root, "-o", str(backup)).code == 0
    assert sdn(cli, journal, "switch-endpoints", "--config-root", str(config_root)).code == 0
    shown = sdn(cli, journal, "status", "--neutron-db", neutron_db, "--data-dir", str(data),
                "--backup", str(backup), "--config-root", str(config_root), "-f", "json")
    assert shown.code == 0, shown.err
    status = shown.json()
    assert status["Tasks"] == sum(neutron_counts(neutron_db).values())
    assert status["Queued by stackhop"] == status["Tasks"]
    assert status["Controller object files"] == 3
    assert status["Backup"].startswith(f"{len(tree(zk_root))} nodes of {zk_root}")
    assert status["Endpoints"].startswith("switched to port 8181")
    assert [r.split(":")[0] for r in status["Journal runs"]] == [
        "sdn midonet prepare", "sdn midonet backup", "sdn midonet switch-endpoints"]
    assert os.environ.get("OS_CLIENT_CONFIG_FILE")


def test_rollback_recreates_a_deleted_subtree_exactly(
    cli: Cli, tmp_path: Path, neutron_db: str, neutron_topology: NeutronTopology, zk_root: str
) -> None:
    journal, backup = tmp_path / "j.sqlite", tmp_path / "zk.backup"
    with zk_client() as client:
        seed_legacy_tree(client, zk_root, neutron_topology)
    assert sdn(cli, journal, "backup", "--zk", ZK, "--root", zk_root, "-o", str(backup)).code == 0
    tree_before = tree(zk_root)
    with zk_client() as client:
        client.delete(zk_root.rsplit("/", 1)[0], recursive=True)
    done = sdn(cli, journal, "--log-json", "rollback", "--zk", ZK, "--backup", str(backup),
               "--neutron-db", neutron_db, "-f", "json")
    assert done.code == 0, done.err
    assert "holds no midonet_data_state" in done.err
    assert done.json()["steps"]["zookeeper"].startswith(f"{len(tree_before)} created")
    assert tree(zk_root) == tree_before


def test_zookeeper_address_found_in_midonet_conf(
    cli: Cli, tmp_path: Path, zk_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "midonet.conf"
    monkeypatch.setenv("STACKHOP_MIDONET_CONF", str(conf))
    monkeypatch.setenv("STACKHOP_MIDONETRC", str(tmp_path / "absent-midonetrc"))
    with zk_client() as client:
        client.create(zk_root, b"legacy", makepath=True)
    journal, backup = tmp_path / "j.sqlite", tmp_path / "zk.backup"
    conf.write_text("[zookeeper]\nroot_key = /midonet\n")
    line = one_line_error(sdn(cli, journal, "backup", "--root", zk_root, "-o", str(backup)), 3)
    assert str(conf) in line and "zookeeper_hosts" in line
    assert not backup.exists()
    # root_key names the topology's path as the legacy nodes have it: --root may go too.
    conf.write_text(f"[midolman]\nx = 1\n\n[zookeeper]\nzookeeper_hosts = {ZK}\n"
                    f"root_key = {zk_root}\n")
    made = sdn(cli, journal, "backup", "-o", str(backup), "-f", "json")
    assert made.code == 0, made.err
    assert backup_file.read(backup).zookeeper == ZK
    assert backup_file.read(backup).root == zk_root
