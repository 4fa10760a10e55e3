"""ZigBee Smart Energy adapter (entry point ``adapters.zigbee:plugin``).

The gateway as ZigBee coordinator and Energy Service Interface (Metering,
Price, DRLC and Time servers) for in-home displays and load controllers, and
as an actuator for smart plugs (``zigbee:<ieee>/<endpoint>``).  See
:mod:`adapters.zigbee.adapter` for the lifecycle and :mod:`adapters.zigbee.esi`
for what is served.  No CBKE: the gateway is not SE-certifiable.
"""

from __future__ import annotations

from pydantic import ValidationError

from typing import TYPE_CHECKING

from adapters.base import AdapterContext
from adapters.zigbee.address import parse_actuator
from adapters.zigbee.config import ZigbeeConfig
from adapters.zigbee.events import DrlcEventStatus, PriceAck
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from adapters.zigbee.adapter import ZigbeeAdapter

# zigpy is imported only when an adapter is created (adapters.zigbee.adapter):
# ``han-gateway check`` and the CLI's argument parsing stay fast.
__all__ = ["DrlcEventStatus", "PriceAck", "ZigbeeConfig", "ZigbeePlugin", "plugin"]


class ZigbeePlugin:
    name = "zigbee"
    config_model = ZigbeeConfig

    def create(self, context: AdapterContext) -> ZigbeeAdapter:
        """Build the adapter (no I/O: ``start`` opens the radio).

        Raises:
            ConfigError: ``context.config`` is not a valid ``[adapter.zigbee]`` section.
        """
        from adapters.zigbee.adapter import ZigbeeAdapter

        try:
            return ZigbeeAdapter.from_context(context)
        except ValidationError as exc:
            raise ConfigError(
                [("", ".".join(["adapter", "zigbee", *(str(p) for p in err["loc"])]), err["msg"])
                 for err in exc.errors()]
            ) from exc

    def actuator_problem(self, address: str) -> str | None:
        """What is wrong with ``<ieee>/<endpoint>[?rated_w=W]``, or None."""
        try:
            parse_actuator(address)
        except ValueError as exc:
            return str(exc)
        return None


plugin = ZigbeePlugin()
