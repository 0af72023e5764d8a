"""Cinder of one cloud: API, scheduler and a volume service with two backends.

- ``ceph``: the upstream RBD driver on the cloud's own Ceph cluster, pool ``volumes``.
- ``file``: the upstream NFS driver on a local directory (this kernel has no
  NFS client). os-brick only looks for the share in ``/proc/mounts``, so the
  directory is bind-mounted where it expects the mount. Our shim adds
  Cinder's own "manage existing" mixin for files on the share.

cinder-volume runs in its own mount namespace: there ``/etc/ceph`` is the
cloud's client directory (os-brick reads keyrings only from there) and the
share's bind mount exists; the host sees neither, so nothing is left mounted
when the process is gone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from testbed import layout
from testbed.component import Component
from testbed.infra import ceph
from testbed.infra.files import write_file
from testbed.infra.locked import LockedComponent
from testbed.openstack import runtime, schema
from testbed.openstack.config import (
    authtoken,
    common_sections,
    make_service_dirs,
    service_auth,
    service_data,
    service_etc,
    write_ini,
)
from testbed.process import Daemon, run

NAME = "cinder"
#: Volume type name -> backend name (one type per backend, named alike).
VOLUME_TYPES = {"ceph": "ceph", "file": "file"}
DEFAULT_VOLUME_TYPE = "ceph"
CEPH_POOL = "volumes"

# Runs inside the new mount namespace, then becomes cinder-volume (same PID).
_NAMESPACE_SCRIPT = (
    'set -e; mount --bind "$1" /etc/ceph; mkdir -p "$3"; mount --bind "$2" "$3"; shift 3; exec "$@"'
)


def config_file(c: layout.CloudLayout) -> Path:
    return service_etc(c, NAME) / "cinder.conf"


def share(c: layout.CloudLayout) -> str:
    """The ``file`` backend's NFS share address (served by nobody: bind-mounted locally)."""
    return f"{layout.HOST}:{c.file_backend_dir}"


def share_mountpoint(c: layout.CloudLayout) -> Path:
    """Where the NFS driver expects ``share(c)`` mounted: base dir + md5 of the address."""
    # The driver's naming scheme, not a security use of md5.
    digest = hashlib.md5(share(c).encode(), usedforsecurity=False).hexdigest()
    return service_data(c, NAME) / "mnt" / digest


def backend_host(c: layout.CloudLayout, backend: str) -> str:
    """``host@backend`` of one backend, as the scheduler and "manage existing" name it."""
    return f"{c.volume_host}@{backend}"


def _write_config(c: layout.CloudLayout) -> bool:
    make_service_dirs(c, NAME)
    etc, data = service_etc(c, NAME), service_data(c, NAME)
    shares = etc / "nfs_shares"
    changed = write_file(shares, share(c) + "\n")
    venv_etc = layout.VENV_DIR / "etc" / "cinder"
    changed |= write_ini(
        config_file(c),
        {
            "DEFAULT": {
                "host": c.volume_host,
                "my_ip": layout.HOST,
                "state_path": data,
                "transport_url": c.transport_url,
                "auth_strategy": "keystone",
                "api_paste_config": venv_etc / "api-paste.ini",
                "resource_query_filters_file": venv_etc / "resource_filters.json",
                "rootwrap_config": venv_etc / "rootwrap.conf",
                "enabled_backends": ",".join(VOLUME_TYPES.values()),
                "default_volume_type": DEFAULT_VOLUME_TYPE,
                "glance_api_servers": f"http://{layout.HOST}:{c.glance_port}",
                "osapi_volume_workers": 1,
                "graceful_shutdown_timeout": 5,
            },
            "database": {"connection": c.db_url(NAME)},
            "keystone_authtoken": authtoken(c, NAME),
            "nova": service_auth(c, "nova"),
            "service_user": {**service_auth(c, NAME), "send_service_user_token": True},
            "coordination": {"backend_url": f"file://{data / 'coordination'}"},
            "ceph": {
                "volume_driver": "cinder.volume.drivers.rbd.RBDDriver",
                "volume_backend_name": "ceph",
                "rbd_pool": CEPH_POOL,
                "rbd_ceph_conf": ceph.cinder_conf(c),
                "rbd_user": ceph.cinder_user(c),
                "rados_connect_timeout": 10,
                "image_upload_use_cinder_backend": False,
            },
            "file": {
                "volume_driver": "stackhop_nfs_manageable.ManageableNfsDriver",
                "volume_backend_name": "file",
                "nfs_shares_config": shares,
                "nfs_mount_point_base": data / "mnt",
                "nfs_sparsed_volumes": True,
                "nfs_snapshot_support": True,
                # Root owns everything here; the "secure" modes would chown to nobody.
                "nas_secure_file_operations": False,
                "nas_secure_file_permissions": False,
            },
            **common_sections(c, NAME),
        },
    )
    return changed


def _migrate(c: layout.CloudLayout) -> None:
    run(
        [
            str(layout.VENV_BIN / "cinder-manage"),
            "--config-file",
            str(service_etc(c, NAME) / "cinder-db.conf"),
            "db",
            "sync",
        ],
        log=layout.LOG_DIR / f"{NAME}-{c.name}-manage.log",
    )


def _schema(c: layout.CloudLayout) -> None:
    write_ini(service_etc(c, NAME) / "cinder-db.conf", {"database": {"connection": c.db_url(NAME)}})
    schema.ensure_once(c, NAME, "cinder", _migrate)


def _create_volume_types(c: layout.CloudLayout) -> None:
    done = runtime.stamp(c, "cinder-volume-types", repr(sorted(VOLUME_TYPES.items())))
    if done.done():
        return
    bs = runtime.admin_connection(c).block_storage
    existing = {t.name for t in bs.types()}
    for name, backend in VOLUME_TYPES.items():
        if name not in existing:
            bs.create_type(name=name, extra_specs={"volume_backend_name": backend})
    done.mark()


def daemons(c: layout.CloudLayout) -> list[Daemon]:
    conf = [config_file(c)]
    db = c.db_name(NAME)
    env = runtime.service_env()
    api = runtime.uwsgi_daemon(
        f"cinder-api-{c.name}",
        c.cinder_port,
        "cinder.wsgi.api:application",
        env=env,
        extra_args=[
            "--pyargv",
            f"--config-file {config_file(c)}",
            # Upload-to-image sends chunked bodies; uWSGI refuses them without a limit.
            "--chunked-input-limit",
            str(10 * 1024 * 1024),
            "--chunked-input-timeout",
            "60",
        ],
    )
    scheduler = runtime.console_daemon(
        f"cinder-scheduler-{c.name}",
        "cinder-scheduler",
        conf,
        runtime.heartbeat_check(
            f"cinder-scheduler-{c.name}", db, "cinder-scheduler", c.volume_host
        ),
        env=env,
    )
    volume = runtime.console_daemon(
        f"cinder-volume-{c.name}",
        "cinder-volume",
        conf,
        runtime.heartbeat_check(
            f"cinder-volume-{c.name}",
            db,
            "cinder-volume",
            f"{c.volume_host}@%",
            count=len(VOLUME_TYPES),
        ),
        env=runtime.service_env([ceph.python_path()]),
        wrapper=[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            _NAMESPACE_SCRIPT,
            "cinder-volume-namespace",
            str(ceph.etc_ceph_dir(c)),
            str(c.file_backend_dir),
            str(share_mountpoint(c)),
        ],
    )
    return [api, scheduler, volume]


def _stop_privsep(c: layout.CloudLayout) -> None:
    """os-brick's privsep helper left the volume service's process group: stop it by PID."""
    runtime.kill_detached(str(config_file(c)))


def components(c: layout.CloudLayout) -> list[Component]:
    """``cinder-<cloud>-db`` (schema) and ``cinder-<cloud>`` (services, volume types)."""
    ds = daemons(c)

    def setup() -> None:
        runtime.write_shared_files()
        c.file_backend_dir.mkdir(parents=True, exist_ok=True)
        share_mountpoint(c).mkdir(parents=True, exist_ok=True)
        if _write_config(c):
            for d in ds:
                d.stop()
            _stop_privsep(c)

    db = LockedComponent(name=f"{NAME}-{c.name}-db", after=("mariadb",), setup=lambda: _schema(c))
    service = runtime.ServiceComponent(
        name=f"{NAME}-{c.name}",
        after=(db.name, "rabbitmq", f"keystone-{c.name}", f"ceph-{c.name}"),
        daemons=ds,
        setup=setup,
        after_start=lambda: _create_volume_types(c),
        teardown=lambda: _stop_privsep(c),
    )
    return [db, service]
