"""``stackhop images export`` / ``images import``: images through an archive file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.functional.test_images_copy import _assert_copied
from tests.functional.test_images_support import (
    MIB,
    ImageFactory,
    glance_json,
    marked_copies,
    own_images,
    project_id,
)

pytestmark = pytest.mark.functional
__all__ = ["own_images"]  # the fixture, imported for pytest


def test_export_with_image_data_then_import_keeps_ids_and_everything(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    shared = own_images.create("arch-shared", size=5 * MIB, visibility="shared",
                               member_projects=("demo",), tags=["z"], purpose="offline",
                               os_distro="debian")
    plain = own_images.create("arch-plain", size=2 * MIB + 7, protected=True)
    archive = tmp_path / "images.shop"
    # A name pattern selects both (and nothing of the rest of the cloud).
    exported = cli("images", "export", "--from", "src", "-o", str(archive), "--image",
                   own_images.prefix + "arch-*", "--with-image-data", "-f", "json")
    assert exported.code == 0, exported.err
    assert exported.json()["records"]["glance.image"] == 2
    assert exported.json()["records"]["glance.image_data"] == 5 + 3  # 1 MiB chunks

    journal = str(tmp_path / "journal.sqlite")
    args = ("--journal", journal, "images", "import", "--to", "dst", str(archive), "--keep-id",
            "-f", "json")
    nothing = cli(*args, "--image", "no-such-*")
    assert nothing.code != 0 and "no-such-*" in nothing.err, nothing.err
    only_plain = cli(*args, "--image", own_images.prefix + "arch-p?ain")
    assert only_plain.code == 0, only_plain.err
    assert only_plain.json()["counts"]["glance.image"]["done"] == 1
    _assert_copied(own_images, plain["id"], plain["id"])
    assert glance_json(own_images.dst, shared["id"]) is None

    imported = cli(*args, "--property-exclude", "purpose")
    assert imported.code == 0, imported.err
    counts = imported.json()["counts"]["glance.image"]
    assert (counts["done"], counts["skipped"]) == (1, 1), counts
    copy = glance_json(own_images.dst, shared["id"])
    assert copy is not None and "purpose" not in copy
    assert copy["os_distro"] == "debian" and copy["tags"] == ["z"]
    assert copy["os_hash_value"] == shared["os_hash_value"]
    # Same filter again: both skipped (without it, the copy of "shared" would differ).
    again = cli(*args, "--property-exclude", "purpose")
    assert again.json()["counts"]["glance.image"]["skipped"] == 2, again.err


def test_metadata_only_archive_imports_nothing_and_says_why(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    image = own_images.create("arch-meta", size=MIB)
    archive = tmp_path / "meta.shop"
    exported = cli("images", "export", "--from", "src", "-o", str(archive), "--image",
                   image["id"], "-f", "json")
    assert exported.code == 0, exported.err
    assert exported.json()["records"] == {"identity.project": exported.json()["records"][
        "identity.project"], "glance.image": 1, "glance.image_data": 0}
    imported = cli("--journal", str(tmp_path / "j.sqlite"), "images", "import", "--to", "dst",
                   str(archive), "--keep-id", "-f", "json")
    assert imported.code == 0, imported.err
    assert "archive holds its metadata only" in imported.err
    assert glance_json(own_images.dst, image["id"]) is None
    assert marked_copies(own_images.dst, image["id"]) == []


def test_stackhop_export_carries_images_and_images_import_uploads_them(
    own_images: ImageFactory, cli: Any, tmp_path: Path
) -> None:
    demo = project_id(own_images.src, "demo")
    image = own_images.create("arch-demo", size=3 * MIB, owner=demo, purpose="via export")
    archive = tmp_path / "demo.shop"
    exported = cli("export", "--from", "src", "-o", str(archive), "--project", "demo",
                   "--keypairs", "--images", "--with-image-data")
    assert exported.code == 0, exported.err
    imported = cli("--journal", str(tmp_path / "j.sqlite"), "images", "import", "--to", "dst",
                   str(archive), "--keep-id", "-f", "json")
    assert imported.code == 0, imported.err
    assert imported.json()["counts"]["glance.image"]["done"] == 1
    copy = glance_json(own_images.dst, image["id"])
    assert copy is not None and copy["owner"] == project_id(own_images.dst, "demo") != demo
    assert copy["os_hash_value"] == image["os_hash_value"] and copy["purpose"] == "via export"
