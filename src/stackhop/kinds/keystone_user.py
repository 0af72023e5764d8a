"""``keystone.user``: the SQL users of the exported domains (``--identity``, opt-in).

Only users whose ID Keystone's SQL driver generated (:func:`identity.is_sql_id`)
are exported. The directory's people (on a hybrid source's Default, or in an
LDAP-backed domain) are never created: Keystone cannot write them, and they
already exist on the destination's directory; :mod:`stackhop.kinds.identity`
*maps* them by (domain, name) as it always did.

- a user is matched by (destination domain, name): an existing one (``admin``,
  the service users) is adopted into the ID map, never duplicated;
- kept: name, email, description, enabled, options (``lock_password``,
  ``ignore_password_expiry``, ...), and the default project, a reference to a
  ``keystone.project`` (dropped when nothing maps it: the project was not moved);
- the domain is a reference to a ``keystone.domain`` (matched by name, so
  ``Default`` is ``Default``): the ``--domain-map`` of the user *mapping* does
  not rename the domain of a user created here;
- passwords cannot be read: what a created user gets is
  ``--user-passwords`` (:mod:`stackhop.user_passwords`); ``none`` leaves them
  unable to log in until the operator sets one.

The marker is the description stamp (Keystone keeps a user's description as
given, as an extra attribute), so a re-run without the journal finds its own
users, and rollback deletes only users that carry it.

``--via db`` reads Keystone's ``user``, ``local_user`` (the name) and
``user_option`` tables; email and description live in ``user.extra`` (JSON).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from openstack import exceptions as sdk_exceptions

from stackhop import user_passwords
from stackhop.errors import ConflictError
from stackhop.kinds import register
from stackhop.kinds.base import Connection, ExportScope, Record, SqlSource
from stackhop.kinds.identity import is_sql_id, users_of_domain
from stackhop.kinds.keystone_identity import DOMAIN, PROJECT, SELECTOR, _InDomains, _listing
from stackhop.kinds.rest import call

USER = "keystone.user"

#: ``user_option.option_id`` -> the option's API name (keystone/identity/backends/
#: resource_options.py).
OPTION_NAMES = {
    "1000": "ignore_change_password_upon_first_use",
    "1001": "ignore_password_expiry",
    "1002": "ignore_lockout_failure_attempts",
    "1003": "lock_password",
    "1004": "ignore_user_inactivity",
    "MFAR": "multi_factor_auth_rules",
    "MFAE": "multi_factor_auth_enabled",
}


def user_record(row: Mapping[str, Any], domain_name: str) -> Record:
    """The archive record of one user (the API and the database export both build it here)."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "domain_id": str(row["domain_id"]),
        "domain_name": domain_name,
        "email": row.get("email") or None,
        "description": row.get("description") or "",
        "enabled": bool(row.get("enabled", True)),
        "default_project_id": row.get("default_project_id") or None,
        "options": dict(row.get("options") or {}),
    }


@register
class User(_InDomains):
    name = USER
    selectors = SELECTOR
    #: A password stackhop issues never leaves the coordinator's host.
    coordinator_only = True
    references = {"domain_id": DOMAIN, "default_project_id": PROJECT}
    #: A default project that was not moved is left out rather than failing the user.
    ordering_references = ("default_project_id",)
    portable_fields = (
        "domain_id",
        "email",
        "description",
        "enabled",
        "default_project_id",
        "options",
    )
    source_only_fields = ("domain_name",)
    path = "users"
    key = "user"

    def normalize(self, field: str, value: Any) -> Any:
        if field == "options":
            return dict(value or {})
        if field == "email":
            return value or None
        return super().normalize(field, value)

    def in_domains(self, conn: Connection, domains: Mapping[str, str]) -> Iterator[Record]:
        for domain_id, domain_name in domains.items():
            for user in users_of_domain(conn, domain_id, domain_name):
                yield user_record(user, domain_name)

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        domains = {d["id"]: d["name"] for d in _listing(conn, "/domains", "domains")}
        yield from self.in_domains(conn, domains)

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        """The SQL users of the scope (all, or those with a role in ``--project``)."""
        wanted = {u["id"]: u for u in scope.users if is_sql_id(str(u["id"]))}
        domains = {str(u["domain_id"]): str(u["domain_name"]) for u in wanted.values()}
        for record in self.in_domains(conn, domains):
            if record["id"] in wanted:
                yield record

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        wanted = {u["id"] for u in scope.users if is_sql_id(str(u["id"]))}
        domains = {
            row.id: row.name
            for row in db.query("keystone", "SELECT id, name FROM project WHERE is_domain = 1")
        }
        options: dict[str, dict[str, Any]] = defaultdict(dict)
        for row in db.query("keystone", "SELECT user_id, option_id, option_value FROM user_option"):
            if row.option_id in OPTION_NAMES:
                value = json.loads(row.option_value) if row.option_value else None
                options[row.user_id][OPTION_NAMES[row.option_id]] = value
        rows = db.query(
            "keystone",
            "SELECT u.id, l.name, u.domain_id, u.enabled, u.default_project_id, u.extra "
            "FROM user u JOIN local_user l ON l.user_id = u.id ORDER BY u.id",
        )
        for row in rows:
            if row.id not in wanted:
                continue
            extra = json.loads(row.extra) if row.extra else {}
            yield user_record(
                {
                    **row._mapping,
                    "email": extra.get("email"),
                    "description": extra.get("description"),
                    "enabled": True if row.enabled is None else row.enabled,
                    "options": options.get(row.id, {}),
                },
                domains.get(row.domain_id, row.domain_id),
            )

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        """Create the user with the password ``--user-passwords`` gives (random ones are
        written to their file once the user exists)."""
        issuer = user_passwords.current()
        domain = str(record.get("domain_name"))
        password = issuer.password_for(domain, str(record["name"]))
        body: dict[str, Any] = {
            "name": record["name"],
            "domain_id": record["domain_id"],
            "description": self.stamp(record.get("description"), record),
            "enabled": record["enabled"],
        }
        if record.get("email"):
            body["email"] = record["email"]
        if record.get("default_project_id"):
            body["default_project_id"] = record["default_project_id"]
        if record.get("options"):
            body["options"] = dict(record["options"])
        if password is not None:
            body["password"] = password
        try:
            created = call(conn.identity, "POST", "/users", json={"user": body})
        except sdk_exceptions.ForbiddenException as exc:
            raise self._refused(conn, record) from exc
        issuer.record(domain, str(record["name"]), password)
        return str(created["user"]["id"])

    def _refused(self, conn: Connection, record: Mapping[str, Any]) -> ConflictError:
        """Why Keystone refused to create the user, as the operator can act on it.

        Keystone answers a user created in a directory-backed (LDAP) domain with a bare
        403 "not authorized"; a domain whose users have no SQL IDs is such a domain.
        """
        domain_id, domain = str(record["domain_id"]), str(record.get("domain_name"))
        listed = users_of_domain(conn, domain_id, domain)
        if any(not is_sql_id(str(user["id"])) for user in listed):
            return ConflictError(
                f"user {self.identity(record)!r} cannot be created: domain {domain!r} on the "
                "destination is backed by a directory (LDAP), which Keystone does not write; "
                "add the user to that directory (it is then mapped by name, not created)"
            )
        return ConflictError(
            f"user {self.identity(record)!r}: the destination's Keystone refused to create it "
            f"in domain {domain!r} (403); check that your user is admin there"
        )

    def before(self, existing: Mapping[str, Any]) -> Record:
        fields = ("id", "email", "description", "enabled", "default_project_id", "options")
        return {f: existing.get(f) for f in fields}

    def _changes(self, wanted: Mapping[str, Any], existing: Mapping[str, Any]) -> dict[str, Any]:
        changes = super()._changes(wanted, existing)
        if "default_project_id" in changes and changes["default_project_id"] is None:
            del changes["default_project_id"]  # not moved: keep the destination's
        return changes

