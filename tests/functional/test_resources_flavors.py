"""``nova.flavor`` from src to dst: public and private flavors, extra specs, a name clash.

Flavors are made for this test (unique names) on src, and a flavor of the same
name but another shape on dst; everything is removed again at the end. dst is
checked by listing it directly, never through stackhop.
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
from stackhop.kinds.rest import call

pytestmark = pytest.mark.functional

MV = "2.75"


def _flavors(conn: Any) -> dict[str, dict[str, Any]]:
    """Every flavor of a cloud by name: shape, specs, access (listed directly)."""
    body = call(conn.compute, "GET", "/flavors/detail?is_public=None", microversion=MV)
    found = {}
    for f in body["flavors"]:
        access: list[str] = []
        if not f["os-flavor-access:is_public"]:
            listed = call(conn.compute, "GET", f"/flavors/{f['id']}/os-flavor-access",
                          microversion=MV)
            access = sorted(a["tenant_id"] for a in listed["flavor_access"])
        found[f["name"]] = {
            "id": f["id"],
            "shape": (f["ram"], f["vcpus"], f["disk"], f["OS-FLV-EXT-DATA:ephemeral"],
                      f["swap"], f["rxtx_factor"], f["os-flavor-access:is_public"]),
            "extra_specs": f.get("extra_specs") or {},
            "access": access,
            "description": f.get("description"),
        }
    return found


def _create(conn: Any, name: str, ram: int, *, public: bool = True, description: str = "",
            specs: dict[str, str] | None = None, access: tuple[str, ...] = ()) -> str:
    body = call(conn.compute, "POST", "/flavors", microversion=MV, json={"flavor": {
        "name": name, "ram": ram, "vcpus": 1, "disk": 1, "OS-FLV-EXT-DATA:ephemeral": 1,
        "swap": 128, "rxtx_factor": 2.0, "os-flavor-access:is_public": public,
        "description": description,
    }})
    flavor_id = str(body["flavor"]["id"])
    if specs:
        call(conn.compute, "POST", f"/flavors/{flavor_id}/os-extra_specs", microversion=MV,
             json={"extra_specs": specs})
    for project in access:
        call(conn.compute, "POST", f"/flavors/{flavor_id}/action", microversion=MV,
             json={"addTenantAccess": {"tenant": project}})
    return flavor_id


def _remove(conn: Any, names: set[str]) -> None:
    for name, flavor in _flavors(conn).items():
        if name in names:
            call(conn.compute, "DELETE", f"/flavors/{flavor['id']}", microversion=MV,
                 missing_ok=True)


@pytest.fixture(scope="module")
def world(seeded: Any) -> Iterator[dict[str, Any]]:
    src, dst = connect("src"), connect("dst")
    tag = uuid.uuid4().hex[:6]
    names = {k: f"sh-{k}-{tag}" for k in ("public", "private", "clash")}
    alpha = {c: next(p.id for p in conn.identity.projects() if p.name == "alpha")
             for c, conn in (("src", src), ("dst", dst))}
    try:
        _create(src, names["public"], 256, description="for everyone",
                specs={"hw:cpu_policy": "shared", "quota:disk_read_iops_sec": "100"})
        _create(src, names["private"], 384, public=False, description="alpha only",
                specs={"aggregate_instance_extra_specs:ssd": "true"}, access=(alpha["src"],))
        _create(src, names["clash"], 512)
        _create(dst, names["clash"], 1024, description="dst's own")
        yield {"src": src, "dst": dst, "names": names, "alpha": alpha,
               "before": _flavors(dst)}
    finally:
        _remove(src, set(names.values()))
        _remove(dst, set(names.values()))


def test_flavors_move_conflict_resume_and_roll_back(
    world: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    names, dst = world["names"], world["dst"]
    archive, journal = tmp_path / "flavors.tar.zst", str(tmp_path / "journal.sqlite")
    assert cli("export", "--from", "src", "-o", str(archive), "--flavors",
               "--project", "alpha").code == 0
    with ArchiveReader(archive) as reader:
        exported = {r["name"]: r for r in reader.records("nova.flavor")}
    assert {names["public"], names["private"], names["clash"]} <= set(exported)
    assert exported[names["private"]]["access"] == [world["alpha"]["src"]]

    # The database route reads the same records.
    via_db = tmp_path / "db.tar.zst"
    assert cli("export", "--from", "src", "-o", str(via_db), "--flavors", "--project", "alpha",
               "--via", "db", "--db-config-dir", str(layout.SRC.etc)).code == 0
    with ArchiveReader(via_db) as reader:
        assert {r["name"]: r for r in reader.records("nova.flavor")} == exported

    first = cli("--journal", journal, "import", "--to", "dst", str(archive), "-f", "json")
    assert first.code == 10, first.err  # the clash is a conflict, the rest moves
    after = _flavors(dst)
    public, private = after[names["public"]], after[names["private"]]
    assert public["shape"] == (256, 1, 1, 1, 128, 2.0, True)
    assert public["extra_specs"] == {"hw:cpu_policy": "shared", "quota:disk_read_iops_sec": "100"}
    assert private["shape"][-1] is False and private["access"] == [world["alpha"]["dst"]]
    assert private["extra_specs"] == {"aggregate_instance_extra_specs:ssd": "true"}
    assert after[names["clash"]] == world["before"][names["clash"]]  # untouched
    counts = first.json()["counts"]["nova.flavor"]
    assert counts["conflict"] == 1 and counts["failed"] == 0

    verify = cli("verify", "--to", "dst", str(archive), "-f", "json")
    assert verify.code == 13
    differ = {m["identity"] for m in verify.json()["mismatches"]}
    assert names["clash"] in differ and not {names["public"], names["private"]} & differ

    # With the journal lost, a re-run finds its flavors and creates nothing twice; a flavor
    # whose creation was cut off (no extra specs yet) is completed, not duplicated.
    call(dst.compute, "DELETE", f"/flavors/{public['id']}/os-extra_specs/hw:cpu_policy",
         microversion=MV)
    again = cli("--journal", str(tmp_path / "other.sqlite"), "import", "--to", "dst",
                str(archive), "-f", "json")
    assert again.code == 10
    rerun = _flavors(dst)
    assert rerun[names["public"]]["id"] == public["id"]
    assert rerun[names["public"]]["extra_specs"] == public["extra_specs"]
    assert sorted(rerun) == sorted(after)  # no second flavor of any name

    # Rollback of the first journal's runs removes what they made; the clash stays.
    from stackhop.journal import Journal

    with Journal(journal) as j:
        runs = [a for r in j.runs() for a in ("--run", r.id)]
    undo = cli("--journal", journal, "rollback", "--to", "dst", *runs, "-f", "json")
    assert undo.code == 0, undo.err
    assert _flavors(dst) == world["before"]
