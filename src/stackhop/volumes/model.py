"""The contract between the volume copy orchestration and the copy methods.

The orchestration (``stackhop volumes copy``) selects volumes, runs the
preflight, keeps the journal and the temporaries, fans work out to
``--workers`` threads and writes the backup sink; a *method* (``rbd``,
``stream``, ``image``) moves one volume's bytes in one *pass* and says what
it left behind. A method is a class implementing :class:`VolumeMethod`,
registered by name in :data:`stackhop.volumes.methods.METHODS`.

One pass of one volume goes through the stages of :data:`STAGES`
(``exported -> imported -> adopted -> verified``); the method reports each as
it reaches it with :meth:`PassContext.stage`, and the orchestration records
it in the journal (operation kind ``volume``, identity = source volume ID).
A pass ends either verified (the destination volume exists in the
destination project, is managed by its Cinder, and its content hashes to the
source's) or with an exception; a re-run of a verified volume without
``--incremental`` copies nothing.

With ``--incremental`` a method keeps, in :attr:`PassResult.state`, what the
next pass needs to send only what changed (e.g. the snapshot a diff starts
from); the orchestration hands it back as :attr:`PassContext.previous`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from stackhop.events import EventBus
from stackhop.journal import Journal
from stackhop.transfer.base import Destination
from stackhop.volumes.storage import StorageMap

STAGES = ("exported", "imported", "adopted", "verified")
"""A volume's stages in one pass, in order."""

GIB = 1024**3

VERIFY_CHUNK = 4 * 1024 * 1024
"""The unit of a volume's content digest (Ceph's default object size)."""

ZERO_CHUNK_SHA256 = hashlib.sha256(bytes(VERIFY_CHUNK)).hexdigest()
"""The digest of a :data:`VERIFY_CHUNK` of zeros: holes hash to this without being read."""


def content_digest(chunk_digests: Iterable[str]) -> str:
    """A volume's content digest: sha256 over its chunks' sha256 hex digests, in order.

    Every method and both sides compute the same value for the same bytes:
    the volume is cut into :data:`VERIFY_CHUNK` pieces (the last one may be
    shorter), each hashed with sha256 (a hole or all-zero chunk is
    :data:`ZERO_CHUNK_SHA256`, or the sha256 of its zeros when shorter), and
    the hex digests are hashed in offset order. Unlike a flat sha256 it can
    be updated from the changed chunks alone, which an incremental pass needs.
    """
    whole = hashlib.sha256()
    for digest in chunk_digests:
        whole.update(digest.encode("ascii"))
    return whole.hexdigest()


@dataclass(frozen=True)
class VolumeRef:
    """A Cinder volume, as the copy methods need to know it."""

    cloud: str
    id: str
    name: str
    size_gib: int
    project_id: str
    status: str
    volume_type: str | None = None
    #: ``os-vol-host-attr:host``: ``host@backend#pool`` (admin only).
    host: str | None = None
    description: str | None = None
    bootable: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: Server IDs the volume is attached to.
    attachments: tuple[str, ...] = ()
    availability_zone: str | None = None
    #: Encrypted with a key of the source cloud's key manager (``encryption_key_id``).
    encrypted: bool = False

    @property
    def size_bytes(self) -> int:
        return self.size_gib * GIB

    @property
    def backend_name(self) -> str | None:
        """The Cinder backend name from :attr:`host`, if known."""
        if not self.host or "@" not in self.host:
            return None
        return self.host.split("@", 1)[1].split("#", 1)[0]

    @property
    def label(self) -> str:
        return f"volume {self.id} ({self.name})" if self.name else f"volume {self.id}"


@dataclass(frozen=True)
class Temporary:
    """Something a method created that must not outlive the run.

    ``kind`` is the method's own word (``rbd-snapshot``, ``image``,
    ``staging-file`` ...), ``cloud`` where it lives, ``name`` what identifies
    it there, ``details`` whatever else removal needs (JSON-serialisable).
    The orchestration journals it before the method creates it and marks it
    removed after :meth:`VolumeMethod.remove_temporary`, so that ``volumes
    cleanup --run`` can remove what a crashed run left.
    """

    method: str
    kind: str
    cloud: str
    name: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        return f"{self.method}:{self.kind}:{self.cloud}:{self.name}"


@dataclass
class PassResult:
    """What one pass of one volume did."""

    destination_id: str
    #: Logical bytes of the volume the pass looked at (its size for a full pass).
    bytes_read: int = 0
    #: Data bytes sent to the destination (before compression): what changed.
    bytes_sent: int = 0
    #: Bytes that crossed the wire (after compression).
    bytes_wire: int = 0
    #: :func:`content_digest` of the volume, equal on both sides once verified.
    content_digest: str = ""
    #: What the next incremental pass needs (JSON-serialisable); {} when nothing.
    state: dict[str, Any] = field(default_factory=dict)
    #: Method-specific facts worth showing (chunks skipped, snapshot names ...).
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassContext:
    """Everything a method gets for one pass of one volume."""

    run_id: str
    source: VolumeRef
    #: Destination project ID (already mapped) and volume type name to use.
    destination_project_id: str
    destination_type: str | None
    source_conn: Any
    destination_conn: Any
    storage: StorageMap
    journal: Journal
    events: EventBus
    incremental: bool
    #: :attr:`PassResult.state` of the previous verified pass, {} if none.
    previous: Mapping[str, Any]
    #: Destination volume ID from a previous pass or an interrupted one, if known.
    destination_id: str | None
    #: Where the same read also goes (``--backup-to``), or None: a transfer Destination
    #: taking the volume's chunks by offset; the method opens, writes, commits or aborts it.
    backup: Destination | None
    #: Callbacks into the orchestration (journal and events).
    on_stage: Callable[[str, Mapping[str, Any]], None]
    on_temporary: Callable[[Temporary], None]
    on_temporary_removed: Callable[[Temporary], None]
    on_progress: Callable[[int, int | None], None]
    #: The destination cloud's name (as in clouds.yaml): for the storage map and temporaries.
    #: Added after the first contract; "" when a caller does not set it.
    destination_cloud: str = ""
    #: The operator's destination connection scoped to the destination project, where
    #: Cinder creates volumes (the preflight made it), or None: the method makes one.
    destination_project_conn: Any = None

    def stage(self, name: str, **facts: Any) -> None:
        """Report that this pass reached stage ``name`` (one of :data:`STAGES`).

        A ``destination_id`` fact is recorded at once as the journal row's destination
        volume: report it as soon as the volume exists, so an interrupted pass finds it.
        """
        if name not in STAGES:
            raise ValueError(f"unknown volume stage {name!r}")
        self.on_stage(name, facts)

    def created(self, temporary: Temporary) -> None:
        """Call *before* creating a temporary, so a crash right after cannot orphan it."""
        self.on_temporary(temporary)

    def removed(self, temporary: Temporary) -> None:
        """Call after a temporary is gone."""
        self.on_temporary_removed(temporary)


class VolumeMethod(Protocol):
    """One way of moving a volume's bytes between clouds."""

    #: ``rbd``, ``stream`` or ``image``.
    name: ClassVar[str]

    def check(
        self,
        source: VolumeRef,
        storage: StorageMap,
        destination_cloud: str,
        destination_type: str | None,
    ) -> None:
        """Raise CapabilityError or ConfigError (one line, with the fix) if this method cannot
        copy ``source`` to a volume of ``destination_type`` on ``destination_cloud``. Reads only;
        used by the preflight before anything moves."""
        ...

    def copy_pass(self, ctx: PassContext) -> PassResult:
        """Run one pass (full, or incremental from ``ctx.previous``) up to ``verified``.

        Idempotent: when ``ctx.destination_id`` names a volume from an
        interrupted pass, reuse or replace it (never leave two). Chunked
        methods resume from the journal's confirmed chunks. Removes its own
        temporaries before returning, except those the next incremental pass
        needs (kept in ``PassResult.state``). Raises on failure; the
        orchestration records the error and removes the temporaries.
        """
        ...

    def remove_temporary(
        self, temporary: Temporary, source_conn: Any, destination_conn: Any, storage: StorageMap
    ) -> None:
        """Remove ``temporary`` if it still exists (a missing one is not an error)."""
        ...

    def forget_incremental(
        self, state: Mapping[str, Any], source_conn: Any, destination_conn: Any, storage: StorageMap
    ) -> None:
        """Drop what an incremental chain keeps (its base snapshots) when the chain ends."""
        ...
