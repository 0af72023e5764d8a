"""Names with ``&``, ``#``, ``+``, ``%``, ``/``, a newline and a right-to-left mark, on real clouds.

An image so named is selected by name (it goes into a Glance query string and,
tried first as an ID, into a URL path); a security group so named moves to
dst with its name intact, verifies, and is rolled back; a volume so named, in a
project named with the same characters (but the newline), is selected by both
names and copied by the stream method (names reach ssh command lines only as IDs).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.functional.volumes_support import (
    Sandbox,
    digest_of,
    file_backend_path,
    write_pattern,
)

from stackhop.clouds import connect
from stackhop.kinds.rest import call, paged

pytestmark = pytest.mark.functional

HOSTILE = "a&b #c+d%e/f\u202eg\nh in:x,y"


@pytest.fixture(scope="module")
def named(seeded: Any) -> Iterator[dict[str, str]]:
    """An image (no data) and a group in gamma on src, both named ``<prefix> HOSTILE``."""
    src = connect("src")
    name = f"shname-{uuid.uuid4().hex[:6]} {HOSTILE}"
    gamma = next(p.id for p in src.identity.projects(name="gamma"))
    image = call(src.image, "POST", "/images",
                 json={"name": name, "disk_format": "raw", "container_format": "bare"})
    src.image.put(f"/images/{image['id']}/file", data=b"hostile",
                  headers={"Content-Type": "application/octet-stream"})
    group = call(src.network, "POST", "/security-groups",
                 json={"security_group": {"name": name, "description": "hostile name",
                                          "project_id": gamma}})["security_group"]
    try:
        yield {"name": name, "image": image["id"], "group": group["id"]}
    finally:
        call(src.image, "DELETE", f"/images/{image['id']}", missing_ok=True)
        call(src.network, "DELETE", f"/security-groups/{group['id']}", missing_ok=True)
        dst = connect("dst")
        for g in paged(dst.network, "/security-groups", "security_groups"):
            if g["name"] == name:
                call(dst.network, "DELETE", f"/security-groups/{g['id']}", missing_ok=True)


def test_an_image_is_selected_by_a_hostile_name(named: dict[str, str], cli: Callable) -> None:
    result = cli("images", "copy", "--from", "src", "--to", "dst", "--image", named["name"],
                 "--dry-run", "-f", "json")
    assert result.code == 0, result.err
    assert [op["source_id"] for op in result.json()] == [named["image"]]
    # "in:" at the start is Glance's list operator: such a name is matched exactly too.
    missing = cli("images", "copy", "--from", "src", "--to", "dst", "--image",
                  "in:" + named["name"], "--dry-run")
    assert missing.code != 0 and "no image with ID or name" in missing.err
    # The error names it on one line, the right-to-left override shown as an escape.
    assert missing.err.count("\n") == 1 and "\u202e" not in missing.err
    assert "f\\u202eg" in missing.err


def test_a_group_with_a_hostile_name_moves_verifies_and_rolls_back(
    named: dict[str, str], cli: Callable, tmp_path: Path
) -> None:
    archive, journal = tmp_path / "a.tar.zst", tmp_path / "j.sqlite"
    assert cli("export", "--from", "src", "-o", str(archive), "--security-groups",
               "--project", "gamma").code == 0
    imported = cli("--journal", str(journal), "import", "--to", "dst", str(archive),
                   "--security-groups", "-f", "json")
    assert imported.code == 0, imported.err
    dst = connect("dst")
    try:
        same = [g for g in paged(dst.network, "/security-groups", "security_groups")
                if g["name"] == named["name"]]
        assert len(same) == 1, "the group did not arrive under its exact name"
        verify = cli("verify", "--to", "dst", str(archive), "--security-groups")
        assert verify.code == 0, verify.out + verify.err
    finally:
        status = cli("--journal", str(journal), "status", "-f", "json")
        imports = [r["id"] for r in json.loads(status.out)["runs"] if r["command"] == "import"]
        runs = [a for run in imports for a in ("--run", run)]
        assert cli("--journal", str(journal), "rollback", "--to", "dst", *runs).code == 0
    assert not [g for g in paged(dst.network, "/security-groups", "security_groups")
                if g["name"] == named["name"]]


def test_a_volume_and_its_project_with_hostile_names_are_selected_and_copied(
    seeded: Any, cli: Callable, tmp_path: Path
) -> None:
    with Sandbox.create(f"shname {HOSTILE.replace(chr(10), ' ')}") as box:
        volume = box.volume(f"v {HOSTILE}")
        write_pattern(file_backend_path("src", volume.id), "hostile", [0, 5])
        copied = cli("--journal", str(tmp_path / "j.sqlite"), "volumes", "copy", "--from",
                     "src", "--to", "dst", "--project", box.name, "--volume", volume.name,
                     "--method", "stream", "-f", "json")
        assert copied.code == 0, copied.err
        (copy,) = box.volumes("dst")
        assert copy.name == volume.name  # arrived under its exact name
        assert digest_of("dst", copy.id) == digest_of("src", volume.id)
        missing = cli("--journal", str(tmp_path / "j.sqlite"), "volumes", "copy", "--from",
                      "src", "--to", "dst", "--project", box.name, "--volume",
                      "in:" + volume.name, "--method", "stream")
        assert missing.code != 0 and missing.err.count("\n") == 1, missing.err
        assert "\u202e" not in missing.err  # the right-to-left override shown escaped
