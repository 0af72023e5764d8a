"""``--grant-role`` on the testbed: the operator's role in the destination project, for a run.

The test's project exists on both clouds, but the testbed admin holds no role in
it on dst (as in a fresh destination cloud), so Cinder cannot create volumes
there with the admin's token. Without ``--grant-role`` the copy is refused
before anything is made; with it the role is granted for the run and removed
at its end; a run killed in the middle leaves it to ``volumes cleanup --run``;
a role the user already held is left alone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testbed import layout
from tests.functional.conftest import CliResult
from tests.functional.conftest import Testbed as TestbedInfo
from tests.functional.volumes_support import Sandbox, file_backend_path, write_pattern

from stackhop.journal import Journal

pytestmark = pytest.mark.functional


@pytest.fixture
def box(testbed: TestbedInfo, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    monkeypatch.setenv("STACKHOP_SRC_FILE_BACKEND_DIR", str(layout.SRC.file_backend_dir))
    monkeypatch.setenv("STACKHOP_DST_FILE_BACKEND_DIR", str(layout.DST.file_backend_dir))
    sandbox = Sandbox.create("voltest-grant", dst_role=False)
    try:
        yield sandbox
    finally:
        sandbox.close()


def _admin_roles(box: Sandbox) -> list[str]:
    """The roles the testbed admin holds directly in the test's dst project."""
    dst = box.dst
    return sorted(
        str(a.role["id"])
        for a in dst.identity.role_assignments(
            user_id=dst.current_user_id, scope_project_id=box.ids["dst"]
        )
    )


def _copy(journal: Path, box: Sandbox, *extra: str) -> list[str]:
    return ["--journal", str(journal), "volumes", "copy", "--from", "src", "--to", "dst",
            "--project", box.name, "--all", "--method", "stream", *extra]  # fmt: skip


def test_the_role_is_granted_for_the_run_and_removed_after_it(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    volume = box.volume("voltest-grant-a", volume_type="file")
    write_pattern(file_backend_path("src", volume.id), "grant", [0, 3])
    journal = tmp_path / "j.sqlite"

    refused = cli(*_copy(journal, box))
    assert refused.code == 3 and "cannot act in project" in refused.err
    assert box.volumes("dst") == [] and _admin_roles(box) == []

    done = cli(*_copy(journal, box, "--grant-role", "admin", "-f", "json"))
    assert done.code == 0, done.err
    assert [v["outcome"] for v in done.json()["volumes"]] == ["done"]
    assert len(box.volumes("dst")) == 1
    assert _admin_roles(box) == []  # taken back at the end of the run

    admin = box.dst.identity.find_role("admin")
    box.dst.identity.assign_project_role_to_user(box.ids["dst"], box.dst.current_user_id, admin)
    held = cli(*_copy(journal, box, "--grant-role", "admin"))
    assert held.code == 0, held.err
    assert _admin_roles(box) == [admin.id]  # held before: never removed
    with Journal(journal) as j:
        grants = [op for op in j.operations(kind="volume.temporary") if "admin@" in op.identity]
    assert len(grants) == 1 and grants[0].state == "done"  # the second run granted nothing


def test_a_run_killed_while_it_holds_the_role_leaves_it_to_cleanup(
    cli: Callable[..., CliResult], box: Sandbox, tmp_path: Path
) -> None:
    for n in range(3):  # enough work that the run is still going when it is killed
        volume = box.volume(f"voltest-grant-k{n}", volume_type="file")
        write_pattern(file_backend_path("src", volume.id), f"k{n}", list(range(0, 400, 7)))
    journal = tmp_path / "j.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-m", "stackhop.cli.main", *_copy(journal, box, "--grant-role", "admin")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not _admin_roles(box):
            assert child.poll() is None, "the copy ended before the role was seen"
            assert time.monotonic() < deadline, "the role was never granted"
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)  # our own child
        child.wait()
    assert _admin_roles(box) != []
    with Journal(journal) as j:
        (run,) = j.runs()
    cleaned = cli("--journal", str(journal), "volumes", "cleanup", "--run", run.id, "-f", "json")
    assert cleaned.code == 0, cleaned.err
    assert _admin_roles(box) == []
