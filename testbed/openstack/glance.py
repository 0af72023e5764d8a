"""Glance of one cloud: file stores ``fast`` (default) and ``slow``, an ``rbd`` store, copy-image.

Multi-store with interoperable image import, so an admin can copy an image
to another store (``copy-image``) and delete it from one store, which is
what stackhop's image-move job uses. The ``rbd`` store keeps images in the
cloud's Ceph pool ``images`` as Glance's RBD driver writes them (an image
named after the image ID with a protected snapshot ``snap``), reached as the
cephx user ``glance-<cloud>`` (``profile rbd`` on that pool only).
"""

from __future__ import annotations

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
    service_data,
    service_etc,
    write_ini,
)
from testbed.process import Daemon, TestbedError, run

NAME = "glance"
STORES = ("fast", "slow")
DEFAULT_STORE = "fast"
#: The RBD store of each cloud's multi-store Glance, and its Ceph pool (made by ceph-<cloud>).
RBD_STORE = "rbd"
RBD_POOL = "images"
#: Glance's RBD store chunk (MiB): the RBD object size of the images it writes.
RBD_CHUNK_MIB = 8


def ceph_user(c: layout.CloudLayout) -> str:
    """The cephx user of Glance's RBD store on cloud ``c`` (without ``client.``)."""
    return f"glance-{c.name}"


def ensure_ceph_user(c: layout.CloudLayout) -> None:
    """The Glance cephx user with ``profile rbd`` on the ``images`` pool, its keyring 0600.

    The keyring lands beside the Cinder user's in the cloud's client directory
    (``ceph.cinder_conf(c)`` names keyrings ``ceph.$name.keyring`` there).
    """
    path = ceph.keyring(c, ceph_user(c))
    if path.exists():
        return
    caps = f"profile rbd pool={RBD_POOL}"
    key = ceph.ceph(c, "auth", "get-or-create", f"client.{ceph_user(c)}",
                    "mon", "profile rbd", "osd", caps, "mgr", caps)
    write_file(path, key, mode=0o600)


def rbd_store_options(c: layout.CloudLayout) -> dict[str, object]:
    """glance_store's RBD options for the cloud's pool ``images`` (multi- and single-store)."""
    return {
        "rbd_store_pool": RBD_POOL,
        "rbd_store_user": ceph_user(c),
        "rbd_store_ceph_conf": ceph.cinder_conf(c),
        "rbd_store_chunk_size": RBD_CHUNK_MIB,
        "rados_connect_timeout": 10,
    }


def store_dir(c: layout.CloudLayout, store: str) -> Path:
    """Where a file store of cloud ``c`` keeps its images."""
    return service_data(c, NAME) / "stores" / store


def _write_config(c: layout.CloudLayout) -> bool:
    make_service_dirs(c, NAME)
    data = service_data(c, NAME)
    stores = {
        s: {"filesystem_store_datadir": store_dir(c, s), "store_description": f"{s} file store"}
        for s in STORES
    }
    stores[RBD_STORE] = {**rbd_store_options(c), "store_description": "Ceph RBD store"}
    for d in [*(store_dir(c, s) for s in STORES), data / "staging", data / "tasks"]:
        d.mkdir(parents=True, exist_ok=True)
    backends = [f"{s}:file" for s in STORES] + [f"{RBD_STORE}:rbd"]
    return write_ini(
        service_etc(c, NAME) / "glance-api.conf",
        {
            "DEFAULT": {
                "enabled_backends": ", ".join(backends),
                # Written as a list: a plain comma-separated value makes image create fail with 500.
                "enabled_import_methods": "[glance-direct,web-download,copy-image]",
                "show_image_direct_url": False,
                "workers": 1,
            },
            "database": {"connection": c.db_url(NAME)},
            "glance_store": {"default_backend": DEFAULT_STORE},
            **stores,
            "os_glance_staging_store": {"filesystem_store_datadir": data / "staging"},
            "os_glance_tasks_store": {"filesystem_store_datadir": data / "tasks"},
            "keystone_authtoken": authtoken(c, NAME),
            "paste_deploy": {
                "flavor": "keystone",
                "config_file": layout.VENV_DIR / "etc" / "glance" / "glance-api-paste.ini",
            },
            **common_sections(c, NAME),
        },
    )


def _migrate(c: layout.CloudLayout) -> None:
    run(
        [
            *runtime.BACKGROUND,
            str(layout.VENV_BIN / "glance-manage"),
            "--config-file",
            str(service_etc(c, NAME) / "glance-api.conf"),
            "db_sync",
        ],
        log=layout.LOG_DIR / f"{NAME}-{c.name}-manage.log",
    )


def _db_sync(c: layout.CloudLayout) -> None:
    schema.ensure_once(c, NAME, "glance", _migrate)


def daemon(c: layout.CloudLayout) -> Daemon:
    return runtime.uwsgi_daemon(
        f"{NAME}-{c.name}",
        c.glance_port,
        "glance.wsgi.api:application",
        env={"OS_GLANCE_CONFIG_DIR": str(service_etc(c, NAME))},
        # Debian's rados/rbd bindings, for the rbd store.
        python_path=[ceph.python_path()],
        # Image uploads arrive chunked.
        extra_args=[
            "--chunked-input-limit",
            str(10 * 1024 * 1024),
            "--chunked-input-timeout",
            "60",
        ],
    )


def stores_configured(d: Daemon) -> None:
    """Glance only warns when a store fails to configure and then serves without it."""
    if "Failed to configure store" not in runtime.log_since_start(d):
        return
    d.stop()
    d.ensure()
    if "Failed to configure store" in runtime.log_since_start(d):
        raise TestbedError(f"Glance could not configure its stores; see {d.log}")


def component(c: layout.CloudLayout) -> Component:
    """Glance of cloud ``c`` (tokens are checked against ``keystone-<cloud>`` per request)."""
    d = daemon(c)

    def setup() -> None:
        runtime.write_shared_files()
        ensure_ceph_user(c)
        runtime.restart_on_change(_write_config(c), [d])
        _db_sync(c)

    return LockedComponent(
        name=f"{NAME}-{c.name}",
        after=("mariadb", f"ceph-{c.name}"),
        daemons=[d],
        setup=setup,
        after_start=lambda: stores_configured(d),
    )
