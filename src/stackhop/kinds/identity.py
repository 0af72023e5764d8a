"""Users and projects: how source IDs become destination IDs.

Users and projects are not moved by stackhop; they are *mapped*. The archive
carries one ``identity.user`` and one ``identity.project`` record per object
(ID, name, domain ID and domain name), and on the destination:

- a user is matched by (domain name, user name), so an LDAP user whose ID
  changed when the identity backend did gets their resources under the new
  ID. ``--domain-map SRC=DST`` (or ``domains: {old: new}`` in the
  ``--user-map`` file) renames domains; ``--user-map`` also pins ID pairs
  (``users: {source id: destination id}``, or a flat mapping of IDs). In the
  source's default domain a rename applies to the *directory* users only
  (SOC6's hybrid backend put service users and people in Default): a user
  whose ID Keystone's SQL driver generated (32 hex digits) keeps the name
  ``Default`` unless the map says ``sql_users: true``;
- a project keeps its ID when the destination has a project with that ID;
  otherwise it is matched by (domain name, project name); ``--project-map``
  pins ID pairs;
- a user disabled on the source (the archive records ``enabled``) is mapped
  like anyone unless the operator says ``--disabled-users skip`` (or
  ``disabled_users: skip`` in the map file): then they and their objects stay
  behind, named in the report.

What matches nothing is reported by name (:class:`IdentityMapping.unmapped`);
the resolver then turns every record that refers to it into a conflict, and
the rest of the run carries on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stackhop.errors import ConfigError
from stackhop.kinds.base import Connection, Record
from stackhop.mapfile import read_mapping

USER = "identity.user"
PROJECT = "identity.project"


@dataclass(frozen=True)
class OperatorMap:
    """What ``--user-map`` / ``--project-map`` say: domain renames and pinned ID pairs."""

    domains: Mapping[str, str] = field(default_factory=dict)
    ids: Mapping[str, str] = field(default_factory=dict)
    #: Rename the default domain for its SQL users too (``sql_users: true``).
    sql_users: bool = False
    #: What becomes of a user disabled on the source (``disabled_users``):
    #: ``carry`` maps them like anyone (their objects move; the account stays as
    #: disabled as the destination has it), ``skip`` leaves them and their objects
    #: behind, reported by name.
    disabled_users: str = "carry"

    def with_domains(self, domains: Mapping[str, str]) -> OperatorMap:
        """This map with ``domains`` (``--domain-map``) added; they win over the file's."""
        return replace(self, domains={**self.domains, **domains})

    def with_disabled_users(self, choice: str | None) -> OperatorMap:
        """This map with ``--disabled-users`` applied (None: the file's choice stands)."""
        return self if choice is None else replace(self, disabled_users=_disabled_choice(choice))


DISABLED_USER_CHOICES = ("carry", "skip")


def _disabled_choice(value: object, where: str = "--disabled-users") -> str:
    if value not in DISABLED_USER_CHOICES:
        raise ConfigError(
            f"{where}: {value!r} is not one of {', '.join(DISABLED_USER_CHOICES)} "
            "(carry: move a disabled user's objects too; skip: leave them, named in the report)"
        )
    return str(value)


def parse_domain_map(values: Iterable[str] | None) -> dict[str, str]:
    """``--domain-map SRC=DST`` values as a mapping of domain names."""
    result: dict[str, str] = {}
    for value in values or ():
        source, sep, destination = value.partition("=")
        if not sep or not source.strip() or not destination.strip():
            raise ConfigError(
                f"--domain-map {value!r}: expected SOURCE_DOMAIN=DESTINATION_DOMAIN "
                "(domain names, e.g. Default=ldap_users)"
            )
        result[source.strip()] = destination.strip()
    return result


def load_operator_map(path: str | os.PathLike[str] | None) -> OperatorMap:
    """Read a map file (YAML, or JSON by suffix).

    Two shapes are accepted: a flat mapping ``source id: destination id``, or
    ``{domains: {source domain name: destination domain name}, users|projects|ids:
    {source id: destination id}}``.
    """
    if path is None:
        return OperatorMap()
    file = Path(path)
    data = read_mapping(file, "map")
    if not data:
        return OperatorMap()
    sections = {"domains", "users", "projects", "ids", "sql_users", "disabled_users"}
    if any(isinstance(v, Mapping) for v in data.values()) or {
        "sql_users", "disabled_users"
    } & set(data):
        unknown = set(data) - sections
        if unknown:
            raise ConfigError(
                f"map {file}: unknown section(s) {sorted(unknown)}; use {sorted(sections)}"
            )
        ids: dict[str, str] = {}
        for section in ("users", "projects", "ids"):
            ids.update(_flat(file, data.get(section) or {}))
        sql_users = data.get("sql_users", False)
        if not isinstance(sql_users, bool):
            raise ConfigError(f"map {file}: sql_users must be true or false, not {sql_users!r}")
        return OperatorMap(
            domains=_flat(file, data.get("domains") or {}),
            ids=ids,
            sql_users=sql_users,
            disabled_users=_disabled_choice(
                data.get("disabled_users", "carry"), f"map {file}: disabled_users"
            ),
        )
    return OperatorMap(ids=_flat(file, data))


def _flat(file: Path, data: Any) -> dict[str, str]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"map {file}: expected a mapping, found {type(data).__name__}")
    result = {}
    for key, value in data.items():
        if not isinstance(key, str | int) or not isinstance(value, str | int):
            raise ConfigError(f"map {file}: entry {key!r}: {value!r} must map a name or ID to one")
        result[str(key)] = str(value)
    return result


# -- reading identities --------------------------------------------------------


def domain_names(conn: Connection) -> dict[str, str]:
    return {d.id: d.name for d in conn.identity.domains()}


class DomainListingError(ConfigError):
    """Keystone could not list the users of one domain (an LDAP backend down, a bad bind)."""

    def __init__(self, domain: str, reason: str) -> None:
        super().__init__(
            f"cannot list the users of domain {domain!r}: {reason} (check that domain's "
            "identity backend, e.g. the LDAP url and bind password in keystone.<domain>.conf)"
        )
        self.domain = domain


def users_of_domain(conn: Connection, domain_id: str, domain_name: str) -> Iterator[Any]:
    """The raw user documents of one domain, following Keystone's ``links.next``.

    Keystone answers ``GET /v3/users`` without ``domain_id`` from the token's
    domain only once domain-specific drivers are on, so every listing names
    its domain. A listing cut by ``[DEFAULT] list_limit`` says ``truncated``:
    that is an error here, never a silent partial map.
    """
    url: str | None = "/users"
    params: dict[str, str] | None = {"domain_id": domain_id}
    while url:
        try:
            response = conn.identity.get(url, params=params)
        except Exception as exc:  # keystoneauth raises its own tree
            raise DomainListingError(domain_name, _first_line(exc)) from exc
        if response.status_code >= 400:
            raise DomainListingError(domain_name, _http_reason(response))
        body = response.json()
        if body.get("truncated"):
            raise DomainListingError(
                domain_name,
                f"Keystone truncated the listing at {len(body.get('users', []))} users "
                "([DEFAULT] list_limit / [identity] list_limit); raise the limit",
            )
        yield from body.get("users", [])
        url = (body.get("links") or {}).get("next")
        params = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _http_reason(response: Any) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return f"HTTP {response.status_code}: {str(message).splitlines()[0] if message else ''}"


def list_users(conn: Connection, domains: Mapping[str, str] | None = None) -> Iterator[Record]:
    """Every user of the cloud as an ``identity.user`` record, one listing per domain
    (``domains``: the domains' names by ID, when the caller has listed them already)."""
    seen: set[str] = set()
    for domain_id, domain_name in (domains or domain_names(conn)).items():
        for user in users_of_domain(conn, domain_id, domain_name):
            if user["id"] in seen:
                continue
            seen.add(user["id"])
            yield {
                "id": user["id"],
                "name": user["name"],
                "domain_id": user.get("domain_id", domain_id),
                "domain_name": domain_name,
                "enabled": bool(user.get("enabled", True)),
            }


def is_sql_id(user_id: str) -> bool:
    """An ID Keystone's SQL driver generated (``uuid4().hex``): 32 lower-case hex digits."""
    return len(user_id) == 32 and all(ch in "0123456789abcdef" for ch in user_id)


DEFAULT_DOMAIN_ID = "default"


def list_projects(conn: Connection, domains: Mapping[str, str] | None = None) -> Iterator[Record]:
    """Every project of the cloud as an ``identity.project`` record."""
    domains = domains or domain_names(conn)
    for project in conn.identity.projects():
        yield {
            "id": project.id,
            "name": project.name,
            "domain_id": project.domain_id,
            "domain_name": domains.get(project.domain_id, project.domain_id),
        }


def label(record: Mapping[str, Any]) -> str:
    """How people name a user or project: ``domain/name``."""
    return f"{record.get('domain_name')}/{record.get('name')}"


# -- mapping -------------------------------------------------------------------


@dataclass
class IdentityMapping:
    """Source -> destination IDs for users and projects, and what could not be mapped."""

    users: dict[str, str] = field(default_factory=dict)
    projects: dict[str, str] = field(default_factory=dict)
    #: (kind, source ID, "domain/name") of everything that matched nothing.
    unmapped: list[tuple[str, str, str]] = field(default_factory=list)
    #: Source ID -> "domain/name", to name objects in messages.
    labels: dict[str, str] = field(default_factory=dict)

    def maps(self) -> dict[str, dict[str, str]]:
        """The resolver's maps, by referenced kind."""
        return {USER: self.users, PROJECT: self.projects}

    def unmapped_labels(self, kind: str) -> list[str]:
        return sorted(name for k, _, name in self.unmapped if k == kind)


def map_identities(
    users: Iterable[Record],
    projects: Iterable[Record],
    destination: Connection,
    *,
    user_map: OperatorMap | None = None,
    project_map: OperatorMap | None = None,
) -> IdentityMapping:
    """Match the archive's users and projects with the destination's.

    Users: a pinned ID pair first, else (domain name after renames, name) on the
    destination (:func:`destination_domain`). Projects: a pinned pair, else the
    same ID if the destination has it, else (domain name after renames, name).
    """
    user_map = user_map or OperatorMap()
    project_map = project_map or OperatorMap()
    users, projects = list(users), list(projects)
    result = IdentityMapping()
    domains = domain_names(destination)
    # Only the domains a source user is looked up in are listed, side by side (a
    # directory-backed domain of thousands of people takes a second to list, and one
    # whose directory is down must not fail a run that maps nobody there).
    wanted = {destination_domain(u, user_map) for u in users if u["id"] not in user_map.ids}
    listed = {i: n for i, n in domains.items() if n in wanted}
    with ThreadPoolExecutor(max_workers=1 + len(listed), thread_name_prefix="keystone") as pool:
        users_read = [
            pool.submit(lambda one: list(list_users(destination, one)), {i: n})
            for i, n in listed.items()
        ]
        projects_read = pool.submit(lambda: list(list_projects(destination, domains)))
        dst_users = {
            (r["domain_name"], r["name"]): r["id"] for read in users_read for r in read.result()
        }
        dst_projects = projects_read.result()
    dst_project_ids = {r["id"] for r in dst_projects}
    dst_project_names = {(r["domain_name"], r["name"]): r["id"] for r in dst_projects}

    for user in users:
        result.labels[user["id"]] = label(user)
        # Archives written before the flag was recorded hold no ``enabled``: enabled.
        if user_map.disabled_users == "skip" and user.get("enabled", True) is False:
            result.unmapped.append((USER, user["id"], f"{label(user)} (disabled on the source)"))
            continue
        found = user_map.ids.get(user["id"])
        if found is None:
            domain = destination_domain(user, user_map)
            found = dst_users.get((domain, user["name"]))
        if found is None:
            result.unmapped.append((USER, user["id"], label(user)))
        else:
            result.users[user["id"]] = found
    for project in projects:
        result.labels[project["id"]] = label(project)
        found = project_map.ids.get(project["id"])
        if found is None and project["id"] in dst_project_ids:
            found = project["id"]
        if found is None:
            domain = project_map.domains.get(project["domain_name"], project["domain_name"])
            found = dst_project_names.get((domain, project["name"]))
        if found is None:
            result.unmapped.append((PROJECT, project["id"], label(project)))
        else:
            result.projects[project["id"]] = found
    return result


def destination_domain(user: Mapping[str, Any], user_map: OperatorMap) -> str:
    """The destination domain name a source user is looked up in.

    The domain map renames the user's domain, except for the SQL users of the
    source's default domain (service users, ``admin``) unless the map says
    ``sql_users: true``: on a hybrid source they share Default with the
    directory's people but stay SQL users of Default on the destination.
    """
    name = str(user["domain_name"])
    if (
        not user_map.sql_users
        and user.get("domain_id") == DEFAULT_DOMAIN_ID
        and is_sql_id(str(user["id"]))
    ):
        return name
    return user_map.domains.get(name, name)
