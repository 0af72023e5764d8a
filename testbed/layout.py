"""Where everything of the testbed lives: one place for paths, ports and names.

The state directory defaults to ``/var/lib/stackhop-testbed`` (override with
``STACKHOP_TESTBED_DIR``) so that every checkout on the machine, including a
fresh clone made to run the tests, reuses the one running testbed. Generated
configuration is rewritten on every ``up``; data (databases, Ceph, keys) stays
until ``down --purge``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
REGION = "RegionOne"

STATE_DIR = Path(os.environ.get("STACKHOP_TESTBED_DIR", "/var/lib/stackhop-testbed"))
REPO_DIR = Path(__file__).resolve().parent.parent
#: The virtualenv the testbed runs its OpenStack services from: the one running us.
VENV_DIR = Path(sys.prefix)
VENV_BIN = VENV_DIR / "bin"

RUN_DIR = STATE_DIR / "run"  # pid files, sockets
LOG_DIR = STATE_DIR / "logs"
SHARED_DIR = STATE_DIR / "shared"  # MariaDB, RabbitMQ, ZooKeeper data
CLOUDS_YAML = STATE_DIR / "clouds.yaml"
ENV_FILE = STATE_DIR / "env.sh"
STORAGE_MAP = STATE_DIR / "storage.yaml"  # how stackhop reaches each cloud's volume backends
SSH_DIR = STATE_DIR / "ssh"  # client key, known_hosts, ssh_config
#: Files the OpenStack services of both clouds share: a pass-through sudo, plugin entry points.
OPENSTACK_SHARED_DIR = SHARED_DIR / "openstack"

ADMIN_PASSWORD = "adminpw"
DEMO_PASSWORD = "demopw"
SERVICE_PASSWORD = "servicepw"
DB_USER = "openstack"
DB_PASSWORD = "openstackpw"
RABBIT_USER = "openstack"
RABBIT_PASSWORD = "rabbitpw"
#: stackhop's own vhost and user on the shared broker (``--executor celery``, issue 20).
STACKHOP_RABBIT_VHOST = "stackhop"
STACKHOP_RABBIT_USER = "stackhop"
STACKHOP_RABBIT_PASSWORD = "stackhoprabbitpw"

MARIADB_PORT = 33306
RABBIT_PORT = 35672
RABBIT_DIST_PORT = 35673
EPMD_PORT = 34369
ZOOKEEPER_PORT = 42181
#: OpenLDAP (Debian's slapd): the directory both clouds' Keystones read (issue 21).
LDAP_PORT = 38389
LDAP_URL = f"ldap://{HOST}:{LDAP_PORT}"
LDAP_SUFFIX = "dc=stackhop,dc=test"
LDAP_ADMIN_DN = f"cn=admin,{LDAP_SUFFIX}"  # slapd's rootdn: writes the directory
LDAP_ADMIN_PASSWORD = "ldapadminpw"
LDAP_BIND_DN = f"cn=keystone,ou=Services,{LDAP_SUFFIX}"  # what Keystone binds as: read-only
LDAP_BIND_PASSWORD = "ldapkeystonepw"
LDAP_USERS_DN = f"ou=People,{LDAP_SUFFIX}"
LDAP_GROUPS_DN = f"ou=Groups,{LDAP_SUFFIX}"
#: The group whose members Keystone sees as enabled (``user_enabled_emulation``).
LDAP_ENABLED_DN = f"cn=enabled_users,{LDAP_GROUPS_DN}"
#: dst's domain whose users come from the directory through a domain-specific driver.
LDAP_DOMAIN = "ldap_users"
#: PostgreSQL (Debian's): src's databases mirrored there, and the Liberty-shaped ones (issue 21).
POSTGRES_PORT = 35432


@dataclass(frozen=True)
class ComputeHost:
    """One nova-compute of the testbed, and the ssh "compute host" of the same name.

    The testbed's fake driver keeps each image-booted instance's root disk at
    ``<instances_path>/<uuid>/disk``, as libvirt does
    (``testbed/openstack/shims/stackhop_fake_disk.py``); an sshd on
    :attr:`ssh_port` named like the host reaches those files
    (``testbed/infra/sshhost.py``).
    """

    #: Nova's ``host`` (``OS-EXT-SRV-ATTR:host``), and the host's name in ``ssh_config``.
    name: str
    cloud: str
    #: Nova's ``state_path`` on this compute.
    state_path: Path
    ssh_port: int

    @property
    def instances_path(self) -> Path:
        """Nova's ``instances_path``: a directory per instance, named by its UUID."""
        return self.state_path / "instances"


@dataclass(frozen=True)
class CloudLayout:
    """Everything that differs between the ``src`` and ``dst`` clouds."""

    name: str
    port_base: int
    ceph_mon_port: int  # msgr v2; v1 is the next port
    ceph_bind_min: int
    ceph_bind_max: int
    ssh_port: int
    extra: dict[str, str] = field(default_factory=dict)

    # -- directories -------------------------------------------------------
    @property
    def dir(self) -> Path:
        return STATE_DIR / self.name

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def ceph_dir(self) -> Path:
        return self.dir / "ceph"

    @property
    def ceph_conf(self) -> Path:
        return self.ceph_dir / "ceph.conf"

    @property
    def ceph_keyring(self) -> Path:
        """The client.admin keyring of this cloud's Ceph cluster."""
        return self.ceph_dir / "ceph.client.admin.keyring"

    @property
    def file_backend_dir(self) -> Path:
        """Directory holding the Cinder ``file`` backend's volumes (the NFS share)."""
        return self.data / "cinder-file-share"

    @property
    def ssh_host(self) -> str:
        return f"{self.name}-storage"

    # -- ports -------------------------------------------------------------
    @property
    def keystone_port(self) -> int:
        return self.port_base + 5000

    @property
    def glance_port(self) -> int:
        return self.port_base + 9292

    @property
    def nova_port(self) -> int:
        return self.port_base + 8774

    @property
    def cinder_port(self) -> int:
        return self.port_base + 8776

    @property
    def placement_port(self) -> int:
        return self.port_base + 8778

    @property
    def neutron_port(self) -> int:
        return self.port_base + 9696

    @property
    def keystone_url(self) -> str:
        return f"http://{HOST}:{self.keystone_port}/v3"

    # -- names -------------------------------------------------------------
    @property
    def compute_host(self) -> str:
        """Host name of this cloud's (fake-driver) nova-compute and other Nova services."""
        return f"{self.name}-compute"

    @property
    def compute(self) -> ComputeHost:
        """This cloud's nova-compute (host :attr:`compute_host`); its sshd on ``ssh_port + 1``."""
        return ComputeHost(self.compute_host, self.name, self.data / "nova", self.ssh_port + 1)

    @property
    def legacy_compute(self) -> ComputeHost:
        """The second nova-compute of a cloud in :data:`LEGACY_CLOUDS` (``src-legacy-compute``).

        See ``testbed/openstack/nova_legacy.py``; its sshd is on ``ssh_port + 2``.
        """
        return ComputeHost(
            f"{self.name}-legacy-compute", self.name, self.data / "nova_legacy", self.ssh_port + 2
        )

    @property
    def volume_host(self) -> str:
        """Host of this cloud's Cinder services; backends are ``<host>@ceph``, ``<host>@file``."""
        return f"{self.name}-volume"

    def db_name(self, service: str) -> str:
        """MariaDB database of one service of this cloud (e.g. ``src_nova_api``)."""
        return f"{self.name}_{service}"

    def db_url(self, service: str) -> str:
        return (
            f"mysql+pymysql://{DB_USER}:{DB_PASSWORD}@{HOST}:{MARIADB_PORT}/"
            f"{self.db_name(service)}?charset=utf8mb4"
        )

    def pg_url(self, service: str) -> str:
        """The same database of this cloud on the testbed's PostgreSQL (a mirror; see docs)."""
        return (
            f"postgresql://{DB_USER}:{DB_PASSWORD}@{HOST}:{POSTGRES_PORT}/"
            f"{self.db_name(service)}"
        )

    @property
    def rabbit_vhost(self) -> str:
        return self.name

    @property
    def transport_url(self) -> str:
        return f"rabbit://{RABBIT_USER}:{RABBIT_PASSWORD}@{HOST}:{RABBIT_PORT}/{self.rabbit_vhost}"


SRC = CloudLayout(
    name="src",
    port_base=10000,  # keystone 15000, glance 19292, nova 18774, cinder 18776, ...
    ceph_mon_port=46600,
    ceph_bind_min=46800,
    ceph_bind_max=46899,
    ssh_port=22022,
)
DST = CloudLayout(
    name="dst",
    port_base=11000,  # keystone 16000, glance 20292, nova 19774, cinder 19776, ...
    ceph_mon_port=46610,
    ceph_bind_min=46900,
    ceph_bind_max=46999,
    ssh_port=22122,
)
CLOUDS: tuple[CloudLayout, ...] = (SRC, DST)
#: The clouds with a legacy single-store Glance and a legacy Nova pair (only src: one is
#: enough to test against); see testbed/openstack/glance_legacy.py and nova_legacy.py.
LEGACY_CLOUDS: tuple[CloudLayout, ...] = (SRC,)
#: Every nova-compute of the testbed (src-compute, src-legacy-compute, dst-compute).
COMPUTE_HOSTS: tuple[ComputeHost, ...] = (
    SRC.compute,
    *(c.legacy_compute for c in LEGACY_CLOUDS),
    DST.compute,
)


def cloud(name: str) -> CloudLayout:
    for c in CLOUDS:
        if c.name == name:
            return c
    raise KeyError(f"unknown testbed cloud {name!r}; expected one of: src, dst")


def make_dirs() -> None:
    for d in (STATE_DIR, RUN_DIR, LOG_DIR, SHARED_DIR, SSH_DIR):
        d.mkdir(parents=True, exist_ok=True)
    for c in CLOUDS:
        for d in (c.etc, c.data, c.ceph_dir):
            d.mkdir(parents=True, exist_ok=True)


def stackhop_broker_url() -> str:
    """The testbed broker's URL for stackhop's executor (vhost and user ``stackhop``)."""
    return (
        f"amqp://{STACKHOP_RABBIT_USER}:{STACKHOP_RABBIT_PASSWORD}@{HOST}:{RABBIT_PORT}/"
        f"{STACKHOP_RABBIT_VHOST}"
    )
