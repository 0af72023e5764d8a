"""The seeded project ``beta`` on dst, as the ``project migrate`` test and its chaos run see it.

:func:`dst_state` lists beta's volumes and security groups on dst directly (openstacksdk,
never stackhop); :func:`admin_role_in` gives dst's ``admin`` user the admin role in a
project for the duration (Cinder creates and manages a volume in the token's project, so
the operator grants themselves a role in the destination project first, as the preflight
says) and revokes it afterwards only when it was granted here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def dst_state(dst: Any, project_id: str) -> dict[str, list[str]]:
    """The names of the volumes and security groups of ``project_id`` on ``dst``."""
    volumes = [
        v.name
        for v in dst.block_storage.volumes(details=True, all_projects=True, project_id=project_id)
        if v.project_id == project_id
    ]
    groups = [g.name for g in dst.network.security_groups(project_id=project_id)]
    return {"volumes": sorted(volumes), "groups": sorted(groups)}


@contextlib.contextmanager
def admin_role_in(dst: Any, project: str) -> Iterator[None]:
    """dst's ``admin`` user holds the admin role in ``project`` (a name in Default) meanwhile."""
    user = dst.identity.find_user("admin", domain_id="default")
    role = dst.identity.find_role("admin")
    project_id = str(dst.identity.find_project(project, domain_id="default").id)
    had = any(
        True
        for _ in dst.identity.role_assignments(
            user_id=user.id, scope_project_id=project_id, role_id=role.id
        )
    )
    if not had:
        dst.identity.assign_project_role_to_user(project_id, user, role)
    try:
        yield
    finally:
        if not had:
            dst.identity.unassign_project_role_from_user(project_id, user, role)
