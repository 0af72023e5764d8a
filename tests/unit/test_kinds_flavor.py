"""``nova.flavor``'s declaration and policy (the cloud calls are tested on the testbed)."""

from __future__ import annotations

from stackhop.kinds import get
from stackhop.kinds.base import Difference, ExportScope
from stackhop.kinds.flavor import _in_scope, flavor_record

SHAPE = {"ram": 512, "vcpus": 1, "disk": 1, "ephemeral": 0, "swap": None, "rxtx_factor": None}


def _record(**changes: object) -> dict:
    flavor = {"id": "f1", "name": "m1", "is_public": False, "description": None, **SHAPE}
    flavor.update(changes)
    return flavor_record(flavor, {"hw:x": 1}, ["p2", "p1"])


def test_record_is_the_same_whatever_the_source_spelled() -> None:
    record = _record()
    assert record["swap"] == 0 and record["rxtx_factor"] == 1.0 and record["description"] == ""
    assert record["extra_specs"] == {"hw:x": "1"} and record["access"] == ["p1", "p2"]
    assert flavor_record({**record, "is_public": True}, {}, ["p1"])["access"] == []


def test_other_shape_is_always_a_conflict() -> None:
    kind = get("nova.flavor")
    record = _record()
    assert kind.identity(record) == "m1"
    other = {**record, "ram": 1024}
    differences = kind.compare(record, other)
    assert [d.field for d in differences] == ["ram"]
    assert kind.on_difference(differences, overwrite=True) == "conflict"
    specs = [Difference("extra_specs", {"a": "1"}, {})]
    assert kind.on_difference(specs, overwrite=True) == "update"
    assert kind.on_difference(specs, overwrite=False) == "conflict"


def test_the_marker_in_the_description_is_not_a_difference() -> None:
    kind = get("nova.flavor")
    record = _record(description="small")
    stamped = {**record, "description": kind.stamp("small", record)}
    assert kind.compare(record, stamped) == []


def test_a_project_export_keeps_what_its_projects_may_use() -> None:
    record = _record()
    alpha = ExportScope(users=[], projects=[{"id": "p1"}], exported={}, whole_cloud=False)
    other = ExportScope(users=[], projects=[{"id": "p9"}], exported={}, whole_cloud=False)
    assert _in_scope(record, alpha) == {**record, "access": ["p1"]}
    assert _in_scope(record, other) is None
    assert _in_scope({**record, "is_public": True, "access": []}, other) is not None
    everything = ExportScope(users=[], projects=[{"id": "p1"}, {"id": "p2"}], exported={})
    assert _in_scope(_record(), everything) == record
