"""``stackhop images move-store --method locations`` on the testbed's legacy Glance (src-legacy).

Real Glance (single-store, ``show_multiple_locations = True``), real Ceph:
data moves from the ``file`` store into the pool ``images`` under the same
image ID; the old file must be gone, the pool must hold exactly what Glance
points at, and a kill or a flipped byte must never leave a second copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testbed import layout
from testbed.infra import ceph
from testbed.infra.files import write_file
from testbed.openstack import glance_legacy, runtime
from tests.functional.test_images_legacy_support import (
    LEGACY,
    LegacyImages,
    download_sha512,
    file_path,
    legacy_images,
    legacy_server,
    locations,
    rbd_sha512,
)
from tests.functional.test_images_support import MIB, glance_json, members

from stackhop.images.locations import LocationMover
from stackhop.images.rbd_store import SNAPSHOT
from stackhop.journal import DONE, FAILED, PENDING, Journal
from stackhop.transfer import Chunk, chunk_filters
from stackhop.transfer.rbd_lib_io import bindings

pytestmark = pytest.mark.functional
__all__ = ["legacy_images"]  # the fixture, imported for pytest

KIND = "glance.image-location"
#: What must not change when an image's data moves (Glance's own bookkeeping may).
VOLATILE = {"locations", "direct_url", "updated_at", "file", "schema", "self"}


def _move_args(journal: Path, *images: str, method: str = "locations") -> list[str]:
    args = ["--journal", str(journal), "images", "move-store", "--cloud", LEGACY,
            "--from-store", "file", "--to-store", "rbd", "--method", method,
            "--storage-map", str(layout.STORAGE_MAP), "-f", "json"]
    for image in images:
        args += ["--image", image]
    return args


def _portable(image: dict[str, Any] | None) -> dict[str, Any]:
    assert image is not None
    return {k: v for k, v in image.items() if k not in VOLATILE}


def _assert_moved(legacy: LegacyImages, image: dict[str, Any]) -> None:
    """Exactly one location, ours in the pool; the file gone; the data intact."""
    image_id = image["id"]
    old = [file_path(u) for u in (loc["url"] for loc in image["locations"])]
    assert locations(legacy.conn, image_id) == [legacy.pool.location(image_id)]
    assert legacy.pool.state(image_id).complete
    assert rbd_sha512(legacy.pool, image_id) == image["os_hash_value"]
    for path in old:
        assert not path.exists(), f"{path} must be deleted with its location"


def test_locations_moves_file_to_rbd_keeping_id_attributes_members_and_state(
    legacy_images: LegacyImages, cli: Any, tmp_path: Path
) -> None:
    shared = legacy_images.create(
        "shared", 5 * MIB + 123, visibility="shared", member_projects=("demo", "service"),
        tags=["web", "base"], purpose="move me", os_distro="debian", min_disk=1, min_ram=64,
    )
    golden = legacy_images.create("golden", protected=True, release="2026.1")
    retired = legacy_images.create("retired", deactivated=True, state="retired")
    sparse = legacy_images.create("sparse", body=b"head" + bytes(9 * MIB) + b"tail")
    images = (shared, golden, retired, sparse)
    shared_members = members(legacy_images.conn, shared["id"])
    journal = tmp_path / "journal.sqlite"

    # A server of the legacy Nova runs from "shared" while it moves; it must rebuild after.
    with legacy_server(legacy_images.prefix + "server", shared["id"]) as (nova, server):
        # auto picks locations on a single-store Glance that shows them.
        first = cli(*_move_args(journal, *(i["id"] for i in images), method="auto"))
        assert first.code == 0, first.err
        assert sorted(first.json()["done"]) == sorted(i["id"] for i in images)
        assert locations(legacy_images.conn, shared["id"]) == [
            legacy_images.pool.location(shared["id"])]
        # Nova's API and compute both read the image record again for a rebuild.
        nova.compute.rebuild_server(server, image=shared["id"])
        server = nova.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                              interval=1, wait=180)
        assert server.image["id"] == shared["id"]

    for image in images:
        after = glance_json(legacy_images.conn, image["id"])
        assert _portable(after) == _portable(image), "only the location may change"
        _assert_moved(legacy_images, image)
    assert members(legacy_images.conn, shared["id"]) == shared_members
    for image in (shared, golden, sparse):
        assert download_sha512(legacy_images.conn, image["id"]) == image["os_hash_value"]
    # The sparse image's zeros were left as a hole in the RBD image.
    _, rbd = bindings()
    with legacy_images.pool.cluster.ioctx() as ioctx, rbd.Image(
            ioctx, sparse["id"], snapshot=SNAPSHOT, read_only=True) as handle:
        allocated: list[int] = []
        handle.diff_iterate(0, handle.size(), None,
                            lambda o, n, exists: allocated.append(n) if exists else None)
        assert sum(allocated) < 9 * MIB

    again = cli(*_move_args(journal, *(i["id"] for i in images)))
    assert again.code == 0, again.err
    assert again.json()["done"] == [] and len(again.json()["skipped"]) == len(images)
    fresh = cli(*_move_args(tmp_path / "other.sqlite", shared["id"]))
    assert fresh.code == 0 and fresh.json()["skipped"] == [shared["id"]], fresh.err

    # And back: Glance refuses file:// locations, so the move is refused, nothing changed.
    back = cli("--journal", str(journal), "images", "move-store", "--cloud", LEGACY,
               "--from-store", "rbd", "--to-store", "file", "--method", "locations",
               "--storage-map", str(layout.STORAGE_MAP), "--image", shared["id"])
    assert back.code == 6, back.err
    assert len(back.err.strip().splitlines()) == 1 and "file" in back.err
    assert locations(legacy_images.conn, shared["id"]) == [
        legacy_images.pool.location(shared["id"])]


KILL_SCRIPT = """
import os, signal, sys
from stackhop.images.locations import LocationMover
from stackhop.cli.main import main
kill_at = sys.argv[1]
def step(self, image_id, step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
LocationMover._step = step
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("kill_at", ["written", "added", "removed"])
def test_locations_killed_at_each_step_converges_on_rerun(
    legacy_images: LegacyImages, tmp_path: Path, kill_at: str
) -> None:
    image = legacy_images.create(f"killed-{kill_at}", 12 * MIB, protected=False)
    journal = tmp_path / "journal.sqlite"
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(layout.CLOUDS_YAML)}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, kill_at, *_move_args(journal, image["id"])],
        env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    with Journal(str(journal)) as j:
        assert [r.state for r in j.operations(kind=KIND)] == [PENDING]
    target = legacy_images.pool.location(image["id"])
    now = locations(legacy_images.conn, image["id"])
    assert (target in now) == (kill_at != "written")
    assert len(now) == {"written": 1, "added": 2, "removed": 1}[kill_at]
    # Killed after the upload: a complete RBD copy nobody points at yet.
    assert legacy_images.pool.state(image["id"]).complete
    assert glance_json(legacy_images.conn, image["id"])["protected"] is True  # type: ignore[index]

    rerun = subprocess.run([sys.executable, "-m", "stackhop.cli.main",
                            *_move_args(journal, image["id"])],
                           env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _assert_moved(legacy_images, image)
    after = glance_json(legacy_images.conn, image["id"])
    assert after is not None and after["protected"] is False, "the protection must be put back"
    assert download_sha512(legacy_images.conn, image["id"]) == image["os_hash_value"]
    with Journal(str(journal)) as j:
        assert [r.state for r in j.operations(kind=KIND)] == [DONE]
    # No orphan: the pool holds our image once, nothing else of this test.
    ours = [n for n in legacy_images.pool.images() if n in legacy_images.created]
    assert ours == [image["id"]]


def test_locations_killed_with_the_journal_lost_puts_protection_and_deactivation_back(
    legacy_images: LegacyImages, tmp_path: Path
) -> None:
    """The move reactivated and protected a deactivated image, then was killed and its
    journal lost: the re-run (a fresh journal) learns from the image itself what to put
    back. Before the marks, the image stayed active and protected."""
    image = legacy_images.create("killed-deactivated", 6 * MIB, deactivated=True,
                                 protected=False)
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(layout.CLOUDS_YAML)}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, "added",
         *_move_args(tmp_path / "lost.sqlite", image["id"])],
        env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    mid = glance_json(legacy_images.conn, image["id"])
    assert mid is not None and mid["status"] == "active" and mid["protected"] is True
    (tmp_path / "lost.sqlite").unlink()

    rerun = subprocess.run([sys.executable, "-m", "stackhop.cli.main",
                            *_move_args(tmp_path / "fresh.sqlite", image["id"])],
                           env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = glance_json(legacy_images.conn, image["id"])
    assert after is not None
    assert after["status"] == "deactivated" and after["protected"] is False
    assert not [k for k in after if k.startswith("stackhop_move")], after
    assert _portable(after) == _portable(image), "only the location may change"
    _assert_moved(legacy_images, image)


def test_locations_flipped_byte_in_the_rbd_copy_stops_before_the_add(
    legacy_images: LegacyImages, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = legacy_images.create("flipped", 6 * MIB)
    original = locations(legacy_images.conn, image["id"])
    pool = legacy_images.pool
    _, rbd = bindings()

    def flip(self: LocationMover, image_id: str, step: str) -> None:
        if step != "written":
            return
        # Damage the written copy as a bad disk would: the snapshot Glance would read.
        with pool.cluster.ioctx() as ioctx, rbd.Image(ioctx, image_id) as handle:
            byte = handle.read(4 * MIB, 1, )
            handle.unprotect_snap(SNAPSHOT)
            handle.remove_snap(SNAPSHOT)
            handle.write(bytes([byte[0] ^ 0x01]), 4 * MIB)
            handle.create_snap(SNAPSHOT)
            handle.protect_snap(SNAPSHOT)

    monkeypatch.setattr(LocationMover, "_step", flip)
    journal = tmp_path / "journal.sqlite"
    result = cli(*_move_args(journal, image["id"]))
    assert result.code == 12, result.err
    with Journal(str(journal)) as j:
        (row,) = j.operations(kind=KIND)
    assert row.state == FAILED and "read back as" in (row.error or "")
    assert locations(legacy_images.conn, image["id"]) == original, "the original is untouched"
    assert file_path(original[0]).exists()
    assert image["id"] not in pool.images(), "the bad RBD copy must be removed"
    after = glance_json(legacy_images.conn, image["id"])
    assert after is not None and after["protected"] is False and after["status"] == "active"

    monkeypatch.undo()
    retry = cli(*_move_args(journal, image["id"]))
    assert retry.code == 0, retry.err
    _assert_moved(legacy_images, image)


@pytest.fixture
def glance_hiding_locations(
    legacy_images: LegacyImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A private Glance API on the legacy Glance's database, with show_multiple_locations off.

    Our own uWSGI process on its own port (stopped by its PID at the end) and
    a clouds.yaml of this test naming it ``hidden``: the shared Glances are
    not touched.
    """
    c = layout.SRC
    conf_dir = c.etc / "glance_legacy_hidden_test"
    text = (glance_legacy.config_file(c)).read_text()
    text = text.replace("show_multiple_locations = true", "show_multiple_locations = false")
    text = text.replace("show_image_direct_url = true", "show_image_direct_url = false")
    assert "show_multiple_locations = false" in text
    write_file(conf_dir / "glance-api.conf", text, mode=0o600)
    port = glance_legacy.port(c) + 2
    daemon = runtime.uwsgi_daemon("glance-hidden-test", port, "glance.wsgi.api:application",
                                  env={"OS_GLANCE_CONFIG_DIR": str(conf_dir)},
                                  python_path=[ceph.python_path()])
    clouds = yaml.safe_load(layout.CLOUDS_YAML.read_text())
    hidden = dict(clouds["clouds"][LEGACY], image_endpoint_override=f"http://{layout.HOST}:{port}")
    config = tmp_path / "clouds.yaml"
    config.write_text(yaml.safe_dump({"clouds": {"hidden": hidden}}))
    config.chmod(0o600)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(config))
    daemon.ensure()
    try:
        yield "hidden"
    finally:
        daemon.stop()
        shutil.rmtree(conf_dir, ignore_errors=True)


def test_locations_without_show_multiple_locations_is_refused_and_changes_nothing(
    legacy_images: LegacyImages, glance_hiding_locations: str, cli: Any, tmp_path: Path
) -> None:
    image = legacy_images.create("hidden")
    for method in ("auto", "locations"):
        result = cli("--journal", str(tmp_path / "j.sqlite"), "images", "move-store",
                     "--cloud", glance_hiding_locations, "--from-store", "file", "--to-store",
                     "rbd", "--method", method, "--storage-map", str(layout.STORAGE_MAP),
                     "--image", image["id"])
        assert result.code == 6, result.err
        assert len(result.err.strip().splitlines()) == 1
        assert "show_multiple_locations" in result.err
    after = glance_json(legacy_images.conn, image["id"])
    assert after is not None and after["locations"] == image["locations"]
    assert after["protected"] is False and after["updated_at"] == image["updated_at"]
    assert image["id"] not in legacy_images.pool.images()
    with Journal(str(tmp_path / "j.sqlite")) as j:
        assert j.operations(kind=KIND) == []


def test_locations_flipped_byte_on_the_wire_keeps_nothing_in_the_pool(
    legacy_images: LegacyImages, cli: Any, tmp_path: Path
) -> None:
    image = legacy_images.create("wire", 5 * MIB, protected=True)
    original = locations(legacy_images.conn, image["id"])

    def flip(chunk: Chunk) -> Chunk:
        if chunk.offset == 0:
            return Chunk(0, bytes([chunk.data[0] ^ 0x80]) + chunk.data[1:])
        return chunk

    chunk_filters.append(flip)
    try:
        result = cli(*_move_args(tmp_path / "journal.sqlite", image["id"]))
    finally:
        chunk_filters.remove(flip)
    assert result.code == 12, result.err
    assert image["id"] not in legacy_images.pool.images()
    assert locations(legacy_images.conn, image["id"]) == original
    after = glance_json(legacy_images.conn, image["id"])
    assert after is not None and after["protected"] is True, "its own protection is kept"
