"""A second nova-api and nova-compute of src whose image API is the legacy Glance.

The legacy single-store Glance (:mod:`testbed.openstack.glance_legacy`) is
not in the Keystone catalog, so src's Nova cannot boot or rebuild from its
images. This pair is the cheapest faithful way to get a Nova that does,
without touching src's Nova:

- it shares src's Nova databases, cells, RabbitMQ vhost, conductor and
  scheduler (same ``nova.conf``), with one overlay file read after it:
  ``[glance] endpoint_override`` = the legacy Glance, its own ``host``
  (``src-legacy-compute``), ``state_path``, ``instances_path`` and lock
  directory (:attr:`testbed.layout.CloudLayout.legacy_compute`);
- ``nova-api-legacy-src`` on :func:`port` (src: 18784), not in the catalog;
  clients reach it with ``compute_endpoint_override`` (:func:`url`);
- ``nova-compute-legacy-src`` on the testbed's fake driver, like src's
  compute (image-booted servers get a root disk under its own
  ``instances_path``, downloaded from the legacy Glance; its compute host is
  ``src-legacy-compute`` over ssh), with almost all of its RAM, vCPUs and disk
  reserved: the scheduler's weighers always prefer src's own compute, so
  servers of other tests never land here. A server is put here with
  ``availability_zone="nova:src-legacy-compute"`` (admin), booted and rebuilt
  through :func:`url`.

Nova reads an image's record at the API (boot, rebuild) and again on the
compute (rebuild): both must see the legacy Glance. The conductor does not
look at images for a rebuild onto the same host.
"""

from __future__ import annotations

from pathlib import Path

from testbed import layout
from testbed.component import Component
from testbed.openstack import glance_legacy, nova, runtime
from testbed.openstack.config import service_etc, write_ini
from testbed.process import Daemon, TestbedError

NAME = "nova_legacy"
#: The clouds with a legacy Glance get this pair too.
CLOUDS = glance_legacy.CLOUDS
#: What the legacy compute keeps for the servers booted on it (the rest is reserved).
FREE_RAM_MB, FREE_VCPUS, FREE_DISK_GB = 8192, 8, 100


def port(c: layout.CloudLayout) -> int:
    """The extra nova-api's port (src: 18784, beside src's 18774)."""
    return c.port_base + 8784


def url(c: layout.CloudLayout) -> str:
    """The compute endpoint of the extra nova-api (for ``compute_endpoint_override``)."""
    return f"http://{layout.HOST}:{port(c)}/v2.1"


def compute_host(c: layout.CloudLayout) -> str:
    """Host name of the legacy compute (``src-legacy-compute``)."""
    return c.legacy_compute.name


def availability_zone(c: layout.CloudLayout) -> str:
    """What a server create names to land on the legacy compute (admin only)."""
    return f"nova:{compute_host(c)}"


def overlay_file(c: layout.CloudLayout) -> Path:
    return service_etc(c, NAME) / "nova-legacy.conf"


def _write_overlay(c: layout.CloudLayout) -> bool:
    data = c.legacy_compute.state_path  # service_data(c, NAME), as for every service
    for d in (service_etc(c, NAME), data, data / "locks"):
        d.mkdir(parents=True, exist_ok=True)
    # FakeDriverWithoutFakeNodes reports 1000 vCPUs, 800000 MiB and 600000 GiB.
    return write_ini(
        overlay_file(c),
        {
            "DEFAULT": {
                "host": compute_host(c),
                "state_path": data,
                "instances_path": c.legacy_compute.instances_path,
                "reserved_host_memory_mb": 800000 - FREE_RAM_MB,
                "reserved_host_cpus": 1000 - FREE_VCPUS,
                "reserved_host_disk_mb": (600000 - FREE_DISK_GB) * 1024,
            },
            "glance": {"endpoint_override": glance_legacy.url(c)},
            "oslo_concurrency": {"lock_path": data / "locks"},
        },
    )


def daemons(c: layout.CloudLayout) -> list[Daemon]:
    env = runtime.service_env()
    api = runtime.uwsgi_daemon(
        f"nova-api-legacy-{c.name}",
        port(c),
        "nova.wsgi.osapi_compute:application",
        env={
            **env,
            "OS_NOVA_CONFIG_DIR": str(service_etc(c, NAME)),
            # Absolute paths stay as they are: src's nova.conf, then the overlay.
            "OS_NOVA_CONFIG_FILES": ";".join(
                str(p) for p in (nova._paste_ini(), nova.config_file(c), overlay_file(c))
            ),
        },
    )
    return [api, compute_daemon(c)]


def compute_daemon(c: layout.CloudLayout) -> Daemon:
    """``nova-compute-legacy-<cloud>``: src's ``nova.conf``, then the overlay."""
    return nova.compute_daemon_for(
        f"nova-compute-legacy-{c.name}", c, compute_host(c), [nova.config_file(c), overlay_file(c)]
    )


def _discover(c: layout.CloudLayout) -> None:
    """Map the legacy compute's host into cell1 once its compute node exists."""
    from testbed.infra import mariadb

    host = compute_host(c)

    def count(db: str, sql: str) -> int:
        return int(mariadb.sql(sql, database=c.db_name(db)).strip() or 0)

    def mapped() -> bool:
        return count(nova.API_DB, f"SELECT COUNT(*) FROM host_mappings WHERE host = '{host}'") > 0

    if mapped():
        return
    runtime.wait_for(
        lambda: count(nova.CELL1_DB, "SELECT COUNT(*) FROM compute_nodes "
                      f"WHERE host = '{host}' AND deleted = 0") > 0,
        120, f"the compute node {host}", layout.LOG_DIR / f"nova-compute-legacy-{c.name}.log",
    )
    nova._manage(c, nova.config_file(c), "cell_v2", "discover_hosts")
    if not mapped():
        raise TestbedError(f"nova-manage discover_hosts did not map {host}")


def component(c: layout.CloudLayout) -> Component:
    """``nova-legacy-<cloud>``: after the cloud's Nova and its legacy Glance."""
    ds = daemons(c)

    def setup() -> None:
        runtime.write_shared_files()
        runtime.restart_on_change(_write_overlay(c), ds)
        # src's nova.conf is read first and written by src's Nova component (before this one).
        runtime.restart_if_newer(nova.config_file(c), ds)

    return runtime.ServiceComponent(
        name=f"nova-legacy-{c.name}",
        after=(f"{nova.NAME}-{c.name}", f"glance-legacy-{c.name}"),
        daemons=ds,
        setup=setup,
        after_start=lambda: _discover(c),
    )


def components() -> list[Component]:
    return [component(c) for c in CLOUDS]
