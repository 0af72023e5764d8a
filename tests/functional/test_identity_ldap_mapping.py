"""Issue 21: users mapped per domain between the two LDAP shapes of the SOC6 -> SOC7 move.

src's Keystone is the hybrid shape (SQL users and the directory's 1,209 people
all in Default, raw LDAP IDs), dst's has the domain-specific ``ldap_users``
domain (generated IDs): the shared clouds (docs/testbed.md). Both
listings page through the directory; the mapping with ``--domain-map
Default=ldap_users`` sends the people to ``ldap_users`` and keeps Default's
SQL users in Default.
"""

from __future__ import annotations

from typing import Any

import pytest
from testbed import layout
from testbed.infra import ldap_directory
from testbed.openstack import keystone_ldap, keystone_private

from stackhop.clouds import connect, identity_capabilities
from stackhop.kinds import identity

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def shapes(seeded: object) -> tuple[Any, Any]:
    return connect("src"), connect("dst")


def test_domain_map_maps_directory_people_and_keeps_sql_users(shapes: tuple[Any, Any]) -> None:
    src, dst = shapes
    people = ldap_directory.BULK_PEOPLE + len(ldap_directory.NAMED_PEOPLE)
    src_users = list(identity.list_users(src))
    dst_users = list(identity.list_users(dst))
    # Both sides page past the directory's size limit, one listing per domain.
    src_people = [u for u in src_users if not identity.is_sql_id(u["id"])]
    assert len(src_people) == people
    ldap_domain = dst.identity.find_domain(layout.LDAP_DOMAIN)
    dst_people = [u for u in dst_users if u["domain_name"] == layout.LDAP_DOMAIN]
    assert len(dst_people) == people

    user_map = identity.OperatorMap().with_domains(
        identity.parse_domain_map([f"Default={layout.LDAP_DOMAIN}"])
    )
    mapping = identity.map_identities(src_users, [], dst, user_map=user_map)
    by_name = {(u["name"], u["id"]): u for u in src_users}
    for uid, name in ldap_directory.NAMED_PEOPLE:
        assert (name, uid) in by_name, name  # the raw LDAP ID on src
        assert mapping.users[uid] == keystone_ldap.public_id(ldap_domain.id, uid), name
    dst_default = {u["name"]: u["id"] for u in dst_users if u["domain_id"] == "default"}
    src_sql = {
        u["name"]: u["id"]
        for u in src_users
        if u["domain_id"] == "default" and identity.is_sql_id(u["id"])
    }
    for name in ("admin", "nova", "alice"):
        assert mapping.users[src_sql[name]] == dst_default[name], name
    # A SQL user of src's Default that dst lacks is reported by name, never guessed.
    for name in set(src_sql) - set(dst_default):
        assert f"Default/{name}" in mapping.unmapped_labels(identity.USER)
    assert not [u for u in mapping.unmapped if not identity.is_sql_id(u[1])]

    # Asked for (sql_users: true), the SQL users are looked up in ldap_users too:
    # alice is a person there, nova is not.
    asked = identity.OperatorMap(domains={"Default": layout.LDAP_DOMAIN}, sql_users=True)
    both = identity.map_identities(
        [{**by_name[("alice", src_sql["alice"])]}, {**by_name[("nova", src_sql["nova"])]}],
        [],
        dst,
        user_map=asked,
    )
    assert both.users == {src_sql["alice"]: keystone_ldap.public_id(ldap_domain.id, _uid("alice"))}
    assert both.unmapped_labels(identity.USER) == ["Default/nova"]


@pytest.mark.long  # its own private Keystone (~35 s); the listing error itself is unit-sized
def test_check_names_the_ldap_domain_with_a_wrong_bind_password(seeded: object) -> None:
    with keystone_private.private_keystone(
        layout.DST, "badbindcheck", ldap_bind_password="not-the-password", slot=5
    ) as ks:
        conn = ks.connection()
        caps = {c.name: c for c in identity_capabilities(conn)}
        with pytest.raises(identity.DomainListingError, match=layout.LDAP_DOMAIN):
            list(identity.list_users(conn))
    bad = caps[f"identity users of domain {layout.LDAP_DOMAIN}"]
    assert not bad.present and layout.LDAP_DOMAIN in bad.detail
    assert caps["identity users of domain Default"].present


def _uid(name: str) -> str:
    return next(uid for uid, n in ldap_directory.NAMED_PEOPLE if n == name)
