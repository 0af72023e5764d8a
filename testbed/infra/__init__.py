"""The testbed's shared infrastructure: MariaDB, RabbitMQ, ZooKeeper, Ceph, ssh hosts."""

from __future__ import annotations

from testbed.component import Component
from testbed import layout
from testbed.infra import ceph, mariadb, rabbitmq, zookeeper


def components() -> list[Component]:
    """Every infrastructure component, in the order ``up`` reports them."""
    return [
        mariadb.component(),
        rabbitmq.component(),
        zookeeper.component(),
        *(ceph.component(c) for c in layout.CLOUDS),
    ]
