"""``--user-passwords``: what a created user gets, and where random ones are written.

Pure file handling, no cloud: the functional test (tests/functional/test_keystone_users.py)
logs in on the destination with what these produce.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from stackhop.errors import ConfigError
from stackhop.user_passwords import current, default_file, issuer_for, issuing


def test_none_gives_no_password(tmp_path: Path) -> None:
    issuer = issuer_for("none", None, str(tmp_path / "j.sqlite"))
    assert issuer.password_for("Default", "ana") is None
    issuer.record("Default", "ana", None)
    assert list(tmp_path.iterdir()) == []


def test_random_passwords_differ_and_land_in_a_0600_file(tmp_path: Path) -> None:
    target = tmp_path / "pw.yaml"
    target.write_text("")
    target.chmod(0o644)  # an existing, readable file is closed to others before writing
    issuer = issuer_for("random", str(target), str(tmp_path / "j.sqlite"))
    first, second = issuer.password_for("Default", "ana"), issuer.password_for("Default", "bö")
    assert first and second and first != second and len(first) == 32
    issuer.record("Default", "ana", first)
    issuer.record("Default", "bö", second)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert yaml.safe_load(target.read_text()) == {"Default/ana": first, "Default/bö": second}


def test_random_defaults_next_to_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "run.sqlite"
    assert default_file(str(journal)) == tmp_path / "run.sqlite.user-passwords.yaml"
    assert issuer_for("random", None, str(journal)).path == default_file(str(journal))
    assert default_file("mysql+pymysql://u@h/db") == Path("stackhop-user-passwords.yaml")


def test_file_prefers_domain_and_name_and_refuses_a_missing_user(tmp_path: Path) -> None:
    given = tmp_path / "given.yaml"
    given.write_text("ana: plain\nDefault/ana: qualified\nbo: other\n")
    issuer = issuer_for("file", str(given), "j.sqlite")
    assert issuer.password_for("Default", "ana") == "qualified"
    assert issuer.password_for("Default", "bo") == "other"
    with pytest.raises(ConfigError, match="no password for user Default/cy"):
        issuer.password_for("Default", "cy")


def test_file_mode_needs_a_file_of_strings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --user-passwords-file"):
        issuer_for("file", None, "j.sqlite")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ana: 12\n")
    with pytest.raises(ConfigError, match="non-empty string"):
        issuer_for("file", str(bad), "j.sqlite")


def test_issuing_holds_for_the_run_only(tmp_path: Path) -> None:
    issuer = issuer_for("random", str(tmp_path / "pw.yaml"), "j.sqlite")
    assert current().mode == "none"
    with issuing(issuer):
        assert current() is issuer
    assert current().mode == "none"
