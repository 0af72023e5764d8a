"""Where one cloud's Ceph cluster keeps its files, and its configuration files.

Layout under ``CloudLayout.ceph_dir``::

    ceph.conf                    cluster conf (daemons and admin tools)
    ceph.client.admin.keyring    the admin key
    fsid                         the cluster's fsid, made once
    mon.a/ mgr.x/ osd.0/         daemon data (osd.0/block is a sparse file)
    run/ log/ crash/             admin sockets and pid files, logs, crash dumps
    etc-ceph/                    what cinder-volume sees as /etc/ceph: a client
                                 conf and the keyrings of client.admin and the
                                 Cinder user
"""

from __future__ import annotations

from pathlib import Path

from testbed import layout
from testbed.infra.files import ini

MON_ID = "a"
MGR_ID = "x"
OSD_ID = 0
#: Sparse: only what is written takes disk space.
OSD_BLOCK_BYTES = 20 * 1024**3
#: The smallest target the OSD accepts; it bounds the OSD's caches.
OSD_MEMORY_TARGET = 939524096
POOLS = ("volumes", "images")
RADOS_CLASSES = "/usr/lib/x86_64-linux-gnu/rados-classes"


def run_dir(c: layout.CloudLayout) -> Path:
    return c.ceph_dir / "run"


def log_dir(c: layout.CloudLayout) -> Path:
    return c.ceph_dir / "log"


def daemon_dir(c: layout.CloudLayout, name: str) -> Path:
    """Data directory of a daemon, ``name`` like ``mon.a`` or ``osd.0``."""
    return c.ceph_dir / name


def etc_dir(c: layout.CloudLayout) -> Path:
    return c.ceph_dir / "etc-ceph"


def asok(c: layout.CloudLayout, name: str) -> Path:
    """Admin socket of a daemon (clients add their pid, see ``[client]``)."""
    return run_dir(c) / f"{name}.asok"


def mon_addrs(c: layout.CloudLayout) -> str:
    return f"[v2:{layout.HOST}:{c.ceph_mon_port},v1:{layout.HOST}:{c.ceph_mon_port + 1}]"


def cluster_conf(c: layout.CloudLayout, fsid: str) -> str:
    """The conf of the daemons and of admin tools (``ceph``, ``rbd`` as client.admin)."""
    d, run, log = c.ceph_dir, run_dir(c), log_dir(c)
    return ini({
        "global": {
            "fsid": fsid,
            "mon_host": mon_addrs(c),
            "public_addr": layout.HOST,
            "cluster_addr": layout.HOST,
            "public_network": f"{layout.HOST}/32",
            "ms_bind_ipv4": "true",
            "ms_bind_ipv6": "false",
            "ms_bind_port_min": c.ceph_bind_min,
            "ms_bind_port_max": c.ceph_bind_max,
            "auth_cluster_required": "cephx",
            "auth_service_required": "cephx",
            "auth_client_required": "cephx",
            "auth_allow_insecure_global_id_reclaim": "false",
            "keyring": f"{d}/ceph.$name.keyring",
            "admin_socket": f"{run}/$name.asok",
            "pid_file": f"{run}/$name.pid",
            "log_file": f"{log}/$name.log",
            "run_dir": run,
            "crash_dir": d / "crash",
            # One OSD: every pool has a single replica and placement stays on it.
            "osd_pool_default_size": 1,
            "osd_pool_default_min_size": 1,
            "osd_pool_default_pg_autoscale_mode": "off",
            "osd_crush_chooseleaf_type": 0,
            "mon_allow_pool_size_one": "true",
            "mon_allow_pool_delete": "true",
            "mon_warn_on_pool_no_redundancy": "false",
            "mon_warn_on_insecure_global_id_reclaim_allowed": "false",
            "mon_max_pg_per_osd": 1000,
            # The machine's disk is shared; do not go HEALTH_WARN over its fill level.
            "mon_data_avail_warn": 1,
            "mon_data_avail_crit": 0,
            # layering, exclusive-lock, object-map, fast-diff, deep-flatten: cheap diffs.
            "rbd_default_features": 61,
        },
        "client": {
            # Two rbd processes at once would otherwise fight over one socket.
            "admin_socket": f"{run}/$name.$pid.asok",
            "log_file": "",
        },
        "mon": {
            "mon_data": f"{d}/$name",
            "keyring": f"{d}/$name/keyring",
            "mon_cluster_log_file": f"{log}/cluster.log",
        },
        "mgr": {
            "mgr_data": f"{d}/$name",
            "keyring": f"{d}/$name/keyring",
            "mgr_disabled_modules": "dashboard prometheus restful",
        },
        "osd": {
            "osd_data": f"{d}/$name",
            "keyring": f"{d}/$name/keyring",
            "osd_objectstore": "bluestore",
            # Leave bluestore_block_path unset: "<osd_data>/block" makes a symlink loop.
            "bluestore_block_create": "true",
            "bluestore_block_size": OSD_BLOCK_BYTES,
            "bluestore_block_db_create": "false",
            "bluestore_block_wal_create": "false",
            "bluestore_fsck_on_mkfs": "false",
            "osd_memory_target": OSD_MEMORY_TARGET,
            "osd_memory_target_autotune": "false",
            "osd_class_dir": RADOS_CLASSES,
            "osd_class_load_list": "*",
            "osd_class_default_list": "*",
        },
    })


def client_conf(c: layout.CloudLayout, fsid: str) -> str:
    """A client-only conf: keyrings come from ``etc-ceph`` (also seen as /etc/ceph)."""
    return ini({
        "global": {
            "fsid": fsid,
            "mon_host": mon_addrs(c),
            "auth_cluster_required": "cephx",
            "auth_service_required": "cephx",
            "auth_client_required": "cephx",
            "keyring": f"{etc_dir(c)}/ceph.$name.keyring",
            "admin_socket": f"{run_dir(c)}/$name.$pid.asok",
            "log_file": "",
            "rbd_default_features": 61,
        },
    })
