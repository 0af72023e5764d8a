"""The seed's steps 3-4 as journaled steps, recreate-controller-objects and --dry-run.

Real ZooKeeper and MariaDB of the testbed. There is no ``mn-conf`` binary
here: the cluster configuration goes through ``testbed/midonet/mn_conf.py``,
a small real script that keeps ``key : value`` settings in a ZooKeeper node
(``set [-c]`` / ``dump``), named as ``--set-command`` etc. The
neutron-server "restart" is a command appending to a log file.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.functional.test_sdn_support import ZK, copy_database, rows, zk_client

from stackhop.sdn import zookeeper

pytestmark = pytest.mark.functional

Cli = Callable[..., Any]
REPO = Path(__file__).resolve().parents[2]

PLUGIN_INI = (b"[DEFAULT]\nverbose=True\n\n[MIDONET]\r\nmidonet_uri = http://192.0.2.10:8080/"
              b"midonet-api\nusername = admin\npassword = secret\n")
MIDONETRC = b"[zookeeper]\nzookeeper_hosts = 192.0.2.1:2181\n\n[cli]\napi_url: http://h:8080/a\n"
BEFORE_CONF = b'agent.loggers.root : INFO\nzookeeper.zookeeper_hosts : "192.0.2.1:2181"\n'
SITE_CONF = json.dumps({"agent.loggers.root": "INFO",
                        "zookeeper.zookeeper_hosts": '"192.0.2.1:2181"'}, sort_keys=True).encode()


def sdn(cli: Cli, journal: Path, *args: str) -> Any:
    return cli("--journal", str(journal), "sdn", "midonet", *args)


def ok(result: Any) -> Any:
    assert result.code == 0, (result.code, result.out, result.err)
    return result.json() if result.out.lstrip().startswith("{") else result


@pytest.fixture
def top() -> Iterator[str]:
    path = f"/stackhop-test-{uuid.uuid4().hex[:10]}"
    try:
        yield path
    finally:
        with zk_client() as client:
            client.delete(path, recursive=True)


def snapshot(paths: list[Path], zk_top: str | None, url: str | None) -> tuple[Any, ...]:
    """Everything a dry run must leave alone: files (lstat + bytes), ZooKeeper nodes, tasks."""
    files: list[tuple[Any, ...]] = []
    for base in paths:
        for p in sorted([base, *base.rglob("*")]) if base.exists() else [base]:
            if not p.exists() and not p.is_symlink():
                files.append((str(p), None))
                continue
            st = p.lstat()
            body = p.read_bytes() if p.is_file() else None
            files.append((str(p), st.st_mode, st.st_uid, st.st_gid, body))
    tree = {}
    if zk_top:
        with zk_client() as client:
            tree = zookeeper.read_tree(client, zk_top)
    tasks = rows(url, "SELECT * FROM midonet_tasks ORDER BY id") if url else []
    state = rows(url, "SELECT * FROM midonet_data_state") if url else []
    counter = rows(url, "SELECT auto_increment FROM information_schema.tables WHERE "
                   "table_schema = DATABASE() AND table_name = 'midonet_tasks'") if url else []
    return files, tree, [tuple(r) for r in tasks], [tuple(r) for r in state], counter


def test_endpoint_switch_keeps_a_symlinked_plugin_ini_and_the_home_midonetrc_exactly(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, real, home = tmp_path / "config", tmp_path / "real", tmp_path / "home"
    for d in (root / "etc/neutron", real, home):
        d.mkdir(parents=True)
    target = real / "midonet_plugin.ini"
    target.write_bytes(PLUGIN_INI)
    os.chown(target, 65534, 1)  # nobody, group daemon: not the user running stackhop
    target.chmod(0o640)
    link = root / "etc/neutron/plugin.ini"
    link.symlink_to("../../../real/midonet_plugin.ini")
    rc = home / ".midonetrc"
    rc.write_bytes(MIDONETRC)
    os.chown(rc, 1, 65534)
    rc.chmod(0o600)
    monkeypatch.setenv("STACKHOP_MIDONETRC", str(rc))
    journal = tmp_path / "j.sqlite"

    def state() -> list[tuple[Any, ...]]:
        st, rst = target.stat(), rc.stat()
        return [(link.is_symlink(), os.readlink(link), st.st_uid, st.st_gid,
                 stat.S_IMODE(st.st_mode), target.read_bytes()),
                (rc.is_symlink(), rst.st_uid, rst.st_gid, stat.S_IMODE(rst.st_mode),
                 rc.read_bytes())]

    before = state()
    unchanged = snapshot([root, real, home], None, None)
    planned = ok(sdn(cli, journal, "switch-endpoints", "--config-root", str(root),
                     "--dry-run", "-f", "json"))
    assert planned["dry_run"] is True
    assert set(planned["files"]) == {"etc/neutron/plugin.ini", str(rc)}
    assert all(v.startswith("would set the port") for v in planned["files"].values())
    assert snapshot([root, real, home], None, None) == unchanged
    assert not journal.exists(), "a dry run writes no journal either"

    switched = ok(sdn(cli, journal, "switch-endpoints", "--config-root", str(root), "-f", "json"))
    assert set(switched["files"].values()) == {"switched"}
    after = state()
    assert after[0][:5] == before[0][:5], "still a link to the same file, same owner/group/mode"
    assert after[0][5] == PLUGIN_INI.replace(b":8080/", b":8181/")
    assert after[1][:4] == before[1][:4]
    assert after[1][4] == MIDONETRC.replace(b"h:8080", b"h:8181")
    shown = ok(sdn(cli, journal, "status", "--config-root", str(root), "-f", "json"))
    assert shown["Endpoints"].startswith("switched to port 8181") and str(rc) in shown["Endpoints"]

    planned = ok(sdn(cli, journal, "switch-endpoints", "--config-root", str(root), "--revert",
                     "--dry-run", "-f", "json"))
    assert set(planned["files"].values()) == {
        "would write back the original bytes, mode, owner and group"}
    assert state() == after

    # A tool that replaced the link by a plain file: the revert puts the link back.
    link.unlink()
    link.write_bytes(after[0][5])
    ok(sdn(cli, journal, "switch-endpoints", "--config-root", str(root), "--revert"))
    assert state() == before
    assert not (root / ".stackhop-sdn/endpoints").exists()


def mn_conf(node: str, *args: str) -> str:
    return shlex.join([sys.executable, "-m", "testbed.midonet.mn_conf", "--zk", ZK,
                       "--node", node, *args])


def legacy_objects(client: Any, root: str) -> dict[str, bytes]:
    """Controller-only objects: a tunnel zone with a host's membership, a host, a chain."""
    zone, host, chain = (str(uuid.uuid4()) for _ in range(3))
    client.create(root, b"legacy-v1", makepath=True)
    nodes = {
        f"{root}/tunnel_zones/{zone}": b'{"type": "vxlan"}',
        f"{root}/tunnel_zones/{zone}/hosts/{host}": b'{"ip": "192.0.2.7"}',
        f"{root}/hosts/{host}": b"\x00\xffhost",
        f"{root}/chains/{chain}": b'{"name": "operator-chain"}',
        f"{root}/chains/{chain}/rules/r1": b"drop",
    }
    for path, data in nodes.items():
        client.create(path, data, makepath=True)
    return nodes


def test_seed_steps_dry_run_recreate_and_rollback_of_all_of_them(
    cli: Cli, seeded: Any, tmp_path: Path, top: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("STACKHOP_MIDONETRC", str(tmp_path / "no-midonetrc"))
    root, conf_node = f"{top}/midonet", f"{top}/mn-conf"
    data, journal, backup = tmp_path / "data", tmp_path / "j.sqlite", tmp_path / "zk.backup"
    config = tmp_path / "config"
    (config / "etc/neutron").mkdir(parents=True)
    (config / "etc/neutron/plugin.ini").write_bytes(PLUGIN_INI)
    restarts = tmp_path / "restarts.log"
    restart = f"echo restarted >> {restarts}"
    commands = ["--set-command", mn_conf(conf_node, "set", "-t", "default"),
                "--dump-command", mn_conf(conf_node, "dump", "-t", "default"),
                "--restore-command", mn_conf(conf_node, "set", "-t", "default", "-c")]
    with zk_client() as client:
        objects = legacy_objects(client, root)
        # The site's configuration before stackhop, as the stand-in keeps it.
        client.create(f"{conf_node}/default", SITE_CONF, makepath=True)

    with copy_database() as url:
        db = ["--neutron-db", url]
        everything = [data, config, tmp_path / "zk.backup", journal]
        unchanged = snapshot(everything, top, url)
        # --dry-run on prepare and backup: the plan, and nothing changed.
        plan = ok(sdn(cli, journal, "prepare", *db, "--data-dir", str(data), "--zk", ZK,
                      "--root", root, "--dry-run", "-f", "json"))
        assert plan["dry_run"] and all(v.startswith("would queue") for v in plan["queued"].values())
        assert plan["controller_objects"].startswith("would write 3 object(s)")
        plan = ok(sdn(cli, journal, "backup", "--zk", ZK, "--root", root, "-o", str(backup),
                      *db, "--dry-run", "-f", "json"))
        assert plan["nodes"] == len(objects) + 6 and plan["file"].startswith("would write")
        assert snapshot(everything, top, url) == unchanged

        prepared = ok(sdn(cli, journal, "prepare", *db, "--data-dir", str(data), "--zk", ZK,
                          "--root", root, "-f", "json"))
        assert prepared["controller_objects"].startswith("3 object(s)")
        assert stat.S_IMODE((data / "mn-conf.normal.settings").stat().st_mode) == 0o600
        ok(sdn(cli, journal, "backup", "--zk", ZK, "--root", root, "-o", str(backup), *db))

        # Step 3: the importer settings, configuration saved first.
        plan = ok(sdn(cli, journal, "apply-settings", "--data-dir", str(data), *commands,
                      "--dry-run", "-f", "json"))
        assert plan["steps"]["save cluster config"].startswith("would run")
        assert not (data / "cluster").exists()
        ok(sdn(cli, journal, "apply-settings", "--data-dir", str(data), *commands))
        assert (data / "cluster/before.conf").read_bytes() == BEFORE_CONF
        with zk_client() as client:
            applied = client.get(f"{conf_node}/default")[0]
        assert b'"cluster.neutron_importer.enabled": "true"' in applied
        assert b"jdbc:mysql://127.0.0.1" in applied

        # Step 4: endpoints, neutron-server restart.
        ok(sdn(cli, journal, "switch-endpoints", "--config-root", str(config)))
        ok(sdn(cli, journal, "restart-neutron", "--command", restart))
        assert restarts.read_text() == "restarted\n"

        # The import rebuilt Neutron's objects elsewhere; the controller's own are gone.
        with zk_client() as client:
            client.delete(f"{root}/tunnel_zones", recursive=True)
            client.delete(f"{root}/chains", recursive=True)
            client.delete(f"{root}/hosts", recursive=True)
        plan = ok(sdn(cli, journal, "recreate-controller-objects", "--zk", ZK, "--data-dir",
                      str(data), "--dry-run", "-f", "json"))
        assert sorted(plan["objects"].values()) == [
            "would create 1 node(s)", "would create 3 node(s)", "would create 3 node(s)"]
        made = ok(sdn(cli, journal, "recreate-controller-objects", "--zk", ZK, "--data-dir",
                      str(data), "-f", "json"))
        assert sorted(made["objects"].values()) == [
            "1 node(s) created", "3 node(s) created", "3 node(s) created"]
        with zk_client() as client:
            for path, body in objects.items():
                assert client.get(path)[0] == body, path
            client.set(next(iter(objects)), b"changed by the import")
        again = sdn(cli, journal, "recreate-controller-objects", "--zk", ZK, "--data-dir",
                    str(data))
        assert again.code == 10 and "exists with other data" in again.err, again.err
        with zk_client() as client:
            client.set(next(iter(objects)), objects[next(iter(objects))])
        again = ok(sdn(cli, journal, "recreate-controller-objects", "--zk", ZK, "--data-dir",
                       str(data), "-f", "json"))
        assert set(again["objects"].values()) == {"already present"}

        # Back to normal mode.
        ok(sdn(cli, journal, "apply-settings", "--data-dir", str(data), "--mode", "normal",
               *commands))
        with zk_client() as client:
            assert b'"cluster.neutron_importer.enabled": "false"' in client.get(
                f"{conf_node}/default")[0]
        status = ok(sdn(cli, journal, "status", "--data-dir", str(data), "-f", "json"))
        assert status["Cluster settings"].startswith("applied: importer, normal")
        ran = [r.split(":")[0] for r in status["Journal runs"]]
        for command in ("apply-settings", "restart-neutron", "recreate-controller-objects",
                        "switch-endpoints"):
            assert f"sdn midonet {command}" in ran

        # The rollback: planned without changing anything, then done and checked.
        args = ["rollback", "--zk", ZK, "--backup", str(backup), *db, "--config-root",
                str(config), "--data-dir", str(data), "--restart-command", restart]
        unchanged = snapshot(everything, top, url)
        plan = ok(sdn(cli, journal, *args, "--dry-run", "-f", "json"))
        assert plan["steps"]["tasks"].startswith(f"would remove {len(unchanged[2])} task(s)")
        assert plan["steps"]["cluster cluster config"].startswith("would run")
        assert plan["steps"]["restart"] == f"would run {restart!r}"
        assert snapshot(everything, top, url) == unchanged
        done = ok(sdn(cli, journal, *args, "-f", "json"))
        assert done["verified"] is True
        assert done["steps"]["cluster verified"] == "cluster configuration byte-exact as saved"
        assert (config / "etc/neutron/plugin.ini").read_bytes() == PLUGIN_INI
        assert restarts.read_text() == "restarted\nrestarted\n"
        assert not (data / "cluster").exists()
        with zk_client() as client:
            assert client.get(f"{conf_node}/default")[0] == SITE_CONF
