"""``kill -9`` of ``stackhop import`` at several points, then a re-run: dst ends equal to src,
with no group or rule created twice; the same with the journal deleted before the re-run.

The import runs as a child process with one worker, so its progress through
the kinds is ordered (cinder, neutron quotas, groups, keypairs, nova quotas,
then rules); the test watches the journal and kills it at the chosen point.
Extra groups in the seed's ``gamma`` project (prefix ``shresume-``, removed at
the end) give the groups and rules phases enough objects to be stopped midway.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.functional.resume_support import (
    States,
    finished,
    import_command,
    import_killed_when,
    run_to_the_end,
)

from stackhop.clouds import connect
from stackhop.kinds.base import Kind
from stackhop.kinds.rest import call, paged

pytestmark = pytest.mark.functional

#: gamma's default network quota allows ten groups, its ``default`` one of them.
GROUPS = 8


@pytest.fixture(scope="module")
def extra_groups(seeded: Any) -> Iterator[str]:
    """Groups with rules (one pointing at the previous group) in src's gamma project."""
    src = connect("src")
    prefix = f"shresume-{uuid.uuid4().hex[:6]}"
    gamma = next(p.id for p in src.identity.projects(name="gamma"))
    made: list[str] = []
    try:
        for i in range(GROUPS):
            body = call(
                src.network,
                "POST",
                "/security-groups",
                json={
                    "security_group": {
                        "name": f"{prefix}-{i % 4}",
                        "description": f"resume test {i}",
                        "project_id": gamma,
                    }
                },
            )
            gid = body["security_group"]["id"]
            made.append(gid)
            rules = [
                {
                    "security_group_id": gid,
                    "direction": "ingress",
                    "ethertype": "IPv4",
                    "protocol": "tcp",
                    "port_range_min": 1000 + j,
                    "port_range_max": 1000 + j,
                    "remote_ip_prefix": f"10.{i}.{j}.0/24",
                    "project_id": gamma,
                }
                for j in range(3)
            ]
            if i:
                rules.append(
                    {
                        "security_group_id": gid,
                        "direction": "ingress",
                        "ethertype": "IPv6",
                        "protocol": "tcp",
                        "port_range_min": 22,
                        "port_range_max": 22,
                        "remote_group_id": made[i - 1],
                        "project_id": gamma,
                    }
                )
            call(src.network, "POST", "/security-group-rules", json={"security_group_rules": rules})
        yield prefix
    finally:
        for gid in reversed(made):
            call(src.network, "DELETE", f"/security-groups/{gid}", missing_ok=True)
        # Should a rollback have failed, leave no group of ours on dst either.
        dst = connect("dst")
        for group in paged(dst.network, "/security-groups", "security_groups"):
            if group["name"].startswith(prefix) and Kind.marked_source_id(group["description"]):
                call(dst.network, "DELETE", f"/security-groups/{group['id']}", missing_ok=True)


@pytest.fixture(scope="module")
def archive(extra_groups: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stackhop.cli.main import main

    path = tmp_path_factory.mktemp("resume") / "src.tar.zst"
    projects = [a for p in ("alpha", "beta", "gamma", "delta") for a in ("--project", p)]
    assert (
        main(
            ["export", "--from", "src", "-o", str(path), "--security-groups", "--quotas", *projects]
        )
        == 0
    )
    return path


def _import(archive: Path, journal: Path) -> list[str]:
    return import_command(archive, journal, ("--security-groups", "--quotas"))


def import_killed_at(
    archive: Path, journal: Path, point: Callable[[States], bool]
) -> States:
    """Run the import and ``kill -9`` it as soon as ``point(journal counts)`` holds."""
    return import_killed_when(_import(archive, journal), journal, point)


def midway_quotas(s: States) -> bool:
    return finished(s, "cinder.quota") >= 1


def after_groups(total: int) -> Callable[[States], bool]:
    def point(s: States) -> bool:
        return finished(s, "neutron.security_group") >= total

    return point


def midway_rules(s: States) -> bool:
    return s[("neutron.security_group_rules", "done")] >= 3


def assert_dst_equals_src(archive: Path, prefix: str) -> None:
    """Verify passes, and no group or rule exists twice on dst."""
    dst = connect("dst")
    groups = paged(dst.network, "/security-groups", "security_groups")
    marks = Counter(Kind.marked_source_id(g["description"]) for g in groups)
    marks.pop(None, None)
    assert marks and max(marks.values()) == 1, "a group was created twice"
    ours = [g for g in groups if g["name"].startswith(prefix)]
    assert len(ours) == GROUPS
    rules = paged(dst.network, "/security-group-rules", "security_group_rules")
    contents = Counter(
        (
            r["security_group_id"],
            r["direction"],
            r["ethertype"],
            r["protocol"],
            r["port_range_min"],
            r["port_range_max"],
            r["remote_ip_prefix"],
            r["remote_group_id"],
        )
        for r in rules
    )
    assert max(contents.values()) == 1, "a rule was created twice"
    for group in ours:
        count = sum(1 for r in rules if r["security_group_id"] == group["id"])
        index = int(group["description"].split()[2])
        assert count == 2 + 3 + (1 if index else 0)  # egress pair, three ports, the remote
    from stackhop.cli.main import main

    assert main(["verify", "--to", "dst", str(archive), "--security-groups", "--quotas"]) == 0


def _rollback(journal: Path) -> None:
    from stackhop.cli.main import main
    from stackhop.journal import Journal

    with Journal(journal) as j:
        runs = [r.id for r in j.runs()]
    args = [a for r in runs for a in ("--run", r)]
    assert main(["--journal", str(journal), "rollback", "--to", "dst", *args]) == 0


def test_kill_at_three_points_then_rerun(archive: Path, extra_groups: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    try:
        seen = import_killed_at(archive, journal, midway_quotas)
        assert finished(seen, "neutron.security_group") == 0
        from stackhop.archive import ArchiveReader

        with ArchiveReader(archive) as reader:
            total = reader.count("neutron.security_group")
        seen = import_killed_at(archive, journal, after_groups(total))
        assert seen[("neutron.security_group_rules", "done")] == 0
        seen = import_killed_at(archive, journal, midway_rules)
        completed = run_to_the_end(_import(archive, journal))
        assert completed.returncode == 0, completed.stderr
        assert_dst_equals_src(archive, extra_groups)
    finally:
        _rollback(journal)
    dst = connect("dst")
    left = [
        g
        for g in paged(dst.network, "/security-groups", "security_groups")
        if g["name"].startswith(extra_groups)
    ]
    assert left == []


# About 35 s; make test keeps test_kill_at_three_points_then_rerun above and the journal-lost
# re-runs of tests/functional/test_kill_trials.py.
@pytest.mark.long
def test_kill_then_rerun_without_the_journal(
    archive: Path, extra_groups: str, tmp_path: Path
) -> None:
    journal, kept = tmp_path / "journal.sqlite", tmp_path / "journal-of-killed-run.sqlite"
    try:
        import_killed_at(archive, journal, midway_rules)
        # The re-run starts without the journal (and its WAL); it is kept only to clean up.
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{journal}{suffix}").exists():
                shutil.move(f"{journal}{suffix}", f"{kept}{suffix}")
        assert not journal.exists()
        completed = run_to_the_end(_import(archive, journal))
        assert completed.returncode == 0, completed.stderr
        assert_dst_equals_src(archive, extra_groups)
    finally:
        if kept.exists():
            _rollback(kept)
        if journal.exists():
            _rollback(journal)
    dst = connect("dst")
    left = [
        g
        for g in paged(dst.network, "/security-groups", "security_groups")
        if g["name"].startswith(extra_groups)
    ]
    assert left == []
