"""Security groups and their rules (src's inventory, and the group pre-existing on dst).

Security groups are not unique by name (alpha has two called ``web``), so each
seeded group carries its inventory key in its description, ``[seed:alpha/web-1]``,
and is found by name and that stamp. Rules are compared by what they match
(direction, ethertype, protocol, ports, remote prefix or group): only missing
ones are created, all of one group in a single bulk request.
"""

from __future__ import annotations

from typing import Any

from testbed.seed import inventory as inv
from testbed.seed.context import SeedContext

RuleKey = tuple[str, str, str | None, int | None, int | None, str | None, str | None]


def rule_key(rule: Any) -> RuleKey:
    """The identity of a Neutron rule (an openstacksdk SecurityGroupRule or its dict)."""
    get = rule.get if isinstance(rule, dict) else lambda k: getattr(rule, k)
    return (
        get("direction"), get("ethertype"), get("protocol"),
        get("port_range_min"), get("port_range_max"),
        get("remote_ip_prefix"), get("remote_group_id"),
    )


#: Protocols whose full port range 1-65535 Neutron stores as "any port" (no range).
FULL_RANGE_PROTOCOLS = frozenset({"tcp", "udp", "dccp", "sctp", "udplite"})


def wanted_key(rule: inv.Rule, group_ids: dict[str, str]) -> RuleKey:
    """The identity Neutron will give an inventory rule once created."""
    remote_group = group_ids[rule.remote_group] if rule.remote_group else None
    ports: tuple[int | None, int | None] = (rule.port_min, rule.port_max)
    if rule.protocol in FULL_RANGE_PROTOCOLS and ports == (1, 65535):
        ports = (None, None)
    return (rule.direction, rule.ethertype, rule.protocol, *ports, rule.remote_ip_prefix,
            remote_group)


def seed(ctx: SeedContext, cloud: str) -> None:
    """Ensure every group of ``cloud`` in the inventory, then every rule of them."""
    groups = inv.on(cloud, inv.SECURITY_GROUPS)
    ids: dict[str, str] = {}
    existing: dict[str, list[Any]] = {}
    for project in sorted({g.project for g in groups}):
        pid = ctx.project_id(project)
        # Listing with a project filter makes Neutron create that project's default group.
        have = list(ctx.conn.network.security_groups(project_id=pid))
        for g in (g for g in groups if g.project == project):
            match = [s for s in have if _is(s, g)]
            if len(match) > 1:
                raise RuntimeError(f"{ctx.name}: {len(match)} security groups match {g.key}")
            if match:
                ctx.found("security group")
                ids[g.key] = match[0].id
                existing[g.key] = list(match[0].security_group_rules or [])
                continue
            made = ctx.conn.network.create_security_group(
                name=g.name, description=g.stamped_description, project_id=pid
            )
            ctx.made("security group", f"{g.key} ({g.name})")
            ids[g.key] = made.id
            existing[g.key] = list(made.security_group_rules or [])
    for g in groups:
        have_keys = {rule_key(r) for r in existing[g.key]}
        todo = [r for r in g.rules if wanted_key(r, ids) not in have_keys]
        ctx.found("security group rule", len(g.rules) - len(todo))
        if not todo:
            continue
        body = [_rule_body(r, ids[g.key], ids, ctx.project_id(g.project)) for r in todo]
        list(ctx.conn.network.create_security_group_rules(body))
        for r in todo:
            ctx.made("security group rule", f"{g.key}: {r.description or r}")


def _is(sg: Any, g: inv.SecurityGroup) -> bool:
    if g.name == "default":
        return bool(sg.name == "default")
    return bool(sg.name == g.name and sg.description == g.stamped_description)


def _rule_body(r: inv.Rule, group_id: str, ids: dict[str, str], project_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "security_group_id": group_id,
        "project_id": project_id,
        "direction": r.direction,
        "ethertype": r.ethertype,
        "description": r.description,
    }
    optional = {
        "protocol": r.protocol,
        "port_range_min": r.port_min,
        "port_range_max": r.port_max,
        "remote_ip_prefix": r.remote_ip_prefix,
        "remote_group_id": ids[r.remote_group] if r.remote_group else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body
