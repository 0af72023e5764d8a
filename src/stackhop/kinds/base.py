"""The base of every resource kind: a kind is a declaration, the machinery lives here.

A kind module (``kinds/keypair.py``, ``kinds/security_group.py``, ...) subclasses
:class:`Kind` and declares, in that one module, everything stackhop needs:

- its ``name``, its portable :meth:`~Kind.identity`, which fields are
  ``portable_fields`` (compared on import) and which are ``source_only_fields``
  (kept in the archive, never compared);
- its ``references`` to other kinds (the resolver maps them, the engine orders work);
- its CLI ``selectors`` (flag -> help; ``stackhop export --keypairs``), and whether
  it belongs to the resource ``transfer`` (``export``/``import``/``migrate``);
- the cloud calls: :meth:`~Kind.export` (read the source), :meth:`~Kind.find`
  and :meth:`~Kind.find_many`, :meth:`~Kind.create`, :meth:`~Kind.update`,
  :meth:`~Kind.delete`, :meth:`~Kind.restore` and :meth:`~Kind.observe`;
- its SQL reader for ``--via db`` (:meth:`~Kind.read_db`);
- whether it is *mapped* onto the destination's own objects and created only on
  request (``mapped`` kinds such as volume types, with an import option);
- its rollback behaviour: created objects are deleted, updated ones restored
  from the journaled ``before``; ``deleted_with`` names the kind whose
  deletion takes this one along (a group's rules go with the group).

Modules of this package are discovered: a module that defines a kind decorates
it with :func:`stackhop.kinds.register`, and nothing else lists it.

Records are plain JSON-able dicts, as they travel through the archive. The
resolver (:mod:`stackhop.resolve`) rewrites the fields named in ``references``
to destination IDs before ``find``, ``compare``, ``create`` and ``update`` see
a record, so kinds never map IDs themselves.
"""

from __future__ import annotations

import builtins
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, TypeVar

from stackhop.errors import ConfigError, ConflictError

Record: TypeAlias = dict[str, Any]
"""One resource as a JSON-able dict (what the archive holds, one per line)."""

Connection: TypeAlias = Any
"""An ``openstack.connection.Connection`` in production. Typed loosely so a kind's
logic can also run against an in-memory cloud in unit tests."""

class SqlSource(Protocol):
    """Read-only SQL access to the source services' databases (``--via db``):
    :class:`stackhop.dbexport.DatabaseReader` in production."""

    def query(self, database: str, sql: str, **params: Any) -> builtins.list[Any]:
        """The rows of ``sql`` run on ``database`` (``nova_api``, ``neutron``, ``cinder``)."""
        ...


@dataclass(frozen=True)
class ExportScope:
    """What an export covers: the source's users and projects, and the records of the kinds
    exported before this one (by kind name), for kinds that read per parent object."""

    users: Sequence[Record]
    projects: Sequence[Record]
    exported: Mapping[str, Sequence[Record]]
    #: True when no ``--project`` narrowed the export (objects of no project are in it too).
    whole_cloud: bool = True


Decision = Literal["update", "conflict", "skip"]
"""What to do with a record whose destination counterpart differs."""

MARKER_PREFIX = "stackhop-source:"
"""Start of the stamp stackhop leaves on objects it creates (in a description or tag),
followed by the source ID, so a later run can recognise its own work."""

_MARKER_RE = re.compile(re.escape(MARKER_PREFIX) + r"([A-Za-z0-9._:-]+)")


@dataclass(frozen=True)
class Difference:
    """One portable field whose value differs between source and destination."""

    field: str
    source: Any
    destination: Any

    def describe(self) -> str:
        return f"{self.field}: {self.source!r} (source) != {self.destination!r} (destination)"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "source": self.source, "destination": self.destination}


#: Reference kinds whose objects another kind may *create* in the same run: a user a
#: keypair refers to (``identity.user``, mapped onto the destination's users) may be one
#: ``keystone.user`` creates, a quota's project one ``keystone.project`` creates. The
#: planner orders and resolves such a reference through the creating kind too, so one run
#: moves both.
CREATED_AS: Mapping[str, str] = {
    "identity.user": "keystone.user",
    "identity.project": "keystone.project",
}


class Kind(ABC):
    """A resource kind: what it is, what it refers to, and how to read and write it.

    Subclasses set the class attributes and implement the abstract methods.
    Instances hold no state; the registry keeps one per kind, and a kind with
    ``import_options`` gives a configured copy from :meth:`configured`.
    """

    #: Unique name, ``<service>.<resource>`` (e.g. ``nova.keypair``).
    name: ClassVar[str]
    #: Field of a record holding its ID on the cloud it was read from.
    id_field: ClassVar[str] = "id"
    #: Field -> name of the referenced kind (e.g. ``{"user_id": "identity.user"}``). A field
    #: may hold one ID, a list of IDs, or None. The resolver maps these to destination IDs
    #: and the engine applies the referenced kinds first.
    references: ClassVar[Mapping[str, str]] = {}
    #: Fields compared between source and destination; a difference is an update or a
    #: conflict. Fields in ``references`` are compared after mapping.
    portable_fields: ClassVar[tuple[str, ...]] = ()
    #: Facts only true on the source (IDs, timestamps, usage): archived, never compared.
    source_only_fields: ClassVar[tuple[str, ...]] = ()
    #: Whether ``update`` can change an existing destination object in place.
    updatable: ClassVar[bool] = True
    #: The API service the kind talks to (``compute``, ``network``, ...): the engine
    #: spreads concurrent work over services, each its own API server.
    service: ClassVar[str] = ""
    #: Its creates run on the coordinator, never on a worker (``--executor celery``):
    #: they need what only that host holds (the user passwords stackhop issues).
    coordinator_only: ClassVar[bool] = False
    #: CLI selector flags (without ``--``) -> help; a flag shared by several kinds
    #: (``quotas``) selects them all and must have the same help in each.
    selectors: ClassVar[Mapping[str, str]] = {}
    #: Whether the kind moves with ``stackhop export|import|migrate`` (images have
    #: their own commands and are not).
    transfer: ClassVar[bool] = False
    #: Whether the kind moves when no selector flag is given (opt-in kinds such as the
    #: Keystone ones set False and move only with their selector).
    default_selected: ClassVar[bool] = True
    #: A kind *mapped* onto objects the destination already has rather than created
    #: (volume types): a record with no destination counterpart stops the run before
    #: anything is created (:meth:`unmatched` says so), unless the configured kind
    #: :attr:`may_create` (one of its ``import_options`` says so).
    mapped: ClassVar[bool] = False
    #: The kind whose deletion removes objects of this kind along with it (rollback):
    #: an object whose journaled destination ID is that of a deleted parent is not
    #: deleted on its own, its undo waits for the parent's.
    deleted_with: ClassVar[str | None] = None
    #: Whether the operator's map of this kind (``--network-map``'s ``networks``) pins a
    #: record itself: a pinned record is the destination object the map names (a skip),
    #: never created. ``pinned_with``: (field, kind) — a record whose parent the map pins
    #: (a pinned network's subnets) is the destination's too: skipped, mapped to nothing.
    pinnable: ClassVar[bool] = False
    pinned_with: ClassVar[tuple[str, str] | None] = None
    #: Import options (flags without ``--``) -> help: ``stackhop plan|import|migrate`` and
    #: ``project migrate`` take one flag per option any kind declares, and
    #: :meth:`configured` reads the ones set (``--keep-segmentation-ids``,
    #: ``--create-volume-types``): the one way a kind declares a flag of the import.
    import_options: ClassVar[Mapping[str, str]] = {}
    #: For a :attr:`mapped` kind: whether this (configured) kind may create what the
    #: destination lacks.
    may_create: bool = False
    #: Whether :meth:`create_many` creates many objects in one request, all or none
    #: (Neutron's bulk ``POST``): the engine then sends the first attempts of a kind's
    #: ready creates together, and each on its own when such a request fails.
    bulk_create: ClassVar[bool] = False
    #: The ID map kind of another name the kind's objects get on the destination, kept by
    #: source ID next to their IDs (``neutron.floating_ip.address``: a floating IP's
    #: address), or None; :meth:`aliases` reads them.
    alias_kind: ClassVar[str | None] = None

    # -- declaration helpers ---------------------------------------------------

    def source_id(self, record: Mapping[str, Any]) -> str:
        """The record's ID on the cloud it came from."""
        return str(record[self.id_field])

    def destination_id(self, existing: Mapping[str, Any]) -> str:
        """The ID of a record found on the destination."""
        return str(existing[self.id_field])

    @abstractmethod
    def identity(self, record: Mapping[str, Any]) -> str:
        """A portable key naming this object across clouds and runs.

        It must stay the same for a source record across runs (the journal is
        keyed by it) and must not depend on destination IDs. Examples:
        keypair ``<user>/<name>``; security group ``<project>/<name>/<source id>``
        (names repeat, so the source ID is part of it).
        """

    def configured(self, options: Mapping[str, bool]) -> Kind:
        """This kind as the import options set ask (by argparse attribute:
        ``keep_segmentation_ids``); default: itself, for kinds that declare none."""
        return self

    def dependencies(self) -> set[str]:
        """Kinds this kind refers to (other than itself), and the kinds that may create
        what it refers to in the same run (:data:`CREATED_AS`)."""
        targets = set(self.references.values())
        targets |= {CREATED_AS[t] for t in targets if t in CREATED_AS}
        return {kind for kind in targets if kind != self.name}

    def unmatched(self, records: Sequence[Mapping[str, Any]], destination: str) -> str:
        """The one-line error for records of a :attr:`mapped` kind that nothing on cloud
        ``destination`` matches (override to name the kind's own map option too)."""
        names = ", ".join(repr(self.identity(r)) for r in records)
        flags = " or ".join(f"--{flag}" for flag in self.import_options)
        return f"{self.name} {names}: no counterpart on cloud {destination!r}; pass {flags}"

    # -- comparison ------------------------------------------------------------

    def normalize(self, field: str, value: Any) -> Any:
        """The comparable form of ``value`` (override to ignore ordering, case, defaults)."""
        if isinstance(value, list | tuple):
            try:
                return sorted(value)
            except TypeError:
                return list(value)
        return value

    def compare(self, record: Mapping[str, Any], existing: Mapping[str, Any]) -> list[Difference]:
        """The portable fields whose values differ; empty means identical.

        ``record`` is the resolved source record (IDs already mapped).
        """
        differences = []
        for field in self.portable_fields:
            ours = self.normalize(field, record.get(field))
            theirs = self.normalize(field, existing.get(field))
            if ours != theirs:
                differences.append(Difference(field, record.get(field), existing.get(field)))
        return differences

    def on_difference(self, differences: list[Difference], overwrite: bool) -> Decision:
        """What to do when the destination object differs: the per-kind policy.

        Default: update when the operator asked to overwrite and the kind can
        be updated, else report a conflict. A kind whose destination values are
        authoritative may return ``"skip"``; one that should always follow the
        source (quotas) may return ``"update"``.
        """
        return "update" if overwrite and self.updatable else "conflict"

    def before(self, existing: Mapping[str, Any]) -> Record:
        """State to journal before an update so it can be rolled back (default: portable fields)."""
        fields = (self.id_field, *self.portable_fields)
        return {f: existing.get(f) for f in fields if f in existing}

    # -- the marker ------------------------------------------------------------

    def marker(self, record: Mapping[str, Any]) -> str:
        """The stamp naming the source object, e.g. ``stackhop-source:3f2a...``."""
        return f"{MARKER_PREFIX}{self.source_id(record)}"

    def stamp(self, text: str | None, record: Mapping[str, Any]) -> str:
        """``text`` with the marker appended (once), for a description field."""
        text = text or ""
        mark = self.marker(record)
        if mark in text:
            return text
        return f"{text} [{mark}]" if text else f"[{mark}]"

    @staticmethod
    def marked_source_id(text: str | None) -> str | None:
        """The source ID in a marker found in ``text``, or None."""
        found = _MARKER_RE.search(text or "")
        return found.group(1) if found else None

    @staticmethod
    def unstamp(text: str | None) -> str:
        """``text`` without the marker, to compare a stamped description with the source's."""
        cleaned = re.sub(r"\s*\[" + _MARKER_RE.pattern + r"\]", "", text or "")
        return cleaned.strip()

    # -- the cloud calls -------------------------------------------------------

    @abstractmethod
    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """Every object of this kind visible to ``conn`` (the source), as records."""

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        """The records of this kind within ``scope``, read through the source's API.

        Default: :meth:`list` with the scope's projects; kinds that read per user
        or per parent object override it.
        """
        return self.list(conn, projects=scope.projects)

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        """The same records as :meth:`export`, read from the services' databases."""
        raise ConfigError(
            f"{self.name} cannot be read from the databases; export it with --via api"
        )

    def observe(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        """The destination counterpart as it is, even when :meth:`find` does not accept it.

        ``verify`` compares it with the record to say *what* differs. Default:
        None, for kinds whose ``find`` already returns any counterpart (a record
        it did not find is missing).
        """
        return None

    @abstractmethod
    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        """The destination counterpart of a resolved source record, or None.

        Look by the marker stackhop leaves first, then by identity. This is
        also how an operation whose outcome is unknown (a create interrupted
        mid-call) is checked before it is retried, so it must find an object
        created by an earlier ``create`` of the same record.
        """

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """:meth:`find` for many resolved records, in their order (planning a large import).

        The default looks them up ``workers`` at a time; kinds whose API can
        list many objects in one request override it.
        """
        return concurrently(workers, lambda record: self.find(conn, record), records)

    @abstractmethod
    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        """Create the resolved record on the destination; return its destination ID."""

    def create_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]]
    ) -> builtins.list[str]:
        """Create the resolved ``records`` in one request; their destination IDs, in order
        (kinds with :attr:`bulk_create`: all are created or none)."""
        raise NotImplementedError(f"{self.name} creates one object per request")

    def aliases(self, conn: Connection, destination_ids: Mapping[str, str]) -> dict[str, str]:
        """The ``alias_kind`` value of the destination objects ``destination_ids`` (source ID
        -> destination ID) by source ID, for the ID map; default: none."""
        return {}

    def create_detail(self, record: Mapping[str, Any]) -> str:
        """What ``stackhop plan`` adds to "create" for ``record`` (a choice the import options
        made, say); default: nothing."""
        return ""

    def update(
        self, conn: Connection, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> None:
        """Make ``existing`` (found by ``find``) match the resolved ``record``.

        Kinds that cannot change an object in place set ``updatable = False``
        and keep this default, which refuses.
        """
        raise ConflictError(
            f"{self.name} {self.identity(record)!r} differs on the destination and "
            f"{self.name} objects cannot be updated in place; delete it there or leave it"
        )

    @abstractmethod
    def delete(self, conn: Connection, destination_id: str) -> None:
        """Remove a destination object stackhop created (rollback); absent is not an error."""

    def restore(self, conn: Connection, before: Mapping[str, Any]) -> None:
        """Put back the state an update replaced (rollback), from the journaled ``before``.

        Kinds whose updates can be undone override it; the default refuses.
        """
        raise ConflictError(
            f"{self.name} cannot restore a previous state; change it back by hand"
        )

    def parent_id(self, destination_id: str) -> str:
        """The destination ID of the ``deleted_with`` parent of the object ``destination_id``
        (default: the same ID, as a group's rules record carries its group's ID)."""
        return destination_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


T = TypeVar("T")
R = TypeVar("R")


def concurrently(workers: int, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(item) for item in items]``, ``workers`` calls at a time (the APIs are the wait)."""
    items = list(items)
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))
