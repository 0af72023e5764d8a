"""The list of everything the testbed runs, in one place."""

from __future__ import annotations

from testbed.component import Component


def all_components() -> list[Component]:
    from testbed import infra, openstack

    return [*infra.components(), *openstack.components()]
