"""The testbed's shared infrastructure: MariaDB, RabbitMQ, ZooKeeper, Ceph, ssh hosts."""

from __future__ import annotations

from testbed.component import Component
from testbed.infra import mariadb, rabbitmq


def components() -> list[Component]:
    """Every infrastructure component, in the order ``up`` reports them."""
    return [mariadb.component(), rabbitmq.component()]
