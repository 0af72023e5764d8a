"""Every API call may fail: export, import, verify and rollback through a fault-injecting proxy.

Both clouds' APIs (Keystone, Nova, Neutron, Cinder, Glance, Placement, found
in their catalogs) are reached through :class:`tests.support.faultproxy.FaultProxy`
as the clouds ``src-faulty`` / ``dst-faulty``. Besides faults at a seeded random
rate (500/502/503, 429 with ``Retry-After``, a reset, a stall past the client's
timeout, an answer lost after the request was applied), the proxy is
scripted so that the worst cases certainly happen: the first security group,
the first rules and the first quota update are applied on dst and their answers
lost; a rollback's first delete likewise.

A run either completes or stops with one line on stderr, and a re-run
completes; at the end no group or rule exists twice on dst (counted by an
independent listing, not by stackhop), verify through the plain ``dst`` exits
0, and the rollback returns dst's groups and quotas to what they were.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest
from tests.functional.faults_support import faulty, stackhop_through, until_done
from tests.support.faultproxy import FaultProxy

from stackhop.clouds import connect
from stackhop.kinds.base import Kind
from stackhop.kinds.rest import call, paged

pytestmark = pytest.mark.functional

PROJECTS = ("gamma", "delta")
GROUPS = 4
SCRIPT = (
    ("POST", r"/v2\.0/security-groups$", "drop"),
    ("POST", r"/v2\.0/security-groups$", "reset"),
    ("POST", r"/v2\.0/security-group-rules$", "drop"),
    ("PUT", r"/v2\.0/quotas/", "drop"),
    ("DELETE", r"/v2\.0/security-groups/", "drop"),
)


@pytest.fixture(scope="module")
def groups(seeded: Any) -> Iterator[str]:
    """Groups with rules (one naming the previous group) in src's gamma project."""
    src = connect("src")
    prefix = f"shfault-{uuid.uuid4().hex[:6]}"
    gamma = next(p.id for p in src.identity.projects(name="gamma"))
    made: list[str] = []
    try:
        for i in range(GROUPS):
            body = {"name": f"{prefix}-{i}", "description": f"fault test {i}", "project_id": gamma}
            group = call(src.network, "POST", "/security-groups", json={"security_group": body})
            made.append(group["security_group"]["id"])
            rules: list[dict[str, Any]] = [
                {"security_group_id": made[-1], "direction": "ingress", "ethertype": "IPv4",
                 "protocol": "tcp", "port_range_min": 2000 + i, "port_range_max": 2000 + i,
                 "remote_ip_prefix": f"10.9.{i}.0/24", "project_id": gamma},
            ]
            if i:
                rules.append({"security_group_id": made[-1], "direction": "ingress",
                              "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
                              "port_range_max": 22, "remote_group_id": made[-2],
                              "project_id": gamma})
            call(src.network, "POST", "/security-group-rules", json={"security_group_rules": rules})
        yield prefix
    finally:
        for gid in reversed(made):
            call(src.network, "DELETE", f"/security-groups/{gid}", missing_ok=True)
        dst = connect("dst")  # should a rollback have failed, leave nothing of ours on dst
        for group in paged(dst.network, "/security-groups", "security_groups"):
            if group["name"].startswith(prefix) and Kind.marked_source_id(group["description"]):
                call(dst.network, "DELETE", f"/security-groups/{group['id']}", missing_ok=True)


@pytest.fixture
def proxy(seeded: Any, tmp_path: Path) -> Iterator[FaultProxy]:
    with faulty(SCRIPT, tmp_path) as px:
        yield px


def _dst_state(prefix: str) -> tuple[Counter[str | None], list[tuple[Any, ...]], dict[str, Any]]:
    """An independent listing of dst: group markers, rule contents and the projects' quotas."""
    dst = openstack.connect(cloud="dst")
    groups = list(dst.network.security_groups())
    marks = Counter(Kind.marked_source_id(g.description or "") for g in groups)
    marks.pop(None, None)
    ours = {g.id for g in groups if g.name.startswith(prefix)}
    rules = sorted(
        (r.security_group_id, r.direction, r.ether_type, r.protocol, r.port_range_min,
         r.remote_ip_prefix, r.remote_group_id)
        for r in dst.network.security_group_rules()
        if r.security_group_id in ours
    )
    quotas = {}
    for name in PROJECTS:
        project = dst.identity.find_project(name, ignore_missing=False)
        quotas[name] = dst.network.get_quota(project.id).to_dict(computed=False)
    return marks, rules, quotas


# About 85 s (the resource import, verify and rollback, every call through the proxy);
# make test keeps its short form: test_images_copy_and_rollback_through_faults below.
@pytest.mark.long
def test_import_verify_rollback_through_faults(
    groups: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    archive = tmp_path / "src.tar.zst"
    journal = tmp_path / "journal.sqlite"
    selection = ["--security-groups", "--quotas"]
    projects = [a for p in PROJECTS for a in ("--project", p)]
    marks_before, _, quotas_before = _dst_state(groups)

    until_done(proxy, "export", "--from", "src-faulty", "-o", str(archive), *selection, *projects)
    imports = until_done(proxy, "--journal", str(journal), "import", "--to", "dst-faulty",
                          str(archive), *selection, "--workers", "2")
    try:
        # The worst case happened: requests applied on dst whose answers were lost.
        dropped = {(d.method, d.path.split("/")[2]) for d in proxy.faulted("drop")}
        assert {("POST", "security-groups"), ("POST", "security-group-rules")} <= dropped
        assert {("PUT", "quotas")} <= {(m, p) for m, p in dropped}

        marks, rules, _ = _dst_state(groups)
        assert marks and max(marks.values()) == 1, f"a group was created twice: {marks}"
        assert len(rules) == len(set(rules)), "a rule was created twice"
        assert len(rules) == GROUPS + (GROUPS - 1) + 2 * GROUPS  # ports, remotes, egress pair
        verify = stackhop_through(proxy, "verify", "--to", "dst", str(archive), *selection)
        assert verify.returncode == 0, verify.stdout + verify.stderr

        # A re-run with the journal lost changes nothing (markers and quotas found on dst).
        again = stackhop_through(proxy, "--journal", str(tmp_path / "fresh.sqlite"), "import",
                          "--to", "dst", str(archive), *selection, "-f", "json")
        assert again.returncode == 0, again.stderr
        assert _dst_state(groups)[0] == marks
    finally:
        from stackhop.journal import Journal

        with Journal(journal) as j:
            runs = [a for r in j.runs() for a in ("--run", r.id)]
        rollback = until_done(proxy, "--journal", str(journal), "rollback", "--to",
                               "dst-faulty", *runs)
    assert proxy.unspent == [], f"scripted faults never met: {proxy.unspent}"
    marks_after, rules_after, quotas_after = _dst_state(groups)
    assert marks_after == marks_before and rules_after == []
    assert quotas_after == quotas_before
    assert len(proxy.faulted()) > len(SCRIPT), "the random faults never fired"
    print(f"imports: {len(imports)} run(s); rollbacks: {len(rollback)} run(s); "
          f"faults: {Counter(d.fault for d in proxy.faulted())}")


IMAGES = ("alpha-base", "beta-app", "public-tools")
IMAGE_SCRIPT = (
    ("POST", r"/v2/images$", "drop"),  # created on dst, the client never learns its ID
    ("PUT", r"/file$", "drop"),  # data stored, the answer lost
    ("PUT", r"/file$", "reset"),  # the upload cut
    ("DELETE", r"/v2/images/", "drop"),
)


def test_images_copy_and_rollback_through_faults(seeded: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    selection = [a for name in IMAGES for a in ("--image", name)]
    src = openstack.connect(cloud="src")
    checksums = {i.id: i.checksum for i in src.image.images() if i.name in IMAGES}
    with faulty(IMAGE_SCRIPT, tmp_path) as px:
        copies = until_done(px, "--journal", str(journal), "images", "copy", "--from",
                             "src-faulty", "--to", "dst-faulty", *selection)
        try:
            dst = openstack.connect(cloud="dst")
            marked = [i for i in dst.image.images()
                      if (i.properties or {}).get("stackhop_source") in checksums]
            sources = Counter(i.properties["stackhop_source"] for i in marked)
            assert sources == Counter(set(checksums)), f"an image twice or missing: {sources}"
            for image in marked:  # the data is whole, whichever attempt stored it
                assert image.status == "active"
                assert image.checksum == checksums[image.properties["stackhop_source"]]
        finally:
            from stackhop.journal import Journal

            with Journal(journal) as j:
                runs = [a for r in j.runs() for a in ("--run", r.id)]
            until_done(px, "--journal", str(journal), "rollback", "--to", "dst-faulty", *runs)
        assert px.unspent == [], f"scripted faults never met: {px.unspent}"
    left = [i.id for i in openstack.connect(cloud="dst").image.images()
            if (i.properties or {}).get("stackhop_source") in checksums]
    assert left == []
    print(f"images copy: {len(copies)} run(s)")
