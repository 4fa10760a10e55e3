"""Configuration of the ZigBee Smart Energy adapter (``[adapter.zigbee]`` in gateway.toml).

Validated once into a frozen pydantic model, then translated by
:func:`zigpy_config` into the dict zigpy's (voluptuous) schema expects, and by
:func:`radio_class` into the radio library's ``ControllerApplication``.
Secrets: none here (the network key is generated and kept by the radio and the
zigpy database; install codes are given on the command line, never stored).
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "HA_PROFILE",
    "RADIO_LIBRARIES",
    "SE_PROFILE",
    "ZigbeeConfig",
    "installed_radios",
    "radio_class",
    "zigpy_config",
]

DATABASE_NAME: Final = "zigbee.db"  # in the gateway's data_dir unless ``database`` is set
SE_PROFILE: Final = 0x0109
HA_PROFILE: Final = 0x0104
ESI_DEVICE_TYPE: Final = 0x0500  # SE "Energy Service Interface"
METER_DEVICE_TYPE: Final = 0x0501  # HA/SE "Metering device"

# The zigpy radio libraries by zigpy's radio type name: (module, distribution).
# zigpy 2.4 also lets a library advertise itself in the ``zigpy.radio`` entry
# point group (name -> ControllerApplication); those are found as well.
RADIO_LIBRARIES: Final[dict[str, tuple[str, str]]] = {
    "ezsp": ("bellows.zigbee.application", "bellows"),
    "znp": ("zigpy_znp.zigbee.application", "zigpy-znp"),
    "deconz": ("zigpy_deconz.zigbee.application", "zigpy-deconz"),
    "zigate": ("zigpy_zigate.zigbee.application", "zigpy-zigate"),
    "xbee": ("zigpy_xbee.zigbee.application", "zigpy-xbee"),
}

# ISO 4217 numeric codes for PriceSignal.currency (alpha) -> PublishPrice Currency.
CURRENCY_NUMERIC: Final[dict[str, int]] = {
    "EUR": 978, "GBP": 826, "USD": 840, "CHF": 756, "SEK": 752, "NOK": 578, "DKK": 208,
    "PLN": 985, "CZK": 203, "HUF": 348, "AUD": 36, "NZD": 554, "CAD": 124, "JPY": 392,
}


def installed_radios() -> dict[str, str]:
    """Radio type -> ``module:Class`` (or entry point value) for every installed radio library."""
    found = {
        name: f"{module}:ControllerApplication"
        for name, (module, _dist) in RADIO_LIBRARIES.items()
        if importlib.util.find_spec(module.split(".")[0]) is not None
    }
    for ep in entry_points(group="zigpy.radio"):
        found.setdefault(ep.name, ep.value)
    return found


def radio_class(name: str) -> type[Any]:
    """The radio library's ``ControllerApplication`` subclass for ``name``.

    Raises:
        LookupError: the radio type is unknown or its library is not installed.
    """
    radios = installed_radios()
    target = radios.get(name)
    if target is None:
        dist = RADIO_LIBRARIES.get(name, ("", ""))[1]
        hint = f" (pip install {dist})" if dist else ""
        raise LookupError(
            f"radio type {name!r} is not available{hint}; installed: {', '.join(sorted(radios)) or 'none'}"
        )
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr or "ControllerApplication")
    if not isinstance(cls, type):
        raise LookupError(f"{target} is not a class")
    return cls


class ZigbeeConfig(BaseModel):
    """Keys of ``[adapter.zigbee]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    radio: str = "ezsp"  # zigpy radio type: ezsp (bellows), znp, deconz, zigate, xbee
    device: str = "/dev/ttyUSB0"  # serial device, or socket://host:port for a networked stick
    baudrate: int = Field(default=115200, gt=0)
    flow_control: Literal["hardware", "software"] | None = None
    channel: int | None = Field(default=None, ge=11, le=26)  # None: the radio library's choice
    pan_id: int | None = Field(default=None, ge=0, le=0xFFFE)
    # zigpy's SQLite database (devices, network backups).  None: <data_dir>/zigbee.db
    # (in memory only when no data_dir is known, so every start forgets the devices).
    database: Path | None = None
    permit_join_s: int = Field(default=60, ge=1, le=254)
    meter: str | None = None  # meter whose snapshots feed the Metering server; None: the first
    se_endpoint: int = Field(default=10, ge=1, le=240)  # the ESI on profile 0x0109
    ha_endpoint: int = Field(default=11, ge=1, le=240)  # the same clusters on profile 0x0104
    provider_id: int = Field(default=0, ge=0, le=0xFFFFFFFF)
    rate_label: str = ""  # PublishPrice RateLabel, at most 12 bytes UTF-8
    currency: int | None = Field(default=None, ge=0, le=999)  # ISO 4217 numeric; None: from the signal
    trailing_digits: int = Field(default=4, ge=0, le=15)  # price = round(price_per_kwh * 10**digits)
    price_tiers: int = Field(default=0, ge=0, le=15)  # tiers the tariff has (0: not tiered)
    utility_enrollment_group: int = Field(default=0, ge=0, le=255)
    timezone: str | None = None  # IANA zone for Time's TimeZone/DST; None: UTC, not claimed
    time_superseding: bool = False  # TimeStatus Superseding: take priority over other time servers
    command_timeout_s: float = Field(default=10.0, gt=0)  # a device's answer to a command
    confirm_timeout_s: float = Field(default=10.0, gt=0)  # wait for an on/off report, then read it
    radio_config: dict[str, Any] = Field(default_factory=dict)  # extra zigpy/radio library keys

    @field_validator("radio")
    @classmethod
    def _radio(cls, v: str) -> str:
        radios = installed_radios()
        if v not in radios:
            dist = RADIO_LIBRARIES.get(v, ("", ""))[1]
            hint = f"; install {dist}" if dist else ""
            raise ValueError(
                f"radio type {v!r} not available{hint} (installed: {', '.join(sorted(radios)) or 'none'})"
            )
        return v

    @field_validator("rate_label")
    @classmethod
    def _label(cls, v: str) -> str:
        if len(v.encode("utf-8")) > 12:
            raise ValueError("at most 12 bytes of UTF-8 (SE PublishPrice RateLabel)")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    def zone(self) -> ZoneInfo | None:
        return ZoneInfo(self.timezone) if self.timezone else None


def endpoint_descriptors(cfg: ZigbeeConfig) -> list[dict[str, Any]]:
    """The coordinator's ESI endpoints as zigpy ``additional_endpoints`` entries.

    One endpoint per profile: SE devices look for the ESI with a Match_Desc on
    profile 0x0109, HA devices (and ZHA) on 0x0104.  No KeyEstablishment
    (0x0800): without CBKE the gateway must not claim it.
    """
    servers = [0x0000, 0x000A, 0x0700, 0x0701, 0x0702]
    return [
        {"endpoint": cfg.se_endpoint, "profile": SE_PROFILE, "device_type": ESI_DEVICE_TYPE,
         "device_version": 0, "input_clusters": servers, "output_clusters": [0x0006, 0x0008]},
        {"endpoint": cfg.ha_endpoint, "profile": HA_PROFILE, "device_type": METER_DEVICE_TYPE,
         "device_version": 0, "input_clusters": servers, "output_clusters": [0x0006, 0x0008]},
    ]


def zigpy_config(cfg: ZigbeeConfig) -> dict[str, Any]:
    """The config dict for the radio library's ``ControllerApplication`` (zigpy's schema)."""
    network: dict[str, Any] = {}
    if cfg.channel is not None:
        network["channel"] = cfg.channel
        network["channels"] = [cfg.channel]
    if cfg.pan_id is not None:
        network["pan_id"] = cfg.pan_id
    device: dict[str, Any] = {"path": cfg.device, "baudrate": cfg.baudrate}
    if cfg.flow_control is not None:
        device["flow_control"] = cfg.flow_control
    out: dict[str, Any] = {
        "device": device,
        "database_path": str(cfg.database) if cfg.database is not None else None,
        "network": network,
        "ota": {"enabled": False},  # the gateway does not update device firmware
        "additional_endpoints": endpoint_descriptors(cfg),
    }
    for key, value in cfg.radio_config.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
