"""Neutron of one cloud: ML2 without agents, and the L3 router service plugin.

Type drivers flat, vlan and vxlan; the only mechanism driver is our
``stackhop_bind_all`` shim, which binds every port, so ports of fake-compute
servers become ACTIVE without any agent. Routers, external gateways and
floating IPs are plain database state here. The schema is migrated on
MariaDB with Neutron's own alembic chain (on SQLite it fails, and building
tables from models skips the data migrations).
"""

from __future__ import annotations

from pathlib import Path

from testbed import layout
from testbed.component import Component
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
from testbed.process import Daemon, run

NAME = "neutron"
#: The provider network the testbed's external networks use (flat, no VLAN).
PHYSNET = "physnet1"


def _config_files(c: layout.CloudLayout) -> tuple[Path, Path]:
    etc = service_etc(c, NAME)
    return etc / "neutron.conf", etc / "ml2_conf.ini"


def _write_config(c: layout.CloudLayout) -> bool:
    make_service_dirs(c, NAME)
    neutron_conf, ml2_conf = _config_files(c)
    changed = write_ini(
        neutron_conf,
        {
            "DEFAULT": {
                "core_plugin": "ml2",
                "service_plugins": "router",
                "auth_strategy": "keystone",
                "state_path": service_data(c, NAME),
                "api_paste_config": layout.VENV_DIR / "etc" / "neutron" / "api-paste.ini",
                # No agents listen: RPC notifications go nowhere, without a broker.
                "transport_url": "fake:/",
                "notify_nova_on_port_status_changes": False,
                "notify_nova_on_port_data_changes": False,
                "api_workers": 1,
                "rpc_workers": 0,
            },
            "database": {"connection": c.db_url(NAME)},
            "keystone_authtoken": authtoken(c, NAME),
            **common_sections(c, NAME),
        },
    )
    changed |= write_ini(
        ml2_conf,
        {
            "ml2": {
                "type_drivers": "flat,vlan,vxlan",
                "tenant_network_types": "vxlan",
                "mechanism_drivers": "stackhop_bind_all",
                "extension_drivers": "port_security",
            },
            "ml2_type_flat": {"flat_networks": "*"},
            "ml2_type_vlan": {"network_vlan_ranges": f"{PHYSNET}:100:199"},
            "ml2_type_vxlan": {"vni_ranges": "1:1000"},
        },
    )
    return changed


def _migrate(c: layout.CloudLayout) -> None:
    argv = [*runtime.BACKGROUND, str(layout.VENV_BIN / "neutron-db-manage")]
    for f in _config_files(c):
        argv += ["--config-file", str(f)]
    run(
        [*argv, "upgrade", "heads"], log=layout.LOG_DIR / f"{NAME}-{c.name}-manage.log", timeout=900
    )


def _db_sync(c: layout.CloudLayout) -> None:
    schema.ensure_once(c, NAME, "neutron", _migrate)


def daemon(c: layout.CloudLayout) -> Daemon:
    return runtime.uwsgi_daemon(
        f"{NAME}-{c.name}",
        c.neutron_port,
        "neutron.wsgi.api:application",
        env={
            "OS_NEUTRON_CONFIG_DIR": str(service_etc(c, NAME)),
            "OS_NEUTRON_CONFIG_FILES": ";".join(p.name for p in _config_files(c)),
        },
    )


def component(c: layout.CloudLayout) -> Component:
    """Neutron of cloud ``c``."""
    d = daemon(c)

    def setup() -> None:
        runtime.write_shared_files()
        runtime.restart_on_change(_write_config(c), [d])
        _db_sync(c)

    return LockedComponent(name=f"{NAME}-{c.name}", after=("mariadb",), daemons=[d], setup=setup)
