"""Topic layout and Home Assistant MQTT discovery payloads (pure functions, no I/O).

Topics (DESIGN.md "MQTT conventions")::

    <base>/<gw>/status                          online/offline, retained, LWT offline
    <base>/<gw>/meter/<meter>/availability      online/offline, retained
    <base>/<gw>/meter/<meter>/state             JSON snapshot, retained
    <base>/<gw>/meter/<meter>/history           JSON snapshot of backlog, not retained
    <base>/<gw>/meter/<meter>/<quantity key>    one value, retained
    <prefix>/sensor/<gw>_<meter>/<key>/config   HA discovery, retained
    <prefix>/status                             HA birth message ("online")

Discovery follows https://www.home-assistant.io/integrations/mqtt/#discovery-messages
(one config per entity, ``device`` and ``origin`` blocks, ``availability_mode:
all``), the way zigbee2mqtt does it.  Not supported: device-based (``/device/``)
discovery, abbreviations, entity types other than ``sensor``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import gateway
from gateway.model import Reading, Snapshot
from gateway.quantities import Quantity, quantities_for, slug

ORIGIN_NAME = "han-gateway"
#: Published as ``origin.support_url`` when set (the project has no public URL yet).
SUPPORT_URL = ""

ONLINE = "online"
OFFLINE = "offline"

_SEGMENT_FORBIDDEN = re.compile(r"[/+#\x00]")


def topic_segment(text: str) -> str:
    """``text`` made safe for one topic level (no ``/``, ``+``, ``#``)."""
    return _SEGMENT_FORBIDDEN.sub("_", text) or "_"


@dataclass(frozen=True, slots=True, kw_only=True)
class Topics:
    base: str
    gateway: str
    prefix: str = "homeassistant"

    @property
    def root(self) -> str:
        return f"{self.base}/{topic_segment(self.gateway)}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    def meter(self, meter: str) -> str:
        return f"{self.root}/meter/{topic_segment(meter)}"

    def state(self, meter: str) -> str:
        return f"{self.meter(meter)}/state"

    def history(self, meter: str) -> str:
        return f"{self.meter(meter)}/history"

    def availability(self, meter: str) -> str:
        return f"{self.meter(meter)}/availability"

    def quantity(self, meter: str, key: str) -> str:
        return f"{self.meter(meter)}/{key}"

    # ------------------------------------------- signals, loads (see control.py)
    @property
    def price(self) -> str:
        return f"{self.root}/price"

    @property
    def price_set(self) -> str:
        return f"{self.root}/price/set"

    def dr(self, event_id: str) -> str:
        return f"{self.root}/dr/{topic_segment(event_id)}"

    def dr_report(self, event_id: str) -> str:
        return f"{self.dr(event_id)}/report"

    @property
    def dr_set(self) -> str:
        return f"{self.root}/dr/set"

    def load_state(self, load: str) -> str:
        return f"{self.root}/load/{topic_segment(load)}/state"

    @property
    def load_set_filter(self) -> str:
        return f"{self.root}/load/+/set"

    def load_from_set_topic(self, topic: str) -> str | None:
        """``han/home/load/boiler/set`` -> ``boiler`` (None for other topics)."""
        head = f"{self.root}/load/"
        if topic.startswith(head) and topic.endswith("/set"):
            name = topic[len(head):-len("/set")]
            return name if name and "/" not in name else None
        return None

    @property
    def error(self) -> str:
        return f"{self.root}/error"

    @property
    def ha_status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def discovery_filter(self) -> str:
        """Subscription that shows every retained sensor config (to find our stale ones)."""
        return f"{self.prefix}/sensor/+/+/config"

    def node_id(self, meter: str) -> str:
        return f"{slug(self.gateway)}_{slug(meter)}"

    def config(self, meter: str, key: str) -> str:
        return f"{self.prefix}/sensor/{self.node_id(meter)}/{key}/config"

    def unique_id_prefix(self) -> str:
        return f"han_gateway_{slug(self.gateway)}_"

    def device_identifier(self, meter: str) -> str:
        return f"han_gateway_{slug(self.gateway)}_{slug(meter)}"

    def unique_id(self, meter: str, key: str) -> str:
        return f"{self.device_identifier(meter)}_{key}"

    def is_own_config_topic(self, topic: str) -> bool:
        """Whether ``topic`` is a sensor config under one of this gateway's node ids."""
        parts = topic.split("/")
        return (
            len(parts) == len(self.prefix.split("/")) + 4
            and topic.startswith(f"{self.prefix}/sensor/{slug(self.gateway)}_")
            and parts[-1] == "config"
        )


# ------------------------------------------------------------------ device
# IEC 62056-21 / DSMR identification: "/XXXZ..." where XXX is the FLAG
# manufacturer id (flagassociation.com); a few common ones.
FLAG_MANUFACTURERS: Mapping[str, str] = {
    "AUX": "Ningbo Sanxing (AUX)",
    "DZG": "DZG Metering",
    "EBZ": "eBZ",
    "ELS": "Elster",
    "EMH": "EMH metering",
    "ESY": "EasyMeter",
    "FLU": "Landis+Gyr (Fluvius)",
    "HLY": "Holley",
    "ISK": "Iskraemeco",
    "ITF": "Itron",
    "KAM": "Kamstrup",
    "KFM": "Kaifa",
    "LGF": "Landis+Gyr",
    "LGZ": "Landis+Gyr",
    "SAG": "Sagemcom",
    "XMX": "Xemex",
    "ZPA": "ZPA Smart Energy",
}

PROTOCOL_MODELS: Mapping[str, str] = {
    "dsmr": "DSMR P1 meter",
    "iec62056-21": "IEC 62056-21 meter",
    "mbus": "M-Bus meter",
    "dlms": "DLMS/COSEM meter",
    "sml": "SML meter",
}

# Reading ids that may carry the identification line or the manufacturer.
_HEADER_IDS = ("header", "identification")
_MANUFACTURER_IDS = ("manufacturer",)
_VERSION_IDS = ("1-3:0.2.8", "0-0:96.1.4", "version")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    serial_number: str | None = None


def _text(snapshot: Snapshot, ids: tuple[str, ...]) -> str | None:
    for rid in ids:
        r = snapshot.reading(rid)
        if r is not None and str(r.value).strip():
            return str(r.value).strip()
    return None


def device_info(snapshot: Snapshot) -> DeviceInfo:
    """What a snapshot tells about its meter, for HA's device registry."""
    manufacturer = _text(snapshot, _MANUFACTURER_IDS)
    model = PROTOCOL_MODELS.get(snapshot.protocol, f"{snapshot.protocol} meter")
    header = snapshot.header or _text(snapshot, _HEADER_IDS)
    if header:
        ident = header.lstrip("/")
        flag = ident[:3].upper()
        if manufacturer is None and flag in FLAG_MANUFACTURERS:
            manufacturer = FLAG_MANUFACTURERS[flag]
        # "/ISK5\2M550T-1012": the type follows the baud-rate character and "\<n>".
        rest = re.sub(r"^...\d?(\\\d)?", "", ident).strip()
        if rest:
            model = rest
    version = _text(snapshot, _VERSION_IDS)
    if version is not None and version.isdigit() and len(version) == 2:
        version = f"{version[0]}.{version[1]}"  # DSMR "50" -> "5.0"
    return DeviceInfo(
        manufacturer=manufacturer,
        model=model,
        sw_version=version,
        serial_number=snapshot.device_id,
    )


def device_block(topics: Topics, meter: str, info: DeviceInfo) -> dict[str, Any]:
    block: dict[str, Any] = {
        "identifiers": [topics.device_identifier(meter)],
        "name": f"HAN {meter}",
    }
    for key in ("manufacturer", "model", "sw_version", "serial_number"):
        value = getattr(info, key)
        if value:
            block[key] = value
    return block


def origin_block() -> dict[str, str]:
    block = {"name": ORIGIN_NAME, "sw_version": gateway.__version__}
    if SUPPORT_URL:
        block["support_url"] = SUPPORT_URL
    return block


def config_payload(
    topics: Topics,
    meter: str,
    quantity: Quantity,
    info: DeviceInfo,
    *,
    expire_after_s: int | None = None,
) -> dict[str, Any]:
    """The retained discovery config for one (meter, quantity) sensor."""
    payload: dict[str, Any] = {
        "name": quantity.name,
        "unique_id": topics.unique_id(meter, quantity.key),
        "object_id": f"han_{slug(topics.gateway)}_{slug(meter)}_{quantity.key}",
        "state_topic": topics.quantity(meter, quantity.key),
        "availability": [
            {"topic": topics.status},
            {"topic": topics.availability(meter)},
        ],
        "availability_mode": "all",
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": device_block(topics, meter, info),
        "origin": origin_block(),
    }
    if quantity.device_class is not None:
        payload["device_class"] = quantity.device_class
    if quantity.state_class is not None:
        payload["state_class"] = quantity.state_class
    if quantity.unit is not None:
        payload["unit_of_measurement"] = quantity.unit
    if quantity.diagnostic:
        payload["entity_category"] = "diagnostic"
    if expire_after_s is not None:
        payload["expire_after"] = expire_after_s
    return payload


# ------------------------------------------------------------------ M-Bus
# M-Bus readings (EN 13757-3) are keyed by what the VIF says, not by OBIS: the codec
# puts the VIF's quantity in ``extra["quantity"]`` and the unit, scaled, in ``unit``
# (gateway/protocols/mbus/tables.py).  HA wants a device class whose unit list holds
# the unit (https://developers.home-assistant.io/docs/core/entity/sensor/), and a
# total that only grows as ``total_increasing`` so that it shows in the Energy
# dashboard; so units are converted to one HA accepts for the class.

# M-Bus unit -> (HA unit, factor from the M-Bus unit)
_MBUS_UNITS: Mapping[str, tuple[str, float]] = {
    "Wh": ("kWh", 1e-3),
    "J": ("GJ", 1e-9),
    "cal": ("kWh", 4.184 / 3.6e6),  # the (thermochemical) calorie of the 2013 VIF table
    "m³": ("m³", 1.0),
    "ft³": ("m³", 0.028316846592),
    "US gal": ("m³", 0.003785411784),
    "W": ("W", 1.0),
    "J/h": ("W", 1 / 3600),
    "m³/h": ("m³/h", 1.0),
    "m³/min": ("m³/h", 60.0),
    "m³/s": ("m³/h", 3600.0),
    "US gal/min": ("m³/h", 0.003785411784 * 60),
    "US gal/h": ("m³/h", 0.003785411784),
    "°C": ("°C", 1.0),
    "°F": ("°F", 1.0),
}

# extra["quantity"] -> (device class, or None: by medium; cumulative total?)
_MBUS_KINDS: Mapping[str, tuple[str | None, bool]] = {
    "energy": ("energy", True),
    "volume": (None, True),
    "power": ("power", False),
    "volume_flow": ("volume_flow_rate", False),
    "flow_temperature": ("temperature", False),
    "return_temperature": ("temperature", False),
    "external_temperature": ("temperature", False),
}

# medium (the last part of an M-Bus meter id, "12345678-PAD-01-water") -> HA class
# of its volume total; other media (heat meters' water volume) keep "volume".
_MBUS_VOLUME_CLASS: Mapping[str, str] = {
    "water": "water", "cold_water": "water", "warm_water": "water", "hot_water": "water",
    "dual_water": "water", "irrigation_water": "water", "water_logger": "water",
    "gas": "gas", "gas_logger": "gas", "gas_converter": "gas",
}  # fmt: skip


def mbus_quantity(reading: Reading, *, medium: str | None = None) -> Quantity | None:
    """The HA quantity of an M-Bus reading, or None when the mapping does not know it.

    Totals (energy, volume) are ``total_increasing`` only as instantaneous values of
    the current storage (0): a stored value of a past due date, a maximum or an error
    state is no running total, so it gets no state class.  Volumes of a water or gas
    meter (``medium``) are ``water``/``gas`` so that they land in the Energy dashboard.
    """
    extra = dict(reading.extra)
    kind = extra.get("quantity")
    conversion = _MBUS_UNITS.get(reading.unit or "")
    if not isinstance(kind, str) or kind not in _MBUS_KINDS or conversion is None:
        return None
    if isinstance(reading.value, str):  # an error state or a text the meter sent
        return None
    device_class, total = _MBUS_KINDS[kind]
    unit, scale = conversion
    if device_class is None:
        device_class = _MBUS_VOLUME_CLASS.get(medium or "", "volume")
    function = extra.get("function", "instantaneous")
    if total:
        live = function == "instantaneous" and extra.get("storage", 0) == 0
        state_class = "total_increasing" if live else None
    else:
        state_class = "measurement" if function != "error" else None
    return Quantity(key=slug(reading.id), name=_mbus_name(reading.id), device_class=device_class,
                    state_class=state_class, unit=unit, scale=scale)


def _mbus_name(reading_id: str) -> str:
    """``volume_flow_max_s5`` -> ``Volume flow max s5``."""
    return reading_id.replace("_", " ").capitalize()


def _mbus_medium(snapshot: Snapshot) -> str | None:
    device = snapshot.device_id or ""
    return device.rsplit("-", 1)[-1] if "-" in device else None


def ha_quantities(snapshot: Snapshot) -> list[tuple[Reading, Quantity]]:
    """:func:`gateway.quantities.quantities_for`, with the M-Bus readings of an
    ``mbus`` snapshot mapped by :func:`mbus_quantity` (keys stay unique: an M-Bus
    reading id is unique within its frame and its slug is the key)."""
    out = quantities_for(snapshot)
    if snapshot.protocol != "mbus":
        return out
    medium = _mbus_medium(snapshot)
    mapped: list[tuple[Reading, Quantity]] = []
    for reading, quantity in out:
        q = mbus_quantity(reading, medium=medium)
        mapped.append((reading, quantity if q is None else replace(q, key=quantity.key)))
    return mapped
