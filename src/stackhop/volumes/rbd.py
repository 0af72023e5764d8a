"""The ``rbd`` volume copy method: Ceph to Ceph by export-diff, adopted with "manage existing".

One pass of one volume (both clouds' backends are ``driver: rbd`` in the storage map):

1. **Snapshot** the source image ``volume-<id>`` as ``stackhop-<run[:8]>-<n>``
   (``n`` counts the passes of an incremental chain). Each snapshot and image
   is announced with :meth:`PassContext.created` before it exists.
2. **Stream** ``rbd export-diff --snap S`` (``--from-snap P`` on an incremental
   pass) through stackhop into ``rbd import-diff -`` on the destination: the
   temporary image ``stackhop-import-<source id>`` on a full pass, the
   adopted volume's own image ``volume-<destination id>`` on an incremental
   one. No temporary file: the records are parsed, hashed per
   :data:`VERIFY_CHUNK`, teed to ``ctx.backup`` and re-serialised
   (:mod:`stackhop.transfer.rbd`). ``import-diff`` creates snapshot S on the
   destination image too. Each side's ``rbd`` runs where its cluster is
   reachable: locally, or on the backend's ``ssh_host``; stackhop sits
   between them.
3. **Adopt** (full pass): ``manage existing`` on the destination pool
   ``<host>@<backend>#<pool>`` (found in Cinder's pool list) renames the
   image ``volume-<new id>``. Manage takes no project, so the admin manages
   into its own project and hands the volume over with a volume transfer,
   accepted by a connection scoped to the destination project; when the admin
   has no role there, ``member`` is granted for the accept and revoked right
   after (journaled as a ``role-assignment`` temporary). The volume carries
   ``stackhop_source=<source id>`` in its metadata, so a re-run finds a
   volume whose adoption was interrupted.
4. **Verify**: a full pass hashes the source from the stream itself (one read)
   and the destination by reading its snapshot's allocated extents; an
   incremental pass re-reads only the objects changed since P on both sides
   (``export-diff --whole-object``, so each touched chunk comes whole) and
   updates the per-chunk digests kept in the journal's chunk table (key
   ``volume-rbd:<source id>``, rows only for non-zero chunks).

Without ``--incremental`` both snapshots are removed at the end. With it,
both are kept and named in :attr:`PassResult.state`; the orchestration must
call :meth:`RbdMethod.forget_incremental` when the chain ends (after the
cutover pass, on ``volumes cleanup``, or before giving up on the volume):
Cinder does not know these snapshots, and an RBD image with snapshots cannot
be deleted through Cinder on either cloud.

Resume: a full pass replaces whatever an interrupted pass left (the
``stackhop-import-*`` image, a destination volume named by
``ctx.destination_id`` or by the marker), so there is never a second copy.
An incremental pass whose base snapshot is gone on either side falls back to
such a full pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

from openstack import exceptions as sdk_exc

from stackhop.errors import CapabilityError, ConfigError, ConflictError, IntegrityError
from stackhop.transfer.base import Chunk
from stackhop.transfer.rbd import (
    ChunkHasher,
    DiffHeader,
    RbdCluster,
    Record,
    WriteExtent,
    pipe_diff,
)
from stackhop.transfer.ssh import SshHost
from stackhop.volumes.model import (
    VERIFY_CHUNK,
    PassContext,
    PassResult,
    Temporary,
    VolumeRef,
    content_digest,
)
from stackhop.volumes.storage import Backend, StorageMap

METHOD = "rbd"


def cluster_of(backend: Backend) -> RbdCluster:
    """How to run ``rbd`` against ``backend`` (an ``rbd`` entry of the storage map)."""
    return RbdCluster(
        cloud=backend.cloud,
        pool=backend.pool or "",
        ceph_conf=backend.ceph_conf,
        keyring=backend.keyring,
        user=backend.user,
        ssh=SshHost.named(backend.ssh_host) if backend.ssh_host else None,
    )


def chunk_key(source_id: str) -> str:
    """The journal chunk-table key of a source volume's verified per-chunk digests."""
    return f"volume-rbd:{source_id}"


def import_image(source_id: str) -> str:
    """The temporary destination image a full pass imports into before adoption."""
    return f"stackhop-import-{source_id}"


def _snapshot_temporary(backend: Backend, image: str, snap: str) -> Temporary:
    return Temporary(
        method=METHOD,
        kind="rbd-snapshot",
        cloud=backend.cloud,
        name=f"{backend.pool}/{image}@{snap}",
        details={"backend": backend.name, "image": image, "snap": snap},
    )


def _image_temporary(backend: Backend, image: str) -> Temporary:
    return Temporary(
        method=METHOD,
        kind="rbd-image",
        cloud=backend.cloud,
        name=f"{backend.pool}/{image}",
        details={"backend": backend.name, "image": image},
    )


def _cloud_name(conn: Any) -> str:
    name = getattr(getattr(conn, "config", None), "name", None)
    if not name:
        raise ConfigError("the destination connection has no cloud name; open it with --to CLOUD")
    return str(name)


def _rbd_backend(storage: StorageMap, ref: VolumeRef) -> Backend:
    backend = storage.backend_of(ref.cloud, ref.host)
    if backend.driver != "rbd":
        raise CapabilityError(
            f"{ref.label} is on backend {backend.name!r} (driver {backend.driver}) of cloud "
            f"{ref.cloud!r}, not RBD; use --method stream or --method image"
        )
    return backend


def _destination_backend(storage: StorageMap, cloud: str, backend_name: str | None) -> Backend:
    """The destination's RBD backend: the one the volume type names, else the only one."""
    if backend_name:
        backend = storage.backend(cloud, backend_name)
        if backend.driver != "rbd":
            raise CapabilityError(
                f"volume type's backend {backend_name!r} of cloud {cloud!r} is not RBD; pick a "
                "Ceph volume type with --type, or use --method stream"
            )
        return backend
    candidates = [b for (c, _), b in storage.backends.items() if c == cloud and b.driver == "rbd"]
    if len(candidates) != 1:
        raise ConfigError(
            f"cloud {cloud!r} has {len(candidates)} RBD backends in the storage map "
            f"{storage.source}; pick a volume type whose volume_backend_name is one of them"
        )
    return candidates[0]


# -- the destination Cinder ------------------------------------------------------

MARKER = "stackhop_source"
"""Metadata key on an adopted volume: the source volume's ID (finds an interrupted adoption)."""

#: How long Cinder may take to manage an image, delete a volume or accept a transfer.
CINDER_WAIT = 600


def destination_backend_name(conn: Any, volume_type: str | None) -> str | None:
    """The ``volume_backend_name`` the destination volume type pins, if any."""
    if not volume_type:
        return None
    found = conn.block_storage.find_type(volume_type, ignore_missing=True)
    if found is None:
        raise ConfigError(
            f"volume type {volume_type!r} does not exist on the destination; create it or map "
            "the source type to an existing one"
        )
    return (found.extra_specs or {}).get("volume_backend_name")


def _pool_host(conn: Any, backend: Backend) -> str:
    """``host@backend#pool`` of ``backend`` from the destination Cinder's pool list."""
    names = [str(p.name) for p in conn.block_storage.backend_pools()]
    for name in names:
        if "@" in name and name.split("@", 1)[1].split("#", 1)[0] == backend.name:
            return name
    raise CapabilityError(
        f"the destination Cinder reports no pool of backend {backend.name!r} (pools: "
        f"{', '.join(names) or 'none'}); check its cinder-volume service is up"
    )


def _marked_volumes(conn: Any, source_id: str) -> list[Any]:
    return [
        v
        for v in conn.block_storage.volumes(all_projects=True, details=True)
        if (v.metadata or {}).get(MARKER) == source_id
    ]


def delete_destination_volume(ctx: PassContext, dst: RbdCluster, volume_id: str | None) -> None:
    """Delete what an interrupted pass adopted (by ID, or by marker), snapshots first."""
    conn = ctx.destination_conn
    found = {v.id: v for v in _marked_volumes(conn, ctx.source.id)}
    if volume_id and volume_id not in found:
        volume = conn.block_storage.find_volume(volume_id, ignore_missing=True, all_projects=True)
        if volume is not None:
            found[volume.id] = volume
    for volume in found.values():
        image = f"volume-{volume.id}"
        for snap in dst.snapshots(image):
            if snap.startswith("stackhop-"):
                dst.remove_snapshot(image, snap)
        try:
            conn.block_storage.delete_volume(volume, ignore_missing=True)
            conn.block_storage.wait_for_delete(volume, wait=CINDER_WAIT)
        except sdk_exc.SDKException as exc:
            raise ConflictError(
                f"{ctx.source.label}: cannot replace destination volume {volume.id} left by an "
                f"interrupted pass ({exc}); delete it by hand and re-run"
            ) from exc


def adopt_image(ctx: PassContext, backend: Backend, image: str, size: int) -> str:
    """Manage ``image`` into the destination Cinder and hand it to the destination project."""
    conn = ctx.destination_conn
    src = ctx.source
    try:
        volume = conn.block_storage.manage_volume(
            host=_pool_host(conn, backend),
            ref={"source-name": image},
            name=src.name or None,
            description=src.description,
            volume_type=ctx.destination_type,
            metadata={**src.metadata, MARKER: src.id},
            bootable=src.bootable,
        )
        volume = conn.block_storage.wait_for_status(
            volume, "available", failures=["error"], wait=CINDER_WAIT
        )
    except sdk_exc.SDKException as exc:
        raise ConflictError(
            f"{src.label}: the destination Cinder could not manage RBD image {image} "
            f"({exc}); check its cinder-volume log, then run `stackhop volumes cleanup` and re-run"
        ) from exc
    if conn.current_project_id != ctx.destination_project_id:
        _hand_over(ctx, volume.id)
    return str(volume.id)


def _hand_over(ctx: PassContext, volume_id: str) -> None:
    """Move ``volume_id`` into the destination project with a volume transfer."""
    conn = ctx.destination_conn
    project = ctx.destination_project_id
    user = conn.current_user_id
    grant: Temporary | None = None
    if not list(conn.identity.role_assignments(user_id=user, scope_project_id=project)):
        role = conn.identity.find_role("member", ignore_missing=False)
        grant = Temporary(
            method=METHOD,
            kind="role-assignment",
            cloud=_cloud_name(conn),
            name=f"{user}:{project}:{role.id}",
            details={"user": user, "project": project, "role": role.id},
        )
        ctx.created(grant)
        conn.identity.assign_project_role_to_user(project, user, role.id)
    try:
        transfer = conn.block_storage.create_transfer(
            volume_id=volume_id, name=f"stackhop {ctx.source.id}"
        )
        try:
            scoped = conn.connect_as_project({"id": project})
            scoped.block_storage.accept_transfer(transfer.id, transfer.auth_key)
        except BaseException:
            conn.block_storage.delete_transfer(transfer, ignore_missing=True)
            raise
    except sdk_exc.SDKException as exc:
        raise ConflictError(
            f"{ctx.source.label}: adopted as {volume_id} but could not move it into project "
            f"{project} ({exc}); check the destination quota, then re-run"
        ) from exc
    finally:
        if grant is not None:
            revoke_role(conn, grant.details)
            ctx.removed(grant)


def revoke_role(conn: Any, details: Mapping[str, Any]) -> None:
    """Revoke a role granted for a transfer accept (already revoked is fine)."""
    try:
        conn.identity.unassign_project_role_from_user(
            details["project"], details["user"], details["role"]
        )
    except sdk_exc.NotFoundException:
        return


def sync_volume_fields(ctx: PassContext, volume_id: str) -> None:
    """Carry name, description, metadata and the bootable flag over again (incremental pass)."""
    conn = ctx.destination_conn
    src = ctx.source
    volume = conn.block_storage.get_volume(volume_id)
    conn.block_storage.update_volume(volume, name=src.name, description=src.description)
    conn.block_storage.set_volume_metadata(volume, **{**src.metadata, MARKER: src.id})
    if bool(volume.is_bootable) != src.bootable:
        conn.block_storage.set_volume_bootable_status(volume, src.bootable)


class RbdMethod:
    """Copy a volume Ceph to Ceph with RBD diffs; see the module docstring."""

    name: ClassVar[str] = METHOD

    # -- preflight -------------------------------------------------------------

    def check(
        self,
        source: VolumeRef,
        storage: StorageMap,
        destination_cloud: str,
        destination_type: str | None,
    ) -> None:
        """CapabilityError/ConfigError unless both ends are RBD backends of the storage map."""
        _rbd_backend(storage, source)
        hint = (
            destination_type if (destination_cloud, destination_type) in storage.backends else None
        )
        _destination_backend(storage, destination_cloud, hint)

    # -- one pass --------------------------------------------------------------

    def copy_pass(self, ctx: PassContext) -> PassResult:
        """One pass up to ``verified``: incremental from ``ctx.previous`` when possible."""
        src_backend = _rbd_backend(ctx.storage, ctx.source)
        dst_cloud = _cloud_name(ctx.destination_conn)
        dst_backend = _destination_backend(
            ctx.storage,
            dst_cloud,
            destination_backend_name(ctx.destination_conn, ctx.destination_type),
        )
        src, dst = cluster_of(src_backend), cluster_of(dst_backend)
        previous = dict(ctx.previous)
        number = int(previous.get("pass", 0)) + 1
        snap = f"stackhop-{ctx.run_id[:8]}-{number}"
        if ctx.incremental and self._chain_usable(ctx, previous, src, dst):
            return self._incremental(ctx, previous, number, snap, src_backend, dst_backend)
        if previous:
            # A chain that cannot continue (or a pass without --incremental) ends here.
            self.forget_incremental(previous, ctx.source_conn, ctx.destination_conn, ctx.storage)
        return self._full(ctx, number, snap, src_backend, dst_backend)

    def _chain_usable(
        self, ctx: PassContext, previous: Mapping[str, Any], src: RbdCluster, dst: RbdCluster
    ) -> bool:
        base = previous.get("snapshot")
        if (
            not base
            or not ctx.destination_id
            or previous.get("destination_id") != ctx.destination_id
        ):
            return False
        return base in src.snapshots(str(previous["source_image"])) and base in dst.snapshots(
            str(previous["destination_image"])
        )

    def _take_snapshot(
        self, ctx: PassContext, backend: Backend, cluster: RbdCluster, image: str, snap: str
    ) -> Temporary:
        temporary = _snapshot_temporary(backend, image, snap)
        ctx.created(temporary)
        cluster.remove_snapshot(image, snap)  # a crashed attempt of this same pass left it
        cluster.create_snapshot(image, snap)
        return temporary

    def _full(
        self, ctx: PassContext, number: int, snap: str, src_backend: Backend, dst_backend: Backend
    ) -> PassResult:
        src, dst = cluster_of(src_backend), cluster_of(dst_backend)
        source_image = src_backend.rbd_image(ctx.source.id)
        label = ctx.source.label
        # Never two copies: whatever an interrupted pass left goes first.
        delete_destination_volume(ctx, dst, ctx.destination_id)
        staging = import_image(ctx.source.id)
        staging_temp = _image_temporary(dst_backend, staging)
        ctx.created(staging_temp)
        dst.remove_image(staging)
        info = src.info(source_image)
        if info is None:
            raise ConflictError(
                f"{label}: its RBD image {src.spec(source_image)} does not exist on cloud "
                f"{ctx.source.cloud!r}; check the storage map's pool for that backend"
            )
        size = int(info["size"])
        src_snap = self._take_snapshot(ctx, src_backend, src, source_image, snap)
        dst.create_image(staging, size)
        dst_snap = _snapshot_temporary(dst_backend, staging, snap)
        ctx.created(dst_snap)
        hasher = ChunkHasher(size=int(info["size"]), chunk=VERIFY_CHUNK, complete=True)
        stats = self._stream(ctx, src, source_image, snap, None, dst, staging, hasher)
        assert stats.header is not None
        ctx.stage("exported", snapshot=snap, bytes=stats.data_bytes)
        ctx.stage("imported", image=dst.spec(staging), bytes_wire=stats.wire_bytes)

        volume_id = adopt_image(ctx, dst_backend, staging, int(info["size"]))
        ctx.removed(staging_temp)  # Cinder renamed it volume-<id>
        image = dst_backend.rbd_image(volume_id)
        ctx.removed(dst_snap)
        dst_snap = _snapshot_temporary(dst_backend, image, snap)
        ctx.created(dst_snap)
        ctx.stage("adopted", destination_id=volume_id, image=dst.spec(image))

        source_digests = hasher.finish()
        dest_digests = dst.chunk_digests(image, snap, VERIFY_CHUNK).digests
        self._compare(ctx, source_digests, dest_digests, volume_id)
        ordered = [source_digests[i] for i in sorted(source_digests)]
        digest = content_digest(ordered)
        self._record_chunks(ctx, source_digests, int(info["size"]), clear=True)
        ctx.stage("verified", content_digest=digest)
        self._commit_backup(ctx)

        result = PassResult(
            destination_id=volume_id,
            bytes_read=stats.header.size,
            bytes_sent=stats.data_bytes,
            bytes_wire=stats.wire_bytes,
            content_digest=digest,
            details={"snapshot": snap, "zero_bytes": stats.zero_bytes, "pass": number},
        )
        self._finish(
            ctx, result, number, snap, source_image, image, src, dst, src_snap, dst_snap, size
        )
        return result

    def _incremental(
        self,
        ctx: PassContext,
        previous: Mapping[str, Any],
        number: int,
        snap: str,
        src_backend: Backend,
        dst_backend: Backend,
    ) -> PassResult:
        src, dst = cluster_of(src_backend), cluster_of(dst_backend)
        base = str(previous["snapshot"])
        source_image = str(previous["source_image"])
        image = str(previous["destination_image"])
        assert ctx.destination_id is not None
        src_snap = self._take_snapshot(ctx, src_backend, src, source_image, snap)
        dst_snap = _snapshot_temporary(dst_backend, image, snap)
        ctx.created(dst_snap)
        dst.remove_snapshot(image, snap)
        stats = self._stream(ctx, src, source_image, snap, base, dst, image, None)
        assert stats.header is not None
        size = stats.header.size
        if size != int(previous.get("size", size)):
            raise ConflictError(
                f"{ctx.source.label} was resized since the previous pass; extend destination "
                f"volume {ctx.destination_id} to match and re-run without --incremental"
            )
        ctx.stage("exported", snapshot=snap, since=base, bytes=stats.data_bytes)
        ctx.stage("imported", image=dst.spec(image), bytes_wire=stats.wire_bytes)
        sync_volume_fields(ctx, ctx.destination_id)
        ctx.stage("adopted", destination_id=ctx.destination_id, reused=True)

        changed = self._changed_digests(
            ctx, src, dst, source_image, image, snap, base, stats.touched
        )
        digests = self._stored_digests(ctx, size, int(previous.get("chunk_rows", -1)))
        if changed is None or digests is None:
            # Object size below the chunk, or the journal lost the digests: hash it all.
            full_src = src.chunk_digests(source_image, snap, VERIFY_CHUNK).digests
            full_dst = dst.chunk_digests(image, snap, VERIFY_CHUNK).digests
            self._compare(ctx, full_src, full_dst, ctx.destination_id)
            digests, changed = full_src, full_src
            reread = "all"
        else:
            digests.update(changed)
            reread = f"{len(changed)} chunk(s)"
        digest = content_digest(digests[i] for i in sorted(digests))
        self._record_chunks(ctx, changed, size, clear=reread == "all")
        ctx.stage("verified", content_digest=digest, reread=reread)
        self._commit_backup(ctx)
        for cluster, backend, img in ((src, src_backend, source_image), (dst, dst_backend, image)):
            cluster.remove_snapshot(img, base)
            ctx.removed(_snapshot_temporary(backend, img, base))
        result = PassResult(
            destination_id=ctx.destination_id,
            bytes_read=stats.data_bytes + stats.zero_bytes,
            bytes_sent=stats.data_bytes,
            bytes_wire=stats.wire_bytes,
            content_digest=digest,
            details={"snapshot": snap, "since": base, "reread": reread, "pass": number},
        )
        self._finish(
            ctx, result, number, snap, source_image, image, src, dst, src_snap, dst_snap, size
        )
        return result

    # -- pieces ----------------------------------------------------------------

    def _stream(
        self,
        ctx: PassContext,
        src: RbdCluster,
        source_image: str,
        snap: str,
        base: str | None,
        dst: RbdCluster,
        image: str,
        hasher: ChunkHasher | None,
    ) -> Any:
        backup = ctx.backup
        total = ctx.source.size_bytes or None

        def tee(header: DiffHeader, record: Record) -> None:
            if backup is None:
                return
            if isinstance(record, WriteExtent):
                backup.write(Chunk(record.offset, record.data))
            elif base is not None:
                # Incremental: a zeroed extent is a change the backup must carry.
                done = 0
                while done < record.length:
                    n = min(VERIFY_CHUNK, record.length - done)
                    backup.write(Chunk(record.offset + done, bytes(n)))
                    done += n

        hooks = [tee] + ([lambda _h, r: hasher.add(r)] if hasher is not None else [])
        if backup is not None:
            backup.open(ctx.source.size_bytes)
        try:
            exporter = src.export_diff(source_image, snap, base)
            try:
                importer = dst.import_diff(image)
            except BaseException:
                exporter.kill()
                raise
            return pipe_diff(
                exporter,
                importer,
                chunk=VERIFY_CHUNK,
                hooks=hooks,
                on_progress=lambda done: ctx.on_progress(done, total),
            )
        except BaseException as exc:
            if backup is not None:
                backup.abort(exc)
            raise

    def _commit_backup(self, ctx: PassContext) -> None:
        if ctx.backup is not None:
            ctx.backup.commit()

    def _changed_digests(
        self,
        ctx: PassContext,
        src: RbdCluster,
        dst: RbdCluster,
        source_image: str,
        image: str,
        snap: str,
        base: str,
        touched: set[int],
    ) -> dict[int, str] | None:
        """Digests of chunks changed since ``base``, equal on both sides; None: re-read all."""
        source = src.chunk_digests(source_image, snap, VERIFY_CHUNK, from_snap=base)
        dest = dst.chunk_digests(image, snap, VERIFY_CHUNK, from_snap=base)
        if source.partial or dest.partial or not touched <= set(source.digests):
            return None
        assert ctx.destination_id is not None
        self._compare(ctx, source.digests, dest.digests, ctx.destination_id)
        return source.digests

    def _stored_digests(self, ctx: PassContext, size: int, rows: int) -> dict[int, str] | None:
        recorded = ctx.journal.chunks(chunk_key(ctx.source.id))
        if len(recorded) != rows:
            return None
        count = -(-size // VERIFY_CHUNK)
        digests = {i: _zero(size, i) for i in range(count)}
        for offset, row in recorded.items():
            digests[offset // VERIFY_CHUNK] = row.digest
        return digests

    def _record_chunks(
        self, ctx: PassContext, digests: Mapping[int, str], size: int, *, clear: bool
    ) -> None:
        key = chunk_key(ctx.source.id)
        if clear:
            ctx.journal.clear_chunks(key)
        known = {} if clear else ctx.journal.chunks(key)
        for index, value in sorted(digests.items()):
            length = min(VERIFY_CHUNK, size - index * VERIFY_CHUNK)
            if value == _zero(size, index) and index * VERIFY_CHUNK not in known:
                continue  # holes need no row: a missing row reads as zeros
            ctx.journal.record_chunk(key, index * VERIFY_CHUNK, length, value)

    def _compare(
        self, ctx: PassContext, source: Mapping[int, str], dest: Mapping[int, str], volume_id: str
    ) -> None:
        differ = sorted(i for i in set(source) | set(dest) if source.get(i) != dest.get(i))
        if differ:
            offsets = ", ".join(str(i * VERIFY_CHUNK) for i in differ[:3])
            raise IntegrityError(
                f"{ctx.source.label}: destination volume {volume_id} differs from the source in "
                f"{len(differ)} chunk(s) (offsets {offsets}...); re-run without --incremental "
                "to copy it again"
            )

    def _finish(
        self,
        ctx: PassContext,
        result: PassResult,
        number: int,
        snap: str,
        source_image: str,
        image: str,
        src: RbdCluster,
        dst: RbdCluster,
        src_snap: Temporary,
        dst_snap: Temporary,
        size: int,
    ) -> None:
        """Keep the snapshots for the next pass (incremental) or remove them."""
        if ctx.incremental:
            result.state = {
                "snapshot": snap,
                "pass": number,
                "source_cloud": src.cloud,
                "source_backend": src_snap.details["backend"],
                "source_image": source_image,
                "destination_cloud": dst.cloud,
                "destination_backend": dst_snap.details["backend"],
                "destination_image": image,
                "destination_id": result.destination_id,
                "size": size,
                "chunk_rows": len(ctx.journal.chunks(chunk_key(ctx.source.id))),
            }
            return
        src.remove_snapshot(source_image, snap)
        ctx.removed(src_snap)
        dst.remove_snapshot(image, snap)
        ctx.removed(dst_snap)

    # -- cleanup ---------------------------------------------------------------

    def remove_temporary(
        self, temporary: Temporary, source_conn: Any, destination_conn: Any, storage: StorageMap
    ) -> None:
        """Remove an RBD snapshot, an RBD image or a role grant left by a pass (missing is fine)."""
        details = temporary.details
        if temporary.kind == "role-assignment":
            revoke_role(destination_conn, details)
            return
        cluster = cluster_of(storage.backend(temporary.cloud, str(details["backend"])))
        if temporary.kind == "rbd-snapshot":
            cluster.remove_snapshot(str(details["image"]), str(details["snap"]))
        elif temporary.kind == "rbd-image":
            cluster.remove_image(str(details["image"]))
        else:
            raise ConfigError(
                f"the rbd method does not know temporaries of kind {temporary.kind!r}"
            )

    def forget_incremental(
        self, state: Mapping[str, Any], source_conn: Any, destination_conn: Any, storage: StorageMap
    ) -> None:
        """Remove the chain's base snapshot on both sides, so Cinder can delete both volumes."""
        snap = state.get("snapshot")
        if not snap:
            return
        for side in ("source", "destination"):
            backend = storage.backend(str(state[f"{side}_cloud"]), str(state[f"{side}_backend"]))
            cluster_of(backend).remove_snapshot(str(state[f"{side}_image"]), str(snap))


def _zero(size: int, index: int) -> str:
    length = min(VERIFY_CHUNK, size - index * VERIFY_CHUNK)
    return hashlib.sha256(bytes(length)).hexdigest() if length != VERIFY_CHUNK else _ZERO


_ZERO = hashlib.sha256(bytes(VERIFY_CHUNK)).hexdigest()
