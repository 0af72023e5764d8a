"""Putting a volume backup (``--backup-to``) back into a new Cinder volume.

``stackhop volumes restore-backup --to CLOUD --project P FILE``: the backup's
pieces are checked against its manifest while they stream into a raw image
in project P (holes are sent as zeros: a raw image has no holes), a volume is
created from it with the backed-up volume's name (or ``--name``),
description, type (when the cloud has it), metadata and bootable flag, the
image is deleted, and the new volume's content digest must equal the
backup's: read back through the storage map when it knows the backend, else
by uploading the new volume to an image and hashing its download.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from stackhop.errors import IntegrityError, UsageError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import Journal
from stackhop.transfer.base import copy
from stackhop.transfer.glance import GlanceDestination, GlanceSource
from stackhop.volumes.backup import Tee
from stackhop.volumes.backup_reader import BackupReader
from stackhop.volumes.image import (
    HashingSink,
    create_image,
    delete_images_named,
    delete_volume,
    upload_volume,
    volume_from_image,
)
from stackhop.volumes.inventory import project_connection, project_record, quota_room, wait_volume
from stackhop.volumes.model import GIB, Temporary, VolumeRef
from stackhop.volumes.preflight import check_quota
from stackhop.volumes.readback import backend_knows, describe, volume_digest
from stackhop.volumes.storage import StorageMap
from stackhop.volumes.temporaries import TemporaryLedger

KIND = "volume.restore"
#: Metadata key on a volume being restored (the run's ID), removed once it is verified.
MARKER = "stackhop_restore_run"
#: The journal's command name of a restore run (`volumes cleanup --run` knows it).
COMMAND = "volumes restore-backup"


def scope_of(cloud: str) -> str:
    """The journal scope of restores into ``cloud``."""
    return f"restore->{cloud}"


def delete_marked_volumes(conn: Any, run_id: str) -> list[str]:
    """Delete the volumes a restore run ``run_id`` created and did not verify (by marker)."""
    gone = []
    for found in conn.block_storage.volumes(details=True, all_projects=True):
        if (found.metadata or {}).get(MARKER) == run_id:
            delete_volume(conn, found.id)
            gone.append(str(found.id))
    return gone


@dataclass
class RestoreResult:
    """The volume a backup was restored into."""

    run_id: str
    volume_id: str
    name: str
    project_id: str
    content_digest: str
    verified_by: str


def _volume_of(reader: BackupReader, cloud: str, project_id: str, name: str | None) -> VolumeRef:
    facts = dict(reader.volume)
    known = {f.name for f in dataclasses.fields(VolumeRef)}
    facts = {k: v for k, v in facts.items() if k in known}
    facts.update(
        cloud=cloud,
        project_id=project_id,
        size_gib=-(-reader.total // GIB),
        attachments=(),
        metadata=dict(facts.get("metadata") or {}),
    )
    facts.setdefault("id", reader.volume_id)
    facts.setdefault("status", "available")
    if name is not None:
        facts["name"] = name
    facts.setdefault("name", "")
    return VolumeRef(**facts)


def _hash_by_upload(conn: Any, volume_id: str, name: str) -> str:
    image = upload_volume(conn, volume_id, name, force=False, settle=("available",))
    try:
        sink = HashingSink()
        copy(GlanceSource(conn.image, image), sink, key=f"restore:{volume_id}:verify")
        return sink.content_digest
    finally:
        delete_images_named(conn.image, name)


def restore_backup(
    path: str,
    cloud: str,
    project: str,
    conn: Any,
    journal: Journal,
    storage: StorageMap,
    *,
    name: str | None = None,
    method: str = "image",
    events: EventSink | None = None,
) -> RestoreResult:
    """Create a volume in ``project`` on ``cloud`` from the backup file ``path``, verified."""
    if method != "image":
        raise UsageError(f"restore-backup knows the image method only, not {method!r}")
    sink = events or NullSink()
    reader = BackupReader(path)
    project_id = str(project_record(conn, project)["id"])
    scoped = project_connection(conn, cloud, project_id)
    types = {t.name for t in conn.block_storage.types()}
    volume = _volume_of(reader, cloud, project_id, name)
    volume_type = volume.volume_type if volume.volume_type in types else None
    check_quota(project, quota_room(conn, project_id), [volume], {volume.id: volume_type})
    run = journal.start_run(
        COMMAND,
        destination_cloud=cloud,
        args={"file": path, "project": project, "name": name},
    )
    ledger = TemporaryLedger(journal, scope_of(cloud))
    temporary = Temporary(
        "image",
        "image",
        cloud,
        f"stackhop-restore-{volume.id}-{run.id[:8]}",
        {"side": "destination"},
    )
    restored = Temporary(
        "image", "volume", cloud, f"stackhop-restored-{volume.id}-{run.id[:8]}",
        {"side": "destination", "marker": run.id},
    )  # fmt: skip
    outcome = "failed"
    try:
        ledger.created(run.id, volume.id, temporary)
        image = create_image(scoped.image, temporary.name, project_id)
        hashing = HashingSink()

        def progress(done: int, total: int | None) -> None:
            sink.emit(
                Event(
                    EventType.PROGRESS,
                    kind=KIND,
                    identity=volume.name or volume.id,
                    done=done,
                    total=total,
                    unit="bytes",
                )
            )

        copy(
            reader,
            Tee(GlanceDestination(scoped.image, image["id"]), hashing),
            key=f"restore:{volume.id}",
            progress=progress,
        )
        if hashing.content_digest != reader.content_digest:
            raise IntegrityError(
                f"backup {path}: read back as {hashing.content_digest[:16]}..., "
                f"its manifest says {reader.content_digest[:16]}..."
            )
        # Journaled before it exists, found by its marker after a crash (`volumes cleanup`).
        ledger.created(run.id, volume.id, restored)
        marked = dataclasses.replace(volume, metadata={**volume.metadata, MARKER: run.id})
        created = volume_from_image(scoped, marked, image["id"], volume_type)
        wait_volume(scoped, created.id, ("available",))
        scoped.block_storage.set_volume_bootable_status(created.id, volume.bootable)
        delete_images_named(conn.image, temporary.name)
        ledger.removed(run.id, temporary)
        host = conn.block_storage.get_volume(created.id).host
        backend = backend_knows(storage, cloud, host)
        if backend is not None:
            found = volume_digest(backend, created.id, reader.total)
            verified_by = describe(backend)
        else:
            check = dataclasses.replace(temporary, name=temporary.name + "-verify")
            ledger.created(run.id, volume.id, check)
            found = _hash_by_upload(scoped, created.id, check.name)
            ledger.removed(run.id, check)
            verified_by = "download of an upload of the new volume"
        if found != reader.content_digest:
            raise IntegrityError(
                f"restored volume {created.id} hashes to {found[:16]}..., the backup to "
                f"{reader.content_digest[:16]}...; delete it and restore again"
            )
        scoped.block_storage.delete_volume_metadata(created.id, keys=[MARKER])
        ledger.removed(run.id, restored)  # no longer a leftover: it is the result
        outcome = "succeeded"
        return RestoreResult(
            run.id, str(created.id), volume.name, project_id, reader.content_digest, verified_by
        )
    finally:
        if outcome != "succeeded":
            delete_images_named(conn.image, temporary.name)
            ledger.removed(run.id, temporary)
            delete_marked_volumes(conn, run.id)
            ledger.removed(run.id, restored)
        journal.finish_run(run.id, outcome)
