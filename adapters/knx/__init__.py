"""KNX adapter (entry point ``adapters.knx:plugin``).

The supervisor validates ``[adapter.knx]`` with ``plugin.config_model`` and
builds the adapter with ``plugin.create(context)``; ``plugin.actuator_problem``
checks the part after ``knx:`` of a load's actuator and ``plugin.warnings``
what ``han-gateway check`` should say about a valid config.  See
:mod:`adapters.knx.adapter` for behaviour and lifecycle.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from adapters.base import AdapterContext
from adapters.knx.actuator import ActuatorAddress, actuator_problem, parse_actuator_address
from adapters.knx.adapter import ConnectionState, KnxAdapter
from adapters.knx.config import Exposure, KnxConfig
from gateway.errors import ConfigError

__all__ = [
    "ActuatorAddress",
    "ConnectionState",
    "Exposure",
    "KnxAdapter",
    "KnxConfig",
    "KnxPlugin",
    "parse_actuator_address",
    "plaintext_warning",
    "plugin",
]


def plaintext_warning(config: KnxConfig) -> str | None:
    """The warning ``han-gateway check`` prints for a KNX connection without IP Secure."""
    if config.secure:
        return None
    return (
        f"the KNX connection ({config.peer}) is plaintext: anyone on that network "
        "can read the values and switch the loads. Use KNX IP Secure (`keyring` with a "
        ".knxkeys export from ETS) and keep KNXnet/IP on a separate VLAN."
    )


class KnxPlugin:
    name = "knx"
    config_model = KnxConfig
    # KNX shows live values: it takes snapshots from the bus, not from a store outbox.
    uses_outbox = False

    def create(self, context: AdapterContext) -> KnxAdapter:
        """Build the adapter (no I/O, no tasks: ``start`` does that).

        Raises:
            ConfigError: ``context.config`` is not a valid ``[adapter.knx]`` section.
        """
        try:
            return KnxAdapter.from_context(context)
        except ValidationError as exc:
            raise ConfigError(
                [
                    ("", ".".join(["adapter", "knx", *(str(p) for p in err["loc"])]), err["msg"])
                    for err in exc.errors()
                ]
            ) from exc

    def actuator_problem(self, address: str) -> str | None:
        """``None`` if ``address`` (after ``knx:``) is a valid actuator, else the problem."""
        return actuator_problem(address)

    def warnings(self, config: KnxConfig) -> list[str]:
        """Warnings about a valid config (``han-gateway check`` prints them)."""
        warning = plaintext_warning(config)
        out = [] if warning is None else [warning]
        for key in ("keyring", "keyring_password_file"):
            path: Path | None = getattr(config, key)
            try:
                mode = path.stat().st_mode if path is not None else 0
            except OSError:
                continue  # a missing file is reported when the adapter starts
            if mode & 0o077:
                out.append(f"{key} {path} is readable by other users; chmod 600 it")
        return out


plugin = KnxPlugin()
