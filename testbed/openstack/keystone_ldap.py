"""Keystone reading the testbed's LDAP directory (issue 21).

dst: a **domain-specific** LDAP driver for domain ``ldap_users``
(``[identity] domain_specific_drivers_enabled``, one
``keystone.ldap_users.conf`` in ``domain_config_dir``), Default staying on
SQL. The directory's people get public IDs that Keystone generates and keeps
in ``id_mapping``: sha256 over the mapping's values in the order of their
sorted keys (``domain_id``, ``entity_type``, ``local_id``), hex.

Keystone reads domain configuration files once, at its first identity call,
and ignores (with a warning) a file whose domain does not exist yet: the
domain is created through the API, then Keystone restarted once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from testbed import layout
from testbed.openstack import runtime
from testbed.openstack.config import Sections, service_etc, write_ini
from testbed.process import Daemon

#: The clouds whose shared Keystone has the domain-specific LDAP domain (SOC7's shape).
#: With domain-specific drivers on, ``GET /v3/users`` without ``domain_id`` lists
#: only the token's domain: stackhop and the seed list users per domain.
DOMAIN_SPECIFIC_CLOUDS: tuple[str, ...] = ("dst",)
#: The clouds whose shared Keystone runs the hybrid shape (SOC6's: Default = SQL
#: users + the directory's people, raw LDAP IDs).
HYBRID_CLOUDS: tuple[str, ...] = ("src",)
#: Results per LDAP page: several pages for the directory's 1,209 people.
PAGE_SIZE = 200


def domain_config_dir(c: layout.CloudLayout) -> Path:
    return service_etc(c, "keystone") / "domains"


def domain_config_file(c: layout.CloudLayout, domain: str = layout.LDAP_DOMAIN) -> Path:
    return domain_config_dir(c) / f"keystone.{domain}.conf"


def enabled(c: layout.CloudLayout) -> bool:
    """Cloud ``c``'s Keystone has the domain-specific LDAP domain."""
    return c.name in DOMAIN_SPECIFIC_CLOUDS


def reads_directory(c: layout.CloudLayout) -> bool:
    """Cloud ``c``'s Keystone reads the directory at all (it then needs slapd)."""
    return enabled(c) or c.name in HYBRID_CLOUDS


def config_sections(c: layout.CloudLayout) -> dict[str, dict[str, object]]:
    """What cloud ``c``'s ``keystone.conf`` gains for the directory (section -> options)."""
    sections: dict[str, dict[str, object]] = {}
    if c.name in HYBRID_CLOUDS:
        sections.update(hybrid_sections())
    if enabled(c):
        sections.setdefault("identity", {}).update(identity_options(c))
    return sections


def ldap_options(bind_password: str = layout.LDAP_BIND_PASSWORD) -> dict[str, object]:
    """The ``[ldap]`` section for the testbed's directory (see ``ldap_directory``)."""
    return {
        "url": layout.LDAP_URL,
        "user": layout.LDAP_BIND_DN,
        "password": bind_password,
        "suffix": layout.LDAP_SUFFIX,
        "query_scope": "one",
        "page_size": PAGE_SIZE,
        "user_tree_dn": layout.LDAP_USERS_DN,
        "user_objectclass": "inetOrgPerson",
        "user_id_attribute": "uid",
        "user_name_attribute": "cn",
        "user_mail_attribute": "mail",
        "user_pass_attribute": "userPassword",
        # inetOrgPerson has no enabled flag: membership of a group says it.
        "user_enabled_emulation": True,
        "user_enabled_emulation_dn": layout.LDAP_ENABLED_DN,
        "group_tree_dn": layout.LDAP_GROUPS_DN,
        "group_objectclass": "groupOfNames",
        "group_id_attribute": "cn",
        "group_name_attribute": "cn",
        "group_member_attribute": "member",
        "group_desc_attribute": "description",
        "use_pool": True,
        "pool_size": 4,
        "connection_timeout": 5,
    }


def identity_options(c: layout.CloudLayout) -> dict[str, object]:
    """What ``keystone.conf``'s ``[identity]`` gains on a cloud with LDAP domains."""
    if not enabled(c):
        return {}
    return {
        "domain_specific_drivers_enabled": True,
        "domain_config_dir": domain_config_dir(c),
    }


def hybrid_sections(bind_password: str = layout.LDAP_BIND_PASSWORD) -> dict[
    str, dict[str, object]
]:
    """keystone.conf sections of src's hybrid shape: Default on SQL + the directory.

    ``[identity] driver = stackhop_hybrid`` (the shim in ``shims/``), the
    directory in the global ``[ldap]`` section, and IDs left unmapped
    (``backward_compatible_ids``, Keystone's default, stated).
    """
    return {
        "identity": {"driver": "stackhop_hybrid"},
        "ldap": ldap_options(bind_password),
        "identity_mapping": {"backward_compatible_ids": True},
    }


def domain_sections(bind_password: str = layout.LDAP_BIND_PASSWORD) -> Sections:
    return {"identity": {"driver": "ldap"}, "ldap": ldap_options(bind_password)}


def write_domain_configs(c: layout.CloudLayout) -> bool:
    """The domain-specific file (0640: it holds the bind password); True if it changed."""
    if not enabled(c):
        return False
    domain_config_dir(c).mkdir(parents=True, exist_ok=True)
    return write_ini(domain_config_file(c), domain_sections())


def public_id(domain_id: str, local_id: str, entity_type: str = "user") -> str:
    """The ID Keystone gives an LDAP entity of a domain-specific driver (its sha256 generator)."""
    mapping = {"domain_id": domain_id, "entity_type": entity_type, "local_id": local_id}
    h = hashlib.sha256()
    for key in sorted(mapping):
        h.update(mapping[key].encode())
    return h.hexdigest()


def ensure_domain(c: layout.CloudLayout, daemon: Daemon) -> None:
    """The LDAP domain exists; Keystone restarted once if it had to be created."""
    if not enabled(c):
        return
    conn = runtime.admin_connection(c)
    ident: Any = conn.identity
    if ident.find_domain(layout.LDAP_DOMAIN) is not None:
        return
    ident.create_domain(
        name=layout.LDAP_DOMAIN,
        description="People of the LDAP directory (domain-specific LDAP driver)",
    )
    # The running Keystone read its domain files before the domain existed.
    daemon.stop()
    daemon.ensure()
