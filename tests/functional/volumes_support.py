"""Helpers of the volume copy tests: projects and volumes of their own on the testbed clouds.

Every test project exists under the same name on src and dst (so dst is found
by name), with the testbed admin given the ``admin`` role in it on both
clouds (Cinder creates a volume in the token's project). ``Sandbox.close``
deletes every volume, temporary image and project it made, on failure too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openstack
from testbed import layout

from stackhop.volumes.model import VERIFY_CHUNK, content_digest
from stackhop.volumes.readback import backend_knows, volume_digest
from stackhop.volumes.storage import load_storage_map

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def conn(cloud: str) -> Any:
    return openstack.connect(cloud=cloud)


def wait_status(c: Any, volume_id: str, wanted: tuple[str, ...], timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        volume = c.block_storage.get_volume(volume_id)
        if volume.status in wanted:
            return volume
        assert not volume.status.startswith("error"), f"volume {volume_id}: {volume.status}"
        assert time.monotonic() < deadline, f"volume {volume_id} stuck in {volume.status}"
        time.sleep(1)


def file_backend_path(cloud: str, volume_id: str) -> Path:
    base = os.environ[f"STACKHOP_{cloud.upper()}_FILE_BACKEND_DIR"]
    return Path(base) / f"volume-{volume_id}"


def write_pattern(path: Path, seed: str, pieces: list[int]) -> None:
    """Write pseudo-random MiBs (from ``seed``) at the given MiB offsets; the rest stays holes."""
    with path.open("r+b") as f:
        for mib in pieces:
            block = hashlib.sha256(f"{seed}:{mib}".encode()).digest() * (MIB // 32)
            f.seek(mib * MIB)
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def expected_digest(size: int, seed: str, pieces: list[int]) -> str:
    """The content digest of a volume of ``size`` bytes written by :func:`write_pattern`."""
    buf = bytearray(size)
    for mib in pieces:
        block = hashlib.sha256(f"{seed}:{mib}".encode()).digest() * (MIB // 32)
        buf[mib * MIB : (mib + 1) * MIB] = block
    digests = [
        hashlib.sha256(buf[o : o + VERIFY_CHUNK]).hexdigest() for o in range(0, size, VERIFY_CHUNK)
    ]
    return content_digest(digests)


def digest_of(cloud: str, volume_id: str) -> str:
    """The content digest of a volume read back from its backend (storage map)."""
    c = conn(cloud)
    volume = c.block_storage.get_volume(volume_id)
    backend = backend_knows(load_storage_map(), cloud, volume.host)
    assert backend is not None, f"storage map does not know {volume.host}"
    return volume_digest(backend, volume_id, volume.size * 1024**3)


def src_sshd_sessions() -> list[int]:
    """PIDs of the children of the testbed's src-storage sshd listener (its sessions)."""
    config = str(layout.SRC.dir / "sshd" / "sshd_config")
    listeners, parents = set(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("PPid:")))
        parents[int(entry.name)] = ppid
        if "sshd" in cmdline and config in cmdline and "listener" in cmdline:
            listeners.add(int(entry.name))
    if not listeners:
        raise RuntimeError("the testbed's src sshd listener is not running")
    return [pid for pid, ppid in parents.items() if ppid in listeners]


@dataclass
class Sandbox:
    """A project named ``name`` on src and dst, and what the test created in it."""

    name: str
    src: Any = field(default_factory=lambda: conn("src"))
    dst: Any = field(default_factory=lambda: conn("dst"))
    ids: dict[str, str] = field(default_factory=dict)
    extra_projects: list[tuple[Any, str]] = field(default_factory=list)
    #: Steps that remove what a test made besides volumes and images (servers, ports,
    #: networks...): run in reverse order by :meth:`close`, each whatever the others did.
    undo: list[Callable[[], Any]] = field(default_factory=list)

    @classmethod
    def create(cls, prefix: str = "voltest", *, dst_role: bool = True) -> Sandbox:
        box = cls(f"{prefix}-{uuid.uuid4().hex[:8]}")
        for side, c in (("src", box.src), ("dst", box.dst)):
            project = c.identity.create_project(name=box.name, domain_id="default")
            box.ids[side] = project.id
            if side == "src" or dst_role:
                admin_role = c.identity.find_role("admin")
                c.identity.assign_project_role_to_user(project, c.current_user_id, admin_role)
        return box

    def scoped(self, side: str) -> Any:
        c = self.src if side == "src" else self.dst
        return c.connect_as(project_id=self.ids[side], project_name=None)

    def volume(self, name: str, size: int = 1, volume_type: str = "file", **kw: Any) -> Any:
        c = self.scoped("src")
        created = c.block_storage.create_volume(size=size, name=name, volume_type=volume_type, **kw)
        return wait_status(self.src, created.id, ("available",))

    def volumes(self, side: str) -> list[Any]:
        c = self.src if side == "src" else self.dst
        return [
            v
            for v in c.block_storage.volumes(details=True, all_projects=True)
            if v.project_id == self.ids[side]
        ]

    def images(self, side: str) -> list[dict[str, Any]]:
        c = self.src if side == "src" else self.dst
        response = c.image.get("/images", params={"limit": 1000})
        return [
            i
            for i in response.json()["images"]
            if str(i.get("name", "")).startswith("stackhop-")
            and (i.get("owner") in self.ids.values() or self._ours(i))
        ]

    def _ours(self, image: dict[str, Any]) -> bool:
        ids = {v.id for side in ("src", "dst") for v in self.volumes(side)}
        return any(v in str(image.get("name")) for v in ids)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for step in reversed(self.undo):
            try:
                step()
            except Exception:  # the others must still run; the failure is logged
                log.exception("cleanup step failed")
        self.undo.clear()
        for side, c in (("src", self.src), ("dst", self.dst)):
            for image in self.images(side):
                c.image.delete(f"/images/{image['id']}")
            for volume in self.volumes(side):
                if volume.attachments:
                    continue
                c.block_storage.delete_volume(volume, force=True)
            for volume in self.volumes(side):
                c.block_storage.wait_for_delete(volume, interval=1, wait=300)
            c.identity.delete_project(self.ids[side], ignore_missing=True)
