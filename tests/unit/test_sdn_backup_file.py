"""The backup file: round trip, and every kind of damage refused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stackhop.sdn import backup_file
from stackhop.sdn.errors import BackupExistsError, BackupIntegrityError, BackupMissingError
from stackhop.sdn.zookeeper import Node, differences

NODES = {
    "/m": Node("/m", b"root", ((31, "world", "anyone"),)),
    "/m/a": Node("/m/a", b"\x00\xff\n{}", ((1, "ip", "127.0.0.1"), (31, "world", "anyone"))),
    "/m/a/e": Node("/m/a/e", b"", ((31, "world", "anyone"),), ephemeral=True),
}


def test_round_trip_keeps_data_acl_and_flags(tmp_path: Path) -> None:
    raw = backup_file.encode("/m", "h:1", NODES, {"data_state": None, "highest_task_id": 4})
    path = tmp_path / "b"
    backup_file.write(path, raw, force=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    read = backup_file.read(path)
    assert read.nodes == NODES and read.root == "/m"
    assert read.neutron == {"data_state": None, "highest_task_id": 4}
    with pytest.raises(BackupExistsError):
        backup_file.write(path, raw, force=False)
    backup_file.write(path, raw, force=True)


@pytest.mark.parametrize("damage", [
    lambda raw: raw.replace(b"cm9vdA==", b"cm9vdB=="),  # one node's data
    lambda raw: raw[: len(raw) // 2],  # truncated
    lambda raw: raw[: raw.rindex(b"{")],  # trailer cut off
    lambda raw: b"".join(ln for ln in raw.splitlines(keepends=True) if b'"/m/a/e"' not in ln),
    lambda raw: raw.replace(b'"version": 1', b'"version": 9'),
    lambda raw: b"not json\n" + raw,
])
def test_damage_is_refused(damage: object) -> None:
    raw = backup_file.encode("/m", "h:1", NODES, None)
    assert backup_file.decode(raw, "b").nodes == NODES
    with pytest.raises(BackupIntegrityError):
        backup_file.decode(damage(raw), "b")  # type: ignore[operator]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BackupMissingError, match="no backup file"):
        backup_file.read(tmp_path / "absent")


def test_differences_ignore_ephemeral_nodes() -> None:
    live = {p: n for p, n in NODES.items() if p != "/m/a/e"}
    assert differences(NODES, live) == []
    changed = {**live, "/m/a": Node("/m/a", b"x", NODES["/m/a"].acl),
               "/m/new": Node("/m/new", b"", ())}
    assert differences(NODES, changed) == ["extra node /m/new", "data of /m/a differs"]
