"""Domains, projects, users and role assignments: through Keystone's API on src, by an
upgrade-style copy of Keystone's tables on dst.

Keystone's API always picks a new project ID, yet a migration assumes the
projects of src and dst have equal IDs, as after a database upgrade. So dst
gets its ``ldap`` domain, its projects and its Default-domain SQL users as
copies of src's rows (same MariaDB server: ``INSERT INTO dst_keystone.t SELECT
... FROM src_keystone.t``). The directory's people are never created: both
Keystones read them from slapd (src as users of Default with their raw LDAP
IDs, dst as users of ``ldap_users`` with generated IDs — the SOC6 -> SOC7
move). Role assignments go through the API on both clouds (role IDs differ per
cloud; names do not; a person's ID differs too).
"""

from __future__ import annotations

from testbed.infra.mariadb import sql
from testbed.seed import inventory as inv
from testbed.seed.context import SeedContext, sql_user_id


def seed_src(ctx: SeedContext) -> None:
    """Create the inventory's identity objects on src through the API."""
    ident = ctx.conn.identity
    for d in inv.DOMAINS:
        if d.name == "Default":
            continue
        if d.name in ctx.ids().domains:
            ctx.found("domain")
            continue
        ident.create_domain(name=d.name, description=d.description)
        ctx.made("domain", d.name)
        ctx.forget_ids()
    for p in inv.PROJECTS:
        domain_id = ctx.domain_id(p.domain)
        if (domain_id, p.name) in ctx.ids().projects:
            ctx.found("project")
            continue
        ident.create_project(name=p.name, domain_id=domain_id, description=p.description)
        ctx.made("project", f"{p.domain}/{p.name}")
    ctx.forget_ids()
    _retire_sql_people(ctx)
    for u in inv.USERS:
        if not u.person:
            _ensure_user_by_api(ctx, u)
    ctx.forget_ids()
    _ensure_roles(ctx, inv.USERS)


def seed_dst(ctx: SeedContext, src: SeedContext) -> None:
    """Give dst the same projects (same IDs) and users (ldap ones with new IDs) as src."""
    domains = {src.domain_id(d.name): d.name for d in inv.DOMAINS if d.name != "Default"}
    projects = {src.project_id(p.name): p.name for p in inv.PROJECTS}
    # Domains are rows of the project table too (is_domain = 1): copy them first.
    for kind, names in (("domain", domains), ("project", projects)):
        copied = _copy_rows(src, ctx, "project", list(names))
        for new_id in copied:
            ctx.made(kind, f"{names[new_id]} (copied from src with its ID {new_id})")
        ctx.found(kind, len(names) - len(copied))
    copied_users = [u for u in inv.USERS if u.on_dst and u.same_id_on_dst]
    user_ids = [src.user_id(u.name) for u in copied_users]
    new_users = _copy_users(src, ctx, user_ids)
    for u in copied_users:
        if src.user_id(u.name) in new_users:
            ctx.made("user", f"{u.domain}/{u.name} (copied from src with its ID)")
        else:
            ctx.found("user")
    ctx.forget_ids()
    _retire_sql_people(ctx)
    for u in inv.USERS:
        if u.on_dst and not u.same_id_on_dst and not u.person:
            _ensure_user_by_api(ctx, u)
    _ensure_roles(ctx, [u for u in inv.USERS if u.on_dst])


# -- API --------------------------------------------------------------------------------


def _retire_sql_people(ctx: SeedContext) -> None:
    """Delete the SQL stand-ins of the directory's people that older testbeds seeded.

    Before issue 21 the testbed had no directory and made ``lina``, ``leo``, ...
    SQL users of the ``ldap`` domain. A testbed seeded then keeps them (and their
    keypairs) until this removes them; on a new testbed it finds nothing.
    """
    if "ldap" not in ctx.ids().domains:
        return
    people = {u.name for u in inv.USERS if u.person}
    domain_id = ctx.domain_id("ldap")
    stand_ins = [(name, uid) for (d, name), uid in ctx.ids().users.items()
                 if d == domain_id and name in people]
    for name, uid in stand_ins:
        for kp in ctx.conn.compute.keypairs(user_id=uid):
            ctx.conn.compute.delete_keypair(kp, user_id=uid)
        ctx.conn.identity.delete_user(uid)
        ctx.changed("user", f"ldap/{name} removed (now a person of the directory)")
    if stand_ins:
        ctx.forget_ids()


def _ensure_user_by_api(ctx: SeedContext, u: inv.User) -> None:
    domain_id = ctx.domain_id(u.domain)
    found = ctx.ids().users.get((domain_id, u.name))
    # src's hybrid Default also lists the directory's alice: only an SQL user is ours.
    if found is not None and sql_user_id(found):
        ctx.found("user")
        return
    first_project = u.roles[0][0]
    extra = {"email": u.email} if u.email else {}
    ctx.conn.identity.create_user(
        name=u.name, domain_id=domain_id, password=u.password,
        default_project_id=ctx.project_id(first_project), **extra,
    )
    ctx.made("user", f"{u.domain}/{u.name}")


def _ensure_roles(ctx: SeedContext, users: list[inv.User] | tuple[inv.User, ...]) -> None:
    ident = ctx.conn.identity
    role_ids = {r.name: r.id for r in ident.roles()}
    # One listing of every assignment: cheaper than one per user.
    have = {
        (a.user["id"], a.scope["project"]["id"], a.role["id"])
        for a in ident.role_assignments()
        if a.user and "project" in (a.scope or {})
    }
    for u in users:
        uid = ctx.user_id(u.name)
        for project, role in u.roles:
            pid = ctx.project_id(project)
            if (uid, pid, role_ids[role]) in have:
                ctx.found("role assignment")
                continue
            ident.assign_project_role_to_user(pid, uid, role_ids[role])
            ctx.made("role assignment", f"{u.name} {role} on {project}")


# -- SQL copy (dst only) ------------------------------------------------------------------


def _db(ctx: SeedContext) -> str:
    return ctx.cloud.db_name("keystone")


def _id_list(ids: list[str]) -> str:
    for i in ids:
        if not i.isalnum():  # Keystone IDs are hex; never paste anything else into SQL
            raise ValueError(f"unexpected Keystone ID {i!r}")
    return ", ".join(f"'{i}'" for i in ids)


def _missing(db: str, table: str, column: str, ids: list[str]) -> list[str]:
    if not ids:
        return []
    have = set(sql(f"SELECT `{column}` FROM `{table}` WHERE `{column}` IN ({_id_list(ids)})",
                   database=db).split())
    return [i for i in ids if i not in have]


def _copy_rows(src: SeedContext, dst: SeedContext, table: str, ids: list[str]) -> list[str]:
    """Copy the rows of ``table`` with these IDs from src's database to dst's; return new IDs."""
    todo = _missing(_db(dst), table, "id", ids)
    if todo:
        # Same Keystone version on both clouds: identical table layouts, so SELECT * fits.
        sql(f"INSERT INTO `{_db(dst)}`.`{table}` SELECT * FROM `{_db(src)}`.`{table}` "
            f"WHERE id IN ({_id_list(todo)})")
    return todo


def _columns(db: str, table: str) -> list[str]:
    out = sql("SELECT COLUMN_NAME FROM information_schema.COLUMNS "
              f"WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION")
    return out.split()


def _copy_users(src: SeedContext, dst: SeedContext, user_ids: list[str]) -> list[str]:
    """Copy users with their IDs: ``user``, ``local_user`` and ``password`` rows.

    ``local_user`` and ``password`` have auto-increment keys of their own: those
    are left to dst's database, and ``password`` rows are re-pointed at the new
    ``local_user`` rows by user ID. Password hashes are portable, so every copied
    user logs in on dst with the same password.
    """
    s, d = _db(src), _db(dst)
    todo = _missing(d, "user", "id", user_ids)
    if not todo:
        return []
    ids = _id_list(todo)
    local_cols = [c for c in _columns(s, "local_user") if c != "id"]
    password_cols = [c for c in _columns(s, "password") if c not in ("id", "local_user_id")]
    lc = ", ".join(f"`{c}`" for c in local_cols)
    pc = ", ".join(f"`{c}`" for c in password_cols)
    spc = ", ".join(f"sp.`{c}`" for c in password_cols)
    # One statement batch in one session: all three tables, or (on error) the client stops.
    sql(
        "START TRANSACTION; "
        f"INSERT INTO `{d}`.`user` SELECT * FROM `{s}`.`user` WHERE id IN ({ids}); "
        f"INSERT INTO `{d}`.`local_user` ({lc}) SELECT {lc} FROM `{s}`.`local_user` "
        f"WHERE user_id IN ({ids}); "
        f"INSERT INTO `{d}`.`password` (`local_user_id`, {pc}) SELECT dl.id, {spc} "
        f"FROM `{s}`.`password` sp JOIN `{s}`.`local_user` sl ON sp.local_user_id = sl.id "
        f"JOIN `{d}`.`local_user` dl ON dl.user_id = sl.user_id WHERE sl.user_id IN ({ids}); "
        "COMMIT"
    )
    return todo

