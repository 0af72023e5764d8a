"""``images copy --executor celery``: two images copied by a worker, each verified on dst as
a local copy is, a re-run finding them copied; the journal a SQLite file the worker shares
on this host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.functional.test_images_copy import _assert_copied
from tests.functional.test_images_support import ImageFactory, marked_copies, own_images
from tests.functional.workers_support import run_cli, workers

from stackhop.journal import DONE, Journal

pytestmark = pytest.mark.functional
__all__ = ["own_images"]  # the fixture, imported for pytest


def test_images_copy_on_a_worker_carries_and_verifies_every_image(
    own_images: ImageFactory, tmp_path: Path
) -> None:
    made = [own_images.create(f"celery{n}", purpose=f"image {n}") for n in range(2)]
    journal = str(tmp_path / "journal.sqlite")
    argv = ["images", "copy", "--from", "src", "--to", "dst", "--executor", "celery",
            "-f", "json"] + [a for image in made for a in ("--image", image["id"])]  # fmt: skip
    with workers(journal, ["stackhop"]) as (worker,):
        done = run_cli(journal, *argv)
        assert done.returncode == 0, done.stderr[-3000:]
        again = run_cli(journal, *argv)
    assert json.loads(done.stdout)["counts"]["glance.image"]["done"] == 2
    assert json.loads(again.stdout)["counts"]["glance.image"]["skipped"] == 2
    with Journal(journal) as j:
        rows = [r for r in j.operations(kind="glance.image") if r.action == "create"]
    assert len(rows) == 2 and {(r.state, r.attempts) for r in rows} == {(DONE, 1)}
    assert sorted(line["row"] for line in worker.events("finished")) == sorted(r.id for r in rows)
    for image in made:
        (copy,) = marked_copies(own_images.dst, image["id"])
        _assert_copied(own_images, image["id"], copy["id"])
