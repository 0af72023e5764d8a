"""``stackhop map``: the journal's ID map, queryable by kind and ID."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackhop.cli.main import main
from stackhop.journal import Journal


@pytest.fixture
def journal_path(tmp_path: Path) -> str:
    path = tmp_path / "journal.sqlite"
    with Journal(path) as j:
        j.map_id("dst", "nova.keypair", "kp-src", "kp-dst")
        j.map_id("dst", "nova.flavor", "fl-src", "fl-dst")
        j.map_id("dst", "neutron.security_group", "sg-src", "sg-dst")
        j.map_id("src->dst", "volume", "vol-src", "vol-dst")
        j.map_id("other", "nova.keypair", "kp-src", "kp-other")
    return str(path)


def shown(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, str]]:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_map_lists_every_kind_and_filters_by_kind_scope_and_id(
    journal_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    every = shown(capsys, "--journal", journal_path, "map", "--json")
    assert len(every) == 5
    assert {"scope": "src->dst", "kind": "volume", "source_id": "vol-src",
            "destination_id": "vol-dst"} in every

    nova = shown(capsys, "--journal", journal_path, "map", "--kind", "nova.", "--scope", "dst",
                 "-f", "json")
    assert [(m["kind"], m["source_id"]) for m in nova] == [
        ("nova.flavor", "fl-src"), ("nova.keypair", "kp-src")
    ]
    # Either side of a pair finds it; one source moved to two destinations shows both.
    by_source = shown(capsys, "--journal", journal_path, "map", "kp-src", "--json")
    assert sorted(m["destination_id"] for m in by_source) == ["kp-dst", "kp-other"]
    by_destination = shown(capsys, "--journal", journal_path, "map", "vol-dst", "sg-dst",
                           "--json")
    assert sorted(m["source_id"] for m in by_destination) == ["sg-src", "vol-src"]

    assert main(["--journal", journal_path, "map", "--kind", "volume"]) == 0
    table = capsys.readouterr().out
    assert "vol-src" in table and "vol-dst" in table and "kp-src" not in table


def test_map_errors_name_what_is_wrong(
    journal_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--journal", journal_path, "map", "nope-id"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no mapping for nope-id" in err and "stackhop map" in err
    assert main(["--journal", journal_path, "map", "--kind", "glance.image"]) == 2
    err = capsys.readouterr().err
    assert "no mapping of kind glance.image" in err and "nova.keypair" in err
    assert main(["--journal", journal_path + ".missing", "map"]) == 3
    assert "no journal at" in capsys.readouterr().err
