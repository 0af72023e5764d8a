"""An ML2 mechanism driver that binds every port: Neutron without agents.

Without an agent no mechanism driver would bind a port, so servers of the
fake compute driver would fail to build. This driver binds the first
segment offered to it with an OVS-style VIF and marks the port ACTIVE, for
any host. It owns no resources and needs no configuration.
"""

from __future__ import annotations

from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class BindAllMechanismDriver(api.MechanismDriver):
    """Binds every port on whatever host asks (registered as ``stackhop_bind_all``)."""

    def initialize(self) -> None:
        """Nothing to set up: the driver keeps no state."""

    def bind_port(self, context: api.PortContext) -> None:
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                "ovs",
                {"port_filter": True, "ovs_hybrid_plug": False},
                status=constants.PORT_STATUS_ACTIVE,
            )
            return
