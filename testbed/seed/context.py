"""What every seeding step shares: the connections to one cloud, name lookups, the tally.

A step finds each object first and creates it only when missing, and tells the
tally which of the two happened: the tally makes a second run say "nothing to
do" instead of guessing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import openstack.connection

from testbed import layout
from testbed.seed import inventory as inv

Report = Callable[[str], None]


@dataclass
class Tally:
    """Counts, per kind, objects created, updated and found already right (thread-safe)."""

    report: Report
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    present: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def made(self, cloud: str, kind: str, what: str) -> None:
        with self._lock:
            self.created[kind] += 1
        self.report(f"  {cloud}: created {kind} {what}")

    def changed(self, cloud: str, kind: str, what: str) -> None:
        with self._lock:
            self.updated[kind] += 1
        self.report(f"  {cloud}: updated {kind} {what}")

    def found(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.present[kind] += n

    @property
    def changes(self) -> int:
        return sum(self.created.values()) + sum(self.updated.values())


def admin_connection(c: layout.CloudLayout) -> openstack.connection.Connection:
    """openstacksdk as ``admin`` of cloud ``c`` (scoped to the ``admin`` project)."""
    return openstack.connection.Connection(
        auth_url=c.keystone_url,
        username="admin",
        password=layout.ADMIN_PASSWORD,
        project_name=inv.ADMIN_PROJECT,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name=layout.REGION,
        identity_api_version="3",
    )


@dataclass
class Directory:
    """IDs by name of one cloud's domains, projects and users, loaded by three listings.

    Shared by every context of one cloud, so each thread does not look names up again.
    """

    domains: dict[str, str] = field(default_factory=dict)
    projects: dict[tuple[str, str], str] = field(default_factory=dict)  # (domain ID, name)
    users: dict[tuple[str, str], str] = field(default_factory=dict)
    loaded: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self, conn: openstack.connection.Connection) -> None:
        ident = conn.identity
        self.domains = {d.name: d.id for d in ident.domains()}
        self.projects = {(p.domain_id, p.name): p.id for p in ident.projects()}
        # One listing per domain: with domain-specific drivers (dst), an unscoped
        # listing shows only Default's users.
        users: dict[tuple[str, str], str] = {}
        for domain_id in self.domains.values():
            for u in ident.users(domain_id=domain_id):
                key = (u.domain_id, u.name)
                # src's hybrid Default holds SQL alice and the directory's alice:
                # the inventory's Default users are the SQL ones (generated hex IDs).
                if key not in users or sql_user_id(u.id):
                    users[key] = u.id
        self.users = users
        self.loaded = True


def sql_user_id(user_id: str) -> bool:
    """Keystone's SQL driver makes 32-digit hex IDs; raw LDAP IDs are the directory's uids."""
    return len(user_id) == 32 and all(c in "0123456789abcdef" for c in user_id)


@dataclass
class SeedContext:
    """One cloud as the seed sees it: admin connection, IDs by name, the tally."""

    cloud: layout.CloudLayout
    tally: Tally
    directory: Directory = field(default_factory=Directory)
    conn: openstack.connection.Connection = field(init=False)
    _actors: dict[str, openstack.connection.Connection] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.conn = admin_connection(self.cloud)

    def sibling(self) -> SeedContext:
        """A context with its own connections (for another thread), sharing IDs and tally."""
        return SeedContext(self.cloud, self.tally, self.directory)

    @property
    def name(self) -> str:
        return self.cloud.name

    def made(self, kind: str, what: str) -> None:
        self.tally.made(self.name, kind, what)

    def changed(self, kind: str, what: str) -> None:
        self.tally.changed(self.name, kind, what)

    def found(self, kind: str, n: int = 1) -> None:
        self.tally.found(kind, n)

    # -- lookups by name --------------------------------------------------------------
    def _lookup(self, pick: Callable[[Directory], str | None], what: str) -> str:
        with self.directory.lock:
            if not self.directory.loaded:
                self.directory.load(self.conn)
            found = pick(self.directory)
            if found is None:  # created since the listing: list again, once
                self.directory.load(self.conn)
                found = pick(self.directory)
        if found is None:
            raise KeyError(f"{self.name}: no {what}")
        return found

    def domain_id(self, name: str) -> str:
        if name == "Default":
            return "default"
        return self._lookup(lambda d: d.domains.get(name), f"domain {name}")

    def project_id(self, name: str) -> str:
        domain = next((p.domain for p in inv.PROJECTS if p.name == name), "Default")
        domain_id = self.domain_id(domain)
        return self._lookup(lambda d: d.projects.get((domain_id, name)), f"project {name}")

    def user(self, name: str) -> inv.User:
        for u in inv.USERS:
            if u.name == name:
                return u
        raise KeyError(f"user {name!r} is not in the seed inventory")

    def user_id(self, name: str) -> str:
        domain_id = self.domain_id(self.user(name).domain_on(self.name))
        return self._lookup(lambda d: d.users.get((domain_id, name)), f"user {name}")

    def has_project(self, name: str) -> bool:
        try:
            self.project_id(name)
        except KeyError:
            return False
        return True

    def ids(self) -> Directory:
        """The directory, listed now if it was not (or was forgotten)."""
        with self.directory.lock:
            if not self.directory.loaded:
                self.directory.load(self.conn)
            return self.directory

    def forget_ids(self) -> None:
        """Drop cached IDs (after identity changed, e.g. rows copied by SQL)."""
        with self.directory.lock:
            self.directory.loaded = False

    def actor(self, project: str) -> openstack.connection.Connection:
        """A connection scoped to ``project`` as its member user (see PROJECT_ACTORS).

        Cinder and Nova create volumes and servers in the caller's project; an admin
        token cannot say "in that project".
        """
        with self._lock:
            conn = self._actors.get(project)
            if conn is not None:
                return conn
        user = self.user(inv.PROJECT_ACTORS[project])
        domain = next(p.domain for p in inv.PROJECTS if p.name == project)
        conn = openstack.connection.Connection(
            auth_url=self.cloud.keystone_url,
            username=user.name,
            password=user.password,
            user_domain_name=user.domain_on(self.name),
            project_name=project,
            project_domain_name=domain,
            region_name=layout.REGION,
            identity_api_version="3",
        )
        with self._lock:
            return self._actors.setdefault(project, conn)
