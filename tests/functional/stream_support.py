"""Helpers of the stream method's functional tests: a project of our own, known content, a context.

The tests create a ``voltest-stream-*`` project with the same name on both
clouds (the admin user gets the admin role in both, as an operator would),
create ``file`` volumes there, and write known content straight into the
source volume's backing file (this machine shares the storage hosts'
filesystem). Expected digests are computed here by reading the files with
plain Python, independently of the agents under test. Everything is deleted
at the end, volumes first, even when a test fails.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openstack.config
from openstack.connection import Connection
from testbed import layout

from stackhop.events import EventBus
from stackhop.journal import Journal
from stackhop.transfer.base import Chunk, Digest
from stackhop.volumes.model import VERIFY_CHUNK, PassContext, Temporary, VolumeRef, content_digest
from stackhop.volumes.storage import StorageMap, load_storage_map

MIB = 1024 * 1024
GIB = 1024 * MIB


def connect(name: str, project_id: str | None = None) -> Connection:
    config = openstack.config.OpenStackConfig(config_files=[str(layout.CLOUDS_YAML)])
    conn = Connection(config=config.get_one(cloud=name))
    if project_id is not None:
        conn = conn.connect_as(project_id=project_id, project_name=None)
    return conn


def storage_map() -> StorageMap:
    return load_storage_map(layout.STORAGE_MAP)


def file_digests(path: str | os.PathLike[str], size: int) -> list[str]:
    """Per-VERIFY_CHUNK sha256 of a file, read with plain Python."""
    digests = []
    with open(path, "rb") as handle:
        for offset in range(0, size, VERIFY_CHUNK):
            data = handle.read(min(VERIFY_CHUNK, size - offset))
            digests.append(hashlib.sha256(data).hexdigest())
    return digests


def file_content_digest(path: str | os.PathLike[str], size: int) -> str:
    return content_digest(file_digests(path, size))


def nonzero_chunks(path: str | os.PathLike[str], size: int) -> list[int]:
    """Offsets of the chunks that hold a non-zero byte."""
    zero = bytes(VERIFY_CHUNK)
    found = []
    with open(path, "rb") as handle:
        for offset in range(0, size, VERIFY_CHUNK):
            if handle.read(VERIFY_CHUNK) != zero[: min(VERIFY_CHUNK, size - offset)]:
                found.append(offset)
    return found


def write_at(path: str | os.PathLike[str], offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def text_block(length: int, seed: int) -> bytes:
    """Compressible text: words from a small vocabulary."""
    words = [f"word{(seed * 7919 + i) % 997:03d}" for i in range(4096)]
    line = (" ".join(words) + "\n").encode()
    return (line * (length // len(line) + 1))[:length]


def volume_ref(cloud: str, volume: Any) -> VolumeRef:
    return VolumeRef(
        cloud=cloud,
        id=volume.id,
        name=volume.name or "",
        size_gib=int(volume.size),
        project_id=volume.project_id,
        status=volume.status,
        volume_type=volume.volume_type,
        host=volume.host,
        description=volume.description,
        bootable=bool(volume.is_bootable),
        metadata=dict(volume.metadata or {}),
    )


def wait_status(conn: Connection, volume_id: str, wanted: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        volume = conn.block_storage.get_volume(volume_id)
        if volume.status == wanted:
            return volume
        if volume.status.startswith("error") or time.monotonic() > deadline:
            raise AssertionError(f"volume {volume_id} is {volume.status}, not {wanted}")
        time.sleep(1)


@dataclass
class Project:
    """A project of ours with the same name on src and dst, and what was made in it."""

    name: str
    src_id: str
    dst_id: str
    src_admin: Connection
    dst_admin: Connection

    def create_source_volume(
        self, name: str, size_gib: int = 1, volume_type: str = "file", **extra: Any
    ) -> VolumeRef:
        scoped = connect(layout.SRC.name, self.src_id)
        volume = scoped.block_storage.create_volume(
            size=size_gib, name=name, volume_type=volume_type, **extra
        )
        ready = wait_status(self.src_admin, volume.id, "available")
        return volume_ref(layout.SRC.name, ready)

    def destination_volumes(self) -> list[Any]:
        return list(self.dst_admin.block_storage.volumes(all_projects=True, project_id=self.dst_id))


def _delete_volumes(admin: Connection, project_id: str) -> None:
    for volume in admin.block_storage.volumes(all_projects=True, project_id=project_id):
        for snap in admin.block_storage.snapshots(all_projects=True, volume_id=volume.id):
            admin.block_storage.delete_snapshot(snap, ignore_missing=True)
            admin.block_storage.wait_for_delete(snap, wait=300)
        admin.block_storage.delete_volume(volume, ignore_missing=True, force=True)
        admin.block_storage.wait_for_delete(volume, wait=300)


def project_pair() -> Iterator[Project]:
    """Create the project on both clouds (admin role for the admin user); delete all after."""
    name = f"voltest-stream-{uuid.uuid4().hex[:8]}"
    made: list[tuple[Connection, Any]] = []
    try:
        ids = []
        for cloud in (layout.SRC.name, layout.DST.name):
            admin = connect(cloud)
            project = admin.identity.create_project(name=name, domain_id="default")
            made.append((admin, project))
            role = admin.identity.find_role("admin")
            admin.identity.assign_project_role_to_user(project, admin.current_user_id, role)
            ids.append(project.id)
        yield Project(name, ids[0], ids[1], made[0][0], made[1][0])
    finally:
        for admin, project in made:
            _delete_volumes(admin, project.id)
            admin.identity.delete_project(project, ignore_missing=True)


@dataclass
class Recorder:
    """What the method reported through the context's callbacks."""

    stages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    temporaries: list[Temporary] = field(default_factory=list)
    progress: list[tuple[int, int | None]] = field(default_factory=list)

    def stage(self, name: str, facts: Mapping[str, Any]) -> None:
        self.stages.append((name, dict(facts)))

    def destination_id(self) -> str | None:
        found = [f["destination_id"] for _, f in self.stages if f.get("destination_id")]
        return found[-1] if found else None


class MemoryBackup:
    """A backup Destination keeping the chunks it was given (the real one is another module's)."""

    durable_chunks = False

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}
        self.state = "new"

    def open(self, size: int | None) -> None:
        self.state = "open"

    def write(self, chunk: Chunk) -> None:
        self.chunks[chunk.offset] = chunk.data

    def commit(self) -> None:
        self.state = "committed"

    def abort(self, reason: BaseException) -> None:
        self.state = "aborted"

    def verify(self, digest: Digest) -> None:
        return None


def make_context(
    *,
    project: Project,
    source: VolumeRef,
    journal_path: Path,
    recorder: Recorder,
    incremental: bool = False,
    destination_id: str | None = None,
    backup: Any = None,
    destination_type: str = "file",
    previous: Mapping[str, Any] | None = None,
) -> PassContext:
    """A real :class:`PassContext`: real connections, journal and event bus."""
    return PassContext(
        run_id="voltest-stream",
        source=source,
        destination_project_id=project.dst_id,
        destination_type=destination_type,
        source_conn=project.src_admin,
        destination_conn=project.dst_admin,
        storage=storage_map(),
        journal=Journal(journal_path),
        events=EventBus(),
        incremental=incremental,
        previous=dict(previous or {}),
        destination_id=destination_id,
        backup=backup,
        on_stage=recorder.stage,
        on_temporary=recorder.temporaries.append,
        on_temporary_removed=lambda t: None,
        on_progress=lambda done, total: recorder.progress.append((done, total)),
        destination_cloud=layout.DST.name,
    )
