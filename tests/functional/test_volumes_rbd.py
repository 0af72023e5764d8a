"""The rbd volume copy method on the testbed: Ceph src -> Ceph dst, adopted, verified, incremental.

Library level: a real PassContext (real connections, journal and event bus)
drives :class:`stackhop.volumes.rbd.RbdMethod` on a 1 GiB source volume this
test creates (admin project of src) into the seeded project ``alpha`` of dst.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.functional.conftest import Testbed
from tests.functional.rbd_support import (
    Recorder,
    Write,
    expected_digest,
    image_content_digest,
    make_context,
    stackhop_leftovers,
    volume_ref,
    write_image,
    write_zeros,
)
from tests.functional.stream_support import Project, project_pair

from stackhop.clouds import connect
from stackhop.errors import CapabilityError
from stackhop.transfer.rbd import RbdCluster
from stackhop.transfer.rbd_lib import LibRbdCluster
from stackhop.volumes.cinder_adopt import previous_copies
from stackhop.volumes.inventory import project_connection
from stackhop.volumes.model import GIB, VERIFY_CHUNK
from stackhop.volumes.rbd import MARKER, RbdMethod, cluster_of
from stackhop.volumes.storage import Backend, StorageMap, load_storage_map

pytestmark = pytest.mark.functional

MIB = 1024 * 1024

#: Sparse known content: a few MiB at scattered offsets, one unaligned, one all zeros.
FIRST: list[Write] = [
    (0, 2 * MIB, 1),
    (100 * MIB + 12345, 3 * MIB, 2),
    (512 * MIB, 1 * MIB, 3),
    (1020 * MIB, 4 * MIB, 4),
]
#: A few changed blocks for the incremental pass (64 KiB each, in three chunks).
CHANGES: list[Write] = [
    (64 * 1024, 64 * 1024, 11),
    (300 * MIB, 64 * 1024, 12),
    (1023 * MIB, 64 * 1024, 13),
]


@dataclasses.dataclass
class World:
    src: Any
    dst: Any
    storage: StorageMap
    src_backend: Backend
    dst_backend: Backend
    alpha: str
    volume: Any
    destination_ids: list[str]


@pytest.fixture
def world(testbed: Testbed) -> Iterator[World]:
    """A 1 GiB ceph volume on src with known sparse content; removes every trace afterwards."""
    src, dst = connect("src"), connect("dst")
    storage = load_storage_map()
    alpha = dst.identity.find_project("alpha", ignore_missing=False).id
    name = f"voltest-rbd-{uuid.uuid4().hex[:8]}"
    volume = src.block_storage.create_volume(
        size=1,
        name=name,
        volume_type="ceph",
        description="rbd method test",
        metadata={"purpose": "voltest"},
    )
    state = World(
        src,
        dst,
        storage,
        storage.backend("src", "ceph"),
        storage.backend("dst", "ceph"),
        alpha,
        volume,
        [],
    )
    try:
        state.volume = src.block_storage.wait_for_status(
            volume, "available", failures=["error"], wait=300
        )
        write_image(state.src_backend, f"volume-{volume.id}", FIRST)
        yield state
    finally:
        for leftover in stackhop_leftovers(state.src_backend, [f"volume-{volume.id}"]):
            if "@" in leftover:
                image, snap = leftover.split("@")
                cluster_of(state.src_backend).remove_snapshot(image, snap)
        # A pass that failed after Cinder created its volume never returned it: find it by marker.
        marked = [v.id for v in previous_copies(dst, volume.id, None)]
        state.destination_ids += [i for i in marked if i not in state.destination_ids]
        dst_cluster = cluster_of(state.dst_backend)
        for dest_id in state.destination_ids:
            for snap in dst_cluster.snapshots(f"volume-{dest_id}"):
                dst_cluster.remove_snapshot(f"volume-{dest_id}", snap)
            for snapshot in dst.block_storage.snapshots(volume_id=dest_id, all_projects=True):
                dst.block_storage.delete_snapshot(snapshot, ignore_missing=True)
                dst.block_storage.wait_for_delete(snapshot, wait=300)
            dst.block_storage.delete_volume(dest_id, ignore_missing=True)
        src.block_storage.delete_volume(volume, ignore_missing=True)
        for dest_id in state.destination_ids:
            found = dst.block_storage.find_volume(dest_id, ignore_missing=True, all_projects=True)
            if found is not None:
                dst.block_storage.wait_for_delete(found, wait=300)


def _pass(
    world: World,
    tmp_path: Path,
    recorder: Recorder,
    run_id: str,
    *,
    storage: StorageMap | None = None,
    incremental: bool,
    previous: dict[str, Any] | None = None,
    destination_id: str | None = None,
    method: RbdMethod | None = None,
    journal: str = "journal.sqlite",
) -> Any:
    volume = world.src.block_storage.get_volume(world.volume.id)
    ctx = make_context(
        run_id=run_id,
        source=volume_ref("src", volume),
        destination_project_id=world.alpha,
        source_conn=world.src,
        destination_conn=world.dst,
        storage=storage or world.storage,
        journal_path=tmp_path / journal,
        recorder=recorder,
        incremental=incremental,
        previous=previous,
        destination_id=destination_id,
    )
    result = (method or RbdMethod()).copy_pass(ctx)
    if result.destination_id not in world.destination_ids:
        world.destination_ids.append(result.destination_id)
    return result


def _allocated(writes: list[Write]) -> int:
    return sum(length for _, length, _ in writes)


def test_check_refuses_a_file_backed_volume(testbed: Testbed) -> None:
    storage = load_storage_map()
    ref = volume_ref(
        "src",
        type(
            "V",
            (),
            dict(
                id="x",
                name="v",
                size=1,
                project_id="p",
                status="available",
                volume_type="file",
                host="src-volume@file#file",
                description=None,
                is_bootable=False,
                metadata={},
            ),
        )(),
    )
    with pytest.raises(CapabilityError, match="not RBD; use --method stream"):
        RbdMethod().check(ref, storage, "dst", "ceph")
    RbdMethod().check(dataclasses.replace(ref, host="src-volume@ceph#ceph"), storage, "dst", "ceph")


def test_full_then_incremental_copy_is_adopted_verified_and_leaves_nothing(
    world: World, tmp_path: Path
) -> None:
    method = RbdMethod()
    recorder = Recorder()
    run_id = uuid.uuid4().hex
    full = _pass(world, tmp_path, recorder, run_id, incremental=True)

    # Adopted into the mapped project, managed, available, with the source's fields.
    dest = world.dst.block_storage.get_volume(full.destination_id)
    assert dest.project_id == world.alpha
    assert dest.status == "available" and dest.size == 1
    assert dest.name == world.volume.name and dest.description == "rbd method test"
    assert dest.volume_type == "ceph" and dest.host.split("@")[1].startswith("ceph")
    assert dest.metadata["purpose"] == "voltest" and dest.metadata[MARKER] == world.volume.id
    assert [s for s, _ in recorder.stages] == ["exported", "imported", "adopted", "verified"]
    # Content digest equals the one computed from the known writes; only allocated data sent.
    assert full.content_digest == expected_digest(GIB, FIRST)
    assert _allocated(FIRST) <= full.bytes_sent <= _allocated(FIRST) + 4 * VERIFY_CHUNK
    assert full.bytes_read == GIB
    assert full.state["snapshot"] == f"stackhop-{run_id[:8]}-1"
    # The kept snapshots are the only live temporaries (no role grant, no import image left).
    assert sorted(t.kind for t in recorder.live.values()) == ["rbd-snapshot", "rbd-snapshot"]

    # Incremental: change three 64 KiB blocks, only those cross.
    write_image(world.src_backend, f"volume-{world.volume.id}", CHANGES)
    recorder2 = Recorder()
    inc = _pass(
        world,
        tmp_path,
        recorder2,
        run_id,
        incremental=True,
        previous=full.state,
        destination_id=full.destination_id,
    )
    assert inc.destination_id == full.destination_id
    assert _allocated(CHANGES) <= inc.bytes_sent <= _allocated(CHANGES) + 3 * 512 * 1024
    assert inc.content_digest == expected_digest(GIB, FIRST + CHANGES)
    assert recorder2.stages[-1][1]["reread"] == "3 chunk(s)"
    assert inc.state["snapshot"] == f"stackhop-{run_id[:8]}-2"

    # The destination is usable through Cinder: a snapshot of it goes available.
    snapshot = world.dst.block_storage.create_snapshot(
        volume_id=inc.destination_id, name="voltest-rbd-usable"
    )
    snapshot = world.dst.block_storage.wait_for_status(
        snapshot, "available", failures=["error"], wait=300
    )
    world.dst.block_storage.delete_snapshot(snapshot)
    world.dst.block_storage.wait_for_delete(snapshot, wait=300)

    # Ending the chain leaves no stackhop snapshot or image on either cluster.
    method.forget_incremental(inc.state, world.src, world.dst, world.storage)
    for temporary in recorder2.live.values():
        method.remove_temporary(temporary, world.src, world.dst, world.storage)
    assert stackhop_leftovers(world.src_backend, [f"volume-{world.volume.id}"]) == []
    assert stackhop_leftovers(world.dst_backend, [f"volume-{inc.destination_id}"]) == []


def test_rerun_keeps_the_copy_and_sends_only_what_differs_even_without_the_journal(
    world: World, tmp_path: Path
) -> None:
    # rbd runs on src-storage / dst-storage over ssh (the same machine, so the same paths).
    hop = StorageMap(
        backends={
            **world.storage.backends,
            ("src", "ceph"): dataclasses.replace(world.src_backend, ssh_host="src-storage"),
            ("dst", "ceph"): dataclasses.replace(world.dst_backend, ssh_host="dst-storage"),
        },
        source="test",
    )
    first = _pass(world, tmp_path, Recorder(), uuid.uuid4().hex, storage=hop, incremental=False)
    # A re-run that believes the first one was interrupted: the same volume, nothing sent.
    recorder = Recorder()
    second = _pass(
        world,
        tmp_path,
        recorder,
        uuid.uuid4().hex,
        storage=hop,
        incremental=False,
        destination_id=first.destination_id,
    )
    assert second.destination_id == first.destination_id
    assert second.bytes_sent == 0 and second.details["chunks_differing"] == 0
    assert second.content_digest == expected_digest(GIB, FIRST)
    # rbd import-diff wrote it (another program): the destination was read back.
    assert recorder.stages[-1][1]["verified_by"] == "reread"
    assert [s for s, _ in recorder.stages] == ["exported", "imported", "adopted", "verified"]
    assert second.state == {} and recorder.live == {}

    # The source changes and the journal is lost (a new one, no destination ID): the
    # marker finds the copy, and only the three changed chunks cross (librbd this time).
    write_image(world.src_backend, f"volume-{world.volume.id}", CHANGES)
    third = _pass(
        world, tmp_path, Recorder(), uuid.uuid4().hex, incremental=False, journal="lost.sqlite"
    )
    assert third.destination_id == first.destination_id
    assert third.details["chunks_differing"] == 3
    assert 0 < third.bytes_sent <= 3 * VERIFY_CHUNK
    assert third.content_digest == expected_digest(GIB, FIRST + CHANGES)
    assert image_content_digest(
        world.dst_backend, f"volume-{first.destination_id}"
    ) == expected_digest(GIB, FIRST + CHANGES)
    assert [v.id for v in previous_copies(world.dst, world.volume.id, None)] == [
        first.destination_id
    ]
    assert stackhop_leftovers(world.src_backend, [f"volume-{world.volume.id}"]) == []
    assert stackhop_leftovers(world.dst_backend, [f"volume-{first.destination_id}"]) == []


#: More changed blocks for a third pass: one inside a chunk the second pass changed too.
MORE_CHANGES: list[Write] = [
    (300 * MIB + 128 * 1024, 64 * 1024, 21),
    (700 * MIB, 128 * 1024, 22),
]


def test_bindings_and_cli_paths_copy_the_same_content(world: World, tmp_path: Path) -> None:
    # The same chain through every pairing of librbd in-process (local clusters) and the rbd
    # tools over ssh: the content digests must be the ones computed from the known writes.
    def storage(src_ssh: str | None, dst_ssh: str | None) -> StorageMap:
        return StorageMap(
            backends={
                **world.storage.backends,
                ("src", "ceph"): dataclasses.replace(world.src_backend, ssh_host=src_ssh),
                ("dst", "ceph"): dataclasses.replace(world.dst_backend, ssh_host=dst_ssh),
            },
            source="test",
        )

    local, hop = storage(None, None), storage("src-storage", "dst-storage")
    mixed = storage(None, "dst-storage")
    # The venv has Debian's bindings (scripts/setup.sh): local clusters go through librbd.
    assert isinstance(cluster_of(local.backend("src", "ceph")), LibRbdCluster)
    assert isinstance(cluster_of(hop.backend("dst", "ceph")), RbdCluster)
    run_id = uuid.uuid4().hex
    source_image = f"volume-{world.volume.id}"

    # Pass 1, full: read with librbd, written by rbd import-diff on dst-storage.
    first = _pass(world, tmp_path, Recorder(), run_id, storage=mixed, incremental=True)
    assert first.content_digest == expected_digest(GIB, FIRST)
    image, snap = f"volume-{first.destination_id}", first.state["snapshot"]
    # Both ways of reading back give the same per-chunk digests, on both clusters.
    for side, name in (("src", source_image), ("dst", image)):
        by_lib = cluster_of(local.backend(side, "ceph")).chunk_digests(name, snap, VERIFY_CHUNK)
        by_cli = cluster_of(hop.backend(side, "ceph")).chunk_digests(name, snap, VERIFY_CHUNK)
        assert by_lib.digests == by_cli.digests and len(by_lib.digests) == GIB // VERIFY_CHUNK

    # Pass 2, incremental, rbd tools on both ends over ssh.
    write_image(world.src_backend, source_image, CHANGES)
    second = _pass(
        world,
        tmp_path,
        Recorder(),
        run_id,
        storage=hop,
        incremental=True,
        previous=first.state,
        destination_id=first.destination_id,
    )
    assert second.content_digest == expected_digest(GIB, FIRST + CHANGES)
    assert second.state["stale_snapshot"] == snap

    # Pass 3, incremental, librbd on both ends: pass 1's snapshot goes, pass 2's stays.
    write_image(world.src_backend, source_image, MORE_CHANGES)
    third = _pass(
        world,
        tmp_path,
        Recorder(),
        run_id,
        storage=local,
        incremental=True,
        previous=second.state,
        destination_id=first.destination_id,
    )
    assert third.content_digest == expected_digest(GIB, FIRST + CHANGES + MORE_CHANGES)
    assert _allocated(MORE_CHANGES) <= third.bytes_sent <= _allocated(MORE_CHANGES) + MIB
    kept = sorted([second.state["snapshot"], third.state["snapshot"]])
    for side, name in (("src", source_image), ("dst", image)):
        snaps = cluster_of(local.backend(side, "ceph")).snapshots(name)
        assert sorted(s for s in snaps if s.startswith("stackhop-")) == kept

    RbdMethod().forget_incremental(third.state, world.src, world.dst, local)
    assert stackhop_leftovers(world.src_backend, [source_image]) == []
    assert stackhop_leftovers(world.dst_backend, [image]) == []


def test_full_pass_trusting_confirmed_writes_sends_no_zeros_and_rereads_by_default(
    world: World, tmp_path: Path
) -> None:
    # 4 MiB of zeros written as data: allocated on src, so read, but neither hashed nor sent.
    source_image = f"volume-{world.volume.id}"
    write_zeros(world.src_backend, source_image, 600 * MIB, 4 * MIB)
    recorder = Recorder()
    first = _pass(world, tmp_path, recorder, uuid.uuid4().hex, incremental=False,
                  method=RbdMethod(reread=False))
    facts = recorder.stages[-1][1]
    assert facts["verified_by"] == "writes" and first.details["verified_by"] == "writes"
    assert first.details["zero_bytes"] >= 4 * MIB
    assert _allocated(FIRST) <= first.bytes_sent <= _allocated(FIRST) + 4 * VERIFY_CHUNK
    # What the pass did not re-read is on the destination: read it with the rbd tool.
    expected = expected_digest(GIB, FIRST)
    assert first.content_digest == expected
    image = f"volume-{first.destination_id}"
    assert image_content_digest(world.dst_backend, image) == expected

    # By default, a full pass reads every extent back as it writes it (a fresh copy: the
    # first one is deleted, else the pass would only compare and keep it).
    world.dst.block_storage.delete_volume(first.destination_id)
    world.dst.block_storage.wait_for_delete(
        world.dst.block_storage.get_volume(first.destination_id), wait=300
    )
    recorder = Recorder()
    second = _pass(world, tmp_path, recorder, uuid.uuid4().hex, incremental=False)
    assert second.destination_id != first.destination_id and "reused" not in recorder.stages[-1][1]
    assert recorder.stages[-1][1]["verified_by"] == "read-back"
    assert second.content_digest == expected
    assert image_content_digest(world.dst_backend, f"volume-{second.destination_id}") == expected
    assert stackhop_leftovers(world.src_backend, [source_image]) == []
    assert stackhop_leftovers(world.dst_backend, [f"volume-{second.destination_id}"]) == []


@pytest.fixture
def pair(testbed: Testbed) -> Iterator[Project]:
    """A project on both clouds where the admin user holds the admin role (removed after)."""
    yield from project_pair()


def _pair_context(
    pair: Project, source: Any, storage: StorageMap, tmp_path: Path, recorder: Recorder
) -> Any:
    """A full pass's context from the pair's source project into its destination one."""
    return make_context(
        run_id=uuid.uuid4().hex,
        source=source,
        destination_project_id=pair.dst_id,
        source_conn=pair.src_admin,
        destination_conn=pair.dst_admin,
        storage=storage,
        journal_path=tmp_path / "journal.sqlite",
        recorder=recorder,
        incremental=False,
    )


def _drop_source_snapshots(backend: Backend, image: str) -> None:
    """What a failed pass may leave on the source, so that the project's volumes can be
    deleted."""
    for leftover in stackhop_leftovers(backend, [image]):
        if "@" in leftover:
            cluster_of(backend).remove_snapshot(*leftover.split("@"))


def test_full_pass_creates_right_in_a_project_where_the_user_may(
    pair: Project, tmp_path: Path
) -> None:
    # With a connection scoped to the destination project whose role there may manage
    # volumes, Cinder creates the copy right in that project: no volume transfer.
    storage = load_storage_map()
    src_backend, dst_backend = storage.backend("src", "ceph"), storage.backend("dst", "ceph")
    source = pair.create_source_volume(f"voltest-rbd-{uuid.uuid4().hex[:8]}", 1, "ceph")
    source_image = f"volume-{source.id}"
    write_image(src_backend, source_image, FIRST)
    recorder = Recorder()
    ctx = _pair_context(pair, source, storage, tmp_path, recorder)
    ctx.destination_project_conn = project_connection(pair.dst_admin, "dst", pair.dst_id)
    try:
        result = RbdMethod().copy_pass(ctx)
        assert dict(recorder.stages)["adopted"]["handed_over"] is False
        dest = pair.dst_admin.block_storage.get_volume(result.destination_id)
        assert dest.project_id == pair.dst_id and dest.status == "available"
        assert dest.metadata[MARKER] == source.id and dest.volume_type == "ceph"
        expected = expected_digest(GIB, FIRST)
        assert result.content_digest == expected
        image = f"volume-{result.destination_id}"
        assert image_content_digest(dst_backend, image) == expected
        assert recorder.live == {}
        assert stackhop_leftovers(dst_backend, [image]) == []
    finally:
        _drop_source_snapshots(src_backend, source_image)


def test_a_copy_cinder_puts_on_a_backend_that_is_not_rbd_is_refused_and_removed(
    pair: Project, tmp_path: Path
) -> None:
    # The destination type decides where Cinder's scheduler puts the copy; the type "file"
    # lands on the NFS backend, which the rbd method cannot write into: one line, and the
    # empty volume it had Cinder create is gone again.
    storage = load_storage_map()
    src_backend = storage.backend("src", "ceph")
    source = pair.create_source_volume(f"voltest-rbd-{uuid.uuid4().hex[:8]}", 1, "ceph")
    recorder = Recorder()
    ctx = _pair_context(pair, source, storage, tmp_path, recorder)
    ctx.destination_type = "file"
    try:
        with pytest.raises(CapabilityError, match="not an RBD backend of the storage map") as err:
            RbdMethod().copy_pass(ctx)
        assert "\n" not in str(err.value)
        assert [v for v in pair.dst_admin.block_storage.volumes(all_projects=True,
                                                                 project_id=pair.dst_id)
                if (v.metadata or {}).get(MARKER) == source.id] == []
    finally:
        _drop_source_snapshots(src_backend, f"volume-{source.id}")
