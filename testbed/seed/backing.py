"""Read and write a Cinder volume's bytes where its backend keeps them.

There is no hypervisor to write through, so the seed writes dense volumes
straight into their backing store: the RBD image ``volumes/volume-<id>`` on the
cloud's Ceph cluster (through Debian's ``rbd`` bindings, as client.admin), or
the sparse file ``volume-<id>`` in the ``file`` backend's share directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Protocol

from testbed import layout
from testbed.infra import ceph
from testbed.openstack.cinder import CEPH_POOL


class Backing(Protocol):
    """The bytes of one volume."""

    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def write_all(self, chunks: Iterable[bytes]) -> int: ...


def rbd_name(volume_id: str) -> str:
    return f"volume-{volume_id}"


def _rbd_modules() -> tuple[ModuleType, ModuleType]:
    # Debian's bindings are not on PyPI; the testbed links them into one directory.
    path = str(ceph.python_path())
    if path not in sys.path:
        sys.path.append(path)
    import rados  # type: ignore[import-not-found]
    import rbd  # type: ignore[import-not-found]

    return rados, rbd


class RbdBacking:
    """An RBD image of a cloud's ``volumes`` pool (opened per call: calls are few)."""

    def __init__(self, cloud: layout.CloudLayout, volume_id: str) -> None:
        self.cloud = cloud
        self.name = rbd_name(volume_id)

    def _open(self):  # type: ignore[no-untyped-def]
        rados, rbd = _rbd_modules()
        cluster = rados.Rados(conffile=str(self.cloud.ceph_conf), name="client.admin")
        cluster.connect(timeout=30)
        ioctx = cluster.open_ioctx(CEPH_POOL)
        return cluster, ioctx, rbd.Image(ioctx, self.name)

    def _with_image(self, fn):  # type: ignore[no-untyped-def]
        cluster, ioctx, image = self._open()
        try:
            return fn(image)
        finally:
            image.close()
            ioctx.close()
            cluster.shutdown()

    def size(self) -> int:
        return int(self._with_image(lambda img: img.size()))

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self._with_image(lambda img: img.read(offset, length)))

    def write_all(self, chunks: Iterable[bytes]) -> int:
        def write(img) -> int:  # type: ignore[no-untyped-def]
            offset = 0
            for chunk in chunks:
                img.write(chunk, offset)
                offset += len(chunk)
            img.flush()
            return offset

        return int(self._with_image(write))


class FileBacking:
    """A volume file of the ``file`` backend, seen from the host (the share's directory)."""

    def __init__(self, cloud: layout.CloudLayout, volume_id: str) -> None:
        self.path: Path = cloud.file_backend_dir / f"volume-{volume_id}"

    def size(self) -> int:
        return self.path.stat().st_size

    def read(self, offset: int, length: int) -> bytes:
        with self.path.open("rb") as f:
            f.seek(offset)
            return f.read(length)

    def write_all(self, chunks: Iterable[bytes]) -> int:
        offset = 0
        with self.path.open("r+b") as f:
            for chunk in chunks:
                f.write(chunk)
                offset += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        return offset


def backing(cloud: layout.CloudLayout, volume_type: str, volume_id: str) -> Backing:
    if volume_type == "ceph":
        return RbdBacking(cloud, volume_id)
    if volume_type == "file":
        return FileBacking(cloud, volume_id)
    raise ValueError(f"no backing store known for volume type {volume_type!r}")


def ends_match(b: Backing, expected: Iterator[bytes], size: int) -> bool:
    """Whether the first and last chunk of ``b`` equal those of ``expected`` (of ``size`` bytes).

    The seed writes front to back, so an interrupted write leaves the last chunk
    wrong: checking both ends tells "written" from "not (fully) written" cheaply.
    """
    if b.size() != size:
        return False
    first = next(expected)
    last = first
    for chunk in expected:
        last = chunk
    tail = size - len(last)
    return b.read(0, len(first)) == first and b.read(tail, len(last)) == last

