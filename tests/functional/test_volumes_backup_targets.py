"""Backups on the testbed: ``--backup-to cmd:`` into a "tape drive", a failing command, a
restore killed mid-way.

A Ceph volume (copied by the rbd method) and a file volume (the stream
method) of a project of the test's own are copied with ``--backup-to
cmd:cat > FIFO``; a separate process drains the FIFO into one "tape" file per
volume, standing in for the drive. Each tape is then checked byte for byte
against what the journal says was sent, read back with ``volumes backup
verify`` and ``extract`` (no cloud involved), and the extracted image must
hash like the volume on dst.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.functional.conftest import CliResult
from tests.functional.conftest import Testbed as TestbedInfo
from tests.functional.rbd_support import write_image
from tests.functional.volumes_support import (
    Sandbox,
    digest_of,
    file_backend_path,
    write_pattern,
)

from stackhop.journal import Journal
from stackhop.volumes.model import VERIFY_CHUNK, content_digest
from stackhop.volumes.restore import MARKER
from stackhop.volumes.storage import load_storage_map

pytestmark = pytest.mark.functional

MIB = 1024 * 1024


@pytest.fixture
def box(testbed: TestbedInfo) -> Iterator[Sandbox]:
    with Sandbox.create("voltest-bk") as sandbox:
        yield sandbox


def _raw_digest(path: Path) -> str:
    digests = []
    with path.open("rb") as f:
        while piece := f.read(VERIFY_CHUNK):
            digests.append(hashlib.sha256(piece).hexdigest())
    return content_digest(digests)


def test_rbd_and_stream_copies_write_backups_through_a_command_to_a_fifo(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    ceph = box.volume("voltest-bk-ceph", volume_type="ceph")
    writes = [(0, 2 * MIB, 1), (300 * MIB + 5, 3 * MIB, 2), (1020 * MIB, 4 * MIB, 3)]
    write_image(load_storage_map().backend("src", "ceph"), f"volume-{ceph.id}", writes)
    plain = box.volume("voltest-bk-file", volume_type="file")
    write_pattern(file_backend_path("src", plain.id), "bk", [0, 7, 600, 1023])

    fifo, tapes = tmp_path / "nst0", tmp_path / "tapes"
    os.mkfifo(fifo)
    tapes.mkdir()
    # The "drive": another process, one tape per writer that opens and closes the FIFO.
    drive = subprocess.Popen(
        ["bash", "-c", f'for n in 1 2; do cat "{fifo}" > "{tapes}/tape$n"; done'],
        start_new_session=True,  # its own process group: a failed test stops the cat too
    )
    journal = tmp_path / "j.sqlite"
    try:
        outcomes = {}
        for volume, method in ((ceph, "rbd"), (plain, "stream")):
            done = cli("--journal", str(journal), "volumes", "copy", "--from", "src",
                       "--to", "dst", "--project", box.name, "--volume", volume.name,
                       "--method", method, "--backup-to", f'cmd:cat > "{fifo}"',
                       "-f", "json")  # fmt: skip
            assert done.code == 0, done.err
            outcomes.update({o["volume_id"]: o for o in done.json()["volumes"]})
        assert drive.wait(timeout=120) == 0
    finally:
        if drive.poll() is None:  # a failed copy never opened the FIFO twice
            os.killpg(drive.pid, signal.SIGKILL)  # our own child's group
            drive.wait()

    assert {o["outcome"] for o in outcomes.values()} == {"done"}
    with Journal(journal) as j:
        rows = {op.source_id: op.before for op in j.operations(kind="volume")}
    by_digest = {
        hashlib.sha256(t.read_bytes()).hexdigest(): t for t in sorted(tapes.iterdir())
    }
    for volume in (ceph, plain):
        stream = rows[volume.id]["backup_stream"]
        assert stream["location"] == f'cmd:cat > "{fifo}"' and stream["exit_status"] == 0
        tape = by_digest[stream["sha256"]]  # the drive got exactly what the journal says
        assert tape.stat().st_size == stream["bytes"]

        checked = cli("volumes", "backup", "verify", str(tape), "-f", "json")
        assert checked.code == 0, checked.err
        assert checked.json()["volume_id"] == volume.id
        assert checked.json()["content_digest"] == rows[volume.id]["content_digest"]

        raw = tmp_path / f"{volume.id}.raw"
        extracted = cli("volumes", "backup", "extract", str(tape), "-o", str(raw))
        assert extracted.code == 0, extracted.err
        assert raw.stat().st_size == 1024**3
        assert _raw_digest(raw) == digest_of("dst", outcomes[volume.id]["destination_id"])
        raw.unlink()


def test_a_failing_backup_command_fails_the_volume_and_says_why(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    plain = box.volume("voltest-bk-fail", volume_type="file")
    write_pattern(file_backend_path("src", plain.id), "bkf", [0, 5])
    result = cli("--journal", str(tmp_path / "j.sqlite"), "volumes", "copy", "--from", "src",
                 "--to", "dst", "--project", box.name, "--all", "--method", "stream",
                 "--backup-to", "cmd:cat > /dev/null; echo tape drive offline >&2; exit 5",
                 "-f", "json")  # fmt: skip
    assert result.code != 0
    (outcome,) = result.json()["volumes"]
    assert outcome["outcome"] == "failed"
    assert "exited with status 5: tape drive offline" in outcome["error"]


def test_a_restore_killed_after_creating_its_volume_is_cleaned_up_by_its_run(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    """kill -9 while the restored volume is being made: `volumes cleanup --run` finds it."""
    plain = box.volume("voltest-bk-restore", volume_type="file")
    write_pattern(file_backend_path("src", plain.id), "bkr", [0, 9, 700])
    journal, backups = tmp_path / "j.sqlite", tmp_path / "backups"
    copied = cli("--journal", str(journal), "volumes", "copy", "--from", "src", "--to", "dst",
                 "--project", box.name, "--all", "--method", "stream",
                 "--backup-to", str(backups))  # fmt: skip
    assert copied.code == 0, copied.err

    child = subprocess.Popen(
        [sys.executable, "-m", "stackhop.cli.main", "--journal", str(journal), "volumes",
         "restore-backup", "--to", "dst", "--project", box.name, "--name", "voltest-restored",
         str(backups / f"{plain.id}.tar")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def marked() -> list[Any]:
        return [v for v in box.volumes("dst") if MARKER in (v.metadata or {})]

    try:
        deadline = time.monotonic() + 300
        while not marked():
            assert child.poll() is None, "the restore ended before its volume appeared"
            assert time.monotonic() < deadline, "no restored volume appeared in time"
            time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)  # our own child
        child.wait()
    (left,) = marked()
    with Journal(journal) as j:
        (run,) = [r for r in j.runs() if r.command == "volumes restore-backup"]
    cleaned = cli("--journal", str(journal), "volumes", "cleanup", "--run", run.id, "-f", "json")
    assert cleaned.code == 0, cleaned.err
    assert {t["outcome"] for t in cleaned.json()["temporaries"]} == {"removed"}
    assert marked() == [] and left.id not in {v.id for v in box.volumes("dst")}
    assert box.images("dst") == []


# The rbd form is a long trial (make test-long): the backup writer is the same for both methods,
# and make test keeps the stream form; test_volumes_rbd covers rbd incremental passes.
@pytest.mark.parametrize("method", [pytest.param("rbd", marks=pytest.mark.long), "stream"])
def test_incremental_passes_write_incremental_backups_that_rebuild_the_volume(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path, method: str
) -> None:
    """Full pass, a change on src, an incremental pass: the chain extracts to dst's content."""
    if method == "rbd":
        volume = box.volume("voltest-bk-inc", volume_type="ceph")
        backend = load_storage_map().backend("src", "ceph")
        write_image(backend, f"volume-{volume.id}", [(0, 2 * MIB, 1), (600 * MIB, MIB, 2)])
    else:
        volume = box.volume("voltest-bk-inc", volume_type="file")
        write_pattern(file_backend_path("src", volume.id), "inc", [0, 600])
    journal, backups = tmp_path / "j.sqlite", tmp_path / "backups"
    argv = ("--journal", str(journal), "volumes", "copy", "--from", "src", "--to", "dst",
            "--project", box.name, "--all", "--method", method, "--incremental",
            "--backup-to", str(backups), "-f", "json")  # fmt: skip
    first = cli(*argv)
    assert first.code == 0, first.err
    if method == "rbd":
        write_image(backend, f"volume-{volume.id}", [(300 * MIB + 5, 70_000, 3), (0, 4096, 4)])
    else:
        write_pattern(file_backend_path("src", volume.id), "inc2", [300, 601])
    second = cli(*argv)
    assert second.code == 0, second.err
    (outcome,) = second.json()["volumes"]
    assert outcome["outcome"] == "done" and outcome["pass_number"] == 2
    full, incremental = backups / f"{volume.id}.tar", backups / f"{volume.id}.pass2.tar"
    assert outcome["backup"] == str(incremental)
    assert incremental.stat().st_size < full.stat().st_size  # what changed, not the volume

    raw = tmp_path / "v.raw"
    rebuilt = cli("volumes", "backup", "extract", str(full), str(incremental), "-o", str(raw),
                  "-f", "json")  # fmt: skip
    assert rebuilt.code == 0, rebuilt.err
    assert rebuilt.json()["content_digest"] == outcome["content_digest"]
    assert _raw_digest(raw) == digest_of("dst", outcome["destination_id"])
