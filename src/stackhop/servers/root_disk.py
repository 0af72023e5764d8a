"""An image-booted server's root disk: read from its compute host over ssh, into a Glance
image on the destination that the destination server boots from.

The disk is the file Nova keeps at ``<instances_path>/<server ID>/disk`` on the compute host
that runs the server (the storage map's ``compute:`` section says how each host is reached
and where its ``instances_path`` is). It is read with the server stopped: ``stat`` and
``sha512sum`` on the host first (the digest the copy must match), then ``cat`` streamed
through :func:`stackhop.transfer.base.copy` into a new ``raw`` image of the destination
project, which Glance hashes as it stores it (its ``os_hash_value``, sha512, compared). The
image carries :data:`SOURCE_PROPERTY` (the source server's ID): a re-run takes an active
one, and removes one an interrupted upload left ``queued`` or ``saving``.

Only raw disks are read as they are. A libvirt host's qcow2 disk with a backing file would
need ``qemu-img convert`` on the host first: a disk whose first bytes are qcow2's magic is
refused with a message, never copied as something it is not. On the testbed, Nova's fake
driver (``testbed/openstack/shims/stackhop_fake_disk.py``) writes raw disk files.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from typing import Any

from stackhop.errors import ConflictError, IntegrityError
from stackhop.kinds.rest import call
from stackhop.transfer.base import Chunk, Digest, copy
from stackhop.transfer.glance import GlanceDestination, get_image
from stackhop.transfer.ssh import SshHost
from stackhop.volumes.storage import ComputeHost

#: The image property naming the source server whose root disk the image holds.
SOURCE_PROPERTY = "stackhop_source_server"
QCOW2_MAGIC = b"QFI\xfb"
CHUNK = 4 * 2**20


class SshFileSource:
    """A file on an ssh host, as a transfer source: its size and sha512 read there first."""

    def __init__(self, host: SshHost, path: str, label: str) -> None:
        self.host, self.path, self.label = host, path, label
        quoted = shlex.quote(path)
        out = host.run(["sh", "-c", f"stat -c %s {quoted} && sha512sum {quoted} && "
                        f"head -c 4 {quoted} | od -An -tx1"]).decode().split("\n")
        self.size: int | None = int(out[0].strip())
        self.declared: Digest | None = Digest("sha512", out[1].split()[0])
        if bytes.fromhex(out[2].replace(" ", "").strip() or "00") == QCOW2_MAGIC:
            raise ConflictError(f"{label}: a qcow2 disk; stackhop reads raw disks only "
                                "(convert it on the host, or boot the server from a volume)")
        self._process: subprocess.Popen[bytes] | None = None

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        self._process = subprocess.Popen(self.host.argv(["cat", self.path], shared=False),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self._process.stdout is not None
        offset = 0
        while True:
            data = self._process.stdout.read(chunk_size)
            if not data:
                break
            yield Chunk(offset, data)
            offset += len(data)
        if self._process.wait() != 0:
            error = (self._process.stderr.read() if self._process.stderr else b"").decode()
            raise IntegrityError(f"{self.label}: reading it over ssh failed: {error.strip()}")

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def disk_digest(host: ComputeHost, server_id: str) -> str:
    """The sha512 of a server's root disk on its compute host."""
    path = shlex.quote(host.disk_path(server_id))
    ssh = SshHost.named(host.ssh_host)
    return ssh.run(["sh", "-c", f"sha512sum {path}"]).decode().split()[0]


def find_image(dst: Any, project_id: str, server_id: str) -> dict[str, Any] | None:
    """The destination image holding ``server_id``'s root disk; an unfinished one is removed."""
    query = f"/images?{SOURCE_PROPERTY}={server_id}&owner={project_id}&limit=100"
    listed = call(dst.image, "GET", query)["images"]
    for image in listed:
        if image.get("status") == "active":
            return dict(image)
        call(dst.image, "DELETE", f"/images/{image['id']}", missing_ok=True)  # cut short
    return None


def copy_root_disk(src_host: ComputeHost, dst: Any, project_id: str, server_id: str,
                   name: str, note: Any) -> dict[str, Any]:
    """The destination image of the server's root disk (made and filled unless there)."""
    found = find_image(dst, project_id, server_id)
    if found is not None:
        return {"image": found["id"], "digest": found.get("os_hash_value"),
                "bytes": found.get("size"), "bytes_sent": 0}
    source = SshFileSource(SshHost.named(src_host.ssh_host), src_host.disk_path(server_id),
                           f"root disk of server {server_id} on {src_host.name}")
    image = call(dst.image, "POST", "/images", json={
        "name": f"stackhop-root-{name}", "disk_format": "raw", "container_format": "bare",
        "visibility": "private", "owner": project_id, SOURCE_PROPERTY: server_id,
    })
    note({"image": image["id"]})
    result = copy(source, GlanceDestination(dst.image, image["id"]), key=f"root:{server_id}",
                  chunk_size=CHUNK)
    stored = get_image(dst.image, image["id"]) or {}
    return {"image": image["id"], "digest": stored.get("os_hash_value"),
            "bytes": result.bytes, "bytes_sent": result.bytes}
