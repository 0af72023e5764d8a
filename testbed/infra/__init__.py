"""The testbed's shared infrastructure: MariaDB, RabbitMQ, ZooKeeper, Ceph, ssh hosts,
slapd and PostgreSQL."""

from __future__ import annotations

from testbed import layout
from testbed.component import Component
from testbed.infra import ceph, mariadb, postgresql, rabbitmq, slapd, sshhost, zookeeper


def components() -> list[Component]:
    """Every infrastructure component, in the order ``up`` reports them."""
    return [
        mariadb.component(),
        rabbitmq.component(),
        zookeeper.component(),
        slapd.component(),
        postgresql.component(),
        *(ceph.component(c) for c in layout.CLOUDS),
        *sshhost.components(),
    ]
