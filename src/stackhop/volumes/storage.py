"""The storage map: how stackhop reaches each cloud's volume backends and compute hosts.

Cinder's API says which backend holds a volume (``host@backend#pool``) but
not how to reach its bytes; Nova says which compute host runs a server
(``OS-EXT-SRV-ATTR:host``) but not how to reach its root disk. The storage
map, a YAML file, says it per cloud, per backend name and per compute host::

    src:                      # cloud name, as in clouds.yaml
      ceph:                   # Cinder backend name (``host@<backend>#pool``)
        driver: rbd
        pool: volumes
        ceph_conf: /etc/ceph/ceph.conf
        keyring: /etc/ceph/ceph.client.admin.keyring
        user: admin           # Ceph client id
        ssh_host: null        # run the rbd tools there over ssh instead of locally
      file:
        driver: file          # a file or block device per volume on a host
        ssh_host: src-storage # a Host of the ssh config (host keys verified)
        path: /srv/cinder/volume-{id}   # {id}: the volume's ID, {name}: its backend name
        direct_ssh_config: /etc/stackhop/ssh_config  # optional, see below
      compute:                # not a backend: the cloud's Nova compute hosts
        src-compute:          # Nova's host name (``OS-EXT-SRV-ATTR:host``)
          ssh_host: src-compute   # a Host of the ssh config (host keys verified)
          instances_path: /var/lib/nova/instances   # Nova's instances_path there

An image-booted server's root disk is ``<instances_path>/<server id>/disk`` on
its compute host (libvirt's layout). A backend cannot be named ``compute``.

``direct_ssh_config`` (file backends) is an ssh config file *on* ``ssh_host``
with which that host reaches the other clouds' storage hosts by the names
this map gives them, host keys verified. When the source's backend has one,
the stream method sends from the source host straight to the destination
host, and this machine sees only headers and acknowledgements (one ssh hop
instead of two); a pass with ``--backup-to`` still goes through here.

The map comes from ``--storage-map FILE`` or ``$STACKHOP_STORAGE_MAP`` (the
testbed writes one).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stackhop.errors import ConfigError
from stackhop.mapfile import read_mapping

ENV_VAR = "STACKHOP_STORAGE_MAP"

DRIVERS = ("rbd", "file")
KEYS = {"driver", "ssh_host", "pool", "ceph_conf", "keyring", "user", "path", "direct_ssh_config"}
#: The section of a cloud naming its compute hosts instead of a backend.
COMPUTE = "compute"
COMPUTE_KEYS = {"ssh_host", "instances_path"}


@dataclass(frozen=True)
class Backend:
    """One Cinder backend of one cloud, and how to reach its volumes' bytes."""

    cloud: str
    name: str
    driver: str
    ssh_host: str | None = None
    #: rbd: the pool, Ceph config, keyring and client id.
    pool: str | None = None
    ceph_conf: str | None = None
    keyring: str | None = None
    user: str | None = None
    #: file: the path template of a volume's file or device.
    path: str | None = None
    #: file: an ssh config on ssh_host reaching the other clouds' storage hosts (module doc).
    direct_ssh_config: str | None = None

    def volume_path(self, volume_id: str) -> str:
        """The file or device holding volume ``volume_id`` on :attr:`ssh_host` (file driver)."""
        if self.path is None:
            raise ConfigError(
                f"storage map: backend {self.name!r} of cloud {self.cloud!r} has no 'path'; "
                "add one such as /srv/cinder/volume-{id}"
            )
        return self.path.format(id=volume_id, name=f"volume-{volume_id}")

    def rbd_image(self, volume_id: str) -> str:
        """The RBD image name Cinder's RBD driver gives volume ``volume_id``."""
        return f"volume-{volume_id}"

    @property
    def site(self) -> str:
        """Where this backend's bytes are reached: its ssh host, else ``<cloud>-<name>``
        (a Ceph cluster). Workers on that site serve its queues (``docs/scale.md``)."""
        return self.ssh_host or f"{self.cloud}-{self.name}"


@dataclass(frozen=True)
class ComputeHost:
    """One Nova compute host of one cloud, and how to reach its instances' files."""

    cloud: str
    #: Nova's name of the host (``OS-EXT-SRV-ATTR:host``).
    name: str
    #: A Host of the ssh config.
    ssh_host: str
    #: Nova's ``instances_path`` on that host.
    instances_path: str

    def disk_path(self, server_id: str) -> str:
        """The root disk of image-booted server ``server_id`` on :attr:`ssh_host`."""
        try:
            canonical = str(uuid.UUID(server_id)) == server_id  # Nova's form, no braces or URN
        except ValueError:
            canonical = False
        if not canonical:
            raise ValueError(f"{server_id!r} is not a server ID")
        return f"{self.instances_path.rstrip('/')}/{server_id}/disk"


@dataclass(frozen=True)
class StorageMap:
    """Every known backend, by (cloud, backend name); every compute host, by (cloud, host)."""

    backends: Mapping[tuple[str, str], Backend]
    source: str = "(empty)"
    computes: Mapping[tuple[str, str], ComputeHost] = field(default_factory=dict)

    def backend(self, cloud: str, name: str) -> Backend:
        """The backend ``name`` of ``cloud``; ConfigError naming the file to edit if unknown."""
        try:
            return self.backends[(cloud, name)]
        except KeyError:
            raise ConfigError(
                f"storage map {self.source}: no backend {name!r} for cloud {cloud!r}; "
                f"add it (see docs/volumes.md) or pass --storage-map FILE"
            ) from None

    def backend_of(self, cloud: str, volume_host: str | None) -> Backend:
        """The backend of a volume from its ``os-vol-host-attr:host`` (``host@backend#pool``)."""
        if not volume_host or "@" not in volume_host:
            raise ConfigError(
                f"cloud {cloud!r} did not say which backend holds the volume (host "
                f"{volume_host!r}); use an admin account, or --method image"
            )
        name = volume_host.split("@", 1)[1].split("#", 1)[0]
        return self.backend(cloud, name)

    def compute_host(self, cloud: str, host: str | None) -> ComputeHost:
        """The compute host ``host`` of ``cloud`` (a server's ``OS-EXT-SRV-ATTR:host``)."""
        if not host:
            raise ConfigError(
                f"cloud {cloud!r} did not say which compute host runs the server; "
                "use an admin account"
            )
        try:
            return self.computes[(cloud, host)]
        except KeyError:
            raise ConfigError(
                f"storage map {self.source}: no compute host {host!r} for cloud {cloud!r}; "
                f"add it under {cloud}.{COMPUTE} with its ssh_host and instances_path, "
                "or pass --storage-map FILE"
            ) from None


#: Characters no storage-map value needs and a shell would act on.
_SHELL = frozenset(";&|`$<>()\\\"'*?{}[]!#~")
#: Values that name things (hosts, pools, Ceph users): no '/' either.
_NAMES = {"ssh_host", "pool", "user"}


def _check_value(cloud: str, name: str, key: str, value: str, source: str) -> None:
    """Refuse a value that could become an option or shell syntax on a command line."""
    allowed_braces = key == "path"  # the {id} / {name} placeholders
    bad = [
        c for c in value
        if not c.isprintable() or (c in _SHELL and not (allowed_braces and c in "{}"))
        or (key in _NAMES and (c.isspace() or c == "/"))
    ]
    if value.startswith("-") or bad:
        what = "starts with '-'" if value.startswith("-") else f"holds {bad[0]!r}"
        raise ConfigError(
            f"storage map {source}: {cloud}.{name}.{key} {what}; write a plain "
            f"{'name' if key in _NAMES else 'absolute path'} there"
        )
    if key not in _NAMES and not value.startswith("/"):
        raise ConfigError(
            f"storage map {source}: {cloud}.{name}.{key} must be an absolute path, not {value!r}"
        )


def _backend(cloud: str, name: str, entry: Any, source: str) -> Backend:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"storage map {source}: {cloud}.{name} must be a mapping")
    fields = {k: (None if v is None else str(v)) for k, v in entry.items()}
    unknown = set(fields) - KEYS
    if unknown:
        raise ConfigError(
            f"storage map {source}: {cloud}.{name} has unknown keys {sorted(unknown)}"
        )
    driver = fields.pop("driver", None)
    for key, value in fields.items():
        if value is not None:
            _check_value(cloud, name, key, value, source)
    if driver not in DRIVERS:
        raise ConfigError(
            f"storage map {source}: {cloud}.{name}.driver must be one of {', '.join(DRIVERS)}"
        )
    if driver == "rbd" and not fields.get("pool"):
        raise ConfigError(f"storage map {source}: {cloud}.{name} (rbd) needs a 'pool'")
    if driver == "file" and not fields.get("path"):
        raise ConfigError(f"storage map {source}: {cloud}.{name} (file) needs a 'path'")
    return Backend(cloud=cloud, name=name, driver=driver, **fields)


def _compute_hosts(cloud: str, section: Any, source: str) -> dict[tuple[str, str], ComputeHost]:
    """The ``compute`` section of ``cloud``: Nova host name -> ssh host and instances_path."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"storage map {source}: {cloud}.{COMPUTE} must map compute host names")
    hosts: dict[tuple[str, str], ComputeHost] = {}
    for name, entry in section.items():
        host = str(name)
        # Nova's host name picks the entry; like an ssh host, it is a plain name.
        if not host or host.startswith("-") or any(
            not c.isprintable() or c.isspace() or c in _SHELL or c == "/" for c in host
        ):
            raise ConfigError(
                f"storage map {source}: {cloud}.{COMPUTE} has the host name {host!r}; "
                "write Nova's host name there (OS-EXT-SRV-ATTR:host)"
            )
        where = f"{COMPUTE}.{host}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"storage map {source}: {cloud}.{where} must be a mapping")
        fields = {str(k): v for k, v in entry.items()}
        unknown = set(fields) - COMPUTE_KEYS
        if unknown:
            raise ConfigError(
                f"storage map {source}: {cloud}.{where} has unknown keys {sorted(unknown)}"
            )
        values: dict[str, str] = {}
        for key in sorted(COMPUTE_KEYS):
            if fields.get(key) in (None, ""):
                raise ConfigError(f"storage map {source}: {cloud}.{where} needs '{key}'")
            values[key] = str(fields[key])
            _check_value(cloud, where, key, values[key], source)
        hosts[(cloud, host)] = ComputeHost(cloud=cloud, name=host, **values)
    return hosts


def load_storage_map(path: str | os.PathLike[str] | None = None) -> StorageMap:
    """Read the storage map from ``path``, else ``$STACKHOP_STORAGE_MAP``; empty if neither."""
    location = os.fspath(path) if path is not None else os.environ.get(ENV_VAR)
    if not location:
        return StorageMap(backends={})
    data = read_mapping(location, "storage map", "map cloud names to backends")
    backends: dict[tuple[str, str], Backend] = {}
    computes: dict[tuple[str, str], ComputeHost] = {}
    for cloud, entries in data.items():
        if not isinstance(entries, Mapping):
            raise ConfigError(f"storage map {location}: {cloud} must map backend names")
        for name, entry in entries.items():
            if str(name) == COMPUTE:
                computes.update(_compute_hosts(str(cloud), entry, location))
            else:
                backends[(str(cloud), str(name))] = _backend(str(cloud), str(name), entry, location)
    return StorageMap(backends=backends, source=location, computes=computes)
