"""The Keystone kinds' records, scope (subtrees, parents first), markers and comparison."""

from __future__ import annotations

from stackhop.kinds import get
from stackhop.kinds.base import ExportScope
from stackhop.kinds.keystone_identity import (
    _built_in,
    _with_subtrees,
    domain_record,
    project_record,
    role_record,
)


def _project(pid: str, parent: str | None, domain: str = "d1") -> dict[str, object]:
    return project_record(
        {"id": pid, "name": pid, "domain_id": domain, "parent_id": parent or domain,
         "description": None, "enabled": 1},
        ["b", "a"],
        "dom",
    )


def test_records() -> None:
    assert domain_record({"id": "d", "name": "D", "enabled": 0}) == {
        "id": "d", "name": "D", "description": "", "enabled": False}
    top = _project("p", None)
    assert top["parent_id"] is None and top["tags"] == ["a", "b"] and top["enabled"] is True
    assert _project("c", "p")["parent_id"] == "p"
    assert role_record({"id": "r", "name": "x", "domain_id": "<<null>>"}, None)["domain_id"] is None


def test_bootstrap_roles_are_built_in_only_globally() -> None:
    assert _built_in("manager", None) and _built_in("service", None)
    assert not _built_in("manager", "acme") and not _built_in("auditor", None)


def test_subtrees_parents_first() -> None:
    records = [_project("c2", "c1"), _project("c1", "p"), _project("p", None), _project("o", None)]
    whole = ExportScope(users=[], projects=[], exported={}, whole_cloud=True)
    order = [r["id"] for r in _with_subtrees(records, whole)]
    assert sorted(order) == ["c1", "c2", "o", "p"]
    assert order.index("p") < order.index("c1") < order.index("c2")
    narrowed = ExportScope(users=[], projects=[{"id": "c1"}], exported={}, whole_cloud=False)
    assert [r["id"] for r in _with_subtrees(records, narrowed)] == ["c1", "c2"]


def test_marker_ignored_in_comparison_and_opt_in() -> None:
    kind = get("keystone.project")
    record = _project("p", None)
    found = {**record, "description": kind.stamp("", record)}
    assert kind.compare(record, found) == []
    assert kind.compare(record, {**found, "enabled": False})[0].field == "enabled"
    for name in ("keystone.domain", "keystone.project", "keystone.role"):
        assert get(name).transfer and not get(name).default_selected
    assert get("keystone.project").dependencies() == {"keystone.domain"}
