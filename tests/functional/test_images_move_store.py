"""``stackhop images move-store`` on the testbed's src cloud (stores ``fast`` and ``slow``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from testbed import layout
from tests.functional.test_images_support import (
    MIB,
    ImageFactory,
    download_sha512,
    glance_json,
    marked_copies,
    members,
    own_images,
)

from stackhop.images.move_store import PROTECTED_BY_MOVE
from stackhop.journal import DONE, PENDING, Journal
from stackhop.kinds.image import image_record

pytestmark = pytest.mark.functional
__all__ = ["own_images"]  # the fixture, imported for pytest

KIND = "glance.image-store"


def _portable(image: dict[str, Any], image_members: dict[str, str]) -> dict[str, Any]:
    record = image_record(image, [{"member_id": m, "status": s} for m, s in image_members.items()])
    for fact in ("stores", "status"):
        record.pop(fact)
    return record


def _stores(image: dict[str, Any] | None) -> set[str]:
    assert image is not None
    return set(str(image["stores"]).split(","))


def test_move_store_keeps_ids_hashes_attributes_and_rerun_skips(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    shared = own_images.create(
        "shared", visibility="shared", member_projects=("demo", "service"),
        tags=["web", "base"], purpose="move me", os_distro="debian", min_disk=1, min_ram=64,
    )
    golden = own_images.create("golden", protected=True, release="2026.1")
    before = {i["id"]: _portable(glance_json(own_images.src, i["id"]) or {},
                                  members(own_images.src, i["id"])) for i in (shared, golden)}
    journal = str(tmp_path / "journal.sqlite")

    args = ["--journal", journal, "images", "move-store", "--cloud", "src", "--from-store",
            "fast", "--to-store", "slow", "--image", shared["id"], "--image",
            own_images.prefix + "golden", "-f", "json"]
    first = cli(*args)
    assert first.code == 0, first.err
    assert sorted(first.json()["done"]) == sorted(before)

    for image_id, wanted in before.items():
        after = glance_json(own_images.src, image_id)
        assert after is not None
        assert _stores(after) == {"slow"}, "the data must be in slow only"
        assert _portable(after, members(own_images.src, image_id)) == wanted
        assert download_sha512(own_images.src, image_id) == after["os_hash_value"]
    assert glance_json(own_images.src, golden["id"])["protected"] is True  # type: ignore[index]
    assert glance_json(own_images.src, shared["id"])["protected"] is False  # type: ignore[index]

    again = cli(*args)
    assert again.code == 0, again.err
    assert again.json()["done"] == [] and sorted(again.json()["skipped"]) == sorted(before)
    # A fresh journal also skips: the images themselves say they are moved.
    fresh = cli(*[str(tmp_path / "other.sqlite") if a == journal else a for a in args])
    assert sorted(fresh.json()["skipped"]) == sorted(before), fresh.err


def test_move_store_refuses_unknown_store_and_changes_nothing(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    image = own_images.create("nostore")
    result = cli("--journal", str(tmp_path / "j.sqlite"), "images", "move-store", "--cloud",
                 "src", "--from-store", "fast", "--to-store", "tape", "--image", image["id"])
    assert result.code == 3
    assert "no image store 'tape'" in result.err and "fast, slow" in result.err
    after = glance_json(own_images.src, image["id"])
    assert _stores(after) == {"fast"} and after is not None and after["protected"] is False


def _killed_once_protected(
    own_images: ImageFactory, image_id: str, journal: str
) -> tuple[list[str], dict[str, str]]:
    """Start a move-store of the image and ``kill -9`` it once the move has protected it
    (mid-move, before the protection is restored); the command and its environment."""
    cmd = [sys.executable, "-m", "stackhop.cli.main", "--journal", journal, "images",
           "move-store", "--cloud", "src", "--from-store", "fast", "--to-store", "slow",
           "--image", image_id]
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(layout.CLOUDS_YAML)}
    with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            current = glance_json(own_images.src, image_id)
            if current is not None and current["protected"]:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # our own child, by its handle
        proc.wait()
    return cmd, env


def test_move_store_killed_mid_move_is_finished_by_a_rerun(
    own_images: ImageFactory, tmp_path: Path
) -> None:
    image = own_images.create("killed", size=96 * MIB)
    journal = str(tmp_path / "journal.sqlite")
    cmd, env = _killed_once_protected(own_images, image["id"], journal)
    with Journal(journal) as j:
        rows = j.operations(kind=KIND)
    assert [r.state for r in rows] == [PENDING], "the kill must leave the move pending"
    assert rows[0].before["protected"] is False

    rerun = subprocess.run(cmd + ["-f", "json"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = glance_json(own_images.src, image["id"])
    assert after is not None
    assert _stores(after) == {"slow"}
    assert after["protected"] is False, "the original protection must be restored"
    assert after["os_hash_value"] == image["os_hash_value"]
    with Journal(journal) as j:
        assert [r.state for r in j.operations(kind=KIND)] == [DONE]


def test_move_store_killed_mid_move_then_journal_lost_still_restores_protection(
    own_images: ImageFactory, tmp_path: Path
) -> None:
    """The journal of a move killed while the image was protected is lost: a re-run with a
    fresh one finds the move unfinished by the image's own property, finishes it and
    unprotects the image. (It used to skip the moved image and leave it protected:
    bench/chaos_kills.py.)"""
    image = own_images.create("killed-lost", size=64 * MIB)
    cmd, env = _killed_once_protected(own_images, image["id"], str(tmp_path / "journal.sqlite"))
    killed = glance_json(own_images.src, image["id"])
    assert killed is not None and killed["protected"], "the kill must come mid-move"
    assert killed[PROTECTED_BY_MOVE] == "true"
    for path in tmp_path.glob("journal.sqlite*"):
        path.unlink()  # the journal lost: the re-run knows nothing of the killed one

    rerun = subprocess.run(cmd + ["-f", "json"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["done"] == [image["id"]]
    after = glance_json(own_images.src, image["id"])
    assert after is not None and _stores(after) == {"slow"}
    assert after["protected"] is False, "the original protection must be restored"
    assert PROTECTED_BY_MOVE not in after
    assert download_sha512(own_images.src, image["id"]) == image["os_hash_value"]


def test_move_store_recreate_copies_everything_and_retires_the_original(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    kept = own_images.create("recreate-kept", visibility="shared", member_projects=("demo",),
                             tags=["x"], purpose="recreate me", min_ram=32)
    dropped = own_images.create("recreate-dropped", protected=True)
    journal = str(tmp_path / "journal.sqlite")
    base = ["--journal", journal, "images", "move-store", "--cloud", "src", "--from-store",
            "fast", "--to-store", "slow", "--method", "recreate", "-f", "json"]

    first = cli(*base, "--image", kept["id"])
    assert first.code == 0, first.err
    second = cli(*base, "--original", "delete", "--image", dropped["id"])
    assert second.code == 0, second.err
    for original, outcome in ((kept, first), (dropped, second)):
        (copy,) = [i for i in marked_copies(own_images.src, original["id"])]
        assert outcome.json()["images"][0]["detail"] == copy["id"]
        assert _stores(copy) == {"slow"} and copy["protected"] is True
        assert copy["os_hash_value"] == original["os_hash_value"]
        assert download_sha512(own_images.src, copy["id"]) == original["os_hash_value"]
        wanted = _portable(original, members(own_images.src, original["id"])
                           if original is kept else {})
        got = _portable(copy, members(own_images.src, copy["id"]))
        for field in ("name", "visibility", "tags", "properties", "members", "min_ram",
                      "disk_format", "container_format", "owner"):
            assert got[field] == wanted[field], field
    # protect (default): the original stays, protected; delete: it is gone.
    original_after = glance_json(own_images.src, kept["id"])
    assert original_after is not None and original_after["protected"] is True
    assert glance_json(own_images.src, dropped["id"]) is None

    again = cli(*base, "--image", kept["id"])
    assert again.code == 0 and again.json()["images"][0]["outcome"] == "skipped", again.err
    assert len(marked_copies(own_images.src, kept["id"])) == 1


def test_copy_image_to_rbd_and_back_keeps_a_server_rebuildable(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    """fast -> rbd -> slow with copy-image; a server booted from the image rebuilds after."""
    image = own_images.create("on-rbd", 10 * MIB, os_distro="seedos")
    conn = own_images.src
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    server = conn.compute.create_server(name=own_images.prefix + "server", image_id=image["id"],
                                        flavor_id=flavor.id, networks="none")
    try:
        server = conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                              interval=1, wait=180)
        journal = str(tmp_path / "journal.sqlite")
        for source, target in (("fast", "rbd"), ("rbd", "slow")):
            moved = cli("--journal", journal, "images", "move-store", "--cloud", "src",
                        "--from-store", source, "--to-store", target, "--image", image["id"],
                        "-f", "json")
            assert moved.code == 0 and moved.json()["done"] == [image["id"]], moved.err
            after = glance_json(conn, image["id"])
            assert _stores(after) == {target}
            assert download_sha512(conn, image["id"]) == image["os_hash_value"]
            pool = rbd_images_of_src()
            assert (image["id"] in pool) == (target == "rbd"), "Glance's rbd store is the pool"
            conn.compute.rebuild_server(server, image=image["id"])
            server = conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                                  interval=1, wait=180)
            assert server.image["id"] == image["id"]
    finally:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, interval=1, wait=180)


def rbd_images_of_src() -> list[str]:
    from tests.functional.test_images_legacy_support import rbd_pool

    return rbd_pool().images()
