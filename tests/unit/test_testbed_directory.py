"""The testbed's directory data and Keystone's ID rule, without any server."""

from __future__ import annotations

import base64
import hashlib

from keystone.identity.id_generators.sha256 import Generator
from testbed import layout
from testbed.infra import ldap_directory, slapd
from testbed.openstack import keystone_ldap


def test_public_id_is_keystones_sha256_generator() -> None:
    mapping = {"domain_id": "2b1c", "local_id": "李雷", "entity_type": "user"}
    assert keystone_ldap.public_id("2b1c", "李雷") == Generator().generate_public_ID(mapping)
    assert keystone_ldap.public_id("d", "u") == hashlib.sha256(b"duseru").hexdigest()


def test_ssha_verifies_like_slapd() -> None:
    stored = ldap_directory.ssha("secret")
    raw = base64.b64decode(stored.removeprefix("{SSHA}"))
    digest, salt = raw[:20], raw[20:]
    assert hashlib.sha1(b"secret" + salt).digest() == digest
    assert ldap_directory.ssha("other") != stored


def test_directory_entries_hold_the_edge_cases() -> None:
    entries = ldap_directory.entries(bulk=3)
    dns = [e.dn for e in entries]
    assert len(dns) == len(set(dns))
    assert dns[0] == layout.LDAP_SUFFIX  # parents first: slapadd needs them
    enabled = next(e for e in entries if e.dn == layout.LDAP_ENABLED_DN)
    assert ldap_directory.person_dn("dora") not in enabled.attrs["member"]
    assert ldap_directory.person_dn("user0003") in enabled.attrs["member"]
    people = {e.attrs["uid"][0]: e.attrs["cn"][0] for e in entries if "uid" in e.attrs}
    assert people["lilei"] == "李雷" and people["alice"] == "alice"
    assert ldap_directory.fingerprint(entries) != ldap_directory.fingerprint(entries[:-1])


def test_ldif_base64_for_non_ascii_and_leading_space() -> None:
    text = slapd.ldif([ldap_directory.Entry("cn=x", {"cn": ["jürgen", " lead", "plain"]})])
    assert f"cn:: {base64.b64encode('jürgen'.encode()).decode()}" in text
    assert f"cn:: {base64.b64encode(b' lead').decode()}" in text
    assert "cn: plain" in text
