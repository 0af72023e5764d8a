"""The planner, the resolver and the kind base on synthetic records.

The kinds here live on an in-memory fake cloud (tests/unit/memory_cloud.py);
the real kinds are tested against the testbed clouds in their own issues.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.memory_cloud import Gadget, MemoryCloud, Widget, gadget, widget

from stackhop import kinds
from stackhop.errors import ConfigError, UnmappedReferenceError
from stackhop.journal import Journal
from stackhop.kinds.base import Difference, Kind
from stackhop.plan import Conflict, Create, Skip, Update, plan, summarize
from stackhop.resolve import PROJECT, USER, Resolver, load_id_map

WIDGET, GADGET = Widget(), Gadget()
USERS = {"u-src-1": "u-dst-1", "u-src-2": "u-dst-2"}


@pytest.fixture
def cloud() -> MemoryCloud:
    return MemoryCloud()


def finder(cloud: MemoryCloud):
    return lambda kind, record: kind.find(cloud, record)


def resolver(**kw) -> Resolver:
    return Resolver("dst", maps={USER: USERS}, **kw)


def put(cloud: MemoryCloud, kind: Kind, record: dict, **changes) -> str:
    """Put the destination twin of a (resolved) source record on the fake cloud."""
    return kind.create(cloud, {**record, **changes})


def test_missing_identical_and_different(cloud: MemoryCloud) -> None:
    w1, w2, w3 = widget(1), widget(2), widget(3)
    r = resolver()
    existing_2 = put(cloud, WIDGET, r.resolve(WIDGET, w2))
    put(cloud, WIDGET, r.resolve(WIDGET, w3), size=99)

    ops = plan({WIDGET: [w1, w2, w3]}, finder(cloud), r)

    assert [type(o) for o in ops] == [Create, Skip, Conflict]
    create, skip, conflict = ops
    assert create.resolved["owner_id"] == "u-dst-1" and create.source["owner_id"] == "u-src-1"
    assert create.resolved["project_id"] == "p-1"  # projects keep their IDs unless mapped
    assert skip.destination_id == existing_2 and skip.differences == ()
    assert conflict.differences == (Difference("size", 1, 99),)
    assert "size" in conflict.reason and "--overwrite" in conflict.reason
    # created_at is a source-only fact: never compared, still carried.
    assert "created_at" in create.source

    updated = plan({WIDGET: [w3]}, finder(cloud), r, overwrite=True)
    assert [type(o) for o in updated] == [Update]
    assert updated[0].describe() == "update test.widget p-1/w3: changes size"


def test_user_map_from_a_yaml_file(tmp_path: Path, cloud: MemoryCloud) -> None:
    (tmp_path / "users.yaml").write_text("u-src-1: u-new-1\n'12345': u-new-2\n")
    (tmp_path / "projects.json").write_text(json.dumps({"p-1": "p-new"}))
    r = Resolver.from_files(
        "dst", user_map=tmp_path / "users.yaml", project_map=tmp_path / "projects.json"
    )
    assert r.maps[USER] == {"u-src-1": "u-new-1", "12345": "u-new-2"}
    (op,) = plan({WIDGET: [widget(1)]}, finder(cloud), r)
    assert isinstance(op, Create)
    assert (op.resolved["owner_id"], op.resolved["project_id"]) == ("u-new-1", "p-new")


def test_unmapped_user_is_a_conflict_naming_the_map(cloud: MemoryCloud) -> None:
    record = widget(1, owner="u-unknown")
    with pytest.raises(UnmappedReferenceError) as caught:
        resolver().resolve(WIDGET, record)
    assert "u-unknown" in caught.value.message and "--user-map" in caught.value.message

    ops = plan({WIDGET: [record, widget(2)]}, finder(cloud), resolver())
    assert [type(o) for o in ops] == [Conflict, Create]
    assert "owner_id" in ops[0].reason and "--user-map" in ops[0].reason
    assert cloud.count("find") == 1  # the unresolvable record was not looked up


def test_users_keep_ids_only_when_asked(cloud: MemoryCloud) -> None:
    r = Resolver("dst", keep_ids=frozenset({PROJECT, USER}))
    assert r.resolve(WIDGET, widget(1, owner="u-same"))["owner_id"] == "u-same"


def test_reference_to_an_object_the_run_creates_is_deferred(cloud: MemoryCloud) -> None:
    w1, w2 = widget(1), widget(2)
    r = resolver()
    w2_dst = put(cloud, WIDGET, r.resolve(WIDGET, w2))
    g_new, g_old = gadget(1, w1["id"]), gadget(2, w2["id"])

    # Gadgets listed first: the planner still plans widgets first (dependency order).
    ops = plan({GADGET: [g_new, g_old], WIDGET: [w1, w2]}, finder(cloud), r)

    assert [(o.action, o.kind.name) for o in ops] == [
        ("create", "test.widget"), ("skip", "test.widget"),
        ("create", "test.gadget"), ("create", "test.gadget"),
    ]
    new_gadget, old_gadget = ops[2], ops[3]
    assert new_gadget.depends_on == (("test.widget", "p-1/w1"),)
    assert new_gadget.resolved["widget_id"] == w1["id"]  # resolved when applied
    assert old_gadget.depends_on == ()
    assert old_gadget.resolved["widget_id"] == w2_dst  # mapped through the skipped widget
    # The gadget depending on a create was not looked up: it cannot exist yet.
    assert [c for c in cloud.calls if c[:2] == ("find", "test.gadget")] == [
        ("find", "test.gadget", "g2")
    ]


def test_journal_id_map_resolves_references(tmp_path: Path, cloud: MemoryCloud) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.map_id("dst", "test.widget", "widget-src-9", "widget-dst-42")
        r = resolver(journal=journal)
        assert r.resolve(GADGET, gadget(1, "widget-src-9"))["widget_id"] == "widget-dst-42"
        assert r.unresolved(GADGET, gadget(2, "widget-src-8")) == [
            ("widget_id", "test.widget", "widget-src-8")
        ]
        (op,) = plan({GADGET: [gadget(2, "widget-src-8")]}, finder(cloud), r)
        assert isinstance(op, Conflict) and "move the test.widget objects first" in op.reason


def test_list_reference_fields_are_mapped_element_by_element() -> None:
    class Shared(Widget):
        name = "test.shared"
        references = {"members": USER, "project_id": PROJECT}

    record = {**widget(1), "members": ["u-src-1", "u-src-2"]}
    assert resolver().resolve(Shared(), record)["members"] == ["u-dst-1", "u-dst-2"]


def test_per_kind_policy_overrides_the_default(cloud: MemoryCloud) -> None:
    class AlwaysFollow(Widget):
        name = "test.follow"

        def on_difference(self, differences, overwrite):
            return "update"

    class KeepDestination(Widget):
        name = "test.keep"

        def on_difference(self, differences, overwrite):
            return "skip"

    class Immutable(Widget):
        name = "test.immutable"
        updatable = False

    r = resolver()
    for kind in (AlwaysFollow(), KeepDestination(), Immutable()):
        put(cloud, kind, r.resolve(kind, widget(1)), size=5)
    ops = plan(
        {AlwaysFollow(): [widget(1)], KeepDestination(): [widget(1)], Immutable(): [widget(1)]},
        finder(cloud), r, overwrite=True,
    )
    by_kind = {o.kind.name: o for o in ops}
    assert isinstance(by_kind["test.follow"], Update)
    assert isinstance(by_kind["test.keep"], Skip)
    assert "destination kept despite size" in by_kind["test.keep"].describe()
    assert isinstance(by_kind["test.immutable"], Conflict)


def test_operations_render_as_json(cloud: MemoryCloud) -> None:
    ops = plan({WIDGET: [widget(1), widget(2, owner="nobody")]}, finder(cloud), resolver())
    data = json.loads(json.dumps([o.as_dict() for o in ops]))
    assert data[0]["action"] == "create" and data[0]["source_id"] == "widget-src-1"
    assert data[1]["action"] == "conflict" and "nobody" in data[1]["detail"]
    assert summarize(ops) == {"test.widget": {"create": 1, "conflict": 1}}


def test_load_id_map_refuses_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must map source IDs"):
        load_id_map(bad)
    nested = tmp_path / "nested.yaml"
    nested.write_text("a: {b: c}\n")
    with pytest.raises(ConfigError, match="must map an ID to an ID"):
        load_id_map(nested)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_id_map(broken)
    with pytest.raises(ConfigError, match="cannot read ID map"):
        load_id_map(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_id_map(empty) == {}


def test_marker_stamp_and_parse() -> None:
    record = widget(7)
    stamped = WIDGET.stamp("web servers", record)
    assert stamped == "web servers [stackhop-source:widget-src-7]"
    assert WIDGET.stamp(stamped, record) == stamped  # once only
    assert Kind.marked_source_id(stamped) == "widget-src-7"
    assert Kind.unstamp(stamped) == "web servers"
    assert Kind.marked_source_id("no marker") is None
    assert WIDGET.stamp(None, record) == "[stackhop-source:widget-src-7]"


def test_dependency_levels_and_cycles() -> None:
    levels = kinds.dependency_levels([GADGET, WIDGET])
    assert [[k.name for k in level] for level in levels] == [["test.widget"], ["test.gadget"]]

    class A(Widget):
        name = "test.a"
        references = {"b_id": "test.b"}

    class B(Widget):
        name = "test.b"
        references = {"a_id": "test.a"}

    with pytest.raises(ConfigError, match="cycle"):
        kinds.dependency_levels([A(), B()])


def test_registry() -> None:
    class Registered(Widget):
        name = "test.registered"

    assert kinds.register(Registered) is Registered
    assert kinds.get("test.registered").name == "test.registered"
    assert "test.registered" in [k.name for k in kinds.all_kinds()]
    kinds.register(Registered)  # registering the same class again is harmless

    class Impostor(Widget):
        name = "test.registered"

    with pytest.raises(ValueError, match="registered twice"):
        kinds.register(Impostor)
    with pytest.raises(ConfigError, match="unknown resource kind 'test.nothing'"):
        kinds.get("test.nothing")


def test_bulk_lookup_plans_the_same_with_one_call_per_kind(cloud: MemoryCloud) -> None:
    w1, w2 = widget(1), widget(2)
    r = resolver()
    put(cloud, WIDGET, r.resolve(WIDGET, w2))
    records = {GADGET: [gadget(1, w1["id"]), gadget(2, w2["id"])], WIDGET: [w1, w2]}
    asked: list[tuple[str, list[str]]] = []

    def find_many(kind, resolved):
        asked.append((kind.name, [r["name"] for r in resolved]))
        return kind.find_many(cloud, resolved, workers=2)

    one_by_one = plan(records, finder(cloud), r)
    in_bulk = plan(records, finder(cloud), r, find_many=find_many)

    assert [(o.action, o.identity, o.depends_on) for o in in_bulk] == [
        (o.action, o.identity, o.depends_on) for o in one_by_one
    ]
    # One lookup per kind, without the gadget that waits for a widget being created.
    assert asked == [("test.widget", ["w1", "w2"]), ("test.gadget", ["g2"])]


def test_batches_side_by_side_never_hand_over_a_kind_before_its_references(
    cloud: MemoryCloud,
) -> None:
    from stackhop.plan import plan_batches

    records = {GADGET: [gadget(1, "widget-src-1")], WIDGET: [widget(1)]}
    batches = list(
        plan_batches(records, finder(cloud), resolver(), side_by_side=True,
                     find_many=lambda k, rs: k.find_many(cloud, rs))
    )
    assert [[o.kind.name for o in batch] for batch in batches] == [
        ["test.widget"], ["test.gadget"]
    ]
    assert batches[1][0].depends_on == (("test.widget", "p-1/w1"),)
