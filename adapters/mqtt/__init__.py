"""MQTT adapter with Home Assistant discovery (entry point ``adapters.mqtt:plugin``).

The supervisor validates ``[adapter.mqtt]`` with ``plugin.config_model`` and
builds the adapter with ``plugin.create(context)``; see
:mod:`adapters.mqtt.adapter` for topics, delivery and lifecycle.
"""

from __future__ import annotations

from pydantic import ValidationError

from adapters.base import AdapterContext
from adapters.mqtt.adapter import ConnectionState, MqttAdapter
from adapters.mqtt.config import MqttConfig
from gateway.errors import ConfigError

__all__ = ["ConnectionState", "MqttAdapter", "MqttConfig", "MqttPlugin", "plugin"]


class MqttPlugin:
    name = "mqtt"
    config_model = MqttConfig
    uses_outbox = True  # store-and-forward: snapshots are acked after the broker's PUBACK

    def create(self, context: AdapterContext) -> MqttAdapter:
        """Build the adapter (no I/O, no tasks: ``start`` does that).

        Raises:
            ConfigError: ``context.config`` is not a valid ``[adapter.mqtt]`` section.
        """
        try:
            return MqttAdapter.from_context(context)
        except ValidationError as exc:
            raise ConfigError(
                [
                    (
                        "",
                        ".".join(["adapter", "mqtt", *(str(p) for p in err["loc"])]),
                        err["msg"],
                    )
                    for err in exc.errors()
                ]
            ) from exc


plugin = MqttPlugin()
