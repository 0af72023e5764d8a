"""User and project maps: the two file shapes and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop.errors import ConfigError
from stackhop.kinds.identity import IdentityMapping, load_operator_map
from stackhop.resources import unmapped_message


def test_flat_map_pins_ids(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("abc: def\n123: 456\n")
    loaded = load_operator_map(path)
    assert loaded.ids == {"abc": "def", "123": "456"} and loaded.domains == {}


def test_sectioned_map_renames_domains(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("domains:\n  ldap: corp\nusers:\n  a: b\n")
    loaded = load_operator_map(path)
    assert loaded.domains == {"ldap": "corp"} and loaded.ids == {"a": "b"}


@pytest.mark.parametrize("text", ["- a\n- b\n", "domains: {a: b}\nwho: {c: d}\n", "a: [1]\n"])
def test_malformed_maps_are_config_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_operator_map(path)


def test_missing_map_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothere"):
        load_operator_map(tmp_path / "nothere.yaml")


def test_unmapped_are_named() -> None:
    mapping = IdentityMapping(
        unmapped=[("identity.user", "u1", "ldap/lars"), ("identity.project", "p1", "Default/old")]
    )
    message = unmapped_message(mapping)
    assert message is not None
    assert "ldap/lars" in message and "--user-map" in message and "Default/old" in message
    assert unmapped_message(IdentityMapping()) is None
