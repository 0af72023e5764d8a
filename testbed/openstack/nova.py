"""Nova of one cloud: API, conductor, scheduler and a fake-driver compute over RabbitMQ.

Cells v2 with cell0 and cell1. The compute runs no guest: a server goes
ACTIVE in seconds and its usage is recorded like on a real cloud. Its driver
is Nova's fake one plus root disks (``shims/stackhop_fake_disk.py``, launched
by ``shims/stackhop_nova_compute.py``): an image-booted server gets
``<instances_path>/<uuid>/disk`` (the image's bytes, extended sparse to the
flavor's root disk), read over ssh on the compute host of the same name
(``src-compute``, :class:`testbed.layout.ComputeHost`); a volume-booted one
gets none. Power states are kept in the instance directories, so stop and
start work after the compute restarts. The schema work is its own component,
``nova-<cloud>-db``, so it runs while Keystone and Placement come up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed import layout
from testbed.component import Component
from testbed.infra import mariadb
from testbed.infra.locked import LockedComponent
from testbed.openstack import runtime, schema
from testbed.openstack.config import (
    authtoken,
    common_sections,
    make_service_dirs,
    service_auth,
    service_etc,
    write_ini,
)
from testbed.process import Daemon, TestbedError, run

NAME = "nova"
API_DB, CELL0_DB, CELL1_DB = "nova_api", "nova_cell0", "nova_cell1"
#: The compute driver: Nova's fake one keeping root disks (shims/stackhop_fake_disk.py).
COMPUTE_DRIVER = "stackhop_fake_disk.DiskFakeDriver"
#: Runs nova-compute with that driver importable where Nova looks (``nova.virt.*``).
COMPUTE_LAUNCHER = "stackhop_nova_compute"


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    ram: int  # MiB
    disk: int  # GiB


FLAVORS = (Flavor("1", "m1.tiny", 1, 512, 1), Flavor("2", "m1.small", 1, 2048, 20))


def config_file(c: layout.CloudLayout) -> Path:
    return service_etc(c, NAME) / "nova.conf"


def _db_config_file(c: layout.CloudLayout) -> Path:
    """What nova-manage needs for the schema work (the services' file restarts them on change)."""
    return service_etc(c, NAME) / "nova-db.conf"


def _database_sections(c: layout.CloudLayout) -> dict[str, dict[str, object]]:
    return {
        "DEFAULT": {"transport_url": c.transport_url},
        "api_database": {"connection": c.db_url(API_DB)},
        "database": {"connection": c.db_url(CELL1_DB)},
    }


def _paste_ini() -> Path:
    return layout.VENV_DIR / "etc" / "nova" / "api-paste.ini"


def _write_config(c: layout.CloudLayout) -> bool:
    make_service_dirs(c, NAME)
    compute = c.compute  # its state_path is service_data(c, NAME), as for every service
    sections = _database_sections(c)
    sections["DEFAULT"].update(
        {
            "host": compute.name,
            "my_ip": layout.HOST,
            "state_path": compute.state_path,
            "instances_path": compute.instances_path,
            # FakeDriver itself invents a new node UUID in every process, so a
            # restarted nova-compute collides with its own compute node record;
            # FakeDriverWithoutFakeNodes, which ours extends, keeps the node
            # identity in state_path like a real driver.
            "compute_driver": COMPUTE_DRIVER,
            # oslo.service waits up to 60 s for in-flight work on SIGTERM; a
            # testbed stops (and restarts after a config change) faster.
            "graceful_shutdown_timeout": 5,
        }
    )
    return write_ini(
        config_file(c),
        {
            **sections,
            "api": {"auth_strategy": "keystone"},
            "wsgi": {"api_paste_config": _paste_ini()},
            "keystone_authtoken": authtoken(c, NAME),
            "placement": service_auth(c, "placement"),
            "neutron": service_auth(c, "neutron"),
            "cinder": {**service_auth(c, "cinder"), "os_region_name": layout.REGION},
            "glance": {"region_name": layout.REGION},
            # Neutron lets only a caller with the service role delete a server's
            # port: Nova sends its own service token beside the user's.
            "service_user": {**service_auth(c, NAME), "send_service_user_token": True},
            # Hosts are mapped once at `up`; no periodic scan eating CPU.
            "scheduler": {"workers": 1, "discover_hosts_in_cells_interval": -1},
            "conductor": {"workers": 1},
            "vnc": {"enabled": False},
            **common_sections(c, NAME),
        },
    )


def _manage(c: layout.CloudLayout, conf: Path, *args: str) -> str:
    return run(
        [str(layout.VENV_BIN / "nova-manage"), "--config-file", str(conf), *args],
        log=layout.LOG_DIR / f"{NAME}-{c.name}-manage.log",
    ).stdout


def _migrate(c: layout.CloudLayout) -> None:
    """The API and cell1 schemas of an empty cloud (no cell mapped yet: cell1 alone)."""
    conf = _db_config_file(c)
    _manage(c, conf, "api_db", "sync")
    _manage(c, conf, "db", "sync", "--local_cell")


def _schema(c: layout.CloudLayout) -> None:
    """API and cell databases at head, cell0 and cell1 mapped; once per Nova version."""
    conf = _db_config_file(c)
    write_ini(conf, _database_sections(c))
    done = runtime.stamp(c, "nova-db", f"{runtime.version('nova')} {c.transport_url}")
    if done.done():
        return
    runtime.create_databases(c, CELL0_DB)
    schema.ensure(c, NAME, "nova", [API_DB, CELL1_DB], _migrate)
    # cell0 is a cell database like any other: the same schema, no rows.
    schema.load(schema.template_dir(NAME, "nova") / f"{CELL1_DB}.sql", c.db_name(CELL0_DB))
    # The cell mappings hold this cloud's URLs: never part of the template.
    _manage(c, conf, "cell_v2", "map_cell0", "--database_connection", c.db_url(CELL0_DB))
    cells = mariadb.sql("SELECT name FROM cell_mappings", database=c.db_name(API_DB)).split()
    if "cell1" not in cells:
        cell1 = ["--transport-url", c.transport_url, "--database_connection", c.db_url(CELL1_DB)]
        _manage(c, conf, "cell_v2", "create_cell", "--name", "cell1", *cell1)
    done.mark()


def _count(c: layout.CloudLayout, db: str, sql: str) -> int:
    return int(mariadb.sql(sql, database=c.db_name(db)).strip() or 0)


def _mapped(c: layout.CloudLayout) -> bool:
    host = c.compute_host
    return _count(c, API_DB, f"SELECT COUNT(*) FROM host_mappings WHERE host = '{host}'") > 0


def _compute_node_exists(c: layout.CloudLayout) -> bool:
    sql = f"SELECT COUNT(*) FROM compute_nodes WHERE host = '{c.compute_host}' AND deleted = 0"
    return _count(c, CELL1_DB, sql) > 0


def _discover_compute(c: layout.CloudLayout) -> None:
    """Map the compute host into cell1 once its compute node exists."""
    if _mapped(c):
        return
    log = layout.LOG_DIR / f"nova-compute-{c.name}.log"
    runtime.wait_for(lambda: _compute_node_exists(c), 120, f"the compute node of {c.name}", log)
    _manage(c, config_file(c), "cell_v2", "discover_hosts")
    if not _mapped(c):
        raise TestbedError(f"nova-manage discover_hosts did not map {c.compute_host}")


def _create_flavors(c: layout.CloudLayout) -> None:
    done = runtime.stamp(c, "nova-flavors", repr(FLAVORS))
    if done.done():
        return
    compute = runtime.admin_connection(c).compute
    for f in FLAVORS:
        if compute.find_flavor(f.id) is None:
            compute.create_flavor(
                id=f.id, name=f.name, vcpus=f.vcpus, ram=f.ram, disk=f.disk, is_public=True
            )
    done.mark()


def compute_daemon_for(
    name: str, c: layout.CloudLayout, host: str, config_files: Sequence[Path]
) -> Daemon:
    """A nova-compute of cloud ``c`` named ``host``, through :data:`COMPUTE_LAUNCHER`."""
    return runtime.console_daemon(
        name,
        [str(layout.VENV_BIN / "python"), "-m", COMPUTE_LAUNCHER],
        config_files,
        runtime.heartbeat_check(name, c.db_name(CELL1_DB), "nova-compute", host),
        env=runtime.service_env(),
    )


def compute_daemon(c: layout.CloudLayout) -> Daemon:
    """``nova-compute-<cloud>`` (host ``<cloud>-compute``)."""
    return compute_daemon_for(f"nova-compute-{c.name}", c, c.compute_host, [config_file(c)])


def daemons(c: layout.CloudLayout) -> list[Daemon]:
    conf = [config_file(c)]
    cell1 = c.db_name(CELL1_DB)
    env = runtime.service_env()
    api = runtime.uwsgi_daemon(
        f"nova-api-{c.name}",
        c.nova_port,
        "nova.wsgi.osapi_compute:application",
        env={
            **env,
            "OS_NOVA_CONFIG_DIR": str(service_etc(c, NAME)),
            # The app loads its paste pipeline from the first file (an absolute path stays as is).
            "OS_NOVA_CONFIG_FILES": f"{_paste_ini()};nova.conf",
        },
    )
    services = [
        runtime.console_daemon(
            f"nova-{s}-{c.name}",
            f"nova-{s}",
            conf,
            runtime.heartbeat_check(f"nova-{s}-{c.name}", cell1, f"nova-{s}", c.compute_host),
            env=env,
        )
        for s in ("conductor", "scheduler")
    ]
    return [api, *services, compute_daemon(c)]


def components(c: layout.CloudLayout) -> list[Component]:
    """``nova-<cloud>-db`` (schema, cells) and ``nova-<cloud>`` (services, host, flavors)."""
    ds = daemons(c)

    def setup() -> None:
        runtime.write_shared_files()
        runtime.restart_on_change(_write_config(c), ds)

    def after_start() -> None:
        _discover_compute(c)
        _create_flavors(c)

    db = LockedComponent(name=f"{NAME}-{c.name}-db", after=("mariadb",), setup=lambda: _schema(c))
    service = runtime.ServiceComponent(
        name=f"{NAME}-{c.name}",
        after=(db.name, "rabbitmq", f"keystone-{c.name}", f"placement-{c.name}"),
        daemons=ds,
        setup=setup,
        after_start=after_start,
    )
    return [db, service]
