"""Putting a volume into the destination Cinder and project: create, hand-over, fields.

What a copy method needs from the destination Cinder around the bytes it moves:

- :func:`create` has Cinder create the destination volume (empty, the source's
  size) with the source's name, description, type and metadata plus the
  :data:`MARKER`, for a method that then writes into the volume's own backend
  object (the rbd method). Not Cinder's "manage existing" of an image written
  aside, as the rbd method did before: a managed volume lacks fields a create
  sets (``service_uuid``, ``shared_targets``, Cinder 29.0.0), and Nova cannot
  attach it;
- :func:`hand_over` moves a volume the admin owns into the destination
  project with a volume transfer, accepted by a connection scoped to that
  project. When the admin has no role there, ``member`` is granted for the
  accept and revoked right after; the grant is announced as a
  ``role-assignment`` :class:`~stackhop.volumes.model.Temporary` of the
  calling method (whose ``remove_temporary`` must call :func:`revoke_role`);
- :func:`sync_volume_fields` carries the fields over again (a later pass);
- :func:`previous_copies` and :func:`delete_volume` find and remove what an
  interrupted pass made, so there is never a second copy.

The marker (``stackhop_source=<source id>`` in the metadata) is how a re-run
finds a volume whose pass was interrupted before the journal learnt its ID.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from openstack import exceptions as sdk_exc

from stackhop.errors import CapabilityError, ConfigError, ConflictError
from stackhop.volumes.model import PassContext, Temporary

MARKER = "stackhop_source"
"""Metadata key on a copy: the source volume's ID (finds the copy of an interrupted pass)."""

CINDER_WAIT = 600
"""How long Cinder may take to create or delete a volume or accept a transfer (s)."""

POLL_INTERVAL = 0.5
"""Seconds between status polls: openstacksdk's 2 s default wastes a second per wait on
average, and Cinder creates an RBD volume in about a second."""


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


def marks(metadata: Any, source_id: str) -> bool:
    """Whether a destination volume's metadata marks it as the copy of ``source_id``.

    Every method writes the bare source ID; the stream method of earlier releases wrote
    ``<source cloud>:<source ID>``, which is still recognised (so a copy it made is
    found whatever the method and the cloud's name in clouds.yaml of the re-run).
    """
    value = (metadata or {}).get(MARKER)
    return isinstance(value, str) and value.rsplit(":", 1)[-1] == source_id


def previous_copies(conn: Any, source_id: str, volume_id: str | None) -> list[Any]:
    """Destination volumes an earlier pass of ``source_id`` adopted: marked, or ``volume_id``."""
    found = {
        v.id: v
        for v in conn.block_storage.volumes(all_projects=True, details=True)
        if marks(v.metadata, source_id)
    }
    if volume_id and volume_id not in found:
        volume = conn.block_storage.find_volume(volume_id, ignore_missing=True, all_projects=True)
        if volume is not None:
            found[volume.id] = volume
    return list(found.values())


#: Statuses a volume leaves by itself; a delete must wait them out (Cinder refuses it).
SETTLING = ("creating", "extending", "downloading", "reserved", "attaching", "detaching")

#: A delete Cinder gave up (the RBD image still had a watcher: a writer killed -9 keeps
#: its watch for ``osd_client_watch_timeout``, 30 s) is asked again, this many times,
#: this far apart (s).
DELETE_TRIES = 3
DELETE_PAUSE = 15.0


def delete_volume(ctx: PassContext, volume: Any) -> None:
    """Delete a destination volume left by an interrupted pass and wait until it is gone.

    A volume in a status it leaves by itself (``creating``...) is waited for first. A
    pass killed between a hand-over's transfer and its accept left the volume
    ``awaiting-transfer``, which Cinder will not delete: the transfer goes first. When
    Cinder gives a delete up (the volume comes back ``available`` or ``error_deleting``,
    e.g. its RBD image still watched by a killed writer), it is asked again.
    """
    try:
        delete_and_wait(ctx.destination_conn, volume)
    except sdk_exc.SDKException as exc:
        raise ConflictError(
            f"{ctx.source.label}: cannot replace destination volume {volume.id} left by an "
            f"interrupted pass ({exc}); delete it by hand and re-run"
        ) from exc


def delete_and_wait(conn: Any, volume: Any) -> None:
    """:func:`delete_volume`'s work: ``SDKException`` when Cinder will not let it go."""
    volume = _settled(conn, volume)
    if volume is None:
        return
    if volume.status == "awaiting-transfer":
        for transfer in conn.block_storage.transfers(details=True, all_projects=True):
            if transfer.volume_id == volume.id:
                conn.block_storage.delete_transfer(transfer, ignore_missing=True)
        conn.block_storage.wait_for_status(
            volume, "available", interval=POLL_INTERVAL, wait=CINDER_WAIT
        )
    for _ in range(DELETE_TRIES):
        conn.block_storage.delete_volume(volume, ignore_missing=True)
        if _gone(conn, volume.id):
            return
        time.sleep(DELETE_PAUSE)
    raise sdk_exc.SDKException(f"Cinder gave the delete up {DELETE_TRIES} times")


def _settled(conn: Any, volume: Any) -> Any | None:
    """``volume`` once out of the :data:`SETTLING` statuses (None: it went away)."""
    deadline = time.monotonic() + CINDER_WAIT
    while True:
        found = conn.block_storage.find_volume(volume.id, ignore_missing=True, all_projects=True)
        if found is None or found.status == "deleting" and _gone(conn, volume.id):
            return None
        if found.status not in SETTLING or time.monotonic() > deadline:
            return found
        time.sleep(POLL_INTERVAL)


def _gone(conn: Any, volume_id: str) -> bool:
    """Wait for a deleting volume to go: True once gone, False when Cinder gave it up."""
    deadline = time.monotonic() + CINDER_WAIT
    while time.monotonic() < deadline:
        found = conn.block_storage.find_volume(volume_id, ignore_missing=True, all_projects=True)
        if found is None:
            return True
        if found.status in ("available", "error_deleting", "error"):
            return False
        time.sleep(POLL_INTERVAL)
    return False


def refuse_encrypted_type(ctx: PassContext) -> None:
    """CapabilityError when the destination volume type encrypts: Cinder would create the
    copy with a LUKS header under a new key, which no byte copy of the source can fill."""
    name = ctx.destination_type
    if not name:
        return
    conn = ctx.destination_conn
    found = conn.block_storage.find_type(name, ignore_missing=True)
    if found is None:
        return  # Cinder's create names the missing type
    try:
        encryption = conn.block_storage.get_type_encryption(found.id)
    except sdk_exc.NotFoundException:
        return
    if getattr(encryption, "provider", None) or getattr(encryption, "encryption_id", None):
        raise CapabilityError(
            f"{ctx.source.label}: destination volume type {name!r} is encrypted; a copy of "
            "the bytes cannot be opened with the key Cinder would make: map the source type "
            "to a type without encryption (--type-map)"
        )


def _create(conn: Any, ctx: PassContext, size_gib: int) -> str:
    """Have ``conn``'s Cinder create an empty volume of ``size_gib`` with the source's fields
    (in the project of ``conn``'s token); its ID once available. A refusal (403) is raised
    as it is; any other SDK error becomes a one-line ConflictError."""
    src = ctx.source
    try:
        volume = conn.block_storage.create_volume(
            size=size_gib,
            name=src.name or None,
            description=src.description,
            volume_type=ctx.destination_type,
            metadata={**src.metadata, MARKER: src.id},
        )
        volume = conn.block_storage.wait_for_status(
            volume, "available", failures=["error"], interval=POLL_INTERVAL, wait=CINDER_WAIT
        )
    except sdk_exc.ForbiddenException:
        raise
    except sdk_exc.SDKException as exc:
        raise ConflictError(
            f"{src.label}: the destination Cinder could not create its {size_gib} GiB copy "
            f"({exc}); check the destination quota, volume type and cinder-volume log, then "
            "re-run"
        ) from exc
    return str(volume.id)


def create(ctx: PassContext, *, method: str, size_gib: int | None = None) -> tuple[str, bool]:
    """Create the source's empty copy in the destination project (``size_gib``: the
    source's size unless its backend object is larger): the volume's ID, and whether it had
    to be handed over. Its bootable flag is set by :func:`sync_volume_fields` once the
    bytes are in.

    Right in the project when the user's connection scoped there
    (``ctx.destination_project_conn``) may create volumes, else by the admin and moved
    with :func:`hand_over`, unless the admin's own project is the destination. A hand-over
    costs a volume transfer, a token for the project and a role-assignment listing: 1.8 s
    of the 2.5 s of Cinder calls of a 1 GiB rbd pass on the testbed.
    """
    size = max(ctx.source.size_gib, size_gib or 0)
    admin_project = ctx.destination_conn.current_project_id == ctx.destination_project_id
    if not admin_project and ctx.destination_project_conn is not None:
        try:
            return _create(ctx.destination_project_conn, ctx, size), False
        except sdk_exc.ForbiddenException:
            pass
    try:
        volume_id = _create(ctx.destination_conn, ctx, size)
    except sdk_exc.ForbiddenException as exc:
        raise ConflictError(
            f"{ctx.source.label}: the destination Cinder refuses to create volumes for your "
            f"user ({exc}); use credentials with the admin role"
        ) from exc
    if not admin_project:
        hand_over(ctx, volume_id, method=method)
    return volume_id, not admin_project


def role_grant(ctx: PassContext, *, method: str, user: str, role: str) -> Temporary:
    """The temporary that stands for ``role`` granted to ``user`` on the destination project."""
    project = ctx.destination_project_id
    return Temporary(
        method=method,
        kind="role-assignment",
        cloud=ctx.destination_cloud,
        name=f"{user}:{project}:{role}",
        details={"user": user, "project": project, "role": role},
    )


def hand_over(ctx: PassContext, volume_id: str, *, method: str) -> None:
    """Move ``volume_id`` into the destination project with a volume transfer."""
    conn = ctx.destination_conn
    project = ctx.destination_project_id
    user = conn.current_user_id
    grant: Temporary | None = None
    if not list(conn.identity.role_assignments(user_id=user, scope_project_id=project)):
        role = conn.identity.find_role("member", ignore_missing=False)
        grant = role_grant(ctx, method=method, user=user, role=role.id)
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
            f"{ctx.source.label}: its copy {volume_id} is in your own project, not yet in "
            f"project {project} ({exc}); check the destination quota, then re-run (it "
            "replaces that copy)"
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
    """Carry name, description, metadata and the bootable flag over again (a later pass).

    Only what differs is written: an unchanged volume costs one GET.
    """
    conn = ctx.destination_conn
    src = ctx.source
    volume = conn.block_storage.get_volume(volume_id)
    if (volume.name or "") != (src.name or "") or volume.description != src.description:
        conn.block_storage.update_volume(volume, name=src.name, description=src.description)
    wanted = {**src.metadata, MARKER: src.id}
    current = dict(volume.metadata or {})
    if any(current.get(k) != v for k, v in wanted.items()):
        conn.block_storage.set_volume_metadata(volume, **wanted)
    if bool(volume.is_bootable) != src.bootable:
        conn.block_storage.set_volume_bootable_status(volume, src.bootable)
