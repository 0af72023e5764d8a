"""An RBD image left open by a process killed -9 is removed once Ceph lets its watch go.

A copy killed mid-pass leaves its watch on the staging image until the OSDs time it
out (``osd_client_watch_timeout``, 30 s); a re-run in that window used to fail with
"RBD image is busy" and leave the staging image behind (CI of 2026-12-05, the
project-migrate kill trial). Both ways of reaching a pool must wait it out.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from testbed import layout
from tests.functional.conftest import Testbed

from stackhop.transfer.rbd import RbdCluster
from stackhop.transfer.rbd_lib import LibRbdCluster, bindings

#: Opens an image for writing (registering its watch), says so, then waits to be killed.
#: It writes nothing: a writer holds the exclusive lock, and librbd's removal then waits
#: on the lock's dead owner until the watch expires and succeeds; a process killed after
#: opening and before its first write (a staging image just opened) leaves only the watch,
#: and the removal is refused with EBUSY: the case to survive.
_HOLDER = r"""
import json, sys, time, rados, rbd
spec = json.load(sys.stdin)
cluster = rados.Rados(conffile=spec["conf"], conf={"keyring": spec["keyring"]})
cluster.connect()
ioctx = cluster.open_ioctx(spec["pool"])
image = rbd.Image(ioctx, spec["image"])
print("open", flush=True)
time.sleep(600)
"""


def _killed_holder(image: str) -> None:
    """Open ``image`` in a process of its own and kill it -9 while it holds the image."""
    spec = {
        "conf": str(layout.DST.ceph_conf),
        "keyring": str(layout.DST.ceph_keyring),
        "pool": "volumes",
        "image": image,
    }
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-c", _HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write(json.dumps(spec).encode())
    holder.stdin.close()
    try:
        assert holder.stdout.readline().strip() == b"open"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


@pytest.fixture
def clusters(testbed: Testbed) -> Iterator[tuple[LibRbdCluster, RbdCluster, list[str]]]:
    conf, keyring = str(layout.DST.ceph_conf), str(layout.DST.ceph_keyring)
    lib = LibRbdCluster("dst", "volumes", conf, keyring, "admin")
    cli = RbdCluster("dst", "volumes", conf, keyring, "admin")
    images: list[str] = []
    yield lib, cli, images
    for image in images:  # whatever a failed assertion left
        lib.remove_image(image)


def test_an_image_held_by_a_killed_process_is_removed_by_librbd_and_the_cli(
    clusters: tuple[LibRbdCluster, RbdCluster, list[str]],
) -> None:
    lib, cli, images = clusters
    names = [f"stackhop-test-watch-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        lib.create_image(name, 1 << 20)
        images.append(name)
        _killed_holder(name)

    # The dead process's watch is still there: a plain removal is refused.
    _, rbd = bindings()
    with lib.ioctx() as ioctx, pytest.raises(rbd.ImageBusy):
        rbd.RBD().remove(ioctx, names[0])

    # Both removals wait for the watch to expire (at the same time: one 30 s wait).
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = [pool.submit(lib.remove_image, names[0]), pool.submit(cli.remove_image, names[1])]
        for future in done:
            future.result()
    for name in names:
        assert lib.size(name) is None, f"{name} is still in the pool"
