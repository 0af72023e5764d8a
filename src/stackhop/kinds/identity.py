"""Users and projects: how source IDs become destination IDs.

Users and projects are not moved by stackhop; they are *mapped*. The archive
carries one ``identity.user`` and one ``identity.project`` record per object
(ID, name, domain ID and domain name), and on the destination:

- a user is matched by (domain name, user name), so an LDAP user whose ID
  changed when the identity backend did gets their resources under the new
  ID. ``--user-map`` renames domains (``domains: {old: new}``) or pins ID
  pairs (``users: {source id: destination id}``, or a flat mapping of IDs);
- a project keeps its ID when the destination has a project with that ID;
  otherwise it is matched by (domain name, project name); ``--project-map``
  pins ID pairs.

What matches nothing is reported by name (:class:`IdentityMapping.unmapped`);
the resolver then turns every record that refers to it into a conflict, and
the rest of the run carries on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stackhop.errors import ConfigError
from stackhop.kinds.base import Connection, Record

USER = "identity.user"
PROJECT = "identity.project"


@dataclass(frozen=True)
class OperatorMap:
    """What ``--user-map`` / ``--project-map`` say: domain renames and pinned ID pairs."""

    domains: Mapping[str, str] = field(default_factory=dict)
    ids: Mapping[str, str] = field(default_factory=dict)


def load_operator_map(path: str | os.PathLike[str] | None) -> OperatorMap:
    """Read a map file (YAML, or JSON by suffix).

    Two shapes are accepted: a flat mapping ``source id: destination id``, or
    ``{domains: {source domain name: destination domain name}, users|projects|ids:
    {source id: destination id}}``.
    """
    if path is None:
        return OperatorMap()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read map {file}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"map {file} is not valid YAML or JSON: {exc}") from exc
    if data is None:
        return OperatorMap()
    if not isinstance(data, Mapping):
        raise ConfigError(f"map {file} must be a mapping, not a {type(data).__name__}")
    sections = {"domains", "users", "projects", "ids"}
    if any(isinstance(v, Mapping) for v in data.values()):
        unknown = set(data) - sections
        if unknown:
            raise ConfigError(
                f"map {file}: unknown section(s) {sorted(unknown)}; use {sorted(sections)}"
            )
        ids: dict[str, str] = {}
        for section in ("users", "projects", "ids"):
            ids.update(_flat(file, data.get(section) or {}))
        return OperatorMap(domains=_flat(file, data.get("domains") or {}), ids=ids)
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


def _domain_names(conn: Connection) -> dict[str, str]:
    return {d.id: d.name for d in conn.identity.domains()}


def list_users(conn: Connection) -> Iterator[Record]:
    """Every user of the cloud as an ``identity.user`` record."""
    domains = _domain_names(conn)
    for user in conn.identity.users():
        yield {
            "id": user.id,
            "name": user.name,
            "domain_id": user.domain_id,
            "domain_name": domains.get(user.domain_id, user.domain_id),
        }


def list_projects(conn: Connection) -> Iterator[Record]:
    """Every project of the cloud as an ``identity.project`` record."""
    domains = _domain_names(conn)
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
    destination. Projects: a pinned pair, else the same ID if the destination
    has it, else (domain name after renames, name).
    """
    user_map = user_map or OperatorMap()
    project_map = project_map or OperatorMap()
    result = IdentityMapping()
    dst_users = {(r["domain_name"], r["name"]): r["id"] for r in list_users(destination)}
    dst_projects = list(list_projects(destination))
    dst_project_ids = {r["id"] for r in dst_projects}
    dst_project_names = {(r["domain_name"], r["name"]): r["id"] for r in dst_projects}

    for user in users:
        result.labels[user["id"]] = label(user)
        found = user_map.ids.get(user["id"])
        if found is None:
            domain = user_map.domains.get(user["domain_name"], user["domain_name"])
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
