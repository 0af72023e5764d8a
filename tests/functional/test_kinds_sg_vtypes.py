"""Issue 16, part 2: ``nova.server_group`` and ``cinder.volume_type`` from src to dst.

Server groups are made for this test (unique names) on src in the ``admin``
project, where the testbed's admin user holds a role on both clouds: Nova puts
a new group in the token's project, so stackhop creates them there through a
project-scoped connection. Volume types are made for the test on src (one
that dst has under the same name, one it lacks) and on dst (the same-named
one). dst is checked by listing it with openstacksdk,
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
def groups(testbed: Any) -> Iterator[dict[str, Any]]:
    """Two server groups on src's ``admin`` project: anti-affinity with a rule, affinity.

    Only the clouds' own ``admin`` project is used, so the seed's data is not needed."""
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


# -- cinder.volume_type ----------------------------------------------------------------

VT = "cinder.volume_type"


def _types(conn: Any) -> dict[str, dict[str, Any]]:
    """Every volume type of a cloud by name, public and private (listed by openstacksdk)."""
    found = {}
    for t in conn.block_storage.types(is_public="None"):
        access = [] if t.is_public else sorted(
            a["project_id"] for a in conn.block_storage.get_type_access(t)
        )
        found[t.name] = {"id": t.id, "is_public": t.is_public, "description": t.description,
                         "extra_specs": dict(t.extra_specs or {}), "access": access}
    return found


def _remove_types(conn: Any, names: set[str]) -> None:
    for name, t in _types(conn).items():
        if name in names:
            conn.block_storage.delete_type(t["id"], ignore_missing=True)


@pytest.fixture
def vtypes(groups: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """On src: ``same`` (dst has a type of that name, with other specs) and ``new``
    (private, for src's admin project; dst has none of that name)."""
    src, dst = groups["src"], groups["dst"]
    tag = uuid.uuid4().hex[:6]
    names = {"same": f"sh-vt-same-{tag}", "new": f"sh-vt-new-{tag}"}
    try:
        src.block_storage.create_type(
            name=names["same"], extra_specs={"volume_backend_name": "ceph"}
        )
        dst.block_storage.create_type(name=names["same"], description="dst's own",
                                      extra_specs={"volume_backend_name": "file"})
        new = src.block_storage.create_type(
            name=names["new"], is_public=False, description="fast disks",
            extra_specs={"volume_backend_name": "ceph", "sh:tier": "gold"},
        )
        src.block_storage.add_type_access(new, src.current_project_id)
        yield {"src": src, "dst": dst, "names": names, "before": _types(dst),
               "group_names": set(groups["names"].values())}
    finally:
        _remove_types(src, set(names.values()))
        _remove_types(dst, set(names.values()))


def test_volume_types_are_mapped_or_created_on_request(
    vtypes: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    src, dst, names, before = vtypes["src"], vtypes["dst"], vtypes["names"], vtypes["before"]
    archive, both = tmp_path / "vt.tar.zst", tmp_path / "both.tar.zst"
    assert cli("export", "--from", "src", "-o", str(archive), "--volume-types",
               "--project", "admin").code == 0
    with ArchiveReader(archive) as reader:
        exported = {r["name"]: r for r in reader.records(VT)}
    assert {"ceph", "file", "__DEFAULT__", *names.values()} <= set(exported)
    new = exported[names["new"]]
    assert new["is_public"] is False and new["access"] == [src.current_project_id]
    assert new["extra_specs"] == {"volume_backend_name": "ceph", "sh:tier": "gold"}
    via_db = tmp_path / "db.tar.zst"
    assert cli("export", "--from", "src", "-o", str(via_db), "--volume-types",
               "--project", "admin", "--via", "db",
               "--db-config-dir", str(layout.SRC.etc)).code == 0
    with ArchiveReader(via_db) as reader:
        assert {r["name"]: r for r in reader.records(VT)} == exported

    # No counterpart for ``new`` and no --create-volume-types: one line, nothing created
    # (not the server groups of the same archive either), for plan and import alike.
    assert cli("export", "--from", "src", "-o", str(both), "--volume-types",
               "--server-groups", "--project", "admin").code == 0
    for command in ("plan", "import"):
        refused = cli("--journal", str(tmp_path / "refused.sqlite"), command, "--to", "dst",
                      str(both))
        assert refused.code == 3, refused.err
        line = refused.err.strip()
        assert "\n" not in line and names["new"] in line and "--create-volume-types" in line
        assert names["same"] not in line
    assert _types(dst) == before
    assert _groups(src, vtypes["group_names"]) and _groups(dst, vtypes["group_names"]) == {}

    # Mapped through --type-map onto dst's ``same``: nothing created, verify agrees.
    journal = str(tmp_path / "mapped.sqlite")
    mapping = ("--type-map", f"{names['new']}={names['same']}")
    mapped = cli("--journal", journal, "import", "--to", "dst", str(archive), *mapping,
                 "-f", "json")
    assert mapped.code == 0, mapped.err
    assert mapped.json()["counts"][VT]["done"] == 0
    assert _types(dst) == before
    assert cli("verify", "--to", "dst", str(archive), *mapping).code == 0

    # --create-volume-types: created with its specs, description and mapped access list;
    # dst's own ``same`` keeps its specs; a re-run creates nothing; rollback removes it.
    journal = str(tmp_path / "create.sqlite")
    created = cli("--journal", journal, "import", "--to", "dst", str(archive),
                  "--create-volume-types", "-f", "json")
    assert created.code == 0, created.err
    assert created.json()["counts"][VT]["done"] == 1
    after = _types(dst)
    made = after[names["new"]]
    assert made["is_public"] is False and made["access"] == [dst.current_project_id]
    assert made["extra_specs"] == {"volume_backend_name": "ceph", "sh:tier": "gold"}
    assert made["description"].startswith("fast disks [stackhop-source:")
    assert after[names["same"]] == before[names["same"]]
    assert set(after) - set(before) == {names["new"]}
    assert cli("verify", "--to", "dst", str(archive)).code == 0
    again = cli("--journal", str(tmp_path / "again.sqlite"), "import", "--to", "dst",
                str(archive), "--create-volume-types", "-f", "json")
    assert again.code == 0, again.err
    assert again.json()["counts"][VT]["done"] == 0 and _types(dst) == after
    # A creation cut off before the access list (the type exists, no project may use it):
    # with the journal lost, a re-run completes that type instead of making another.
    dst.block_storage.remove_type_access(made["id"], dst.current_project_id)
    resumed = cli("--journal", str(tmp_path / "lost.sqlite"), "import", "--to", "dst",
                  str(archive), "--create-volume-types", "-f", "json")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["counts"][VT]["done"] == 1 and _types(dst) == after
    undo = cli("--journal", journal, "rollback", "--to", "dst", *_runs(journal), "-f", "json")
    assert undo.code == 0, undo.err
    assert _types(dst) == before
