"""Everything ``python -m testbed seed`` creates, declared as data.

The seed reads this module to know what to make; the functional tests read it
to know what must exist, and docs/seed.md documents it. Change the inventory
here, and both follow. Names are the identities: every object is looked up by
them (plus project, user or a stamp where names repeat) before anything is
created, which is what makes the seed re-runnable.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from testbed import layout
from testbed.infra import ldap_directory
from testbed.seed.content import GIB, Dense, Pattern, padded_chunks, sha256_of
from testbed.seed.public_keys import PUBLIC_KEYS

SRC = "src"
DST = "dst"
ADMIN_PROJECT = "admin"

# -- identity -------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    name: str
    description: str


@dataclass(frozen=True)
class Project:
    name: str
    domain: str
    description: str


@dataclass(frozen=True)
class User:
    """A user; ``roles`` are (project, role) pairs. ``on_dst`` False: a src-only user.

    ``person``: one of the LDAP directory's people (issue 21), not a Keystone SQL
    user. The seed never creates a person: src's Keystone (the hybrid shape) shows
    them as users of ``Default`` under their raw LDAP ID (``uid``, here equal to
    the name), dst's as users of the domain-specific LDAP domain ``ldap_users``
    under IDs Keystone generates. They log in with their directory password.
    """

    name: str
    domain: str
    roles: tuple[tuple[str, str], ...]
    on_dst: bool = True
    email: str = ""
    person: bool = False

    @property
    def password(self) -> str:
        if self.person:
            return ldap_directory.password(self.name)
        return f"{self.name}-seed-pw"

    @property
    def same_id_on_dst(self) -> bool:
        """SQL users of Default keep their ID on dst (an upgrade); people get a generated one."""
        return not self.person and self.domain == "Default"

    def domain_on(self, cloud: str) -> str:
        """The user's domain on ``cloud`` (people change domain between the two shapes)."""
        if self.person and cloud == DST:
            return LDAP_USERS_DOMAIN
        return self.domain


#: dst's domain-specific LDAP domain (the testbed makes it at boot, see
#: testbed/openstack/keystone_ldap.py); the seed never creates it.
LDAP_USERS_DOMAIN = layout.LDAP_DOMAIN

#: ``Default`` exists from bootstrap (ID ``default``); the seed only creates ``ldap``, a
#: domain of projects (its project ``delta`` is the directory people's lab). It holds no
#: users: the people are users of Default on src and of ``ldap_users`` on dst.
DOMAINS = (
    Domain("Default", "The default domain"),
    Domain("ldap", "Projects of the LDAP directory's people"),
)

PROJECTS = (
    Project("alpha", "Default", "Web shop: the busiest tenant"),
    Project("beta", "Default", "Back office"),
    Project("gamma", "Default", "Analytics (identity and quotas only)"),
    Project("delta", "ldap", "Research lab of the LDAP users"),
)

USERS = (
    User("alice", "Default", (("alpha", "member"), ("beta", "reader")), email="alice@example.org"),
    User("bob", "Default", (("alpha", "member"),)),
    User("carol", "Default", (("alpha", "admin"), ("gamma", "member"))),
    User("dave", "Default", (("beta", "member"), ("gamma", "reader"))),
    User("erin", "Default", (("gamma", "member"),), on_dst=False),
    User("frank", "Default", (("beta", "member"),), on_dst=False),
    # The directory's people (testbed/infra/ldap_directory.py): Default on src, ldap_users on dst.
    User("lina", "Default", (("delta", "member"), ("alpha", "member")),
         email="lina@ldap.example.org", person=True),
    User("leo", "Default", (("delta", "member"),), person=True),
    User("lucy", "Default", (("delta", "reader"), ("gamma", "member")), person=True),
    User("lars", "Default", (("delta", "admin"),), person=True),
)

#: The user whose token the seed uses for what the API only does inside a project
#: (Cinder creates volumes and Nova servers in the caller's project).
PROJECT_ACTORS: Mapping[str, str] = {"alpha": "alice", "beta": "dave", "delta": "leo"}

# -- keypairs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Keypair:
    """Keypair ``name`` of ``user``; ``key`` names its public key in public_keys.py."""

    cloud: str
    user: str
    name: str
    key: str

    @property
    def public_key(self) -> str:
        return PUBLIC_KEYS[self.key]

    @property
    def key_type(self) -> str:
        return self.public_key.split()[0]


KEYPAIRS = (
    Keypair(SRC, "alice", "alice-laptop", "alice-ed"),
    Keypair(SRC, "alice", "alice-deploy", "alice-rsa"),
    Keypair(SRC, "bob", "bob-laptop", "bob-ed"),
    Keypair(SRC, "carol", "carol-deploy", "carol-rsa"),
    Keypair(SRC, "dave", "dave-laptop", "dave-ed"),
    Keypair(SRC, "dave", "dave-deploy", "dave-rsa"),
    Keypair(SRC, "erin", "erin-laptop", "erin-ed"),
    Keypair(SRC, "frank", "frank-deploy", "frank-rsa"),
    Keypair(SRC, "lina", "lina-laptop", "lina-ed"),
    Keypair(SRC, "lina", "lina-deploy", "lina-rsa"),
    Keypair(SRC, "leo", "leo-laptop", "leo-ed"),
    Keypair(SRC, "lucy", "lucy-deploy", "lucy-rsa"),
    Keypair(SRC, "lars", "lars-laptop", "lars-ed"),
    # Pre-existing on dst: same user and name as on src, another key. A migration must keep it.
    Keypair(DST, "lina", "lina-laptop", "dst-lina-ed"),
)

# -- quotas -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """Non-default quotas of one project on src, by service (openstacksdk attribute names)."""

    project: str
    compute: Mapping[str, int]
    network: Mapping[str, int]
    block_storage: Mapping[str, int]


QUOTAS = (
    Quota(
        "alpha",
        compute={"instances": 20, "cores": 40, "ram": 81920, "key_pairs": 50},
        network={"networks": 20, "subnets": 40, "ports": 200, "routers": 5, "floating_ips": 10,
                 "security_groups": 30, "security_group_rules": 300},
        block_storage={"volumes": 30, "gigabytes": 500, "snapshots": 20},
    ),
    Quota(
        "beta",
        compute={"instances": 5, "cores": 10, "ram": 10240},
        network={"security_groups": 15, "security_group_rules": 150, "floating_ips": 3},
        block_storage={"volumes": 8, "gigabytes": 80},
    ),
    Quota(
        "delta",
        compute={"instances": 8, "cores": 16, "ram": 16384, "server_groups": 4},
        network={"networks": 5, "security_groups": 12, "floating_ips": 4},
        block_storage={"volumes": 12, "gigabytes": 120, "snapshots": 6},
    ),
)

# -- security groups ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A security group rule; ``remote_group`` is the ``key`` of a group in the same project.

    For ICMP, ``port_min``/``port_max`` are the type and code (Neutron's convention).
    """

    direction: str = "ingress"
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_min: int | None = None
    port_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group: str | None = None
    description: str = ""


@dataclass(frozen=True)
class SecurityGroup:
    """A group; ``key`` tells apart groups of the same name (it is stamped in the description).

    A group named ``default`` is Neutron's own: the seed only adds ``rules`` to it.
    """

    cloud: str
    key: str
    project: str
    name: str
    description: str = ""
    rules: tuple[Rule, ...] = ()

    @property
    def stamped_description(self) -> str:
        """The description the seed writes: identifies the group among same-named ones."""
        return f"{self.description} [seed:{self.key}]"


def _tcp(
    port: int,
    to: int | None = None,
    *,
    direction: str = "ingress",
    ethertype: str = "IPv4",
    remote_ip_prefix: str | None = None,
    remote_group: str | None = None,
    description: str = "",
) -> Rule:
    return Rule(direction, ethertype, "tcp", port, to or port, remote_ip_prefix, remote_group,
                description)


SECURITY_GROUPS = (
    SecurityGroup(SRC, "alpha/default", "alpha", "default", rules=(
        _tcp(22, remote_ip_prefix="203.0.113.0/24", description="ssh from the office"),
        _tcp(22, ethertype="IPv6", remote_ip_prefix="2001:db8:100::/48",
             description="ssh from the office (v6)"),
    )),
    SecurityGroup(SRC, "alpha/web-1", "alpha", "web", "Public web front", rules=(
        _tcp(80, remote_ip_prefix="0.0.0.0/0", description="http"),
        _tcp(443, remote_ip_prefix="0.0.0.0/0", description="https"),
        _tcp(443, ethertype="IPv6", remote_ip_prefix="::/0", description="https (v6)"),
        Rule(protocol="icmp", port_min=8, port_max=0, remote_ip_prefix="10.0.0.0/8",
             description="echo request from inside"),
        Rule(ethertype="IPv6", protocol="ipv6-icmp", port_min=128, description="echo request (v6)"),
    )),
    SecurityGroup(SRC, "alpha/web-2", "alpha", "web", "Internal web (same name on purpose)", rules=(
        _tcp(8000, 8080, remote_ip_prefix="192.168.0.0/16", description="app ports"),
        Rule(protocol="udp", port_min=53, port_max=53, description="dns"),
    )),
    SecurityGroup(SRC, "alpha/db", "alpha", "db", "Databases", rules=(
        _tcp(5432, remote_group="alpha/web-1", description="postgres from web"),
        _tcp(3306, remote_group="alpha/web-2", description="mysql from internal web"),
        _tcp(5432, ethertype="IPv6", remote_group="alpha/web-1", description="postgres (v6)"),
        _tcp(1024, 65535, direction="egress", remote_ip_prefix="10.20.0.0/16",
             description="replication out"),
    )),
    SecurityGroup(SRC, "beta/ssh", "beta", "ssh", "Bastion access", rules=(
        _tcp(22, remote_ip_prefix="0.0.0.0/0", description="ssh"),
        _tcp(22, ethertype="IPv6", remote_ip_prefix="::/0", description="ssh (v6)"),
        Rule(protocol="icmp", description="any icmp"),
    )),
    SecurityGroup(SRC, "beta/mgmt", "beta", "mgmt", "Monitoring", rules=(
        _tcp(9100, 9200, remote_group="beta/ssh", description="exporters from the bastion"),
        Rule(protocol="udp", port_min=161, port_max=161, remote_ip_prefix="172.16.0.0/12",
             description="snmp"),
        Rule(protocol="icmp", port_min=3, port_max=4, description="fragmentation needed"),
    )),
    SecurityGroup(SRC, "delta/lab", "delta", "lab", "Anything from the lab network", rules=(
        _tcp(1, 65535, remote_ip_prefix="10.0.0.0/8", description="all tcp"),
        Rule(protocol="udp", port_min=1, port_max=65535, remote_ip_prefix="10.0.0.0/8",
             description="all udp"),
        Rule(ethertype="IPv6", protocol="ipv6-icmp", description="any icmpv6"),
        Rule(protocol="112", remote_ip_prefix="10.30.1.0/24", description="vrrp by number"),
    )),
    # Pre-existing on dst: same project and name as alpha's "web" groups, its own rule.
    SecurityGroup(DST, "dst:alpha/web", "alpha", "web", "Made on dst before any migration", rules=(
        _tcp(8443, remote_ip_prefix="198.51.100.0/24", description="dst's own rule"),
    )),
)

#: Rules Neutron adds by itself: two egress rules (IPv4, IPv6) to every new group, and
#: to each project's ``default`` group those two plus two ingress from the group itself.
AUTO_RULES_NEW_GROUP = 2
AUTO_RULES_DEFAULT_GROUP = 4

# -- networks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subnet:
    name: str
    cidr: str
    gateway_ip: str | None = None
    enable_dhcp: bool = True
    allocation_pool: tuple[str, str] | None = None

    @property
    def ip_version(self) -> int:
        return 6 if ":" in self.cidr else 4


@dataclass(frozen=True)
class Network:
    project: str
    name: str
    subnets: tuple[Subnet, ...]
    #: External: a flat provider network on the testbed's physnet, ``router:external``.
    external: bool = False


@dataclass(frozen=True)
class Router:
    project: str
    name: str
    external_network: str
    interfaces: tuple[str, ...]  # subnet names


@dataclass(frozen=True)
class Port:
    project: str
    name: str
    network: str
    fixed_ips: tuple[tuple[str, str], ...]  # (subnet name, address)


@dataclass(frozen=True)
class FloatingIP:
    """A floating IP, identified by its fixed address; ``port`` names the port it points at."""

    project: str
    address: str
    network: str
    port: str | None
    description: str


PUBLIC_NETWORK = "public"
NETWORKS = (
    Network(ADMIN_PROJECT, PUBLIC_NETWORK, (
        Subnet("public-v4", "172.24.4.0/24", gateway_ip="172.24.4.1", enable_dhcp=False,
               allocation_pool=("172.24.4.100", "172.24.4.199")),
    ), external=True),
    Network("alpha", "alpha-net", (
        Subnet("alpha-v4", "10.10.1.0/24"),
        Subnet("alpha-v6", "fd00:a1::/64", enable_dhcp=False),
    )),
    Network("alpha", "alpha-db-net", (Subnet("alpha-db-v4", "10.10.2.0/24"),)),
    Network("beta", "beta-net", (Subnet("beta-v4", "10.20.1.0/24"),)),
    Network("delta", "delta-net", (
        Subnet("delta-v4", "10.30.1.0/24"),
        Subnet("delta-v6", "fd00:d1::/64", enable_dhcp=False),
    )),
)

ROUTERS = (
    Router("alpha", "alpha-router", PUBLIC_NETWORK, ("alpha-v4", "alpha-v6", "alpha-db-v4")),
    Router("beta", "beta-router", PUBLIC_NETWORK, ("beta-v4",)),
)

PORTS = (
    Port("alpha", "alpha-web-port", "alpha-net", (("alpha-v4", "10.10.1.10"),
                                                  ("alpha-v6", "fd00:a1::10"))),
    Port("alpha", "alpha-db-port", "alpha-db-net", (("alpha-db-v4", "10.10.2.10"),)),
    Port("beta", "beta-app-port", "beta-net", (("beta-v4", "10.20.1.20"),)),
    Port("delta", "delta-lab-port", "delta-net", (("delta-v4", "10.30.1.30"),)),
)

FLOATING_IPS = (
    FloatingIP("alpha", "172.24.4.110", PUBLIC_NETWORK, "alpha-web-port", "shop front"),
    FloatingIP("alpha", "172.24.4.111", PUBLIC_NETWORK, None, "kept for failover"),
    FloatingIP("beta", "172.24.4.120", PUBLIC_NETWORK, "beta-app-port", "back office"),
)

# -- images ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """An image in the ``fast`` store, owned by ``project``; ``members`` are accepted projects."""

    project: str
    name: str
    content: Pattern
    visibility: str = "private"
    properties: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    min_disk: int = 0
    min_ram: int = 0
    protected: bool = False
    members: tuple[str, ...] = ()
    store: str = "fast"
    disk_format: str = "raw"
    container_format: str = "bare"


IMAGES = (
    Image("alpha", "alpha-base",
          Pattern("alpha-base", 256 * 1024, ((4096, 65536), (200000, 40000))),
          properties={"os_distro": "seedos", "os_version": "1.0", "hw_disk_bus": "virtio",
                      "owner_team": "web"},
          tags=("base", "seed"), min_disk=1, min_ram=64),
    Image("alpha", "alpha-shared", Pattern("alpha-shared", 192 * 1024, ((0, 8192),)),
          visibility="shared", properties={"purpose": "shared with beta"}, tags=("shared",),
          members=("beta",)),
    Image("alpha", "alpha-golden", Pattern("alpha-golden", 320 * 1024, ((65536, 131072),)),
          properties={"os_distro": "seedos", "os_version": "2.0", "release": "golden"},
          tags=("golden", "protected"), min_disk=1, min_ram=512, protected=True),
    Image(ADMIN_PROJECT, "public-tools", Pattern("public-tools", 128 * 1024),
          visibility="public", properties={"os_distro": "toolbox", "hw_rng_model": "virtio"},
          tags=("tools",)),
    Image("beta", "beta-app", Pattern("beta-app", 288 * 1024, ((32768, 32768), (163840, 65536))),
          properties={"app": "ledger", "app_version": "4.2"}, tags=("app",), min_ram=128),
    Image("delta", "delta-lab", Pattern("delta-lab", 160 * 1024), visibility="community",
          properties={"lab": "yes"}),
)

# -- volumes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Volume:
    """A volume with known content: from ``image`` (its bytes, then zeros), ``dense`` (every
    byte written by the seed, straight into the backend), or neither (all zeros)."""

    project: str
    name: str
    volume_type: str  # "ceph" (RBD) or "file" (NFS driver)
    size_gib: int = 1
    image: str | None = None
    dense: bool = False
    bootable: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    attached_to: str | None = None
    description: str = ""

    @property
    def sparse(self) -> bool:
        return not self.dense


VOLUMES = (
    Volume("alpha", "alpha-boot", "ceph", image="alpha-base", bootable=True,
           description="boot disk made from alpha-base"),
    Volume("alpha", "alpha-data", "file", dense=True, attached_to="alpha-app",
           metadata={"purpose": "database", "tier": "gold", "backup": "nightly"},
           description="database disk, attached"),
    Volume("alpha", "alpha-blank", "ceph", description="never written"),
    Volume("beta", "beta-archive", "ceph", dense=True, description="archive, fully written"),
    Volume("beta", "beta-logs", "file", image="beta-app", description="logs, from beta-app"),
    Volume("delta", "delta-scratch", "file", image="delta-lab", description="lab scratch"),
)


def image_named(name: str) -> Image:
    for i in IMAGES:
        if i.name == name:
            return i
    raise KeyError(name)


def volume_chunks(v: Volume) -> Iterator[bytes]:
    """The exact bytes volume ``v`` holds after the seed, in chunks."""
    size = v.size_gib * GIB
    if v.dense:
        return Dense(f"volume:{v.project}/{v.name}", size).chunks()
    head = image_named(v.image).content.data() if v.image else b""
    return padded_chunks(head, size)


@functools.cache
def volume_sha256(name: str) -> str:
    """sha256 of the whole content of the volume called ``name`` (computed, then cached)."""
    (v,) = (v for v in VOLUMES if v.name == name)
    return sha256_of(volume_chunks(v))


# -- servers and usage ----------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A fake-compute server; its life is backdated so usage spans months.

    ``terminated_at`` set: the server is deleted after creation (it stays in the usage
    history). Times are UTC, ISO 8601.
    """

    project: str
    name: str
    image: str
    launched_at: str
    terminated_at: str | None = None
    flavor: str = "m1.tiny"

    @property
    def deleted(self) -> bool:
        return self.terminated_at is not None


SERVERS = (
    Server("alpha", "alpha-old-1", "alpha-base", "2026-01-05T08:00:00", "2026-02-20T17:30:00"),
    Server("alpha", "alpha-app", "alpha-base", "2026-02-01T09:00:00", flavor="m1.small"),
    Server("alpha", "alpha-old-2", "alpha-base", "2026-03-01T10:00:00", "2026-05-15T12:00:00"),
    Server("alpha", "alpha-worker", "alpha-base", "2026-06-10T06:00:00"),
    Server("beta", "beta-old", "public-tools", "2026-02-10T08:00:00", "2026-04-05T18:00:00"),
    Server("beta", "beta-app", "public-tools", "2026-04-01T08:00:00"),
    Server("delta", "delta-old", "public-tools", "2026-05-01T00:00:00", "2026-07-31T23:00:00"),
    Server("delta", "delta-lab", "delta-lab", "2026-07-01T12:00:00"),
)

#: Covers every seeded server's life: the period to ask os-simple-tenant-usage for.
USAGE_PERIOD = ("2026-01-01T00:00:00", "2026-09-01T00:00:00")


def on(cloud: str, items: tuple) -> tuple:  # type: ignore[type-arg]
    """The items of ``items`` that belong to ``cloud`` (those with a ``cloud`` field)."""
    return tuple(i for i in items if i.cloud == cloud)
