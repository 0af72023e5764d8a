"""Non-default quotas for compute, network and block storage on src's projects."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from testbed.seed import inventory as inv
from testbed.seed.context import SeedContext


def seed(ctx: SeedContext) -> None:
    """Set every quota of the inventory that is not already at its value."""
    compute, network, storage = ctx.conn.compute, ctx.conn.network, ctx.conn.block_storage
    for q in inv.QUOTAS:
        pid = ctx.project_id(q.project)
        _ensure(ctx, "compute quota", q.project, compute.get_quota_set(pid), q.compute,
                partial(compute.update_quota_set, pid))
        _ensure(ctx, "network quota", q.project, network.get_quota(pid), q.network,
                partial(network.update_quota, pid))
        _ensure(ctx, "block-storage quota", q.project, storage.get_quota_set(pid),
                q.block_storage, partial(storage.update_quota_set, pid))


def _ensure(
    ctx: SeedContext,
    kind: str,
    project: str,
    current: Any,
    wanted: Mapping[str, int],
    update: Callable[..., Any],
) -> None:
    """Update only the values that differ."""
    differ = {k: v for k, v in wanted.items() if getattr(current, k) != v}
    if not differ:
        ctx.found(kind)
        return
    update(**differ)
    ctx.changed(kind, f"{project}: {', '.join(f'{k}={v}' for k, v in sorted(differ.items()))}")
