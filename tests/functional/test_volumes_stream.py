"""The stream method on the testbed: real Cinder file volumes, real ssh storage hosts.

A source volume of our own project gets known content written into its
backing file (dense random, compressible text, explicit zeros, a small
unaligned write, holes); the method copies it to the destination project and
the destination file must hash equal, chunk by chunk, to the source (read
here with plain Python). A transfer broken after some chunks resumes without
sending confirmed chunks again; an incremental pass after a few changed
blocks sends only their chunks.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import layout
from tests.functional.conftest import Testbed
from tests.functional.stream_support import (
    MIB,
    MemoryBackup,
    Project,
    Recorder,
    connect,
    file_content_digest,
    file_digests,
    make_context,
    nonzero_chunks,
    project_pair,
    storage_map,
    text_block,
    volume_ref,
    wait_status,
    write_at,
)

from stackhop.errors import CapabilityError, CloudUnreachableError
from stackhop.transfer import ssh_stream
from stackhop.transfer import stream_agent as agent
from stackhop.volumes.model import VERIFY_CHUNK, PassResult
from stackhop.volumes.stream import MARKER, StreamMethod, chunk_key

SIZE = 1024 * MIB


@pytest.fixture(autouse=True)
def ssh_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACKHOP_SSH_CONFIG", str(layout.SSH_DIR / "ssh_config"))


@pytest.fixture
def project(testbed: Testbed) -> Iterator[Project]:
    yield from project_pair()


def src_file(volume_id: str) -> Path:
    return layout.SRC.file_backend_dir / f"volume-{volume_id}"


def dst_file(volume_id: str) -> Path:
    return layout.DST.file_backend_dir / f"volume-{volume_id}"


def fill(path: Path) -> None:
    """Sparse and dense regions, compressible and not, explicit zeros, an unaligned write."""
    rng = random.Random(6)
    write_at(path, 8 * MIB, rng.randbytes(40 * MIB))  # dense random
    write_at(path, 300 * MIB, text_block(20 * MIB, 1))  # compressible
    write_at(path, 500 * MIB, bytes(8 * MIB))  # allocated, but zeros: not sent
    write_at(path, 700 * MIB + 123, rng.randbytes(5000))  # straddles nothing, tiny
    write_at(path, 900 * MIB, rng.randbytes(60 * MIB))


def test_copy_verifies_then_incremental_sends_only_changed_chunks(
    project: Project, tmp_path: Path
) -> None:
    source = project.create_source_volume(
        "voltest-stream-a", description="known content", metadata={"role": "data"}
    )
    fill(src_file(source.id))
    data_chunks = nonzero_chunks(src_file(source.id), SIZE)
    backup = MemoryBackup()
    recorder = Recorder()
    # zlib: in every Python, so the compressed path runs whatever the hosts have.
    ctx = make_context(
        project=project,
        source=source,
        journal_path=tmp_path / "j.db",
        recorder=recorder,
        backup=backup,
    )
    result = StreamMethod(codec="zlib").copy_pass(ctx)

    assert [name for name, _ in recorder.stages] == ["exported", "imported", "adopted", "verified"]
    dest = wait_status(project.dst_admin, result.destination_id, "available")
    assert dest.project_id == project.dst_id
    assert dest.name == "voltest-stream-a" and dest.description == "known content"
    assert dest.metadata["role"] == "data" and dest.volume_type == "file"
    assert dest.metadata[MARKER] == source.id  # the bare ID, as every method writes
    assert file_digests(dst_file(dest.id), SIZE) == file_digests(src_file(source.id), SIZE)
    assert result.content_digest == file_content_digest(src_file(source.id), SIZE)
    # Only the chunks holding data crossed, each once; holes and zeros did not.
    assert result.bytes_sent == len(data_chunks) * VERIFY_CHUNK
    # The text and the mostly-zero chunk compressed; the 100 MiB of random data went raw.
    assert 100 * MIB < result.bytes_wire < result.bytes_sent - 20 * MIB
    assert sorted(backup.chunks) == data_chunks and backup.state == "committed"
    assert ctx.journal.chunks(chunk_key(source, dest.id)) == {}  # verified: rows cleared

    # A few blocks change: one in a data chunk, one in a hole, one data chunk zeroed.
    write_at(src_file(source.id), 12 * MIB + 4096, os.urandom(65536))
    write_at(src_file(source.id), 200 * MIB, os.urandom(4096))
    write_at(src_file(source.id), 904 * MIB, bytes(VERIFY_CHUNK))
    recorder2 = Recorder()
    ctx2 = make_context(
        project=project,
        source=source,
        journal_path=tmp_path / "j.db",
        recorder=recorder2,
        incremental=True,
        destination_id=dest.id,
    )
    # zstd, with the project's own Python on the hosts (it has the zstandard module).
    second = StreamMethod(codec="zstd", python=sys.executable).copy_pass(ctx2)
    assert second.destination_id == dest.id
    assert second.details["changed_chunks"] == 3
    assert second.bytes_sent == 2 * VERIFY_CHUNK  # the zeroed chunk is a zero run: no data
    assert file_digests(dst_file(dest.id), SIZE) == file_digests(src_file(source.id), SIZE)
    assert second.content_digest == file_content_digest(src_file(source.id), SIZE)
    assert [v.id for v in project.destination_volumes()] == [dest.id]  # never two

    # The copy is a usable Cinder volume: snapshot it and clone the snapshot.
    scoped = connect(layout.DST.name, project.dst_id)
    snap = scoped.block_storage.create_snapshot(volume_id=dest.id, name="voltest-stream-snap")
    scoped.block_storage.wait_for_status(snap, "available", failures=["error"], wait=300)
    clone = scoped.block_storage.create_volume(
        size=1, snapshot_id=snap.id, name="voltest-stream-clone"
    )
    clone = wait_status(project.dst_admin, clone.id, "available")
    assert file_digests(dst_file(clone.id), SIZE) == file_digests(src_file(source.id), SIZE)


def test_broken_transfer_resumes_without_resending_confirmed_chunks(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = project.create_source_volume("voltest-stream-b")
    rng = random.Random(7)
    write_at(src_file(source.id), 0, rng.randbytes(96 * MIB))
    write_at(src_file(source.id), 512 * MIB, text_block(32 * MIB, 2))
    data_chunks = nonzero_chunks(src_file(source.id), SIZE)
    method = StreamMethod(fsync_bytes=8 * MIB)  # acknowledge often, so a break keeps some

    sent: list[int] = []

    def break_after_twenty(kind: int, offset: int, length: int) -> None:
        if kind == agent.DATA:
            sent.append(offset)
        if len(sent) > 20:
            raise ConnectionResetError("simulated broken connection")

    monkeypatch.setattr(ssh_stream, "frame_hooks", [break_after_twenty])
    recorder = Recorder()
    ctx = make_context(
        project=project, source=source, journal_path=tmp_path / "j.db", recorder=recorder
    )
    with pytest.raises(ConnectionResetError):
        method.copy_pass(ctx)
    dest_id = recorder.destination_id()
    assert dest_id is not None
    rows = ctx.journal.chunks(chunk_key(source, dest_id))
    confirmed = {o for o, row in rows.items() if row.state == "confirmed" and o in data_chunks}
    # Acknowledged after fdatasync in 8 MiB batches; what was in flight is not confirmed.
    assert 1 <= len(confirmed) <= 20

    resent: list[int] = []
    monkeypatch.setattr(
        ssh_stream,
        "frame_hooks",
        [lambda kind, offset, length: resent.append(offset) if kind == agent.DATA else None],
    )
    recorder2 = Recorder()
    backup = MemoryBackup()  # the backup still gets every chunk, from the same read
    ctx2 = make_context(
        project=project,
        source=source,
        journal_path=tmp_path / "j.db",
        recorder=recorder2,
        destination_id=dest_id,
        backup=backup,
    )
    result = method.copy_pass(ctx2)
    assert result.destination_id == dest_id
    assert not confirmed & set(resent)
    assert sorted(backup.chunks) == data_chunks and backup.state == "committed"
    assert result.bytes_sent == (len(data_chunks) - len(confirmed)) * VERIFY_CHUNK
    assert result.details["resumed_chunks"] >= len(confirmed)
    assert file_digests(dst_file(dest_id), SIZE) == file_digests(src_file(source.id), SIZE)
    assert [v.id for v in project.destination_volumes()] == [dest_id]


def test_interrupted_pass_without_journal_finds_its_volume_by_marker(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = project.create_source_volume("voltest-stream-c")
    write_at(src_file(source.id), 64 * MIB, os.urandom(16 * MIB))

    def broken(kind: int, offset: int, length: int) -> None:
        raise ConnectionResetError("simulated broken connection")

    monkeypatch.setattr(ssh_stream, "frame_hooks", [broken])
    with pytest.raises(ConnectionResetError):
        StreamMethod().copy_pass(
            make_context(
                project=project, source=source, journal_path=tmp_path / "a.db", recorder=Recorder()
            )
        )
    monkeypatch.setattr(ssh_stream, "frame_hooks", [])
    # A new journal and no destination ID: the marker finds the first pass's volume.
    result = StreamMethod().copy_pass(
        make_context(
            project=project, source=source, journal_path=tmp_path / "b.db", recorder=Recorder()
        )
    )
    assert [v.id for v in project.destination_volumes()] == [result.destination_id]
    assert result.bytes_sent == 4 * VERIFY_CHUNK
    assert file_digests(dst_file(result.destination_id), SIZE) == file_digests(
        src_file(source.id), SIZE
    )


def test_check_refuses_a_ceph_volume_and_names_the_fix(testbed: Testbed) -> None:
    admin = connect(layout.SRC.name)
    ceph = next(
        v for v in admin.block_storage.volumes(all_projects=True) if "@ceph" in (v.host or "")
    )
    with pytest.raises(CapabilityError, match="needs a 'file' backend with an ssh_host"):
        StreamMethod().check(volume_ref("src", ceph), storage_map(), "dst", "file")


def test_both_routes_copy_alike_and_the_kept_digests_are_trusted_only_while_untouched(
    project: Project, tmp_path: Path
) -> None:
    """Through this machine (relay) and host to host (direct, the testbed's storage map has a
    ``direct_ssh_config``): the same copy. An incremental chain keeps the destination's
    digests; a pass uses them only while the destination file is unchanged since."""
    source = project.create_source_volume("voltest-stream-r")
    fill(src_file(source.id))
    journal = tmp_path / "j.db"
    relay = StreamMethod(route="relay").copy_pass(
        make_context(project=project, source=source, journal_path=journal, recorder=Recorder())
    )
    assert relay.details["route"] == "relay" and relay.details["direct_io"]
    assert file_digests(dst_file(relay.destination_id), SIZE) == file_digests(
        src_file(source.id), SIZE
    )
    project.dst_admin.block_storage.delete_volume(relay.destination_id)
    project.dst_admin.block_storage.wait_for_delete(
        project.dst_admin.block_storage.get_volume(relay.destination_id), wait=300
    )

    def pass_(**kwargs: Any) -> PassResult:
        ctx = make_context(
            project=project, source=source, journal_path=journal, recorder=Recorder(), **kwargs
        )
        return StreamMethod().copy_pass(ctx)

    first = pass_(incremental=True)  # a new volume: a full pass that keeps its digests
    assert first.details["route"] == "direct" and first.bytes_sent == relay.bytes_sent
    assert first.content_digest == relay.content_digest
    assert first.state["destination_stat"]

    # Nothing changed: the kept digests stand for the destination, nothing is sent.
    second = pass_(incremental=True, destination_id=first.destination_id, previous=first.state)
    assert second.details["destination_digests_kept"] is True
    assert second.details["changed_chunks"] == 0 and second.bytes_sent == 0

    # Someone writes into the destination file: its stat changes, so it is read again and
    # the damaged chunk is sent back along with the one changed on the source.
    write_at(dst_file(first.destination_id), 300 * MIB + 5, b"not what the source holds")
    write_at(src_file(source.id), 8 * MIB, os.urandom(4096))
    third = pass_(incremental=True, destination_id=first.destination_id, previous=second.state)
    assert third.details["destination_digests_kept"] is False
    assert third.details["changed_chunks"] == 2
    assert file_digests(dst_file(first.destination_id), SIZE) == file_digests(
        src_file(source.id), SIZE
    )


def test_direct_route_that_cannot_reach_the_destination_says_what_to_fix(
    project: Project, tmp_path: Path
) -> None:
    source = project.create_source_volume("voltest-stream-d")
    write_at(src_file(source.id), 0, os.urandom(VERIFY_CHUNK))
    storage = storage_map()
    key = ("src", "file")
    broken = dataclasses.replace(storage.backends[key], direct_ssh_config="/nonexistent/config")
    ctx = make_context(
        project=project, source=source, journal_path=tmp_path / "j.db", recorder=Recorder()
    )
    ctx.storage = dataclasses.replace(storage, backends={**storage.backends, key: broken})
    with pytest.raises(CloudUnreachableError, match="direct_ssh_config") as caught:
        StreamMethod().copy_pass(ctx)
    assert "/nonexistent/config" in str(caught.value) and "\n" not in str(caught.value)
