"""Servers on fake compute, the attached volume, and a usage history spanning months.

Servers are created by their project's member user, all at once, then the ones
the inventory marks as gone are deleted. A seed cannot wait months, so each
server's life is then backdated in Nova's cell database (``launched_at``,
``created_at``; ``terminated_at``, ``deleted_at`` for deleted ones):
os-simple-tenant-usage computes usage from exactly those columns, so the
usage history looks as if the servers had lived at the inventory's dates.
"""

from __future__ import annotations

import re
from typing import Any

from testbed.infra.mariadb import sql
from testbed.openstack.nova import CELL1_DB
from testbed.seed import inventory as inv
from testbed.seed.context import SeedContext

WAIT = 180


def _named(ctx: SeedContext, s: inv.Server, deleted: bool) -> list[Any]:
    pid = ctx.project_id(s.project)
    query: dict[str, Any] = {"all_projects": True, "project_id": pid,
                             "name": f"^{re.escape(s.name)}$"}
    if deleted:
        query["deleted_only"] = True
    return [x for x in ctx.conn.compute.servers(**query) if x.name == s.name]


def seed(ctx: SeedContext, image_ids: dict[str, str], volume_ids: dict[str, str]) -> None:
    """Ensure servers (live and gone), the attachment, and the backdated history."""
    compute = ctx.conn.compute
    flavors = {f.name: f.id for f in compute.flavors()}
    started: dict[str, Any] = {}
    server_ids: dict[str, str] = {}
    for s in inv.SERVERS:
        live = _named(ctx, s, deleted=False)
        if len(live) > 1:
            raise RuntimeError(f"{ctx.name}: {len(live)} servers named {s.name} in {s.project}")
        if s.deleted and not live:
            gone = _named(ctx, s, deleted=True)
            if gone:
                ctx.found("server")
                server_ids[s.name] = gone[0].id
                continue
        if live:
            if not s.deleted:
                ctx.found("server")
            server_ids[s.name] = live[0].id
            started[s.name] = live[0]
            continue
        made = ctx.actor(s.project).compute.create_server(
            name=s.name, image_id=image_ids[s.image], flavor_id=flavors[s.flavor],
            networks="none",
        )
        ctx.made("server", f"{s.project}/{s.name}")
        server_ids[s.name] = made.id
        started[s.name] = made
    for s in inv.SERVERS:
        if s.name not in started:
            continue
        server = started[s.name]
        if server.status != "ACTIVE":
            server = compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                             interval=1, wait=WAIT)
        if s.deleted:
            compute.delete_server(server)
        started[s.name] = server
    for s in inv.SERVERS:
        if s.deleted and s.name in started:
            compute.wait_for_delete(started[s.name], interval=1, wait=WAIT)
            ctx.made("server deletion", f"{s.project}/{s.name}")
    _ensure_attachments(ctx, server_ids, volume_ids)
    _backdate(ctx, server_ids)


def _ensure_attachments(
    ctx: SeedContext, server_ids: dict[str, str], volume_ids: dict[str, str]
) -> None:
    storage = ctx.conn.block_storage
    for v in inv.VOLUMES:
        if not v.attached_to:
            continue
        server_id = server_ids[v.attached_to]
        vol = storage.get_volume(volume_ids[v.name])
        if any(a.get("server_id") == server_id for a in vol.attachments or []):
            ctx.found("volume attachment")
            continue
        ctx.actor(v.project).compute.create_volume_attachment(server_id, volume_id=vol.id)
        storage.wait_for_status(vol, "in-use", failures=["error", "error_attaching"],
                                interval=1, wait=WAIT)
        ctx.made("volume attachment", f"{v.name} on {v.attached_to}")


def _sql_time(iso: str | None) -> str:
    return "NULL" if iso is None else "'" + iso.replace("T", " ") + "'"


def _backdate(ctx: SeedContext, server_ids: dict[str, str]) -> None:
    db = ctx.cloud.db_name(CELL1_DB)
    for s in inv.SERVERS:
        uuid = server_ids[s.name]
        if not re.fullmatch(r"[0-9a-f-]{36}", uuid):
            raise ValueError(f"unexpected server ID {uuid!r}")
        row = sql(f"SELECT launched_at, terminated_at FROM instances WHERE uuid = '{uuid}'",
                  database=db).strip().split("\t")
        wanted = [s.launched_at.replace("T", " "), (s.terminated_at or "NULL").replace("T", " ")]
        if row == wanted:
            ctx.found("usage history")
            continue
        launched = _sql_time(s.launched_at)
        sets = [f"launched_at = {launched}", f"created_at = {launched}"]
        if s.deleted:
            ended = _sql_time(s.terminated_at)
            sets += [f"terminated_at = {ended}", f"deleted_at = {ended}"]
        sql(f"UPDATE instances SET {', '.join(sets)} WHERE uuid = '{uuid}'", database=db)
        ctx.changed("usage history", f"{s.name}: {s.launched_at} .. {s.terminated_at or 'now'}")
