"""Helpers of the rbd method's functional tests: known content in RBD images, a pass context.

Content is written with Debian's ``python3-rbd`` from the system Python, i.e.
by librbd itself in a process of its own, independently of the code under
test; the expected digest is computed here from the same description of the
writes.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackhop.events import EventBus
from stackhop.journal import Journal
from stackhop.volumes.model import VERIFY_CHUNK, PassContext, Temporary, VolumeRef, content_digest
from stackhop.volumes.storage import Backend, StorageMap

#: (offset, length, seed): ``length`` pseudo-random bytes from ``seed`` at ``offset``.
Write = tuple[int, int, int]

_WRITER = r"""
import json, random, sys, rados, rbd
spec = json.load(sys.stdin)
cluster = rados.Rados(conffile=spec["conf"], conf={"keyring": spec["keyring"]})
cluster.connect()
try:
    ioctx = cluster.open_ioctx(spec["pool"])
    with rbd.Image(ioctx, spec["image"]) as image:
        for offset, length, seed in spec["writes"]:
            data = bytes(length) if seed is None else random.Random(seed).randbytes(length)
            image.write(data, offset)
    ioctx.close()
finally:
    cluster.shutdown()
"""


def data_of(length: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(length)


def write_image(backend: Backend, image: str, writes: list[Write]) -> None:
    """Write ``writes`` into RBD ``image`` of ``backend`` with librbd (system Python)."""
    spec = {
        "conf": backend.ceph_conf,
        "keyring": backend.keyring,
        "pool": backend.pool,
        "image": image,
        "writes": writes,
    }
    subprocess.run(["/usr/bin/python3", "-c", _WRITER], input=json.dumps(spec).encode(), check=True)


def write_zeros(backend: Backend, image: str, offset: int, length: int) -> None:
    """Write ``length`` zero bytes as data (the objects get allocated) into ``image``."""
    spec = {
        "conf": backend.ceph_conf,
        "keyring": backend.keyring,
        "pool": backend.pool,
        "image": image,
        "writes": [(offset, length, None)],
    }
    subprocess.run(["/usr/bin/python3", "-c", _WRITER], input=json.dumps(spec).encode(), check=True)


def image_content_digest(backend: Backend, spec: str) -> str:
    """The content digest of RBD ``spec`` (``image[@snap]`` in the backend's pool), read
    with ``rbd export`` to a pipe: independently of stackhop's readers."""
    argv = ["rbd", "-c", str(backend.ceph_conf), "--keyring", str(backend.keyring)]
    export = subprocess.Popen(
        [*argv, "export", "--no-progress", f"{backend.pool}/{spec}", "-"], stdout=subprocess.PIPE
    )
    assert export.stdout is not None
    digests = []
    while piece := export.stdout.read(VERIFY_CHUNK):
        digests.append(hashlib.sha256(piece).hexdigest())
    assert export.wait() == 0
    return content_digest(digests)


def expected_digest(size: int, history: list[Write]) -> str:
    """The content digest of an image of ``size`` zeros after ``history`` (in order)."""
    count = -(-size // VERIFY_CHUNK)
    chunks: dict[int, bytearray] = {}
    for offset, length, seed in history:
        data = data_of(length, seed)
        done = 0
        while done < length:
            index = (offset + done) // VERIFY_CHUNK
            start = offset + done - index * VERIFY_CHUNK
            n = min(length - done, VERIFY_CHUNK - start)
            buf = chunks.setdefault(
                index, bytearray(min(VERIFY_CHUNK, size - index * VERIFY_CHUNK))
            )
            buf[start : start + n] = data[done : done + n]
            done += n
    digests = []
    for index in range(count):
        length = min(VERIFY_CHUNK, size - index * VERIFY_CHUNK)
        digests.append(hashlib.sha256(chunks.get(index, bytes(length))).hexdigest())
    return content_digest(digests)


def volume_ref(cloud: str, volume: Any) -> VolumeRef:
    """A :class:`VolumeRef` of an openstacksdk volume (admin view)."""
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


@dataclass
class Recorder:
    """What the method reported through the context's callbacks."""

    stages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    live: dict[str, Temporary] = field(default_factory=dict)
    progress: list[int] = field(default_factory=list)

    def stage(self, name: str, facts: Mapping[str, Any]) -> None:
        self.stages.append((name, dict(facts)))

    def created(self, temporary: Temporary) -> None:
        self.live[temporary.identity] = temporary

    def removed(self, temporary: Temporary) -> None:
        self.live.pop(temporary.identity, None)


def make_context(
    *,
    run_id: str,
    source: VolumeRef,
    destination_project_id: str,
    source_conn: Any,
    destination_conn: Any,
    storage: StorageMap,
    journal_path: Path,
    recorder: Recorder,
    incremental: bool,
    previous: Mapping[str, Any] | None = None,
    destination_id: str | None = None,
    destination_cloud: str = "dst",
) -> PassContext:
    """A real :class:`PassContext` (real journal and event bus) recording into ``recorder``."""
    return PassContext(
        run_id=run_id,
        source=source,
        destination_project_id=destination_project_id,
        destination_type="ceph",
        source_conn=source_conn,
        destination_conn=destination_conn,
        storage=storage,
        journal=Journal(journal_path),
        events=EventBus(),
        incremental=incremental,
        previous=dict(previous or {}),
        destination_id=destination_id,
        backup=None,
        on_stage=recorder.stage,
        on_temporary=recorder.created,
        on_temporary_removed=recorder.removed,
        on_progress=lambda done, total: recorder.progress.append(done),
        destination_cloud=destination_cloud,
    )


def stackhop_leftovers(backend: Backend, images: list[str]) -> list[str]:
    """``stackhop-*`` images of the pool and ``stackhop-*`` snapshots of ``images``."""
    base = ["rbd", "-c", str(backend.ceph_conf), "--keyring", str(backend.keyring)]
    pool = str(backend.pool)
    names = subprocess.run([*base, "ls", pool], capture_output=True, check=True, text=True)
    found = [n for n in names.stdout.split() if n.startswith("stackhop-")]
    for image in images:
        snaps = subprocess.run(
            [*base, "snap", "ls", "--format", "json", f"{pool}/{image}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if snaps.returncode == 0:
            found += [
                f"{image}@{s['name']}"
                for s in json.loads(snaps.stdout)
                if s["name"].startswith("stackhop-")
            ]
    return found
