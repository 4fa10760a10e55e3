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
from dataclasses import dataclass
from typing import Any

import gateway
from gateway.model import Snapshot
from gateway.quantities import Quantity, slug

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
