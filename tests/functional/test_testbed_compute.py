"""The testbed's compute hosts: an image-booted server's root disk is a file, read over ssh.

Every nova-compute of the testbed runs Nova's fake driver plus root disks
(``testbed/openstack/shims/stackhop_fake_disk.py``), and an sshd named like
its Nova host (``src-compute``, ...) reaches its ``instances_path``; the
storage map's ``compute`` section says both. A server booted from an image
in a project of our own must have ``<instances_path>/<id>/disk`` holding the
image's bytes and then zeros up to its flavor's root disk, read here over ssh
through the compute host's alias; it stops and starts after its nova-compute
restarted (the fake driver alone forgets every server on a restart); its
directory goes with it. A volume-booted server gets no disk. Everything made
is deleted at the end, on failure too.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from testbed import layout
from testbed.openstack import nova, nova_legacy
from testbed.process import Daemon
from tests.functional.volumes_support import Sandbox, conn, wait_status

from stackhop.volumes.storage import ComputeHost, StorageMap, load_storage_map

pytestmark = pytest.mark.functional

log = logging.getLogger(__name__)

WAIT = 180
MIB = 1024 * 1024
GIB = 1024 * MIB
#: How long a nova-compute restart may take inside this test (s).
RESTART_BUDGET = 60

#: The testbed's nova-compute daemons of src, by Nova host name.
SRC_COMPUTES: dict[str, Callable[[], Daemon]] = {
    layout.SRC.compute_host: lambda: nova.compute_daemon(layout.SRC),
    nova_legacy.compute_host(layout.SRC): lambda: nova_legacy.compute_daemon(layout.SRC),
}


@pytest.fixture
def box(testbed: Any) -> Iterator[Sandbox]:
    """A project of our own on src and dst; ``box.undo`` steps run after the test."""
    with Sandbox.create("srvdisk") as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def storage(testbed: Any) -> StorageMap:
    return load_storage_map(layout.STORAGE_MAP)


def _ssh(host: str, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` on ``host`` through the testbed's ssh config (host keys verified)."""
    return subprocess.run(
        ["ssh", "-F", str(layout.SSH_DIR / "ssh_config"), host, command],
        capture_output=True, text=True, timeout=120,
    )


def _remote_sha256(host: ComputeHost, path: str) -> str:
    proc = _ssh(host.ssh_host, f"sha256sum {shlex.quote(path)}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()[0]


def _exists(host: ComputeHost, path: str) -> bool:
    proc = _ssh(host.ssh_host, f"test -e {shlex.quote(path)}")
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


def _payload(size: int) -> bytes:
    """Bytes no other disk holds (not zeros: a sparse read would hide a missing copy)."""
    block = hashlib.sha256(str(time.time_ns()).encode()).digest() * (MIB // 32)
    return (block * (size // len(block) + 1))[:size]


def _expected_digest(data: bytes, size: int) -> str:
    """sha256 of ``data`` followed by zeros up to ``size`` bytes."""
    digest = hashlib.sha256(data)
    zeros = bytes(16 * MIB)
    left = size - len(data)
    while left > 0:
        digest.update(zeros[: min(left, len(zeros))])
        left -= len(zeros)
    return digest.hexdigest()


def _image(box: Sandbox, data: bytes) -> Any:
    """A raw image of the sandbox project holding ``data``, active."""
    c = box.scoped("src")
    undo = box.undo
    image = c.image.create_image(
        name="srvdisk-image", disk_format="raw", container_format="bare", allow_duplicates=True
    )
    undo.append(lambda: box.src.image.delete_image(image.id, ignore_missing=True))
    c.image.put(
        f"/images/{image.id}/file", data=data,
        headers={"Content-Type": "application/octet-stream"},
    ).raise_for_status()
    deadline = time.monotonic() + WAIT
    while (image := box.src.image.get_image(image.id)).status != "active":
        assert image.status in ("queued", "saving", "importing"), image.status
        assert time.monotonic() < deadline, f"image {image.id} stuck in {image.status}"
        time.sleep(1)
    return image


def _boot(box: Sandbox, name: str, **how: Any) -> Any:
    """A server of the sandbox project (deleted at the end), ACTIVE, as the admin sees it."""
    admin, c = box.src, box.scoped("src")
    undo = box.undo
    flavor = admin.compute.find_flavor("m1.tiny")
    server = c.compute.create_server(name=name, flavor_id=flavor.id, networks="none", **how)

    def delete() -> None:
        admin.compute.delete_server(server, ignore_missing=True)
        admin.compute.wait_for_delete(server, interval=1, wait=WAIT)
        for volume in how.get("block_device_mapping", ()):  # detached: the sandbox deletes it
            wait_status(admin, volume["uuid"], ("available",))

    undo.append(delete)
    admin.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=1,
                                  wait=WAIT)
    return admin.compute.get_server(server.id)


def _wait_status(box: Sandbox, server: Any, status: str) -> Any:
    return box.src.compute.wait_for_server(server, status=status, failures=["ERROR"],
                                           interval=1, wait=WAIT)


def _restart(daemon: Daemon) -> float:
    """Stop the nova-compute by its pid file and start it again; seconds it took."""
    t0 = time.monotonic()
    daemon.stop()
    daemon.ensure()  # waits for a heartbeat of the new process
    return time.monotonic() - t0


def test_every_compute_host_is_a_nova_host_and_answers_with_its_instances_path(
    testbed: Any, storage: StorageMap
) -> None:
    mapped = sorted(storage.computes)
    assert mapped == sorted((h.cloud, h.name) for h in layout.COMPUTE_HOSTS)
    for c in layout.CLOUDS:
        services = conn(c.name).compute.services()
        nova_hosts = {s.host for s in services if s.binary == "nova-compute"}
        assert nova_hosts == {host for (cloud, host) in mapped if cloud == c.name}
    for cloud, name in mapped:
        host = storage.compute_host(cloud, name)
        proc = _ssh(host.ssh_host, 'echo "$NOVA_INSTANCES_PATH"; id -u')
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [host.instances_path, "0"]


@pytest.mark.long  # 35 s; make test keeps its short form: test_servers_migrate.py's
# image-booted server, whose disk is read and hashed on both compute hosts.
def test_an_image_booted_server_has_its_disk_on_its_compute_host(
    box: Sandbox, storage: StorageMap
) -> None:
    data = _payload(3 * MIB + 17)
    image = _image(box, data)
    server = _boot(box, "srvdisk-image-booted", image_id=image.id)
    host = storage.compute_host("src", server.compute_host)
    disk = host.disk_path(server.id)
    size = box.src.compute.find_flavor("m1.tiny").disk * GIB

    assert _remote_sha256(host, disk) == _expected_digest(data, size)
    proc = _ssh(host.ssh_host, f"stat -c '%s %b %B' {shlex.quote(disk)}")
    apparent, blocks, block_size = (int(x) for x in proc.stdout.split())
    assert apparent == size and blocks * block_size < 64 * MIB  # extended sparse

    # The fake driver alone forgets every server when nova-compute restarts; ours does not.
    took = _restart(SRC_COMPUTES[server.compute_host]())
    log.info("nova-compute of %s restarted in %.1f s", server.compute_host, took)
    assert took < RESTART_BUDGET
    c = box.scoped("src")
    c.compute.stop_server(server)
    assert _wait_status(box, server, "SHUTOFF").power_state == 4  # SHUTDOWN
    c.compute.start_server(server)
    assert _wait_status(box, server, "ACTIVE").power_state == 1  # RUNNING
    assert _remote_sha256(host, disk) == _expected_digest(data, size)  # started, not re-made

    box.src.compute.delete_server(server)
    box.src.compute.wait_for_delete(server, interval=1, wait=WAIT)
    assert not _exists(host, disk.rsplit("/", 1)[0])


# About 20 s; a volume-booted server is booted on both clouds by test_servers_migrate.py.
@pytest.mark.long
def test_a_volume_booted_server_gets_no_disk(box: Sandbox, storage: StorageMap) -> None:
    root = box.volume("srvdisk-root")
    box.src.block_storage.set_volume_bootable_status(root, True)
    server = _boot(
        box, "srvdisk-volume-booted",
        block_device_mapping=[{"uuid": root.id, "source_type": "volume",
                               "destination_type": "volume", "boot_index": 0,
                               "delete_on_termination": False}],
    )
    host = storage.compute_host("src", server.compute_host)
    disk = host.disk_path(server.id)
    directory = disk.rsplit("/", 1)[0]
    assert _exists(host, directory) and not _exists(host, disk)

    box.src.compute.delete_server(server)
    box.src.compute.wait_for_delete(server, interval=1, wait=WAIT)
    assert not _exists(host, directory)
