"""The OpenStack services of the testbed's two clouds, ``src`` and ``dst``.

Per cloud: Keystone, Glance, Placement, Nova, Neutron and Cinder, each a
component named ``<service>-<cloud>`` with its own ports, MariaDB databases
and RabbitMQ vhost (see :class:`testbed.layout.CloudLayout`). Nova's and
Cinder's schema work are separate components (``nova-<cloud>-db``,
``cinder-<cloud>-db``) so it overlaps with Keystone's start. Services run
from the virtualenv running the testbed, one worker each.
"""

from __future__ import annotations

from testbed import layout
from testbed.component import Component


def cloud_components(c: layout.CloudLayout) -> list[Component]:
    """Every OpenStack component of one cloud."""
    from testbed.openstack import cinder, glance, keystone, neutron, nova, placement

    return [
        keystone.component(c),
        glance.component(c),
        placement.component(c),
        *nova.components(c),
        neutron.component(c),
        *cinder.components(c),
    ]


def components() -> list[Component]:
    """The OpenStack components of both clouds."""
    from testbed.openstack import glance_legacy, nova_legacy

    return [
        *(comp for c in layout.CLOUDS for comp in cloud_components(c)),
        *glance_legacy.components(),
        *nova_legacy.components(),
    ]
