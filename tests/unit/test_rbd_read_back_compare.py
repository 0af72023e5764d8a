"""A reading-back librbd sink stops on bytes that read back otherwise than written.

The image here is a fake: a real Ceph cannot be made to return other bytes than it
acknowledged (BlueStore checksums what it stores), and that is the very failure this
check exists for. The sink's happy path, zeroed extents and the fresh-image check run on
the testbed's Ceph (tests/functional/test_rbd_read_back.py). The sink needs the rados/rbd
bindings (for their error classes), which scripts/setup.sh installs wherever tests run.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stackhop.transfer.rbd_access import RbdError
from stackhop.transfer.rbd_diff import DiffHeader, WriteExtent
from stackhop.transfer.rbd_lib_io import LibDiffSink


class _Completion:
    def __init__(self, code: int) -> None:
        self.code = code
        self.done = threading.Event()

    def get_return_value(self) -> int:
        return self.code

    def wait_for_complete_and_cb(self) -> None:
        self.done.wait()


class _Image:
    """librbd's asynchronous calls, answered on other threads as librbd does; the bytes at
    ``rot`` change after they are written (what a re-read exists to catch)."""

    def __init__(self, size: int, rot: int | None = None) -> None:
        self.data = bytearray(size)
        self.rot = rot
        self.reads = 0

    def _later(self, completion: _Completion, callback: Any, *args: Any) -> _Completion:
        def run() -> None:
            callback(completion, *args)
            completion.done.set()

        threading.Thread(target=run).start()
        return completion

    def aio_write(self, data: bytes, offset: int, callback: Any) -> _Completion:
        self.data[offset : offset + len(data)] = data
        if self.rot is not None and offset <= self.rot < offset + len(data):
            self.data[self.rot] ^= 0xFF
        return self._later(_Completion(len(data)), callback)

    def aio_read(self, offset: int, length: int, callback: Any) -> _Completion:
        self.reads += 1
        got = bytes(self.data[offset : offset + length])
        return self._later(_Completion(length), callback, got)

    def size(self) -> int:
        return len(self.data)

    def list_snaps(self) -> list[dict[str, Any]]:
        return []

    def flush(self) -> None:
        pass

    def diff_iterate(self, *_args: Any, **_kwargs: Any) -> None:
        pass  # nothing allocated besides what was written

    def create_snap(self, _name: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Ioctx:
    def close(self) -> None:
        pass


class _Cluster:
    def __init__(self, image: _Image) -> None:
        self.image = image
        self.where = "cloud 'dst' (pool volumes)"

    def spec(self, image: str, snap: str | None = None) -> str:
        return f"volumes/{image}"

    def ioctx(self) -> _Ioctx:
        return _Ioctx()

    def open_image(self, _ioctx: Any, _image: str, *_a: Any, **_k: Any) -> _Image:
        return self.image


def _copy(image: _Image) -> LibDiffSink:
    sink = LibDiffSink(_Cluster(image), "volume-x", fresh=True, read_back=True)  # type: ignore[arg-type]
    sink.header(DiffHeader(None, "s1", len(image.data)))
    for index in range(8):
        sink.record(WriteExtent(index * 4096, bytes([index + 1]) * 4096))
    sink.finish()
    return sink


def test_every_piece_is_read_back_and_compared() -> None:
    image = _Image(8 * 4096)
    assert _copy(image).reads_back and image.reads == 8


def test_a_byte_that_reads_back_otherwise_fails_the_copy() -> None:
    with pytest.raises(RbdError, match=r"volumes/volume-x reads back other bytes at offset 20480"):
        _copy(_Image(8 * 4096, rot=5 * 4096 + 17))
