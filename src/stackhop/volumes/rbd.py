"""The ``rbd`` volume copy method: Ceph to Ceph by RBD diffs, into a volume Cinder created.

One pass of one volume (both clouds' backends are ``driver: rbd`` in the storage map):

1. **Snapshot** the source image ``volume-<id>`` as ``stackhop-<run[:8]>-<n>``
   (``n`` counts the passes of an incremental chain). Each snapshot is
   announced with :meth:`PassContext.created` before it exists.
2. **Create** (full pass, while the source is snapshotted):
   :func:`stackhop.volumes.cinder_adopt.create` has the destination Cinder
   create an empty volume of the source's size, type and fields, right in the
   destination project when the user's role there allows it, else by the admin
   and handed over; it carries the :data:`MARKER`, so a re-run finds it.
   Its image ``volume-<destination id>`` is on the backend Cinder's scheduler
   chose for the type, which must be an RBD backend of the storage map.
   (Earlier releases wrote a staging image and adopted it with Cinder's "manage
   existing"; a managed volume lacks the ``service_uuid`` a create sets, and
   Nova could not attach it: see docs/volumes.md.)
3. **Stream** the diff of that snapshot (since the previous pass's snapshot
   P on an incremental pass) through stackhop into the volume's image. No
   temporary file: the records are hashed per :data:`VERIFY_CHUNK`, teed to
   ``ctx.backup`` and written, while a thread reads ahead
   (:func:`~stackhop.transfer.rbd_access.copy_diff`); the destination gets
   snapshot S too. Each side is reached as
   :func:`~stackhop.transfer.rbd.open_cluster` decides: librbd in-process
   for a local cluster when the bindings import, else ``rbd export-diff`` /
   ``import-diff`` locally or on the backend's ``ssh_host``.
4. **Verify**: a full pass hashes the source from the stream itself (one
   read; a piece of zeros is not hashed, nor written into the fresh image).
   When librbd writes the destination in this process, the pass is verified
   from the write path: the records hashed are the very buffers handed to
   ``aio_write`` at their offsets, every completion is checked and the
   acknowledged bytes must add up to what was written (the sink's
   ``confirms_writes``), the image was created empty by this pass (what is
   not written reads as zeros), writes go uncached and are flushed before the
   destination snapshot, and Ceph guards the bytes themselves (crc32c on the
   wire and, in BlueStore, at rest, checked on every read). That is sound
   for the copy; what it does not re-check is librbd or an OSD storing other
   bytes than it acknowledged. So by default the sink also **reads back**
   each extent as soon as its write is acknowledged, while the next ones
   are written, and compares it byte for byte with the buffer it wrote
   (no second hash, no second pass over the image: see
   :class:`~stackhop.transfer.rbd_lib_io.LibDiffSink`), then checks that no
   object of the fresh image holds data it did not write. Where ``rbd
   import-diff`` wrote (a separate program, perhaps over ssh, whose exit
   status is all stackhop learns) the destination's snapshot is re-read and
   hashed instead, after the copy. Cinder's fields (name, metadata, bootable
   flag) are set while the bytes stream, in full and incremental passes. The
   operator may trade the read-back for speed where librbd wrote
   (``--trust-writes``: ``RbdMethod(reread=False)``). An incremental pass
   re-reads the source's chunks changed since P (their digests), reads back
   what it writes into the destination and checks that nothing else there
   changed since P (else it re-reads the destination's changed chunks too),
   and updates the per-chunk digests kept in the journal's chunk table (key
   ``volume-rbd:<source id>``, rows only for non-zero chunks).

Without ``--incremental`` both snapshots are removed at the end. With it,
they are kept and named in :attr:`PassResult.state` (``snapshot``), and so is
the base the pass started from (``stale_snapshot``): the next pass removes
it together with creating its own snapshot, on each side, because creating
or removing a snapshot is a monitor commit (up to a second with Ceph's
default ``paxos_propose_interval``) and commits issued together share one.
The orchestration must call :meth:`RbdMethod.forget_incremental` when the
chain ends (after the cutover pass, on ``volumes cleanup``, or before giving
up on the volume): Cinder does not know these snapshots, and an RBD image
with snapshots cannot be deleted through Cinder on either cloud.

Resume: a full pass first looks for the copy an earlier pass made (named by
``ctx.destination_id`` or by the marker). One that is ``available``, in the
destination project and of the source's size keeps its ID and gets only the
chunks whose digests differ (:meth:`RbdMethod._reconcile`): that is how a
full pass killed mid-stream resumes, and how a re-run whose journal was lost
sends nothing when nothing changed. Anything else is deleted first, so there
is never a second copy. An incremental pass whose base snapshot is gone on
either side falls back to such a full pass. (A ``stackhop-import-*`` image
of an earlier release's interrupted pass is a journaled temporary that
``volumes cleanup`` removes.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from stackhop.errors import CapabilityError, ConfigError, ConflictError, StackhopError
from stackhop.transfer.base import Chunk
from stackhop.transfer.rbd_access import (
    DiffReader,
    DiffStats,
    RbdAccess,
    SpanReader,
    chunk_spans,
    copy_diff,
    hash_diff,
)
from stackhop.transfer.rbd_diff import ChunkDigests, ChunkHasher, DiffHeader, Record, WriteExtent
from stackhop.volumes import cinder_adopt
from stackhop.volumes.cinder_adopt import MARKER
from stackhop.volumes.model import (
    GIB,
    VERIFY_CHUNK,
    PassContext,
    PassResult,
    Temporary,
    VolumeRef,
    content_digest,
)
from stackhop.volumes.rbd_chunks import (
    chunk_key,
    compare_digests,
    record_digests,
    row_count,
    stored_digests,
)
from stackhop.volumes.rbd_ends import (
    METHOD,
    RbdEnds,
    cluster_of,
    destination_backend,
    snapshot_temporary,
    source_backend,
)
from stackhop.volumes.storage import Backend, StorageMap

__all__ = ["MARKER", "RbdMethod", "chunk_key", "cluster_of"]


T = TypeVar("T")
U = TypeVar("U")


def _in_parallel(first: Callable[[], T], second: Callable[[], U]) -> tuple[T, U]:
    """Both results, ``first`` run on a thread while ``second`` runs here; the first error.

    librbd's reads and hashlib release the GIL, and Cinder calls mostly wait, so the two
    really overlap.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rbd") as pool:
        pending = pool.submit(first)
        try:
            other = second()
        finally:
            # Never leave the thread reading after a failure here: wait for it.
            pending.exception()
        return pending.result(), other


class RbdMethod:
    """Copy a volume Ceph to Ceph with RBD diffs; see the module docstring.

    ``reread`` (the default): verify a full pass by reading the destination back even
    when librbd in this process confirmed every write; False (``--trust-writes``) trusts
    those confirmed writes instead (see "Verify" in the module docstring).
    """

    name: ClassVar[str] = METHOD

    def __init__(self, *, reread: bool = True) -> None:
        self.reread = reread

    # -- preflight -------------------------------------------------------------

    def check(
        self,
        source: VolumeRef,
        storage: StorageMap,
        destination_cloud: str,
        destination_type: str | None,
    ) -> None:
        """CapabilityError/ConfigError unless both ends are RBD backends of the storage map
        and the source is not encrypted."""
        if source.encrypted:
            raise CapabilityError(
                f"{source.label} is encrypted with a key of the source cloud's key manager, "
                "which stackhop does not move; leave it out, or copy its data from inside "
                "the guest"
            )
        source_backend(storage, source)
        hint = (
            destination_type if (destination_cloud, destination_type) in storage.backends else None
        )
        destination_backend(storage, destination_cloud, hint)

    # -- one pass --------------------------------------------------------------

    def copy_pass(self, ctx: PassContext) -> PassResult:
        """One pass up to ``verified``: incremental from ``ctx.previous`` when possible.

        The destination's backend is always where Cinder put the copy (its ``host``),
        never guessed from the volume type: a chain's from its state, an earlier pass's
        copy from its volume, a new copy from where the scheduler placed it.
        """
        if not ctx.destination_cloud:
            raise ConfigError("the rbd method needs the destination cloud's name; pass --to CLOUD")
        src_backend = source_backend(ctx.storage, ctx.source)
        src = cluster_of(src_backend)
        previous = dict(ctx.previous)
        number = int(previous.get("pass", 0)) + 1
        snap = f"stackhop-{ctx.run_id[:8]}-{number}"
        if ctx.incremental and previous.get("destination_backend"):
            backend = ctx.storage.backend(
                str(previous["destination_cloud"]), str(previous["destination_backend"])
            )
            pair = RbdEnds(src_backend, backend, src, cluster_of(backend))
            if self._chain_usable(ctx, previous, pair):
                return self._incremental(ctx, previous, number, snap, pair)
        if previous:
            # A chain that cannot continue (or a pass without --incremental) ends here.
            self.forget_incremental(previous, ctx.source_conn, ctx.destination_conn, ctx.storage)
        return self._full(ctx, number, snap, src_backend, src)

    def _chain_usable(self, ctx: PassContext, previous: Mapping[str, Any], pair: RbdEnds) -> bool:
        base = previous.get("snapshot")
        if (
            not base
            or not ctx.destination_id
            or previous.get("destination_id") != ctx.destination_id
        ):
            return False
        return base in pair.src.snapshots(str(previous["source_image"])) and base in (
            pair.dst.snapshots(str(previous["destination_image"]))
        )

    def _ends_at(
        self, ctx: PassContext, src_backend: Backend, src: RbdAccess, host: str | None
    ) -> RbdEnds | None:
        """The ends of a pass into a destination volume on Cinder ``host``
        (``host@backend#pool``); None when that is not an RBD backend of the storage map."""
        cloud = ctx.destination_cloud
        name = host.split("@", 1)[1].split("#", 1)[0] if host and "@" in host else ""
        backend = ctx.storage.backends.get((cloud, name))
        if backend is None or backend.driver != "rbd":
            return None
        return RbdEnds(src_backend, backend, src, cluster_of(backend))

    def _take_snapshot(
        self, ctx: PassContext, backend: Backend, cluster: RbdAccess, image: str, snap: str
    ) -> Temporary:
        temporary = snapshot_temporary(backend, image, snap)
        ctx.created(temporary)
        self._fresh_snapshot(cluster, image, snap)
        return temporary

    @staticmethod
    def _fresh_snapshot(cluster: RbdAccess, image: str, snap: str) -> None:
        """Snapshot ``image`` as ``snap``, the start of a chain: any stackhop snapshot the
        image has is an interrupted attempt's, or a chain's whose journal was lost (no
        journal names it any more), and goes first."""
        for old in cluster.snapshots(image):
            if old.startswith("stackhop-"):
                cluster.remove_snapshot(image, old)
        cluster.create_snapshot(image, snap)

    def _replace_previous_copies(
        self, ctx: PassContext, copies: list[Any], src_backend: Backend, src: RbdAccess
    ) -> None:
        """Never two copies: whatever an earlier pass made goes first, its stackhop
        snapshots first (Cinder cannot delete an RBD image with snapshots). A copy attached
        to a server is refused, never deleted."""
        for volume in copies:
            if volume.status == "in-use":
                raise ConflictError(
                    f"{ctx.source.label}: its destination copy {volume.id} is attached to a "
                    "server and cannot take a full pass; detach it (or delete that server), "
                    "then re-run"
                )
            pair = self._ends_at(ctx, src_backend, src, volume.host)
            if pair is not None:
                image = pair.dst_backend.rbd_image(volume.id)
                for snap in pair.dst.snapshots(image):
                    if snap.startswith("stackhop-"):
                        pair.dst.remove_snapshot(image, snap)
            cinder_adopt.delete_volume(ctx, volume)

    def _reusable_copy(
        self, ctx: PassContext, copies: list[Any], size: int, src_backend: Backend, src: RbdAccess
    ) -> tuple[Any, RbdEnds] | None:
        """The one destination volume an earlier pass made (found by the journal's
        ``ctx.destination_id`` or by the marker: a journal lost), with the ends of a pass
        into it, if it can take the differing chunks in place: ``available``, in the
        destination project, on an RBD backend, its image the source's size. None: a full
        pass replaces whatever there is."""
        if len(copies) != 1:
            return None
        volume = copies[0]
        project = getattr(volume, "project_id", None) or getattr(
            volume, "os-vol-tenant-attr:tenant_id", None
        )
        if volume.status != "available" or project != ctx.destination_project_id:
            return None
        pair = self._ends_at(ctx, src_backend, src, volume.host)
        if pair is None or pair.dst.size(pair.dst_backend.rbd_image(volume.id)) != size:
            return None
        return volume, pair

    def _full(
        self, ctx: PassContext, number: int, snap: str, src_backend: Backend, src: RbdAccess
    ) -> PassResult:
        source_image = src_backend.rbd_image(ctx.source.id)
        size = src.size(source_image)
        if size is None:
            raise ConflictError(
                f"{ctx.source.label}: its RBD image {src.spec(source_image)} does not exist on "
                f"cloud {ctx.source.cloud!r}; check the storage map's pool for that backend"
            )
        copies = cinder_adopt.previous_copies(
            ctx.destination_conn, ctx.source.id, ctx.destination_id
        )
        reusable = self._reusable_copy(ctx, copies, size, src_backend, src)
        if reusable is not None:
            volume, pair = reusable
            return self._reconcile(ctx, number, snap, pair, str(volume.id))
        cinder_adopt.refuse_encrypted_type(ctx)
        self._replace_previous_copies(ctx, copies, src_backend, src)
        # Cinder creates the (empty, marked) destination volume while the source is
        # snapshotted: a cinder-volume round trip and a monitor commit, a second each.
        src_snap = snapshot_temporary(src_backend, source_image, snap)
        ctx.created(src_snap)
        (volume_id, handed_over), _ = _in_parallel(
            lambda: cinder_adopt.create(ctx, method=METHOD, size_gib=-(-size // GIB)),
            lambda: self._fresh_snapshot(src, source_image, snap),
        )
        # Journaled at once: an interrupted pass's copy is resumed (or removed) through it.
        ctx.stage("exported", destination_id=volume_id, snapshot=snap)
        pair = self._placed(ctx, src_backend, src, volume_id)
        dst = pair.dst
        image = pair.dst_backend.rbd_image(volume_id)
        dst_snap = snapshot_temporary(pair.dst_backend, image, snap)
        ctx.created(dst_snap)
        hasher = ChunkHasher(size=size, chunk=VERIFY_CHUNK, complete=True)
        # Cinder's fields (name, metadata, bootable flag) are set while the bytes stream:
        # a GET and a few updates, off the critical path.
        _, stats = _in_parallel(
            lambda: cinder_adopt.sync_volume_fields(ctx, volume_id),
            lambda: self._stream(
                ctx, src, source_image, snap, None, dst, image, hasher, fresh=True,
                read_back=self.reread,
            ),
        )
        ctx.stage(
            "imported", image=dst.spec(image), bytes=stats.data_bytes, bytes_wire=stats.wire_bytes
        )

        dest_digests: dict[int, str] | None = None
        if not stats.read_back and (self.reread or not stats.writes_confirmed):
            # Another program wrote it: the destination's snapshot is read back.
            dest_digests = hash_diff(dst.export_diff(image, snap), chunk=VERIFY_CHUNK).digests
        ctx.stage(
            "adopted", destination_id=volume_id, image=dst.spec(image), handed_over=handed_over
        )
        source_digests = hasher.finish()
        if dest_digests is not None:
            compare_digests(ctx.source.label, source_digests, dest_digests, volume_id)
        verified_by = (
            "read-back" if stats.read_back else "writes" if dest_digests is None else "reread"
        )
        result = self._verified(
            ctx, volume_id, source_digests, size, stats, {"verified_by": verified_by},
            {"snapshot": snap, "zero_bytes": stats.zero_bytes, "pass": number},
        )
        self._finish(ctx, result, number, snap, source_image, image, pair, src_snap, dst_snap, size)
        return result

    def _placed(
        self, ctx: PassContext, src_backend: Backend, src: RbdAccess, volume_id: str
    ) -> RbdEnds:
        """The ends of the pass into ``volume_id``, on the backend Cinder's scheduler chose
        for its type: one that is not an RBD backend of the storage map is refused, the
        empty volume deleted first."""
        volume = ctx.destination_conn.block_storage.get_volume(volume_id)
        pair = self._ends_at(ctx, src_backend, src, volume.host)
        if pair is not None:
            return pair
        type_note = f"type {ctx.destination_type!r}" if ctx.destination_type else "its type"
        refusal = (
            f"{ctx.source.label}: the destination Cinder put its copy ({type_note}) on "
            f"{volume.host or 'an unnamed host'}, not an RBD backend of the storage map for "
            f"cloud {ctx.destination_cloud!r}; map the source type to a Ceph type "
            "(volumes copy --type-map), or use --method stream or image"
        )
        try:
            cinder_adopt.delete_volume(ctx, volume)
        except StackhopError as exc:
            raise CapabilityError(
                f"{refusal} (and delete its empty volume {volume.id}: {exc.message})"
            ) from exc
        raise CapabilityError(refusal)

    def _reconcile(
        self, ctx: PassContext, number: int, snap: str, pair: RbdEnds, volume_id: str
    ) -> PassResult:
        """A full pass into a copy an earlier pass made: only the chunks that differ.

        Both sides are hashed chunk by chunk (at once, on two threads), the chunks whose
        digests differ are written into the volume's own image from the source's
        snapshot (zeros where the source has a hole), and re-read. The volume keeps its
        ID, so nothing on the destination that refers to it breaks; when nothing changed,
        nothing is written.
        """
        src, dst = pair.src, pair.dst
        source_image = pair.src_backend.rbd_image(ctx.source.id)
        image = pair.dst_backend.rbd_image(volume_id)
        src_snap = self._take_snapshot(ctx, pair.src_backend, src, source_image, snap)
        before = f"{snap}-before"
        before_snap = self._take_snapshot(ctx, pair.dst_backend, dst, image, before)
        source, found = _in_parallel(
            lambda: src.chunk_digests(source_image, snap, VERIFY_CHUNK),
            lambda: dst.chunk_digests(image, before, VERIFY_CHUNK),
        )
        size = int(src.size(source_image) or 0)
        differ = sorted(
            i
            for i in set(source.digests) | set(found.digests)
            if source.digests.get(i) != found.digests.get(i)
        )
        dst_snap = snapshot_temporary(pair.dst_backend, image, snap)
        ctx.created(dst_snap)
        dst.remove_snapshot(image, snap)
        stats = self._stream(
            ctx,
            src,
            source_image,
            snap,
            None,
            dst,
            image,
            None,
            spans=chunk_spans(differ, chunk=VERIFY_CHUNK, size=size),
        )
        ctx.stage("exported", snapshot=snap, bytes=stats.data_bytes, chunks=len(differ))
        ctx.stage("imported", image=dst.spec(image), bytes_wire=stats.wire_bytes)
        ctx.stage("adopted", destination_id=volume_id, reused=True)
        if differ:
            written = dst.chunk_digests(image, snap, VERIFY_CHUNK, from_snap=before)
            if written.partial or not set(differ) <= set(written.digests):
                # Every chunk the pass meant to rewrite is checked, changed or not.
                written = dst.chunk_digests(image, snap, VERIFY_CHUNK)
            compare_digests(
                ctx.source.label,
                {i: source.digests[i] for i in written.digests},
                written.digests,
                volume_id,
            )
        dst.remove_snapshot(image, before)
        ctx.removed(before_snap)
        cinder_adopt.sync_volume_fields(ctx, volume_id)
        result = self._verified(
            ctx, volume_id, source.digests, size, stats,
            {"verified_by": "reread", "reused": True},
            {"snapshot": snap, "pass": number, "chunks_differing": len(differ)},
        )
        self._finish(ctx, result, number, snap, source_image, image, pair, src_snap, dst_snap, size)
        return result

    def _incremental(
        self, ctx: PassContext, previous: Mapping[str, Any], number: int, snap: str, pair: RbdEnds
    ) -> PassResult:
        src, dst = pair.src, pair.dst
        base = str(previous["snapshot"])
        stale = previous.get("stale_snapshot")
        source_image = str(previous["source_image"])
        image = str(previous["destination_image"])
        destination_id = ctx.destination_id
        assert destination_id is not None
        # The snapshot before the base goes now, each side together with the creation of
        # the new one: both are monitor commits (up to a second each with Ceph's default
        # paxos_propose_interval), and issued together they share one.
        src_snap = snapshot_temporary(pair.src_backend, source_image, snap)
        ctx.created(src_snap)
        src.remove_snapshot(source_image, snap)  # a crashed attempt of this same pass left it
        _in_parallel(
            lambda: src.create_snapshot(source_image, snap),
            lambda: src.remove_snapshot(source_image, stale) if stale else None,
        )
        dst_snap = snapshot_temporary(pair.dst_backend, image, snap)
        ctx.created(dst_snap)
        dst.remove_snapshot(image, snap)
        # Cinder's fields are synced, then the source's changed chunks re-read for their
        # digests, while the diff streams and the destination creates its snapshot.
        def fields_then_digests() -> ChunkDigests:
            cinder_adopt.sync_volume_fields(ctx, destination_id)
            return src.chunk_digests(source_image, snap, VERIFY_CHUNK, from_snap=base)

        source_changed, stats = _in_parallel(
            fields_then_digests,
            lambda: self._stream(
                ctx, src, source_image, snap, base, dst, image, None, retire=stale or None,
                read_back=self.reread,
            ),
        )
        if stale:
            ctx.removed(snapshot_temporary(pair.src_backend, source_image, stale))
            ctx.removed(snapshot_temporary(pair.dst_backend, image, stale))
        assert stats.header is not None
        size = stats.header.size
        if size != int(previous.get("size", size)):
            raise ConflictError(
                f"{ctx.source.label} was resized since the previous pass; extend destination "
                f"volume {destination_id} to match and re-run without --incremental"
            )
        ctx.stage("exported", snapshot=snap, since=base, bytes=stats.data_bytes)
        ctx.stage("imported", image=dst.spec(image), bytes_wire=stats.wire_bytes)

        if stats.read_back:
            # Every change read back as written, and nothing else changed since the base
            # (which the previous pass verified): the changed chunks are the source's.
            dest_changed = source_changed
        else:
            dest_changed = dst.chunk_digests(image, snap, VERIFY_CHUNK, from_snap=base)
        changed = self._changed_digests(ctx, source_changed, dest_changed, stats.touched)
        ctx.stage("adopted", destination_id=destination_id, reused=True)
        rows = int(previous.get("chunk_rows", -1))
        digests = stored_digests(ctx.journal, ctx.source.id, size, rows)
        if changed is None or digests is None:
            # Object size below the chunk, or the journal lost the digests: hash it all.
            full_src, full_dst = _in_parallel(
                lambda: src.chunk_digests(source_image, snap, VERIFY_CHUNK).digests,
                lambda: dst.chunk_digests(image, snap, VERIFY_CHUNK).digests,
            )
            compare_digests(ctx.source.label, full_src, full_dst, destination_id)
            digests, changed = full_src, full_src
            reread = "all"
        else:
            digests.update(changed)
            reread = f"{len(changed)} chunk(s)"
        digest = content_digest(digests[i] for i in sorted(digests))
        record_digests(ctx.journal, ctx.source.id, changed, size, clear=reread == "all")
        verified_by = "read-back" if stats.read_back and reread != "all" else "reread"
        ctx.stage("verified", content_digest=digest, reread=reread, verified_by=verified_by)
        self._commit_backup(ctx)
        result = PassResult(
            destination_id=destination_id,
            bytes_read=stats.data_bytes + stats.zero_bytes,
            bytes_sent=stats.data_bytes,
            bytes_wire=stats.wire_bytes,
            content_digest=digest,
            details={"snapshot": snap, "since": base, "reread": reread, "pass": number,
                     "verified_by": verified_by},
        )
        self._finish(ctx, result, number, snap, source_image, image, pair, src_snap, dst_snap, size)
        # The base stays until the next pass (or forget_incremental) removes it.
        result.state["stale_snapshot"] = base
        return result

    # -- pieces ----------------------------------------------------------------

    def _stream(
        self,
        ctx: PassContext,
        src: RbdAccess,
        source_image: str,
        snap: str,
        base: str | None,
        dst: RbdAccess,
        image: str,
        hasher: ChunkHasher | None,
        *,
        retire: str | None = None,
        fresh: bool = False,
        read_back: bool = False,
        spans: list[tuple[int, int]] | None = None,
    ) -> DiffStats:
        """Copy the diff ``base`` -> ``snap`` of the source into ``image`` (teed, hashed);
        ``spans``: only these byte ranges of a diff from nothing (:func:`only_spans`)."""
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

        hooks: list[Callable[[DiffHeader, Record], None]] = []
        if hasher is not None:
            hooks.append(lambda _h, r: hasher.add(r))
        if backup is not None:
            backup.open(ctx.source.size_bytes)
        try:
            reader: DiffReader = src.export_diff(source_image, snap, base)
            if spans is None:
                hooks.insert(0, tee)
            else:
                # The backup takes the whole volume, the destination only the spans.
                header = reader.header
                tap = (lambda r: tee(header, r)) if backup is not None else None
                reader = SpanReader(reader, spans, tap)
            try:
                sink = dst.import_diff(image, retire, fresh=fresh, read_back=read_back)
            except BaseException:
                reader.cancel()
                reader.close()
                raise
            return copy_diff(
                reader,
                sink,
                chunk=VERIFY_CHUNK,
                hooks=hooks,
                on_progress=lambda done: ctx.on_progress(done, total),
                zero_data=True,
            )
        except BaseException as exc:
            if backup is not None:
                backup.abort(exc)
            raise

    def _verified(
        self,
        ctx: PassContext,
        volume_id: str,
        digests: Mapping[int, str],
        size: int,
        stats: DiffStats,
        facts: Mapping[str, Any],
        details: Mapping[str, Any],
    ) -> PassResult:
        """The end of a full pass whose every chunk digest is known: record the digests,
        report ``verified`` with ``facts``, commit the backup; the pass's result."""
        digest = content_digest(digests[i] for i in sorted(digests))
        record_digests(ctx.journal, ctx.source.id, dict(digests), size, clear=True)
        ctx.stage("verified", content_digest=digest, **facts)
        self._commit_backup(ctx)
        return PassResult(
            destination_id=volume_id,
            bytes_read=size,
            bytes_sent=stats.data_bytes,
            bytes_wire=stats.wire_bytes,
            content_digest=digest,
            details={**details, **facts},
        )

    def _commit_backup(self, ctx: PassContext) -> None:
        if ctx.backup is not None:
            ctx.backup.commit()

    def _changed_digests(
        self, ctx: PassContext, source: ChunkDigests, dest: ChunkDigests, touched: set[int]
    ) -> dict[int, str] | None:
        """Digests of chunks changed since the base, equal on both sides; None: re-read all."""
        if source.partial or dest.partial or not touched <= set(source.digests):
            return None
        assert ctx.destination_id is not None
        compare_digests(ctx.source.label, source.digests, dest.digests, ctx.destination_id)
        return source.digests

    def _finish(
        self,
        ctx: PassContext,
        result: PassResult,
        number: int,
        snap: str,
        source_image: str,
        image: str,
        pair: RbdEnds,
        src_snap: Temporary,
        dst_snap: Temporary,
        size: int,
    ) -> None:
        """Keep the snapshots for the next pass (incremental) or remove them."""
        if ctx.incremental:
            result.state = {
                "snapshot": snap,
                "pass": number,
                "source_cloud": pair.src.cloud,
                "source_backend": pair.src_backend.name,
                "source_image": source_image,
                "destination_cloud": pair.dst.cloud,
                "destination_backend": pair.dst_backend.name,
                "destination_image": image,
                "destination_id": result.destination_id,
                "size": size,
                "chunk_rows": row_count(ctx.journal, ctx.source.id),
            }
            return
        # Two clusters, two monitors: the removals overlap.
        _in_parallel(
            lambda: pair.src.remove_snapshot(source_image, snap),
            lambda: pair.dst.remove_snapshot(image, snap),
        )
        ctx.removed(src_snap)
        ctx.removed(dst_snap)

    # -- cleanup ---------------------------------------------------------------

    def remove_temporary(
        self, temporary: Temporary, source_conn: Any, destination_conn: Any, storage: StorageMap
    ) -> None:
        """Remove an RBD snapshot, an RBD image or a role grant left by a pass (missing is fine)."""
        details = temporary.details
        if temporary.kind == "role-assignment":
            cinder_adopt.revoke_role(destination_conn, details)
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
        """Remove the chain's snapshots (the last pass's, and the base before it) on both
        sides, so Cinder can delete both volumes."""
        snaps = [str(s) for s in (state.get("snapshot"), state.get("stale_snapshot")) if s]
        if not snaps:
            return
        removals = []
        for side in ("source", "destination"):
            backend = storage.backend(str(state[f"{side}_cloud"]), str(state[f"{side}_backend"]))
            cluster, image = cluster_of(backend), str(state[f"{side}_image"])
            removals += [functools.partial(cluster.remove_snapshot, image, snap) for snap in snaps]
        # Removals issued together share the monitors' commits.
        with ThreadPoolExecutor(max_workers=len(removals), thread_name_prefix="rbd") as pool:
            for done in [pool.submit(removal) for removal in removals]:
                done.result()
