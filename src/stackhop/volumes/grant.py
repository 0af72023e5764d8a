"""``--grant-role ROLE``: the operator's user holds ROLE in the destination project for a run.

Cinder creates (and manages) a volume in the project of the token, so the
operator's user needs a role in the destination project. With ``--grant-role``
stackhop gives it for the run and takes it back at its end. The grant is a
temporary like a snapshot: journaled (``volume.temporary``, kind ``role``)
before it is made, so a run killed in between leaves it to ``volumes cleanup
--run``; and a role the user already held is never granted nor removed.
"""

from __future__ import annotations

from typing import Any

from stackhop.errors import ConfigError
from stackhop.volumes.model import Temporary

METHOD = "grant"
KIND = "role"


def _role(conn: Any, name: str, cloud: str) -> Any:
    role = conn.identity.find_role(name, ignore_missing=True)
    if role is None:
        raise ConfigError(f"--grant-role {name}: cloud {cloud!r} has no role {name!r}")
    return role


def holds(conn: Any, user_id: str, project_id: str, role_id: str) -> bool:
    """Whether the user holds the role in the project directly (not through a group)."""
    found = conn.identity.role_assignments(
        user_id=user_id, scope_project_id=project_id, role_id=role_id
    )
    return any(True for _ in found)


def needed_grant(conn: Any, cloud: str, project_id: str, role_name: str) -> Temporary | None:
    """The grant a run must make, or None when the user already holds the role."""
    role = _role(conn, role_name, cloud)
    user_id = str(conn.current_user_id)
    if holds(conn, user_id, project_id, role.id):
        return None
    return Temporary(
        METHOD,
        KIND,
        cloud,
        f"{role_name}@{project_id}",
        {"user_id": user_id, "project_id": project_id, "role_id": str(role.id)},
    )


def grant(conn: Any, temporary: Temporary) -> None:
    d = temporary.details
    conn.identity.assign_project_role_to_user(d["project_id"], d["user_id"], d["role_id"])


def revoke(conn: Any, temporary: Temporary) -> None:
    """Take the role back (a role already gone is fine)."""
    d = temporary.details
    if holds(conn, d["user_id"], d["project_id"], d["role_id"]):
        conn.identity.unassign_project_role_from_user(
            d["project_id"], d["user_id"], d["role_id"]
        )
