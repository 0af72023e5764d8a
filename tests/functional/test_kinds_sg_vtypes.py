"""Issue 16, part 2: ``nova.server_group`` from src to dst, on the testbed.

Server groups are made for this test (unique names) on src in the ``admin``
project, where the testbed's admin user holds a role on both clouds: Nova puts
a new group in the token's project, so stackhop creates them there through a
project-scoped connection. dst is checked by listing it with openstacksdk,
never through stackhop; everything made on src and dst is removed at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import layout

from stackhop.archive import ArchiveReader
from stackhop.clouds import connect
from stackhop.journal import Journal

pytestmark = pytest.mark.functional

SG = "nova.server_group"


def _groups(conn: Any, names: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The server groups of a cloud with one of ``names``, by name (listed by openstacksdk)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for group in conn.compute.server_groups(all_projects=True):
        if group.name in names:
            found.setdefault(group.name, []).append({
                "id": group.id, "policy": group.policy, "rules": dict(group.rules or {}),
                "project_id": group.project_id, "user_id": group.user_id,
            })
    return found


def _remove_groups(conn: Any, names: set[str]) -> None:
    for groups in _groups(conn, names).values():
        for group in groups:
            conn.compute.delete_server_group(group["id"], ignore_missing=True)


def _runs(journal: str) -> list[str]:
    with Journal(journal) as j:
        return [arg for run in j.runs() for arg in ("--run", run.id)]


@pytest.fixture(scope="module")
def groups(seeded: Any) -> Iterator[dict[str, Any]]:
    """Two server groups on src's ``admin`` project: anti-affinity with a rule, affinity."""
    src, dst = connect("src"), connect("dst")
    tag = uuid.uuid4().hex[:6]
    names = {"anti": f"sh-sg-anti-{tag}", "affinity": f"sh-sg-aff-{tag}"}
    try:
        src.compute.create_server_group(
            name=names["anti"], policy="anti-affinity", rules={"max_server_per_host": 2}
        )
        src.compute.create_server_group(name=names["affinity"], policy="affinity")
        yield {"src": src, "dst": dst, "names": names}
    finally:
        _remove_groups(src, set(names.values()))
        _remove_groups(dst, set(names.values()))


def test_server_groups_move_verify_rerun_and_roll_back(
    groups: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    src, dst, names = groups["src"], groups["dst"], groups["names"]
    wanted = set(names.values())
    archive, journal = tmp_path / "sg.tar.zst", str(tmp_path / "journal.sqlite")
    assert cli("export", "--from", "src", "-o", str(archive), "--server-groups",
               "--project", "admin").code == 0
    with ArchiveReader(archive) as reader:
        assert set(reader.kinds()) == {"identity.user", "identity.project", SG}
        exported = {r["name"]: r for r in reader.records(SG)}
    assert wanted <= set(exported)
    anti = exported[names["anti"]]
    assert anti["policy"] == "anti-affinity" and anti["rules"] == {"max_server_per_host": 2}
    assert exported[names["affinity"]]["rules"] == {}
    assert anti["project_id"] == src.current_project_id

    # The database route reads the same records.
    via_db = tmp_path / "db.tar.zst"
    assert cli("export", "--from", "src", "-o", str(via_db), "--server-groups",
               "--project", "admin", "--via", "db",
               "--db-config-dir", str(layout.SRC.etc)).code == 0
    with ArchiveReader(via_db) as reader:
        assert {r["name"]: r for r in reader.records(SG)} == exported

    assert _groups(dst, wanted) == {}
    first = cli("--journal", journal, "import", "--to", "dst", str(archive), "-f", "json")
    assert first.code == 0, first.err
    moved = _groups(dst, wanted)
    assert sorted(moved) == sorted(wanted)
    assert all(len(found) == 1 for found in moved.values())
    made = moved[names["anti"]][0]
    assert made["policy"] == "anti-affinity" and made["rules"] == {"max_server_per_host": 2}
    assert moved[names["affinity"]][0]["policy"] == "affinity"
    # In the mapped project (dst's own admin project, another ID), owned by the importer.
    assert made["project_id"] == dst.current_project_id != src.current_project_id
    assert made["user_id"] == dst.current_user_id

    assert cli("verify", "--to", "dst", str(archive)).code == 0

    # A re-run, with the journal and without it, creates nothing.
    for again_journal in (journal, str(tmp_path / "other.sqlite")):
        again = cli("--journal", again_journal, "import", "--to", "dst", str(archive),
                    "-f", "json")
        assert again.code == 0, again.err
        assert again.json()["counts"][SG]["done"] == 0
        assert _groups(dst, wanted) == moved

    undo = cli("--journal", journal, "rollback", "--to", "dst", *_runs(journal), "-f", "json")
    assert undo.code == 0, undo.err
    assert _groups(dst, wanted) == {}
    assert sorted(_groups(src, wanted)) == sorted(wanted)  # src is never touched
