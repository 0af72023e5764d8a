"""A legacy single-store Glance of src, as older clouds run it: ``file`` + ``rbd``, locations shown.

A third Glance API beside the two multi-store ones, so tests of the
location-swap method never disturb them:

- its own uWSGI process on :func:`port` (src: 19392), its own database
  ``src_glance_legacy`` and its own data directory;
- **single-store** configuration: no ``enabled_backends``, ``[glance_store]
  stores = file,rbd`` with ``default_store = file``; the ``rbd`` store is the
  cloud's pool ``images`` as the cephx user ``glance-src`` (shared with the
  multi-store Glance's ``rbd`` store: the same pool, image names are image
  IDs, and the two Glances never share an ID);
- ``show_multiple_locations = True`` and ``show_image_direct_url = True``,
  so an admin can add and remove an active image's locations;
- tokens checked by src's Keystone as the ``glance`` user. It is *not* in
  the Keystone catalog (Nova and Cinder keep using the multi-store Glance):
  clients reach it through the clouds.yaml entry ``src-legacy``, which is
  src's admin with ``image_endpoint_override`` pointing here.
"""

from __future__ import annotations

from pathlib import Path

from testbed import layout
from testbed.component import Component
from testbed.infra import ceph
from testbed.infra.locked import LockedComponent
from testbed.openstack import glance, runtime, schema
from testbed.openstack.config import (
    authtoken,
    common_sections,
    make_service_dirs,
    service_data,
    service_etc,
    write_ini,
)
from testbed.process import Daemon, run

NAME = "glance_legacy"
#: The clouds that have a legacy Glance (only src: one is enough to test against).
CLOUDS: tuple[layout.CloudLayout, ...] = layout.LEGACY_CLOUDS
#: Store types of the legacy Glance, as ``[glance_store] stores`` lists them.
STORES = ("file", "rbd")
DEFAULT_STORE = "file"


def port(c: layout.CloudLayout) -> int:
    """The legacy Glance API's port (src: 19392, beside the multi-store Glance's 19292)."""
    return c.port_base + 9392


def url(c: layout.CloudLayout) -> str:
    return f"http://{layout.HOST}:{port(c)}"


def cloud_name(c: layout.CloudLayout) -> str:
    """The clouds.yaml entry reaching this Glance (``src-legacy``)."""
    return f"{c.name}-legacy"


def file_store_dir(c: layout.CloudLayout) -> Path:
    """Where the legacy Glance's ``file`` store keeps images (a file per image ID)."""
    return service_data(c, NAME) / "images"


def config_file(c: layout.CloudLayout) -> Path:
    return service_etc(c, NAME) / "glance-api.conf"


def _write_config(c: layout.CloudLayout) -> bool:
    make_service_dirs(c, NAME)
    data = service_data(c, NAME)
    for d in (file_store_dir(c), data / "staging"):
        d.mkdir(parents=True, exist_ok=True)
    return write_ini(
        config_file(c),
        {
            "DEFAULT": {
                "show_multiple_locations": True,
                "show_image_direct_url": True,
                # Single-store: image import stages through a plain URI.
                "node_staging_uri": f"file://{data / 'staging'}",
                "enabled_import_methods": "[glance-direct,web-download]",
                "workers": 1,
            },
            "database": {"connection": c.db_url(NAME)},
            "glance_store": {
                "stores": ",".join(STORES),
                "default_store": DEFAULT_STORE,
                "filesystem_store_datadir": file_store_dir(c),
                **glance.rbd_store_options(c),
            },
            "keystone_authtoken": authtoken(c, glance.NAME),
            "paste_deploy": {
                "flavor": "keystone",
                "config_file": layout.VENV_DIR / "etc" / "glance" / "glance-api-paste.ini",
            },
            **common_sections(c, NAME),
        },
    )


def _migrate(c: layout.CloudLayout) -> None:
    run(
        [*runtime.BACKGROUND, str(layout.VENV_BIN / "glance-manage"),
         "--config-file", str(config_file(c)), "db_sync"],
        log=layout.LOG_DIR / f"{NAME}-{c.name}-manage.log",
    )


def _schema(c: layout.CloudLayout) -> None:
    """The multi-store Glance's schema template loaded into our database, else a migration."""
    done = runtime.stamp(c, f"{NAME}-db", runtime.version("glance"))
    if done.done():
        return
    runtime.create_databases(c, NAME)
    template = schema.template_dir(glance.NAME, "glance") / f"{glance.NAME}.sql"
    if template.exists():
        schema.load(template, c.db_name(NAME))
    else:
        _migrate(c)
    done.mark()


def daemon(c: layout.CloudLayout) -> Daemon:
    return runtime.uwsgi_daemon(
        f"glance-legacy-{c.name}",
        port(c),
        "glance.wsgi.api:application",
        env={"OS_GLANCE_CONFIG_DIR": str(service_etc(c, NAME))},
        extra_args=["--chunked-input-limit", str(10 * 1024 * 1024),
                    "--chunked-input-timeout", "60"],
        python_path=[ceph.python_path()],
    )


def component(c: layout.CloudLayout) -> Component:
    """``glance-legacy-<cloud>``: needs MariaDB, the cloud's Ceph and its Keystone."""
    d = daemon(c)

    def setup() -> None:
        runtime.write_shared_files()
        glance.ensure_ceph_user(c)
        runtime.restart_on_change(_write_config(c), [d])
        _schema(c)

    return LockedComponent(
        name=f"glance-legacy-{c.name}",
        # After the multi-store Glance: its schema template is then there to load.
        after=("mariadb", f"ceph-{c.name}", f"keystone-{c.name}", f"{glance.NAME}-{c.name}"),
        daemons=[d],
        setup=setup,
        after_start=lambda: glance.stores_configured(d),
    )


def components() -> list[Component]:
    return [component(c) for c in CLOUDS]
