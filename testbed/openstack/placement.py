"""Placement of one cloud: the resource inventory nova-compute reports into."""

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
    service_etc,
    write_ini,
)
from testbed.process import Daemon, run

NAME = "placement"


def config_file(c: layout.CloudLayout) -> Path:
    return service_etc(c, NAME) / "placement.conf"


def _write_config(c: layout.CloudLayout) -> bool:
    make_service_dirs(c, NAME)
    return write_ini(
        config_file(c),
        {
            "DEFAULT": {},
            "placement_database": {"connection": c.db_url(NAME)},
            "api": {"auth_strategy": "keystone"},
            "keystone_authtoken": authtoken(c, NAME),
            **common_sections(c, NAME),
        },
    )


def _migrate(c: layout.CloudLayout) -> None:
    run(
        [
            str(layout.VENV_BIN / "placement-manage"),
            "--config-file",
            str(config_file(c)),
            "db",
            "sync",
        ],
        log=layout.LOG_DIR / f"{NAME}-{c.name}-manage.log",
    )


def _db_sync(c: layout.CloudLayout) -> None:
    schema.ensure_once(c, NAME, "openstack-placement", _migrate)


def daemon(c: layout.CloudLayout) -> Daemon:
    return runtime.uwsgi_daemon(
        f"{NAME}-{c.name}",
        c.placement_port,
        "placement.wsgi.api:application",
        env={"OS_PLACEMENT_CONFIG_DIR": str(service_etc(c, NAME))},
    )


def component(c: layout.CloudLayout) -> Component:
    """Placement of cloud ``c``."""
    d = daemon(c)

    def setup() -> None:
        runtime.write_shared_files()
        runtime.restart_on_change(_write_config(c), [d])
        _db_sync(c)

    return LockedComponent(name=f"{NAME}-{c.name}", after=("mariadb",), daemons=[d], setup=setup)
