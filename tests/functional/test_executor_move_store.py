"""``images move-store --executor celery`` (copy-image, src's stores ``fast`` -> ``slow``):
each move on a worker, the image the same in every respect after, a re-run skipping it;
the journal a SQLite file the worker shares on this host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.functional.test_images_move_store import _portable, _stores
from tests.functional.test_images_support import (
    ImageFactory,
    download_sha512,
    glance_json,
    members,
    own_images,
)
from tests.functional.workers_support import run_cli, workers

from stackhop.journal import DONE, Journal

pytestmark = pytest.mark.functional
__all__ = ["own_images"]  # the fixture, imported for pytest


def test_move_store_on_a_worker_keeps_each_image_and_a_rerun_skips(
    own_images: ImageFactory, tmp_path: Path
) -> None:
    made = [own_images.create(f"celmove{n}", purpose=f"move {n}") for n in range(2)]
    before = {i["id"]: _portable(glance_json(own_images.src, i["id"]) or {},
                                  members(own_images.src, i["id"])) for i in made}  # fmt: skip
    journal = str(tmp_path / "journal.sqlite")
    argv = ["images", "move-store", "--cloud", "src", "--from-store", "fast", "--to-store",
            "slow", "--executor", "celery", "-f", "json"]  # fmt: skip
    argv += [a for image in made for a in ("--image", image["id"])]
    with workers(journal, ["stackhop"]) as (worker,):
        first = run_cli(journal, *argv)
        assert first.returncode == 0, first.stderr[-3000:]
        again = run_cli(journal, *argv)
    assert sorted(json.loads(first.stdout)["done"]) == sorted(before)
    assert sorted(json.loads(again.stdout)["skipped"]) == sorted(before)
    with Journal(journal) as j:
        rows = j.operations(kind="glance.image-store")
    assert {(r.state, r.attempts) for r in rows} == {(DONE, 1)} and len(rows) == 2
    assert sorted(line["row"] for line in worker.events("finished")) == sorted(r.id for r in rows)
    for image_id, wanted in before.items():
        after = glance_json(own_images.src, image_id)
        assert after is not None and _stores(after) == {"slow"}
        assert _portable(after, members(own_images.src, image_id)) == wanted
        assert download_sha512(own_images.src, image_id) == after["os_hash_value"]
