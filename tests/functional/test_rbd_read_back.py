"""A librbd sink that reads every extent back as it writes it, on the testbed's Ceph.

What a re-read of the destination verified, the sink now checks while it writes: every
extent read back equal, and on a fresh image no object holding data that the copy did not
write. (That the comparison catches other bytes is tests/unit/test_rbd_read_back_compare.py's:
Ceph cannot be made to return other bytes than it acknowledged.)
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator

import pytest
from testbed import layout
from tests.functional.conftest import Testbed
from tests.functional.rbd_support import image_content_digest, write_image
from tests.functional.stream_support import storage_map

from stackhop.transfer.rbd_access import RbdError
from stackhop.transfer.rbd_diff import DiffHeader, WriteExtent, ZeroExtent
from stackhop.transfer.rbd_lib import LibRbdCluster
from stackhop.volumes.model import VERIFY_CHUNK, content_digest
from stackhop.volumes.storage import Backend

MIB = 1024 * 1024
SIZE = 64 * MIB


@pytest.fixture
def image(testbed: Testbed) -> Iterator[tuple[LibRbdCluster, str]]:
    conf, keyring = str(layout.DST.ceph_conf), str(layout.DST.ceph_keyring)
    lib = LibRbdCluster("dst", "volumes", conf, keyring, "admin")
    name = f"stackhop-test-readback-{uuid.uuid4().hex[:8]}"
    lib.create_image(name, SIZE)
    yield lib, name
    for snap in lib.snapshots(name):
        lib.remove_snapshot(name, snap)
    lib.remove_image(name)


def _pieces(rng: random.Random) -> list[WriteExtent]:
    # Two runs of data with a gap, pieces of 4 MiB and a short one.
    offsets = [0, 4 * MIB, 8 * MIB, 40 * MIB, 44 * MIB]
    return [WriteExtent(o, rng.randbytes(4 * MIB if o != 44 * MIB else 300_000)) for o in offsets]


def test_every_extent_is_read_back_while_the_next_are_written(
    image: tuple[LibRbdCluster, str],
) -> None:
    lib, name = image
    pieces = _pieces(random.Random(1))
    sink = lib.import_diff(name, fresh=True, read_back=True)
    sink.header(DiffHeader(None, "s1", SIZE))
    for piece in pieces:
        sink.record(piece)
    sink.record(ZeroExtent(20 * MIB, 4 * MIB))  # skipped on a fresh image: reads as zeros
    sink.finish()
    assert sink.reads_back and sink.bytes == sum(p.length for p in pieces)
    assert "s1" in lib.snapshots(name)
    expected = bytearray(SIZE)
    for piece in pieces:
        expected[piece.offset : piece.offset + piece.length] = piece.data
    digests = [
        hashlib.sha256(expected[o : o + VERIFY_CHUNK]).hexdigest()
        for o in range(0, SIZE, VERIFY_CHUNK)
    ]
    # Read with the rbd tool, independently of the sink.
    assert image_content_digest(_backend(), f"{name}@s1") == content_digest(digests)


def test_zeroed_extents_of_an_image_that_held_data_are_read_back_as_zeros(
    image: tuple[LibRbdCluster, str],
) -> None:
    lib, name = image
    write_image(_backend(), name, [(0, 8 * MIB, 7)])
    sink = lib.import_diff(name, read_back=True)
    sink.header(DiffHeader(None, "s1", SIZE))
    sink.record(ZeroExtent(0, 6 * MIB))
    sink.record(WriteExtent(6 * MIB, b"x" * MIB))
    sink.finish()
    assert sink.reads_back
    with lib.ioctx() as ioctx, lib.open_image(ioctx, name, "s1", read_only=True) as handle:
        assert handle.read(0, 7 * MIB) == bytes(6 * MIB) + b"x" * MIB


def test_a_fresh_image_holding_data_the_copy_did_not_write_is_refused(
    image: tuple[LibRbdCluster, str],
) -> None:
    lib, name = image
    # Someone wrote into the "empty" image: 1 MiB at 24 MiB, between the copy's two runs.
    write_image(_backend(), name, [(24 * MIB, MIB, 3)])
    sink = lib.import_diff(name, fresh=True, read_back=True)
    sink.header(DiffHeader(None, "s1", SIZE))
    for piece in _pieces(random.Random(2)):
        sink.record(piece)
    with pytest.raises(RbdError, match=f"holds data at offset {24 * MIB} where this copy wrote"):
        sink.finish()
    assert not sink.reads_back
    assert "s1" not in lib.snapshots(name)  # no end snapshot: the pass did not end


def _backend() -> Backend:
    return storage_map().backend("dst", "ceph")
