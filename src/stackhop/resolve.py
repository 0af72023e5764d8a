"""The ID resolver: one generic mapper from source IDs to destination IDs.

Kinds declare which fields refer to which kinds (``Kind.references``); the
resolver rewrites those fields for every kind the same way, from three sources
in this order:

1. the operator's maps, one per referenced kind (``--user-map``,
   ``--project-map``: a YAML or JSON file of ``source id: destination id``,
   read by :func:`load_id_map`);
2. the journal's ID map, which the engine fills as it creates or adopts
   objects (so a security group rule finds the group created before it);
3. the identity default: kinds in ``keep_ids`` (projects, by default) map to
   themselves when no map names them, as the design assumes project IDs are
   equal on both sides unless mapped.

Anything else is an :class:`~stackhop.errors.UnmappedReferenceError` naming the
record, the field and the map to fix. An unmapped user is never guessed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stackhop.errors import ConfigError, UnmappedReferenceError
from stackhop.journal import Journal
from stackhop.kinds.base import CREATED_AS, Kind, Record
from stackhop.kinds.volume_type import VOLUME_TYPE_NAME
from stackhop.mapfile import read_mapping

USER = "identity.user"
PROJECT = "identity.project"
NETWORK = "neutron.network"
PHYSNET = "neutron.physnet"

#: How the operator fixes a missing mapping, per referenced kind.
_HINTS = {
    USER: "add the user to the --user-map file",
    PROJECT: "add the project to the --project-map file",
    NETWORK: "export the network too, or map it in the --network-map file "
    "('networks: {src id: dst id}')",
}

#: Referenced kinds that map to themselves when no map names them, whatever ``keep_ids``
#: says: a provider physical network keeps its name unless ``--network-map`` renames it, a
#: volume type unless ``--type-map`` does.
_SAME_UNLESS_MAPPED = frozenset({PHYSNET, VOLUME_TYPE_NAME})


def load_id_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read an operator's ID map: a YAML or JSON mapping of source ID -> destination ID.

    Raises ConfigError (naming the file) when it is missing, malformed, or not
    a flat mapping of strings.
    """
    file = Path(path)
    data = read_mapping(file, "ID map", "map source IDs to destination IDs")
    result: dict[str, str] = {}
    for source, destination in data.items():
        if not isinstance(source, str | int) or not isinstance(destination, str | int):
            raise ConfigError(
                f"ID map {file}: entry {source!r}: {destination!r} must map an ID to an ID"
            )
        result[str(source)] = str(destination)
    return result


def load_network_map(path: str | os.PathLike[str] | None) -> dict[str, dict[str, str]]:
    """Read ``--network-map``: YAML/JSON with ``physnets: {src: dst}`` (provider physical
    network names) and ``networks: {src id: dst id}`` (e.g. external networks that are not
    exported), as the resolver's maps by referenced kind. None reads nothing.
    """
    if path is None:
        return {}
    file = Path(path)
    data = read_mapping(file, "network map")
    if set(data) - {"physnets", "networks"}:
        raise ConfigError(
            f"network map {file} must hold only 'physnets: {{src: dst}}' and "
            "'networks: {src id: dst id}'"
        )
    maps: dict[str, dict[str, str]] = {}
    for key, kind in (("physnets", PHYSNET), ("networks", NETWORK)):
        section = data.get(key) or {}
        if not isinstance(section, Mapping) or not all(
            isinstance(k, str | int) and isinstance(v, str | int) for k, v in section.items()
        ):
            raise ConfigError(f"network map {file}: '{key}' must map names or IDs to one each")
        maps[kind] = {str(k): str(v) for k, v in section.items()}
    return maps


def _planned(
    target: str, source_id: str, planned: Mapping[tuple[str, str], str | None] | None
) -> bool:
    """Whether the plan in progress has the object: found, or created first by this run
    (by its own kind, or by the kind that creates such objects: :data:`CREATED_AS`)."""
    if planned is None:
        return False
    creator = CREATED_AS.get(target)
    return (target, source_id) in planned or (
        creator is not None and (creator, source_id) in planned
    )


class Resolver:
    """Maps the reference fields of records to destination IDs.

    ``scope`` is the journal scope (the destination cloud's name). ``maps`` are
    the operator's maps per referenced kind; ``keep_ids`` lists the kinds whose
    IDs are equal on both sides unless mapped. ``journal`` may be None to
    resolve from the operator maps alone (``stackhop plan`` on a fresh journal).
    """

    def __init__(
        self,
        scope: str,
        *,
        maps: Mapping[str, Mapping[str, str]] | None = None,
        keep_ids: frozenset[str] = frozenset({PROJECT}),
        journal: Journal | None = None,
    ) -> None:
        self.scope = scope
        self.maps = {kind: dict(m) for kind, m in (maps or {}).items()}
        self.keep_ids = keep_ids
        self.journal = journal
        # Mappings this process wrote to the journal (or loaded from it with
        # ``preload``): the engine resolves every operation, and one SQL query
        # per reference would cost more than the API call on a busy machine.
        self._known: dict[tuple[str, str], str] = {}

    def remember(self, kind: str, source_id: str, destination_id: str) -> None:
        """Note a mapping just written to the journal, so lookups need not read it back."""
        self._known[(kind, source_id)] = destination_id

    def forget_remembered(self) -> None:
        """Drop what :meth:`remember` and :meth:`preload` kept: read the journal again."""
        self._known.clear()

    def preload(self, kinds: Iterable[str]) -> None:
        """Read the journal's ID maps of ``kinds`` once (the engine does as a run starts).

        From then on those kinds resolve from memory, kept current by
        :meth:`remember`; a mapping another process writes meanwhile is not
        seen until :meth:`forget_remembered`.
        """
        if self.journal is None:
            return
        for kind in kinds:
            for source_id, destination_id in self.journal.id_map(self.scope, kind).items():
                self._known[(kind, source_id)] = destination_id

    @classmethod
    def from_files(
        cls,
        scope: str,
        *,
        user_map: str | os.PathLike[str] | None = None,
        project_map: str | os.PathLike[str] | None = None,
        keep_user_ids: bool = False,
        journal: Journal | None = None,
    ) -> Resolver:
        """The resolver for the flags ``--user-map``, ``--project-map``, ``--keep-user-ids``."""
        maps = {}
        if user_map is not None:
            maps[USER] = load_id_map(user_map)
        if project_map is not None:
            maps[PROJECT] = load_id_map(project_map)
        keep = {PROJECT} | ({USER} if keep_user_ids else set())
        return cls(scope, maps=maps, keep_ids=frozenset(keep), journal=journal)

    def lookup(
        self, kind: str, source_id: str, planned: Mapping[tuple[str, str], str | None] | None = None
    ) -> str | None:
        """The destination ID of ``source_id`` of ``kind``, or None if nothing maps it.

        ``planned`` overlays what a plan in progress knows: ``(kind, source id)``
        -> the destination ID of an object found there.
        """
        operator_map = self.maps.get(kind)
        if operator_map is not None and source_id in operator_map:
            return operator_map[source_id]
        known = self._known.get((kind, source_id))
        if known is not None:
            return known
        if self.journal is not None:
            found = self.journal.mapped_id(self.scope, kind, source_id)
            if found is not None:
                return found
        if planned is not None and planned.get((kind, source_id)) is not None:
            return planned[(kind, source_id)]
        creator = CREATED_AS.get(kind)
        if creator is not None:
            # An object the creating kind made (this run or an earlier one, in this scope).
            made = self.lookup(creator, source_id, planned)
            if made is not None:
                return made
        if kind in self.keep_ids or kind in _SAME_UNLESS_MAPPED:
            return source_id
        return None

    def resolve(
        self,
        kind: Kind,
        record: Mapping[str, Any],
        *,
        planned: Mapping[tuple[str, str], str | None] | None = None,
    ) -> Record:
        """A copy of ``record`` with every reference field mapped to destination IDs.

        ``planned`` is the planner's overlay: ``(kind, source id)`` -> the
        destination ID of an object found there, or None for one that the run
        will create first. A reference to such a to-be-created object keeps its
        source ID (the engine resolves the record again when it applies it).
        Any other unmapped reference raises UnmappedReferenceError.
        """
        resolved = dict(record)
        # Fields a kind declares as optional (``ordering_references``: a router's external
        # subnets, which must exist before its gateway is set; a floating IP's port, which
        # may be a server's) drop what nothing maps instead of failing (a single ID
        # becomes None).
        soft = frozenset(getattr(kind, "ordering_references", ()))
        for field, target in kind.references.items():
            value = record.get(field)
            if value is None:
                continue
            if field in soft and isinstance(value, list | tuple):
                resolved[field] = [
                    self._one(kind, record, field, target, str(v), planned)
                    for v in value
                    if self.lookup(target, str(v), planned) is not None
                    or _planned(target, str(v), planned)
                ]
                continue
            if field in soft and self._unknown(target, str(value), planned):
                resolved[field] = None
                continue
            if isinstance(value, list | tuple):
                resolved[field] = [
                    self._one(kind, record, field, target, str(v), planned) for v in value
                ]
            else:
                resolved[field] = self._one(kind, record, field, target, str(value), planned)
        return resolved

    def _unknown(
        self, target: str, source_id: str, planned: Mapping[tuple[str, str], str | None] | None
    ) -> bool:
        return self.lookup(target, source_id, planned) is None and not _planned(
            target, source_id, planned
        )

    def _one(
        self,
        kind: Kind,
        record: Mapping[str, Any],
        field: str,
        target: str,
        source_id: str,
        planned: Mapping[tuple[str, str], str | None] | None,
    ) -> str:
        found = self.lookup(target, source_id, planned)
        if found is not None:
            return found
        if _planned(target, source_id, planned):
            return source_id
        raise UnmappedReferenceError(
            kind=kind.name,
            identity=kind.identity(record),
            field=field,
            target=target,
            source_id=source_id,
            hint=_HINTS.get(target, f"move the {target} objects first, or map them"),
        )

    def unresolved(self, kind: Kind, record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """The references of ``record`` nothing maps yet, as (field, kind, source id)."""
        missing = []
        for field, target in kind.references.items():
            value = record.get(field)
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                if v is not None and self.lookup(target, str(v)) is None:
                    missing.append((field, target, str(v)))
        return missing
