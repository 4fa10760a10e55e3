"""Modbus adapter (entry point ``adapters.modbus:plugin``).

A read-only Modbus TCP/RTU server that PV inverters, batteries, heat pumps,
EV chargers and PLCs read like a grid meter (SunSpec models 1 + 201/203, and
a flat float32 map), and a Modbus TCP client actuator for loads
(``modbus:HOST[:PORT]/UNIT/coil:N`` or ``.../hr:N=ON,OFF``).  See
:mod:`adapters.modbus.adapter`, :mod:`adapters.modbus.registers` and
:mod:`adapters.modbus.client`.
"""

from __future__ import annotations

from pydantic import ValidationError

from adapters.base import AdapterContext
from adapters.modbus.adapter import ModbusAdapter
from adapters.modbus.client import ModbusAddress, actuator_problem, parse_address
from adapters.modbus.config import ModbusConfig, TcpListen
from gateway.errors import ConfigError

__all__ = ["ModbusAdapter", "ModbusAddress", "ModbusConfig", "ModbusPlugin", "parse_address",
           "plugin"]


class ModbusPlugin:
    name = "modbus"
    config_model = ModbusConfig

    def create(self, context: AdapterContext) -> ModbusAdapter:
        """Build the adapter (no I/O, no tasks: ``start`` does that).

        Raises:
            ConfigError: ``context.config`` is not a valid ``[adapter.modbus]`` section.
        """
        try:
            return ModbusAdapter.from_context(context)
        except ValidationError as exc:
            raise ConfigError(
                [("", ".".join(["adapter", "modbus", *(str(p) for p in err["loc"])]), err["msg"])
                 for err in exc.errors()]
            ) from exc

    def warnings(self, config: ModbusConfig) -> list[str]:
        """What ``han-gateway check`` should point out about this section."""
        listen = config.listen_spec
        if not isinstance(listen, TcpListen):
            return []
        out = [f"Modbus TCP has no authentication and no encryption: anyone who can reach "
               f"{config.listen} reads the meter values; bind it to a trusted interface or VLAN"]
        if listen.host in ("0.0.0.0", "::", ""):
            out.append(f"{config.listen} listens on every interface; give the address of the "
                       "installation network's interface instead")
        return out

    def actuator_problem(self, address: str) -> str | None:
        """What is wrong with the part after ``modbus:`` of a load's actuator (None: fine)."""
        return actuator_problem(address)


plugin = ModbusPlugin()
