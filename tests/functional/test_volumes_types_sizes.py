"""``--type-map`` and ``--grow-to`` on the testbed: a volume moved to a new type, larger.

The test makes a volume type that only src has (``voltest-old-*``) and one that
only dst has (``voltest-new-*``), both on the ``file`` backend, the way a move to
a new storage cluster brings new type names. Without a mapping the copy is
refused before anything is created; with ``--type-map old=new --grow-to`` the
destination volume has the new type and the larger size, and its first GiB is
the source's (the rest zeros). Volumes, projects and both types are removed
afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from testbed import layout
from tests.functional.conftest import CliResult
from tests.functional.conftest import Testbed as TestbedInfo
from tests.functional.volumes_support import (
    Sandbox,
    digest_of,
    expected_digest,
    file_backend_path,
    write_pattern,
)

pytestmark = pytest.mark.functional

GIB = 1024**3
PIECES = [0, 17, 1023]


@dataclass
class Typed:
    box: Sandbox
    old: str
    new: str


@pytest.fixture
def typed(testbed: TestbedInfo, monkeypatch: pytest.MonkeyPatch) -> Iterator[Typed]:
    monkeypatch.setenv("STACKHOP_SRC_FILE_BACKEND_DIR", str(layout.SRC.file_backend_dir))
    monkeypatch.setenv("STACKHOP_DST_FILE_BACKEND_DIR", str(layout.DST.file_backend_dir))
    box = Sandbox.create("voltest-type")
    tag = uuid.uuid4().hex[:6]
    made = []
    try:
        for side, name in (("src", f"voltest-old-{tag}"), ("dst", f"voltest-new-{tag}")):
            conn = box.src if side == "src" else box.dst
            backend = conn.block_storage.find_type("file", ignore_missing=False).extra_specs
            made.append((conn, conn.block_storage.create_type(
                name=name, extra_specs={"volume_backend_name": backend["volume_backend_name"]},
            )))  # fmt: skip
        yield Typed(box, f"voltest-old-{tag}", f"voltest-new-{tag}")
    finally:
        box.close()
        for conn, volume_type in made:
            conn.block_storage.delete_type(volume_type, ignore_missing=True)


def test_a_volume_moves_to_a_mapped_type_and_grows(
    cli: Callable[..., CliResult], typed: Typed, tmp_path: Path
) -> None:
    box = typed.box
    volume = box.volume("voltest-typed", volume_type=typed.old)
    write_pattern(file_backend_path("src", volume.id), "typed", PIECES)
    argv = ("--journal", str(tmp_path / "j.sqlite"), "volumes", "copy", "--from", "src",
            "--to", "dst", "--project", box.name, "--all", "--method", "stream")  # fmt: skip

    refused = cli(*argv)
    assert refused.code == 3, refused.err
    assert f"has volume type {typed.old!r}, which cloud 'dst' lacks; map it with --type-map" in (
        refused.err
    )
    assert box.volumes("dst") == []

    wrong = cli(*argv, "--type-map", f"{typed.old}=no-such-type")
    assert wrong.code == 3 and "has no volume type 'no-such-type'" in wrong.err
    assert box.volumes("dst") == []

    done = cli(*argv, "--type-map", f"{typed.old}={typed.new}", "--grow-to", "voltest-typed=2",
               "-f", "json")  # fmt: skip
    assert done.code == 0, done.err
    (copied,) = box.volumes("dst")
    assert (copied.volume_type, copied.size, copied.status) == (typed.new, 2, "available")
    # Verified at the source's size, then extended: the new GiB reads as zeros.
    assert digest_of("dst", copied.id) == expected_digest(2 * GIB, "typed", PIECES)

    again = cli(*argv, "--type-map", f"{typed.old}={typed.new}", "--grow-to", "voltest-typed=2",
                "-f", "json")  # fmt: skip
    assert again.code == 0, again.err
    assert [v["outcome"] for v in again.json()["volumes"]] == ["skipped"]
    assert [v.id for v in box.volumes("dst")] == [copied.id]


def test_the_stream_codec_is_the_operators_choice_and_auto_says_when_it_falls_back(
    cli: Callable[..., CliResult], typed: Typed, tmp_path: Path
) -> None:
    box = typed.box
    volume = box.volume("voltest-codec", volume_type="file")
    write_pattern(file_backend_path("src", volume.id), "codec", PIECES)
    journal = tmp_path / "j.sqlite"
    argv = ("--journal", str(journal), "volumes", "copy", "--from", "src", "--to", "dst",
            "--project", box.name, "--all")  # fmt: skip

    wrong = cli(*argv, "--method", "image", "--codec", "zlib")
    assert wrong.code == 2 and "--codec is an option of the stream method" in wrong.err

    done = cli(*argv, "--method", "stream", "--codec", "zlib", "-f", "json")
    assert done.code == 0, done.err
    (outcome,) = done.json()["volumes"]
    assert digest_of("dst", outcome["destination_id"]) == expected_digest(GIB, "codec", PIECES)
    status = cli("--journal", str(journal), "volumes", "status", "-f", "json").json()
    assert status["volumes"][0]["before"]["stages"]["exported"]["codec"] == "zlib"

    # The testbed's storage hosts have no zstd for their Python: auto sends raw, and says so.
    again = cli("--log-json", "--journal", str(tmp_path / "j2.sqlite"), *argv[2:],
                "--method", "stream")  # fmt: skip
    assert again.code == 0, again.err
    assert "--codec auto sends raw: no zstd for Python on" in again.err + again.out
