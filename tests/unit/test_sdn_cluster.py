"""apply-settings and its revert with plain shell commands on a file (no mn-conf here)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from stackhop.errors import ConfigError
from stackhop.journal import Journal
from stackhop.sdn import cluster
from stackhop.sdn.errors import RollbackIncompleteError
from stackhop.sdn.prepare import NORMAL_SETTINGS_FILE, SETTINGS_FILE


def test_settings_applied_after_a_saved_dump_and_reverted_byte_for_byte(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store.conf"
    data.mkdir()
    (data / SETTINGS_FILE).write_text("cluster.neutron_importer.enabled : true\n")
    store.write_bytes(b"agent.x : 1\r\n")
    commands: dict[str, Any] = {"set_command": f"cat >> {store}",
                                "dump_command": f"cat {store}",
                                "restore_command": f"cat > {store}"}
    with Journal(tmp_path / "j.sqlite") as journal:
        with pytest.raises(ConfigError, match="run `stackhop sdn midonet prepare"):
            cluster.apply_settings(tmp_path / "nowhere", "importer", journal, **commands)
        plan = cluster.apply_settings(data, "importer", journal, dry_run=True, **commands)
        assert plan.dry_run and not (data / "cluster").exists()
        cluster.apply_settings(data, "importer", journal, **commands)
        cluster.apply_settings(data, "normal", journal, **commands)
        assert store.read_bytes() == (b"agent.x : 1\r\ncluster.neutron_importer.enabled : true\n"
                                      + (data / NORMAL_SETTINGS_FILE).read_bytes())
        before = data / "cluster/before.conf"
        assert before.read_bytes() == b"agent.x : 1\r\n"
        assert stat.S_IMODE(before.stat().st_mode) == 0o600
        assert cluster.status(data).startswith("applied: importer, normal")

        reverted = cluster.revert_settings(data, journal)
        assert reverted.steps["verified"] == "cluster configuration byte-exact as saved"
        assert store.read_bytes() == b"agent.x : 1\r\n"
        assert not (data / "cluster").exists()
        assert cluster.revert_settings(data, journal).steps == {"cluster config": "not applied"}


def test_a_restore_that_does_not_restore_is_an_incomplete_rollback(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store.conf"
    data.mkdir()
    (data / SETTINGS_FILE).write_text("cluster.neutron_importer.enabled : true\n")
    store.write_text("a : 1\n")
    with Journal(tmp_path / "j.sqlite") as journal:
        cluster.apply_settings(data, "importer", journal, set_command=f"cat >> {store}",
                               dump_command=f"cat {store}", restore_command="cat > /dev/null")
        with pytest.raises(RollbackIncompleteError, match="differs from"):
            cluster.revert_settings(data, journal)
        assert (data / "cluster/before.conf").read_text() == "a : 1\n", "the copy is kept"
        failing = cluster.ClusterCommandError
        with pytest.raises(failing, match="exit code 3: boom"):
            cluster.restart_neutron("echo boom >&2; exit 3", journal)
