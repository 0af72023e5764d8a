"""User and project maps: the two file shapes and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop.errors import ConfigError
from stackhop.kinds.identity import IdentityMapping, load_operator_map
from stackhop.resources import unmapped_message, unmapped_warning


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


def test_domain_map_keeps_default_sql_users_unless_asked(tmp_path: Path) -> None:
    from stackhop.kinds.identity import OperatorMap, destination_domain, parse_domain_map

    domains = parse_domain_map(["Default=ldap_users", " corp = people "])
    assert domains == {"Default": "ldap_users", "corp": "people"}
    op = OperatorMap().with_domains(domains)
    sql = {
        "id": "0123456789abcdef0123456789abcdef",
        "domain_id": "default",
        "domain_name": "Default",
    }
    person = {"id": "lina", "domain_id": "default", "domain_name": "Default"}
    assert destination_domain(sql, op) == "Default"
    assert destination_domain(person, op) == "ldap_users"
    path = tmp_path / "m.yaml"
    path.write_text("sql_users: true\ndomains:\n  Default: ldap_users\n")
    asked = load_operator_map(path)
    assert asked.sql_users and destination_domain(sql, asked) == "ldap_users"


@pytest.mark.parametrize("value", ["Default", "=x", "Default="])
def test_domain_map_rejects_bad_pairs(value: str) -> None:
    from stackhop.errors import ConfigError
    from stackhop.kinds.identity import parse_domain_map

    with pytest.raises(ConfigError, match="SOURCE_DOMAIN=DESTINATION_DOMAIN"):
        parse_domain_map([value])


def test_disabled_users_choice_from_file_and_flag(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("disabled_users: skip\n", encoding="utf-8")
    from_file = load_operator_map(path)
    assert from_file.disabled_users == "skip"
    assert from_file.with_disabled_users(None).disabled_users == "skip"  # no flag: the file's
    assert from_file.with_disabled_users("carry").disabled_users == "carry"  # the flag wins
    assert load_operator_map(None).disabled_users == "carry"  # the default: lose nothing
    # The choice survives a domain map added afterwards.
    assert from_file.with_domains({"Default": "ldap_users"}).disabled_users == "skip"


@pytest.mark.parametrize("text", ["disabled_users: drop\n", "disabled_users: true\n"])
def test_disabled_users_rejects_other_values(tmp_path: Path, text: str) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="disabled_users.*carry, skip"):
        load_operator_map(path)


def test_unmapped_warning_is_capped() -> None:
    people = [("identity.user", f"u{i}", f"Default/person{i:04d}") for i in range(1200)]
    message = unmapped_message(IdentityMapping(unmapped=people))
    assert message is not None
    assert "1200 users" in message and "and 1190 more" in message
    assert "Default/person0009" in message and "Default/person0010" not in message
    event = unmapped_warning(IdentityMapping(unmapped=people))
    assert event is not None and len(event.detail["users"]) == 1200


def test_users_the_run_creates_are_not_named_unmapped() -> None:
    from stackhop.kinds import get
    from stackhop.resolve import Resolver
    from stackhop.resources import Prepared

    mapping = IdentityMapping(unmapped=[("identity.user", "u1", "Default/new"),
                                        ("identity.user", "u2", "Default/gone")])
    prepared = Prepared(records={get("keystone.user"): [{"id": "u1", "name": "new"}]},
                        identities=mapping, resolver=Resolver("dst"))
    event = unmapped_warning(mapping, prepared)
    assert event is not None and event.detail["users"] == ["Default/gone"]
    assert event.message is not None and "Default/new" not in event.message
