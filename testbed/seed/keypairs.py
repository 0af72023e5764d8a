"""Keypairs of many users, created by admin for each user (compute microversion 2.10)."""

from __future__ import annotations

from testbed.seed import inventory as inv
from testbed.seed.context import SeedContext


class KeypairMismatch(RuntimeError):
    """A keypair of the inventory exists with another public key."""


def seed(ctx: SeedContext, cloud: str) -> None:
    """Ensure the keypairs of ``cloud``.

    A keypair's key cannot be changed in place, so a mismatch is an error.
    """
    compute = ctx.conn.compute
    have: dict[str, dict[str, str]] = {}
    for k in inv.on(cloud, inv.KEYPAIRS):
        uid = ctx.user_id(k.user)
        if uid not in have:
            have[uid] = {kp.name: kp.public_key for kp in compute.keypairs(user_id=uid)}
        found = have[uid].get(k.name)
        if found is None:
            compute.create_keypair(name=k.name, public_key=k.public_key, type="ssh", user_id=uid)
            ctx.made("keypair", f"{k.user}/{k.name} ({k.key_type})")
        elif found.strip() != k.public_key:
            raise KeypairMismatch(
                f"{ctx.name}: keypair {k.name} of {k.user} holds another key; delete it "
                f"(openstack keypair delete --user {uid} {k.name}) and seed again"
            )
        else:
            ctx.found("keypair")
