"""An ssh session cut mid-copy: the stream method's storage host loses its sshd child.

A ``volumes copy --method stream`` of a 1 GiB volume with 640 MiB of random data runs in a
process of its own; once the journal shows part of it through, every session of the source
storage host's sshd (the testbed's ``src-storage``, the children of its listener) is
killed with ``kill -9``: the copy's ssh leg breaks as on a network cut. The run either
retries by itself or stops with one line; a re-run completes. Checked independently of
stackhop: one destination volume, its content equal to the source's (read back from both
backends), and the chunks confirmed before the cut were not sent again (the pass that
completed sent less than the volume's data).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.functional.conftest import Testbed
from tests.functional.volumes_support import (
    Sandbox,
    digest_of,
    file_backend_path,
    src_sshd_sessions,
)

from stackhop.journal import Journal

pytestmark = pytest.mark.functional

MIB = 1024 * 1024
DATA_MIB = 640


@pytest.fixture
def box(seeded: Testbed) -> Iterator[Sandbox]:
    with Sandbox.create("shsshcut") as sandbox:
        yield sandbox


def _sent(journal: Path) -> tuple[int, int]:
    """(bytes the volume passes report sent, highest progress seen) from the journal."""
    with Journal(journal) as j:
        rows = j.operations(kind="volume")
        sent = sum(int((r.before or {}).get("bytes_sent", 0) or 0) for r in rows)
        done = max((int((r.progress or {}).get("done", 0) or 0) for r in rows), default=0)
    return sent, done


def test_stream_copy_survives_its_ssh_session_killed_mid_volume(
    box: Sandbox, tmp_path: Path
) -> None:
    volume = box.volume("sshcut")
    with file_backend_path("src", volume.id).open("r+b") as f:
        for mib in range(0, DATA_MIB):
            f.seek(mib * MIB)
            f.write(os.urandom(MIB))
    journal = tmp_path / "j.sqlite"
    argv = [sys.executable, "-m", "stackhop.cli.main", "--journal", str(journal), "volumes",
            "copy", "--from", "src", "--to", "dst", "--project", box.name, "--volume",
            "sshcut", "--method", "stream", "-f", "json"]
    cut = 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if journal.exists() and _sent(journal)[1] >= 128 * MIB:
                for pid in src_sshd_sessions():
                    os.kill(pid, signal.SIGKILL)  # a session of our testbed's sshd
                    cut += 1
                break
            time.sleep(0.2)
        _, err = proc.communicate(timeout=600)
    assert cut, "the copy ended before any session could be cut; make the volume larger"
    runs = 1
    if proc.returncode != 0:
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("stackhop"), err
        while runs < 4:
            runs += 1
            again = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                                   check=False)
            if again.returncode == 0:
                break
        assert again.returncode == 0, again.stderr
    (copy,) = box.volumes("dst")
    assert digest_of("dst", copy.id) == digest_of("src", volume.id)
    # The pass that completed resumed after the chunks confirmed before the cut.
    sent, _ = _sent(journal)
    assert 0 < sent < DATA_MIB * MIB, f"{sent} bytes sent by the last pass for {DATA_MIB} MiB"
    stop = err.strip().splitlines()[-1] if proc.returncode else "none: retried in the run"
    print(f"ssh cut: {cut} session(s) killed, {runs} run(s), the last pass sent "
          f"{sent // MIB} MiB of {DATA_MIB}; first stop: {stop}")
