"""Images in a portable archive: metadata records, and optionally their data, checksummed.

For clouds that cannot reach each other. The archive (:mod:`stackhop.archive`)
holds JSON-lines records per kind, so image data travels as records of kind
``glance.image_data``: one per chunk of 1 MiB, with the image ID, offset,
length, sha256 and the bytes in base64. The archive's zstd compresses the
base64 back to about the data's own entropy, and the archive manifest
checksums every member on top of the per-chunk hashes.

Export streams each image through the transfer layer into the archive
(hashed against Glance's ``os_hash_value`` before the archive is published:
a mismatch aborts the export and leaves no archive). Import reads the chunk
records of each image back as a transfer Source (each chunk's sha256
checked) and uploads through the same path as ``images copy``, so owners,
members, ``--keep-id``, markers, skips and integrity handling are the same.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackhop.archive import ArchiveReader
from stackhop.engine import Engine, RunResult
from stackhop.errors import ConfigError, IntegrityError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.images.common import PropertyFilter, is_glob, name_matches
from stackhop.journal import Journal
from stackhop.kinds import get
from stackhop.kinds.base import Connection, Record
from stackhop.kinds.identity import PROJECT, OperatorMap, list_projects, map_identities
from stackhop.kinds.image import Image, image_record, list_members
from stackhop.plan import Operation, plan
from stackhop.resolve import Resolver
from stackhop.transfer import Chunk, Digest, copy
from stackhop.transfer.glance import GlanceSource, image_digest

DATA_KIND = "glance.image_data"
"""The archive kind holding image bytes, one record per chunk."""

ARCHIVE_CHUNK = 1024 * 1024
"""Bytes per data record: small records keep the archive's memory flat."""


class ArchiveChunkDestination:
    """Writes a stream as ``glance.image_data`` records of one image."""

    durable_chunks = False  # an archive is published whole, or not at all

    def __init__(self, sink: Any, image_id: str) -> None:
        self.sink = sink
        self.image_id = image_id

    def open(self, size: int | None) -> None:
        return None

    def write(self, chunk: Chunk) -> None:
        self.sink.write(DATA_KIND, {
            "image_id": self.image_id,
            "offset": chunk.offset,
            "length": len(chunk.data),
            "sha256": hashlib.sha256(chunk.data).hexdigest(),
            "data": base64.b64encode(chunk.data).decode("ascii"),
        })

    def commit(self) -> None:
        return None

    def abort(self, reason: BaseException) -> None:
        return None  # the caller aborts the whole archive: nothing is published

    def verify(self, digest: Digest) -> None:
        return None  # the stream was hashed against the digest before commit


class ArchiveChunkSource:
    """The data of one image read back from an archive's ``glance.image_data`` records."""

    def __init__(self, reader: ArchiveReader, record: Mapping[str, Any]) -> None:
        self.reader = reader
        self.image_id = str(record["id"])
        self.label = f"image {self.image_id} ({record.get('name') or 'no name'}) in the archive"
        self.size: int | None = record.get("size")
        self.declared = image_digest(dict(record))

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        # Records are read in the order written; each image's chunks are contiguous.
        for item in self.reader.records(DATA_KIND):
            if item.get("image_id") != self.image_id:
                continue
            data = base64.b64decode(item["data"])
            if len(data) != item["length"] or hashlib.sha256(data).hexdigest() != item["sha256"]:
                raise IntegrityError(
                    f"{self.label}: chunk at offset {item['offset']} does not match its sha256; "
                    "the archive is damaged, export again"
                )
            yield Chunk(int(item["offset"]), data)

    def close(self) -> None:
        return None


def has_data(reader: ArchiveReader) -> set[str]:
    """The IDs of the images whose data the archive holds."""
    if DATA_KIND not in reader.kinds():
        return set()
    return {str(item["image_id"]) for item in reader.records(DATA_KIND) if item["offset"] == 0}


def export_images(
    conn: Connection,
    sink: Any,
    images: Sequence[dict[str, Any]],
    *,
    with_data: bool = False,
    events: EventSink | None = None,
    write_projects: bool = True,
) -> dict[str, int]:
    """Write the images' records (and with ``with_data`` their bytes) to ``sink``.

    Also writes the source's ``identity.project`` records, which import needs
    to map owners and members (``write_projects=False`` when the caller, such
    as ``stackhop export``, writes them already). Non-active images are left
    out with a warning. Returns the number of records per kind.
    """
    events = events or NullSink()
    counts = {Image.name: 0, DATA_KIND: 0}
    if write_projects:
        projects = list(list_projects(conn))
        sink.add_kind(PROJECT)
        for project in projects:
            sink.write(PROJECT, project)
        counts[PROJECT] = len(projects)
    sink.add_kind(Image.name)
    if with_data:
        sink.add_kind(DATA_KIND)
    for image in images:
        record = image_record(image, list_members(conn.image, image))
        label = f"{record.get('name') or ''}/{record['id']}"
        if image.get("status") != "active":
            events.emit(Event(EventType.WARNING, kind=Image.name, identity=label,
                              message=f"not exported: the image is {image.get('status')}"))
            continue
        sink.write(Image.name, record)
        counts[Image.name] += 1
        if not with_data:
            continue

        def progress(done: int, total: int | None, label: str = label) -> None:
            events.emit(Event(EventType.PROGRESS, kind=Image.name, identity=label,
                              operation="export", done=done, total=total, unit="bytes"))

        result = copy(GlanceSource(conn.image, image), ArchiveChunkDestination(sink, image["id"]),
                      key=f"{DATA_KIND}:{image['id']}", chunk_size=ARCHIVE_CHUNK,
                      progress=progress)
        counts[DATA_KIND] += result.chunks
    return counts


@dataclass
class ArchiveImageImporter:
    """Uploads the images of an archive to ``destination`` through the engine."""

    reader: ArchiveReader
    destination: Connection
    journal: Journal
    destination_cloud: str
    keep_id: bool = False
    workers: int = 2
    events: EventSink = field(default_factory=NullSink)
    project_map: OperatorMap | None = None
    #: Which of the archive's images to import: IDs, names or name globs (empty: all).
    images: tuple[str, ...] = ()
    properties: PropertyFilter = field(default_factory=PropertyFilter)

    def __post_init__(self) -> None:
        registered = get(Image.name)
        assert isinstance(registered, Image)
        reader = self.reader
        self.kind = registered.bound(
            keep_id=self.keep_id, journal=self.journal, events=self.events,
            data=lambda record: ArchiveChunkSource(reader, record),
        )
        projects = list(reader.records(PROJECT)) if PROJECT in reader.kinds() else []
        identities = map_identities([], projects, self.destination, project_map=self.project_map)
        self.resolver = Resolver(self.destination_cloud, maps=identities.maps(),
                                 keep_ids=frozenset(), journal=self.journal)

    def selected(self) -> list[Record]:
        """The archive's image records that ``images`` names (all when it names none).

        A name or pattern that matches no image of the archive is a ConfigError,
        as is a plain name that two images share.
        """
        records = list(self.reader.records(Image.name))
        if not self.images:
            return records
        chosen: dict[str, Record] = {}
        for wanted in self.images:
            matched = [r for r in records if name_matches(r, wanted)]
            if not matched:
                raise ConfigError(f"the archive has no image with ID or name {wanted!r}")
            if len(matched) > 1 and not is_glob(wanted):
                ids = ", ".join(str(r["id"]) for r in matched)
                raise ConfigError(f"image name {wanted!r} is ambiguous in the archive ({ids}); "
                                  "give an ID")
            for record in matched:
                chosen.setdefault(str(record["id"]), record)
        return [r for r in records if str(r["id"]) in chosen]

    def plan(self) -> list[Operation]:
        """The operations an import applies; images without data in the archive are left out."""
        with_data = has_data(self.reader)
        records: list[Record] = []
        for record in self.selected():
            if record["id"] in with_data:
                records.append(self.properties.apply(dict(record)))
            else:
                self.events.emit(Event(
                    EventType.WARNING, kind=Image.name, identity=self.kind.identity(record),
                    message="not imported: the archive holds its metadata only (export it "
                    "with --with-image-data, or use `stackhop images copy`)",
                ))
        return plan({self.kind: records},
                    lambda kind, record: kind.find(self.destination, record), self.resolver)

    def run(self, operations: Sequence[Operation], args: dict[str, Any]) -> RunResult:
        engine = Engine(self.journal, self.destination, self.resolver, workers=self.workers,
                        events=self.events)
        return engine.run(operations, command="images import",
                          source_cloud=self.reader.manifest.source_cloud,
                          destination_cloud=self.destination_cloud, args=args)
