"""``cinder.volume_type``: records, mapping, policy (cloud calls are tested on the testbed)."""

from __future__ import annotations

import argparse

from stackhop.cli.options import add_kind_options, chosen_options
from stackhop.kinds import get, import_options
from stackhop.kinds.base import Difference, ExportScope, Kind
from stackhop.kinds.volume_type import VOLUME_TYPE_NAME, _in_scope, volume_type_record
from stackhop.resolve import Resolver
from stackhop.volumes.reshape import parse_type_map


def _record(**changes: object) -> dict:
    volume_type = {"id": "t1", "name": "fast", "description": None, "is_public": False, **changes}
    return volume_type_record(volume_type, {"volume_backend_name": "ceph"}, ["p2", "p1"])


def test_record_is_the_same_whatever_the_source_spelled() -> None:
    record = _record()
    assert record["destination_name"] == "fast" and record["description"] == ""
    assert record["access"] == ["p1", "p2"]
    assert _record(is_public=1)["access"] == []


def test_the_type_map_renames_and_an_unnamed_type_keeps_its_name() -> None:
    kind = get("cinder.volume_type")
    resolver = Resolver(  # as an import builds it: projects only through the mapping
        "dst",
        maps={VOLUME_TYPE_NAME: parse_type_map(["fast=ssd"]), "identity.project": {"p1": "q1"}},
        keep_ids=frozenset(),
    )
    assert resolver.resolve(kind, _record(is_public=True))["destination_name"] == "ssd"
    slow = resolver.resolve(kind, {**_record(name="slow"), "destination_name": "slow"})
    assert slow["destination_name"] == "slow"
    # A project nothing maps is left out of the access list, not a conflict.
    assert slow["access"] == ["q1"]


def test_a_mapped_type_is_never_changed_and_missing_ones_name_the_fixes() -> None:
    kind = get("cinder.volume_type")
    differences = [Difference("extra_specs", {"a": "1"}, {})]
    assert kind.on_difference(differences, overwrite=True) == "skip"
    stamped = {**_record(), "description": kind.stamp("", _record())}
    assert kind.compare(_record(), stamped) == []
    message = kind.unmatched([_record(), _record(name="gold")], "dst")
    assert "'fast', 'gold'" in message and "--type-map fast=TYPE --type-map gold=TYPE" in message
    assert "--create-volume-types" in message and "\n" not in message
    # The base's wording, for any future mapped kind: identities and the flag, one line.
    plain = Kind.unmatched(kind, [_record()], "dst")
    assert plain == "cinder.volume_type 'fast': no counterpart on cloud 'dst'; pass " \
        "--create-volume-types"


def test_the_create_flag_is_the_kinds_import_option() -> None:
    assert import_options()["create-volume-types"] == (
        "create the volume types the destination lacks (journaled)",
        ("cinder.volume_type",),
    )
    parser = argparse.ArgumentParser()
    add_kind_options(parser)
    kind = get("cinder.volume_type")
    assert kind.mapped and not kind.may_create
    assert kind.configured(chosen_options(parser.parse_args(["--create-volume-types"]))).may_create
    assert not kind.configured(chosen_options(parser.parse_args([]))).may_create


def test_a_project_export_keeps_what_its_projects_may_use() -> None:
    record = _record()
    alpha = ExportScope(users=[], projects=[{"id": "p1"}], exported={}, whole_cloud=False)
    other = ExportScope(users=[], projects=[{"id": "p9"}], exported={}, whole_cloud=False)
    assert _in_scope(record, alpha) == {**record, "access": ["p1"]}
    assert _in_scope(record, other) is None
    assert _in_scope(_record(is_public=True), other) is not None


def test_the_commands_take_the_type_map_and_the_create_flag() -> None:
    from stackhop.cli.main import build_parser

    parser = build_parser()
    for argv in (
        ["plan", "--to", "dst", "a.tar"],
        ["import", "--to", "dst", "a.tar"],
        ["migrate", "--from", "src", "--to", "dst"],
        ["project", "migrate", "--from", "src", "--to", "dst", "--project", "p"],
    ):
        args = parser.parse_args([*argv, "--type-map", "lvm=ceph", "--create-volume-types"])
        assert parse_type_map(args.type_map) == {"lvm": "ceph"}, argv
        assert chosen_options(args)["create_volume_types"], argv
    verify = parser.parse_args(["verify", "--to", "dst", "a.tar", "--type-map", "lvm=ceph"])
    assert verify.type_map == ["lvm=ceph"]
