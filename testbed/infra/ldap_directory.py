"""The people and groups of the testbed's LDAP directory, as data.

The directory is what both clouds' Keystones read (issue 21): src as its
Default domain's users (the hybrid shape), dst through a domain-specific
driver for domain ``ldap_users``. Its entries are chosen for what a move of
LDAP users can get wrong:

- the seed's ``ldap`` people (``lina``, ``leo``, ``lucy``, ``lars``);
- ``alice``, whose name is also an SQL user's in Default (a name clash
  across domains);
- people with non-ASCII names (``zoë``, ``jürgen``, ``李雷``);
- ``dora``, disabled: not a member of ``enabled_users`` (Keystone's
  ``user_enabled_emulation``; inetOrgPerson has no enabled attribute);
- ``user0001`` .. ``user1200``: more than two pages of results at slapd's
  default size limit (500), so a reader that does not page fails.

A person's Keystone ID on src is ``uid`` (ASCII), their name ``cn``; the
password is ``<uid>-ldap-pw``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from testbed import layout

#: People with a role in the seed's world, plus the edge cases above.
NAMED_PEOPLE: tuple[tuple[str, str], ...] = (
    ("lina", "lina"),
    ("leo", "leo"),
    ("lucy", "lucy"),
    ("lars", "lars"),
    ("alice", "alice"),  # also an SQL user of Default
    ("zoe", "zoë"),
    ("juergen", "jürgen"),
    ("lilei", "李雷"),
    ("dora", "dora"),  # disabled
)
DISABLED = frozenset({"dora"})
#: How many bulk people (``user0001`` ...): more than one page on both sides.
BULK_PEOPLE = 1200


def bulk_uids(count: int = BULK_PEOPLE) -> list[str]:
    return [f"user{i:04d}" for i in range(1, count + 1)]


def password(uid: str) -> str:
    """The directory password of person ``uid`` (a testbed: nothing is protected)."""
    return f"{uid}-ldap-pw"


def ssha(secret: str, salt: bytes | None = None) -> str:
    """An OpenLDAP ``{SSHA}`` hash: slapd checks binds against it, nothing stores the secret."""
    salt = salt if salt is not None else hashlib.sha256(secret.encode()).digest()[:8]
    digest = hashlib.sha1(secret.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


@dataclass(frozen=True)
class Entry:
    """One directory entry: its DN and attributes (every value a string)."""

    dn: str
    attrs: dict[str, list[str]] = field(default_factory=dict)


def person_dn(uid: str) -> str:
    return f"uid={uid},{layout.LDAP_USERS_DN}"


def _person(uid: str, name: str) -> Entry:
    return Entry(person_dn(uid), {
        "objectClass": ["inetOrgPerson"],
        "uid": [uid],
        "cn": [name],
        "sn": [name],
        "mail": [f"{uid}@ldap.example.org"],
        "userPassword": [ssha(password(uid))],
    })


def _group(name: str, members: list[str], description: str) -> Entry:
    return Entry(f"cn={name},{layout.LDAP_GROUPS_DN}", {
        "objectClass": ["groupOfNames"],
        "cn": [name],
        "description": [description],
        "member": [person_dn(m) for m in members],
    })


def entries(bulk: int = BULK_PEOPLE) -> list[Entry]:
    """Every entry of the directory, parents before children."""
    suffix = layout.LDAP_SUFFIX
    top = suffix.split(",")[0].split("=")[1]
    out = [
        Entry(suffix, {"objectClass": ["dcObject", "organization"], "dc": [top],
                       "o": ["stackhop testbed"]}),
        Entry(f"ou=People,{suffix}", {"objectClass": ["organizationalUnit"], "ou": ["People"]}),
        Entry(f"ou=Groups,{suffix}", {"objectClass": ["organizationalUnit"], "ou": ["Groups"]}),
        Entry(f"ou=Services,{suffix}",
              {"objectClass": ["organizationalUnit"], "ou": ["Services"]}),
        Entry(layout.LDAP_BIND_DN, {
            "objectClass": ["organizationalRole", "simpleSecurityObject"],
            "cn": ["keystone"],
            "description": ["Keystone's read-only bind"],
            "userPassword": [ssha(layout.LDAP_BIND_PASSWORD)],
        }),
    ]
    people = [*NAMED_PEOPLE, *((u, u) for u in bulk_uids(bulk))]
    out += [_person(uid, name) for uid, name in people]
    enabled = [uid for uid, _ in people if uid not in DISABLED]
    out += [
        _group("enabled_users", enabled, "Keystone's enabled users (user_enabled_emulation)"),
        _group("developers", ["lina", "leo", "zoe", "lilei"], "People who write code"),
        _group("operators", ["lucy", "lars", "juergen", "alice"], "People who run clouds"),
    ]
    return out


def fingerprint(items: list[Entry]) -> str:
    """What the directory was loaded from: a new fingerprint reloads it."""
    h = hashlib.sha256()
    for e in items:
        h.update(repr((e.dn, sorted(e.attrs.items()))).encode())
    return h.hexdigest()
