"""BACnet/IP adapter (entry point ``adapters.bacnet:plugin``): the gateway as a BACnet
device, and loads switched by writing commandable objects of other devices.

See :mod:`adapters.bacnet.adapter` for the objects and lifecycle,
:mod:`adapters.bacnet.address` for the actuator syntax.
"""

from __future__ import annotations

from pydantic import ValidationError

from adapters.base import AdapterContext
from adapters.bacnet.adapter import BacnetAdapter
from adapters.bacnet.address import ActuatorAddress, parse_actuator
from adapters.bacnet.config import BacnetConfig
from gateway.errors import ConfigError

__all__ = ["ActuatorAddress", "BacnetAdapter", "BacnetConfig", "BacnetPlugin", "parse_actuator", "plugin"]


class BacnetPlugin:
    name = "bacnet"
    config_model = BacnetConfig
    # BACnet shows live values: it takes snapshots from the bus, not from a store outbox
    # (its outbox rows, if the supervisor keeps any, are acked at once).
    uses_outbox = False

    def create(self, context: AdapterContext) -> BacnetAdapter:
        """Build the adapter (no I/O, no tasks: ``start`` does that).

        Raises:
            ConfigError: ``context.config`` is not a valid ``[adapter.bacnet]`` section.
        """
        try:
            return BacnetAdapter.from_context(context)
        except ValidationError as exc:
            raise ConfigError(
                [("", ".".join(["adapter", "bacnet", *(str(p) for p in err["loc"])]), err["msg"])
                 for err in exc.errors()]
            ) from exc

    def actuator_problem(self, address: str) -> str | None:
        """What is wrong with the part after ``bacnet:`` of a load's actuator, or None."""
        parsed = parse_actuator(address)
        return parsed if isinstance(parsed, str) else None

    def warnings(self, config: BacnetConfig) -> list[str]:
        """What ``han-gateway check`` should tell the installer about this section."""
        local = config.local
        out = [
            f"BACnet/IP is unauthenticated and unencrypted: any host that reaches UDP {local.port} "
            f"on {local.host} can read the gateway's values and subscribe to them; keep the BACnet "
            "network behind the gateway (a separate VLAN or interface, no route from the home LAN "
            "or the internet)."
        ]
        overrides = sorted(n for n, p in config.loads.items() if p.override)
        if overrides:
            out.append("any host on that network can also switch the overridden load(s) "
                       f"{', '.join(overrides)}; the BACnet network must be trusted.")
        if config.foreign_device is not None or config.bbmd_peers:
            out.append("BBMD / foreign-device registration carries the device across "
                       "subnets; make sure those routes stay inside the building network.")
        if local.host == "0.0.0.0" or local.prefix == 0:
            out.append("bind a specific interface address (address = \"<ip>/<prefix>\"), "
                       "not every interface.")
        return out


plugin = BacnetPlugin()
