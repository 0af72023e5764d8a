"""``volumes copy --method image`` through the fault-injecting proxy (both clouds' APIs).

Besides random faults at 5 % of calls (seed 17: 5xx, 429, resets, stalls past the
client's timeout, answers lost after the request was applied; a 1 GiB image-method pass
makes some forty calls over minutes, so the resource tests' 15 % makes a run of retries
rather than a test), the worst cases are scripted: the source volume's upload to Glance
and the destination volume's create are applied and their answers lost, so a retry must
find what the lost call made instead of making it twice. Afterwards, counted
independently of stackhop: one destination volume per source volume (by its marker), its
content read back from the backend equal to the source's, no temporary image left on
either cloud.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.functional.conftest import Testbed
from tests.functional.faults_support import faulty, until_done
from tests.functional.volumes_support import (
    Sandbox,
    digest_of,
    expected_digest,
    file_backend_path,
    write_pattern,
)

# Long (make test-long): a 1 GiB image pass through the proxy takes minutes, and its first
# CI run found a 503 on the project-scoped token reported as a missing role (open bug).
pytestmark = [pytest.mark.functional, pytest.mark.long]

PIECES = [0, 5, 17, 300, 1023]
GIB = 1024**3
SCRIPT = (
    ("POST", r"/volumes/[0-9a-f-]+/action$", "drop"),  # the source upload: applied, answer lost
    ("POST", r"/v3/[0-9a-f]+/volumes$", "drop"),  # the destination create: likewise
)


@pytest.fixture
def box(seeded: Testbed) -> Iterator[Sandbox]:
    with Sandbox.create("shfaultvol") as sandbox:
        yield sandbox


def test_image_method_copy_through_faults_makes_one_equal_copy_per_volume(
    box: Sandbox, tmp_path: Path
) -> None:
    wanted = {}
    for n in range(1):  # one 1 GiB volume: through the proxy, every byte crosses 3-4 times
        volume = box.volume(f"faulty-{n}", metadata={"n": str(n)})
        write_pattern(file_backend_path("src", volume.id), f"fault{n}", PIECES)
        wanted[volume.id] = expected_digest(GIB, f"fault{n}", PIECES)
    journal = tmp_path / "journal.sqlite"
    with faulty(SCRIPT, tmp_path, rate=0.05) as px:
        runs = until_done(px, "--journal", str(journal), "volumes", "copy", "--from",
                          "src-faulty", "--to", "dst-faulty", "--project", box.name, "--all",
                          "--method", "image", runs_allowed=6)  # fmt: skip
        assert px.unspent == [], f"scripted faults never met: {px.unspent}"
        faults = len(px.faulted())
    copies: dict[str, list[str]] = {source: [] for source in wanted}
    for volume in box.volumes("dst"):
        copies[(volume.metadata or {}).get("stackhop_source", "")].append(volume.id)
    assert all(len(ids) == 1 for ids in copies.values()), f"a copy twice or missing: {copies}"
    for source, (copy,) in copies.items():
        assert digest_of("dst", copy) == wanted[source]
    assert box.images("src") == [] and box.images("dst") == []
    print(f"volumes copy through {faults} faults: {len(runs)} run(s)")
