"""Networking archives that touch only what a test made.

Every networking export carries the source's external networks (``public`` on the
testbed) with their subnets, and other tests running on the same testbed import,
adopt and roll back dst's ``public`` too: a test that imports it cannot tell its own
effects from theirs. :func:`only_ours` rewrites an exported archive without the
networks whose name lacks the test's prefix (and their subnets), so the import under
test creates, finds and removes only the test's own objects.
"""

from __future__ import annotations

from pathlib import Path

from stackhop.archive import ArchiveReader, ArchiveWriter

NETWORK, SUBNET = "neutron.network", "neutron.subnet"


def only_ours(archive: Path, prefix: str) -> Path:
    """A copy of ``archive`` (beside it) whose networks all have names starting with
    ``prefix``; every other kind's records are kept as they are."""
    out = archive.with_name(f"ours-{archive.name}")
    with ArchiveReader(archive) as reader:
        dropped = {
            r["id"] for r in reader.records(NETWORK) if not str(r["name"]).startswith(prefix)
        }
        with ArchiveWriter(
            out,
            source_cloud=reader.manifest.source_cloud,
            source_auth_url=reader.manifest.source_auth_url,
        ) as writer:
            for kind in reader.kinds():
                writer.add_kind(kind)
                for record in reader.records(kind):
                    if kind == NETWORK and record["id"] in dropped:
                        continue
                    if kind == SUBNET and record["network_id"] in dropped:
                        continue
                    writer.write(kind, record)
    return out
