"""A "hybrid" identity driver: SQL users first, then the LDAP directory's, all in Default.

SUSE Cloud 6 ran Keystone with SUSE's hybrid identity backend (an
out-of-tree driver, SUSE-Cloud/keystone-hybrid-backend): the SQL driver
with an LDAP fallback, so the service users (SQL) and the company's people
(LDAP) were users of one domain, Default, and an LDAP user's Keystone ID was
its raw LDAP ID. Today's Keystone has no such driver; this one is the same
idea written against today's driver interface, for the testbed's src cloud
(registered as ``stackhop_hybrid`` in the ``keystone.identity`` namespace).

- reads: the SQL driver answers when it knows the user; otherwise the LDAP
  driver (``[ldap]`` of keystone.conf), its answer put in the default
  domain. A name in both (``alice``) is the SQL user's, as in SUSE's driver.
- listing: SQL users, then the directory's (the directory only for the
  default domain); the directory is paged by the LDAP driver.
- authentication: a user SQL knows is checked by SQL only; anyone else binds
  to the directory as themselves.
- the directory is read-only: writes go to SQL, as they did.

Being the default driver and generating its own IDs for SQL users, Keystone
maps nothing (``id_mapping`` stays empty), so LDAP IDs reach the API raw —
what ``[identity_mapping] backward_compatible_ids`` guarantees for a
default-domain LDAP driver.
"""

from __future__ import annotations

import copy
from typing import Any

import keystone.conf
from keystone import exception
from keystone.common import driver_hints
from keystone.common import sql as ks_sql
from keystone.identity.backends import sql
from keystone.identity.backends import sql_model as model
from keystone.identity.backends.ldap import core as ldap_core

CONF = keystone.conf.CONF


class HybridIdentity(sql.Identity):
    """SQL identity with the directory behind it (see the module docstring)."""

    def __init__(self, conf: Any = None) -> None:
        super().__init__(conf)
        self.directory = ldap_core.Identity(conf)

    @staticmethod
    def _in_default_domain(ref: dict[str, Any]) -> dict[str, Any]:
        return {**ref, "domain_id": CONF.identity.default_domain_id}

    def _known_to_sql(self, user_id: str) -> bool:
        """The user is a local SQL account (a ``local_user`` row), not a shadow.

        Keystone's identity manager writes a *shadow* row (``user`` +
        ``nonlocal_user``, no ``local_user``) for a directory person once they
        log in; the SQL driver would then claim them and fail on the missing
        ``local_user`` (``'NoneType' object has no attribute
        'failed_auth_count'``): the directory stays their home.
        """
        with ks_sql.session_for_read() as session:
            ref = session.get(model.User, user_id)
            return ref is not None and ref.local_user is not None

    @staticmethod
    def _shadows() -> set[str]:
        """The IDs of the directory people Keystone keeps shadow rows of."""
        with ks_sql.session_for_read() as session:
            return {row.user_id for row in session.query(model.NonLocalUser.user_id)}

    def is_domain_aware(self) -> bool:
        return True

    def authenticate(self, user_id: str, password: str) -> dict[str, Any]:
        if self._known_to_sql(user_id):
            return super().authenticate(user_id, password)  # type: ignore[no-any-return]
        return self._in_default_domain(self.directory.authenticate(user_id, password))

    def get_user(self, user_id: str) -> dict[str, Any]:
        if self._known_to_sql(user_id):
            return super().get_user(user_id)  # type: ignore[no-any-return]
        return self._in_default_domain(self.directory.get_user(user_id))

    def get_user_by_name(self, user_name: str, domain_id: str) -> dict[str, Any]:
        try:
            return super().get_user_by_name(user_name, domain_id)  # type: ignore[no-any-return]
        except exception.UserNotFound:
            if domain_id != CONF.identity.default_domain_id:
                raise
            return self._in_default_domain(self.directory.get_user_by_name(user_name, domain_id))

    def list_users(self, hints: driver_hints.Hints) -> list[dict[str, Any]]:
        # The SQL query satisfies (and removes) the filters it knows: ask the directory
        # with the caller's hints as they came, minus the domain it does not store.
        directory_hints = copy.deepcopy(hints)
        shadows = self._shadows()
        users = [u for u in super().list_users(hints) if u["id"] not in shadows]
        domain = directory_hints.get_exact_filter_by_name("domain_id")
        if domain is not None:
            if domain["value"] != CONF.identity.default_domain_id:
                return users
            directory_hints.filters.remove(domain)
        known = {u["id"] for u in users}
        users += [self._in_default_domain(u) for u in self.directory.list_users(directory_hints)
                  if u["id"] not in known]
        return users

    def list_groups_for_user(self, user_id: str, hints: driver_hints.Hints) -> Any:
        if self._known_to_sql(user_id):
            return super().list_groups_for_user(user_id, hints)
        return []
