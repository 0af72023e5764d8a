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

from collections.abc import Mapping
from typing import Any

from openstack import exceptions as sdk_exc

from stackhop.errors import ConfigError, ConflictError
from stackhop.volumes.model import PassContext, Temporary

MARKER = "stackhop_source"
"""Metadata key on a copy: the source volume's ID (finds the copy of an interrupted pass)."""

CINDER_WAIT = 600
"""How long Cinder may take to create or manage a volume, delete one or accept a transfer (s)."""

POLL_INTERVAL = 0.5
"""Seconds between status polls: openstacksdk's 2 s default wastes a second per wait on
average, and a manage of an RBD image takes only a few seconds."""


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


def delete_volume(ctx: PassContext, volume: Any) -> None:
    """Delete a destination volume left by an interrupted pass and wait until it is gone.

    A pass killed between a hand-over's transfer and its accept left the volume
    ``awaiting-transfer``, which Cinder will not delete: the transfer goes first.
    """
    conn = ctx.destination_conn
    try:
        if volume.status == "awaiting-transfer":
            for transfer in conn.block_storage.transfers(details=True, all_projects=True):
                if transfer.volume_id == volume.id:
                    conn.block_storage.delete_transfer(transfer, ignore_missing=True)
            conn.block_storage.wait_for_status(
                volume, "available", interval=POLL_INTERVAL, wait=CINDER_WAIT
            )
        conn.block_storage.delete_volume(volume, ignore_missing=True)
        conn.block_storage.wait_for_delete(volume, interval=POLL_INTERVAL, wait=CINDER_WAIT)
    except sdk_exc.SDKException as exc:
        raise ConflictError(
            f"{ctx.source.label}: cannot replace destination volume {volume.id} left by an "
            f"interrupted pass ({exc}); delete it by hand and re-run"
        ) from exc


def _create(conn: Any, ctx: PassContext) -> str:
    """Have ``conn``'s Cinder create an empty volume with the source's size and fields (in
    the project of ``conn``'s token); its ID once available. A refusal (403) is raised as
    it is; any other SDK error becomes a one-line ConflictError."""
    src = ctx.source
    try:
        volume = conn.block_storage.create_volume(
            size=src.size_gib,
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
            f"{src.label}: the destination Cinder could not create its {src.size_gib} GiB copy "
            f"({exc}); check the destination quota, volume type and cinder-volume log, then "
            "re-run"
        ) from exc
    return str(volume.id)


def create(ctx: PassContext, *, method: str) -> tuple[str, bool]:
    """Create the source's empty copy in the destination project: the volume's ID, and
    whether it had to be handed over. Its bootable flag is set by
    :func:`sync_volume_fields` once the bytes are in.

    Right in the project when the user's connection scoped there
    (``ctx.destination_project_conn``) may create volumes, else by the admin and moved
    with :func:`hand_over`, unless the admin's own project is the destination. A hand-over
    costs a volume transfer, a token for the project and a role-assignment listing: 1.8 s
    of the 2.5 s of Cinder calls of a 1 GiB rbd pass on the testbed.
    """
    admin_project = ctx.destination_conn.current_project_id == ctx.destination_project_id
    if not admin_project and ctx.destination_project_conn is not None:
        try:
            return _create(ctx.destination_project_conn, ctx), False
        except sdk_exc.ForbiddenException:
            pass
    try:
        volume_id = _create(ctx.destination_conn, ctx)
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
