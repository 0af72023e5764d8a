"""``stackhop volumes`` on the testbed: the image method end to end, preflight, crash cleanup.

Each test works in a project of its own (``voltest-<hex>``, the same name on src
and dst) with 1 GiB ``file`` volumes whose backing file it writes with known
pseudo-random MiBs (the rest stays holes), and deletes everything at the end.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import layout
from tests.functional.conftest import CliResult
from tests.functional.conftest import Testbed as TestbedInfo
from tests.functional.volumes_support import (
    Sandbox,
    digest_of,
    expected_digest,
    file_backend_path,
    wait_status,
    write_pattern,
)

from stackhop.journal import Journal

pytestmark = pytest.mark.functional

GIB = 1024**3
PIECES = [0, 3, 4, 9, 511, 1023]  # MiB offsets written; chunk 0 and 1 partly, the last one too
BULK = list(range(100, 140))  # 40 MiB more, for the tests that count the bytes a pass sends


@pytest.fixture
def volenv(testbed: TestbedInfo, monkeypatch: pytest.MonkeyPatch) -> TestbedInfo:
    """The testbed with the storage map and ssh config of the testbed in the environment."""
    monkeypatch.setenv("STACKHOP_STORAGE_MAP", str(layout.STORAGE_MAP))
    monkeypatch.setenv("STACKHOP_SSH_CONFIG", str(layout.SSH_DIR / "ssh_config"))
    monkeypatch.setenv("STACKHOP_SRC_FILE_BACKEND_DIR", str(layout.SRC.file_backend_dir))
    monkeypatch.setenv("STACKHOP_DST_FILE_BACKEND_DIR", str(layout.DST.file_backend_dir))
    return testbed


@pytest.fixture
def box(volenv: TestbedInfo) -> Iterator[Sandbox]:
    sandbox = Sandbox.create()
    try:
        yield sandbox
    finally:
        sandbox.close()


def _copy(cli: Callable[..., CliResult], journal: Path, box: Sandbox, *extra: str) -> CliResult:
    return cli(
        "--journal", str(journal), "volumes", "copy", "--from", "src", "--to", "dst",
        "--project", box.name, *extra,
    )  # fmt: skip


def _patterned(box: Sandbox, name: str, seed: str, **kw: Any) -> Any:
    volume = box.volume(name, metadata={"purpose": "voltest", "seed": seed}, **kw)
    write_pattern(file_backend_path("src", volume.id), seed, PIECES)
    return volume


def test_image_method_end_to_end_with_backup_rerun_status_and_restore(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    volume = _patterned(box, "voltest-data", "e2e", description="known content")
    want = expected_digest(GIB, "e2e", PIECES)
    journal, backups = tmp_path / "j.sqlite", tmp_path / "backups"

    plan = _copy(cli, journal, box, "--all", "--method", "image", "--dry-run", "-f", "json")
    assert plan.code == 0, plan.err
    assert [(p["volume"], p["action"]) for p in plan.json()] == [(volume.id, "copy")]
    assert box.volumes("dst") == []  # the dry run created nothing

    done = _copy(cli, journal, box, "--volume", "voltest-data", "--method", "image",
                 "--backup-to", str(backups), "-f", "json")  # fmt: skip
    assert done.code == 0, done.err
    (outcome,) = done.json()["volumes"]
    assert outcome["outcome"] == "done" and outcome["content_digest"] == want
    (copied,) = box.volumes("dst")
    assert copied.id == outcome["destination_id"]
    assert (copied.name, copied.description, copied.volume_type, copied.size) == (
        "voltest-data", "known content", "file", 1,
    )  # fmt: skip
    # The source's metadata, and the marker by which a re-run without the journal finds it.
    assert copied.metadata == {"purpose": "voltest", "seed": "e2e", "stackhop_source": volume.id}
    assert copied.is_bootable is False
    assert digest_of("dst", copied.id) == want
    assert box.images("src") == [] and box.images("dst") == []

    backup = backups / f"{volume.id}.tar"
    assert outcome["backup"] == str(backup)
    assert backup.stat().st_mode & 0o777 == 0o600
    assert backup.stat().st_size < 8 * 1024 * 1024  # holes are not stored, data compressed

    status = cli("--journal", str(journal), "volumes", "status", "-f", "json")
    (row,) = status.json()["volumes"]
    assert row["state"] == "done" and row["before"]["stage"] == "verified"
    assert row["stage"] == "verified" and row["progress"]["unit"] == "bytes"
    sent = row["before"]["backup_stream"]  # what reached the backup target, journaled
    assert sent["bytes"] == backup.stat().st_size and sent["exit_status"] is None
    assert sent["sha256"] == hashlib.sha256(backup.read_bytes()).hexdigest()
    assert set(row["before"]["stages"]) == {"exported", "imported", "adopted", "verified"}

    again = _copy(cli, journal, box, "--all", "--method", "image", "-f", "json")
    assert again.code == 0, again.err
    assert [v["outcome"] for v in again.json()["volumes"]] == ["skipped"]
    assert len(box.volumes("dst")) == 1

    # The journal lost: the marked copy is found, compared and kept (nothing sent) ...
    lost = _copy(cli, tmp_path / "lost.sqlite", box, "--all", "--method", "image", "-f", "json")
    assert lost.code == 0, lost.err
    (kept,) = lost.json()["volumes"]
    assert (kept["outcome"], kept["destination_id"], kept["bytes_sent"]) == ("done", copied.id, 0)
    assert [v.id for v in box.volumes("dst")] == [copied.id]
    # (... and re-imaged in place when the source changed meanwhile: the long test below.)

    restored = cli("--journal", str(journal), "volumes", "restore-backup", "--to", "dst",
                   "--project", box.name, str(backup), "--name", "voltest-restored",
                   "-f", "json")  # fmt: skip
    assert restored.code == 0, restored.err
    new_id = restored.json()["volume_id"]
    assert new_id != copied.id
    assert digest_of("dst", new_id) == want
    # The restore's marker is gone once verified: the volume's metadata is the backed-up one.
    restored_metadata = box.dst.block_storage.get_volume(new_id).metadata
    assert restored_metadata == {"purpose": "voltest", "seed": "e2e"}
    assert box.images("dst") == []


@pytest.mark.long  # a second 1 GiB pass through two images (about a minute)
def test_image_method_journal_lost_after_the_source_changed_reimages_in_place(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    volume = _patterned(box, "voltest-changed", "e2e")
    done = _copy(cli, tmp_path / "j.sqlite", box, "--all", "--method", "image", "-f", "json")
    assert done.code == 0, done.err
    (copied,) = box.volumes("dst")
    write_pattern(file_backend_path("src", volume.id), "e2e-2", PIECES)
    changed = _copy(cli, tmp_path / "lost.sqlite", box, "--all", "--method", "image",
                    "-f", "json")  # fmt: skip
    assert changed.code == 0, changed.err
    (redone,) = changed.json()["volumes"]
    assert redone["destination_id"] == copied.id and redone["bytes_sent"] == GIB
    assert [v.id for v in box.volumes("dst")] == [copied.id]
    assert digest_of("dst", copied.id) == expected_digest(GIB, "e2e-2", PIECES)
    assert box.images("src") == [] and box.images("dst") == []


def test_quota_preflight_names_the_numbers(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    box.dst.block_storage.update_quota_set(box.ids["dst"], volumes=1, gigabytes=1)
    box.volume("voltest-q1")
    box.volume("voltest-q2")
    result = _copy(cli, tmp_path / "j.sqlite", box, "--all", "--method", "image")
    assert result.code == 10, result.err
    assert (
        f"dst project {box.name}: 2 volumes / 2 GiB requested, quota leaves 1 volume / 1 GiB; "
        "raise the quota or select fewer"
    ) in result.err
    assert box.volumes("dst") == [] and box.images("src") == []


def test_destination_project_without_a_role_is_refused(
    cli: Callable[..., CliResult], volenv: TestbedInfo, tmp_path: Path
) -> None:
    sandbox = Sandbox.create(dst_role=False)
    try:
        sandbox.volume("voltest-norole")
        result = _copy(cli, tmp_path / "j.sqlite", sandbox, "--all", "--method", "image")
        assert result.code == 3, result.err
        assert "cannot act in project" in result.err and "role add" in result.err
    finally:
        sandbox.close()


def test_in_use_volume_is_refused_without_allow_in_use(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    volume = box.volume("voltest-busy")
    box.src.block_storage.attach_volume(volume, mountpoint="/dev/vdb", instance=str(uuid.uuid4()))
    try:
        wait_status(box.src, volume.id, ("in-use",))
        refused = _copy(cli, tmp_path / "j.sqlite", box, "--all", "--method", "image")
        assert refused.code == 10, refused.err
        assert "in use: voltest-busy" in refused.err and "--allow-in-use" in refused.err
        alone = _copy(cli, tmp_path / "j.sqlite", box, "--all", "--method", "image",
                      "--allow-in-use")  # fmt: skip
        assert alone.code == 2 and "only with --incremental" in alone.err
        image = _copy(cli, tmp_path / "j.sqlite", box, "--all", "--method", "image",
                      "--allow-in-use", "--incremental")  # fmt: skip
        assert image.code == 2 and "no --incremental" in image.err
        assert box.volumes("dst") == []
    finally:
        attached = box.src.block_storage.get_volume(volume.id)
        box.src.block_storage.detach_volume(attached, attached.attachments[0]["attachment_id"])
        wait_status(box.src, volume.id, ("available",))


def test_interactive_selection_from_stdin(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box.volume("voltest-i1")
    second = box.volume("voltest-i2")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{box.name}\n2\n"))
    result = cli("--journal", str(tmp_path / "j.sqlite"), "volumes", "copy", "--from", "src",
                 "--to", "dst", "--interactive", "--method", "image", "--dry-run",
                 "-f", "json")  # fmt: skip
    assert result.code == 0, result.err
    assert "voltest-i1" in result.err and "voltest-i2" in result.err  # the list shown
    assert [(p["volume"], p["action"]) for p in result.json()] == [(second.id, "copy")]


def _wait_for(check: Callable[[], Any], what: str, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"{what} did not happen in {timeout} s")


# About a minute (a 1 GiB image-method pass, killed, then whole); make test keeps its short
# forms: test_volumes_kill_trials.py (killed, re-run) and `volumes cleanup` of a killed run
# in test_volumes_backup_targets.py and test_volumes_grant.py.
@pytest.mark.long
def test_killed_copy_leaves_temporaries_that_cleanup_removes_then_rerun_resumes(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    volume = _patterned(box, "voltest-kill", "kill")
    journal = tmp_path / "j.sqlite"
    argv = [sys.executable, "-m", "stackhop.cli.main", "--journal", str(journal), "volumes",
            "copy", "--from", "src", "--to", "dst", "--project", box.name, "--all",
            "--method", "image"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=dict(os.environ)) as proc:  # fmt: skip
        try:
            # Killed once the destination image exists: the data is on its way across.
            def landing() -> bool:
                if not journal.exists():
                    return False
                with Journal(journal) as j:
                    rows = j.operations(kind="volume.temporary", state="pending")
                return any(r.before["details"].get("side") == "destination" for r in rows)

            _wait_for(landing, "a destination image")
            _wait_for(lambda: box.images("dst"), "the destination image in Glance", 120)
        finally:
            proc.send_signal(signal.SIGKILL)  # our own child, by its handle
            proc.wait()
    with Journal(journal) as j:
        (run,) = j.runs()
    assert box.images("dst"), "the kill should have left the destination image"

    status = cli("--journal", str(journal), "volumes", "status", "--run", run.id, "-f", "json")
    (row,) = status.json()["volumes"]
    assert row["state"] == "pending" and row["before"]["stage"] == "exported"
    assert row["stage"] == "exported"  # the journal's stage column, shown by `stackhop status`
    shown = cli("--journal", str(journal), "status", "-f", "json").json()
    passes = [(p["identity"], p["stage"]) for p in shown["pending"] if p["kind"] == "volume"]
    assert passes == [(volume.id, "exported")]
    assert status.json()["temporaries"]

    cleaned = cli("--journal", str(journal), "volumes", "cleanup", "--run", run.id, "-f", "json")
    assert cleaned.code == 0, cleaned.err
    assert {t["outcome"] for t in cleaned.json()["temporaries"]} == {"removed"}
    assert box.images("src") == [] and box.images("dst") == []

    resumed = _copy(cli, journal, box, "--all", "--method", "image", "-f", "json")
    assert resumed.code == 0, resumed.err
    (outcome,) = resumed.json()["volumes"]
    assert outcome["outcome"] == "done" and outcome["pass_number"] == 1
    assert digest_of("dst", outcome["destination_id"]) == expected_digest(GIB, "kill", PIECES)
    assert [v.id for v in box.volumes("dst")] == [outcome["destination_id"]]
    assert box.images("src") == [] and box.images("dst") == []
    assert volume.id in {r.source_id for r in Journal(journal).operations(kind="volume")}


def _outcomes(result: CliResult) -> dict[str, dict[str, Any]]:
    assert result.code == 0, result.err
    return {v["name"]: v for v in result.json()["volumes"]}


def test_stream_method_with_two_workers_then_an_incremental_pass(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    one, two = _patterned(box, "voltest-s1", "s1"), _patterned(box, "voltest-s2", "s2")
    for volume, seed in ((one, "s1"), (two, "s2")):  # 40 MiB more: a full pass sends > 40 MiB
        write_pattern(file_backend_path("src", volume.id), seed, BULK)
    journal = tmp_path / "j.sqlite"
    first = _outcomes(_copy(cli, journal, box, "--all", "--method", "stream", "--workers", "2",
                            "--incremental", "-f", "json"))  # fmt: skip
    assert {n: o["outcome"] for n, o in first.items()} == {"voltest-s1": "done",
                                                          "voltest-s2": "done"}  # fmt: skip
    assert digest_of("dst", first["voltest-s1"]["destination_id"]) == expected_digest(
        GIB, "s1", PIECES + BULK
    )
    assert digest_of("dst", first["voltest-s2"]["destination_id"]) == expected_digest(
        GIB, "s2", PIECES + BULK
    )

    write_pattern(file_backend_path("src", one.id), "s1", [700])  # one more MiB, one chunk
    second = _outcomes(_copy(cli, journal, box, "--all", "--method", "stream", "--workers", "2",
                             "--incremental", "-f", "json"))  # fmt: skip
    assert second["voltest-s1"]["pass_number"] == 2
    assert 0 < second["voltest-s1"]["bytes_sent"] <= 8 * 1024 * 1024
    assert second["voltest-s2"]["bytes_sent"] == 0
    assert second["voltest-s1"]["destination_id"] == first["voltest-s1"]["destination_id"]
    assert digest_of("dst", second["voltest-s1"]["destination_id"]) == expected_digest(
        GIB, "s1", [*PIECES, *BULK, 700]
    )
    rows = cli("--journal", str(journal), "volumes", "status", "-f", "json").json()["volumes"]
    assert sorted((r["source_id"] == two.id, r["before"]["pass"], r["state"]) for r in rows) == [
        (False, 1, "done"), (False, 2, "done"), (True, 1, "done"), (True, 2, "done"),
    ]  # fmt: skip
    assert len(box.volumes("dst")) == 2


# A long trial (make test-long): two volumes through a chain of three passes. Its short form in
# make test: test_volumes_rbd.py's test_full_then_incremental_copy_is_adopted_verified_...
@pytest.mark.long
def test_rbd_method_incremental_chain_ended_by_a_final_pass(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    from tests.functional.rbd_support import expected_digest as rbd_digest
    from tests.functional.rbd_support import stackhop_leftovers, write_image

    from stackhop.volumes.storage import load_storage_map

    storage = load_storage_map()
    src_backend, dst_backend = storage.backend("src", "ceph"), storage.backend("dst", "ceph")
    volumes = [box.volume(f"voltest-r{i}", volume_type="ceph") for i in (1, 2)]
    history = {v.id: [(0, 40 * 1024 * 1024, i), (600 * 1024 * 1024, 5000, i + 10)]
               for i, v in enumerate(volumes)}  # fmt: skip
    for v in volumes:
        write_image(src_backend, f"volume-{v.id}", history[v.id])
    journal = tmp_path / "j.sqlite"
    dst_ids: list[str] = []
    try:
        first = _outcomes(_copy(cli, journal, box, "--all", "--method", "rbd", "--workers", "2",
                                "--incremental", "-f", "json"))  # fmt: skip
        dst_ids = [first[v.name]["destination_id"] for v in volumes]
        for v in volumes:
            assert first[v.name]["outcome"] == "done"
            assert digest_of("dst", first[v.name]["destination_id"]) == rbd_digest(
                GIB, history[v.id]
            )
        change = (900 * 1024 * 1024, 4096, 99)
        write_image(src_backend, f"volume-{volumes[0].id}", [change])
        history[volumes[0].id].append(change)
        final = _outcomes(_copy(cli, journal, box, "--all", "--method", "rbd", "--final",
                                "-f", "json"))  # fmt: skip
        changed, same = final[volumes[0].name], final[volumes[1].name]
        assert changed["pass_number"] == 2 and 0 < changed["bytes_sent"] <= 4 * 1024 * 1024
        assert same["bytes_sent"] == 0
        assert digest_of("dst", changed["destination_id"]) == rbd_digest(
            GIB, history[volumes[0].id]
        )
        assert stackhop_leftovers(src_backend, [f"volume-{v.id}" for v in volumes]) == []
        assert stackhop_leftovers(dst_backend, [f"volume-{d}" for d in dst_ids]) == []
        status = cli("--journal", str(journal), "volumes", "status", "-f", "json").json()
        assert status["temporaries"] == []
    finally:  # snapshots Cinder does not know would keep it from deleting the volumes
        for backend, images in ((src_backend, [f"volume-{v.id}" for v in volumes]),
                                (dst_backend, [f"volume-{d}" for d in dst_ids])):  # fmt: skip
            for image in images:
                subprocess.run(
                    ["rbd", "-c", str(backend.ceph_conf), "--keyring", str(backend.keyring),
                     "snap", "purge", f"{backend.pool}/{image}"],
                    capture_output=True, check=False,
                )  # fmt: skip
