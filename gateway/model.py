"""The gateway's one vocabulary: readings, snapshots, price/DR signals, loads.

Frozen dataclasses with explicit units.  A ``Reading.id`` is an OBIS code in
canonical text form (``A-B:C.D.E``, see :mod:`gateway.protocols.obis`) or a
protocol's own short address where no OBIS code exists (``1.8.0``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final

from gateway.protocols.obis import ObisCode, normalise_id

__all__ = [
    "DemandResponseEvent",
    "LoadAction",
    "LoadCommand",
    "LoadState",
    "MeterFrame",
    "ObisCode",
    "OutboxItem",
    "PriceSignal",
    "Reading",
    "Snapshot",
    "make_reading",
    "normalise_id",
]

Value = int | float | str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    id: str
    value: Value
    unit: str | None = None
    timestamp: datetime | None = None  # the meter's own time for this value (M-Bus channels)
    extra: tuple[tuple[str, Any], ...] = ()  # protocol-specific detail, JSON-able

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "value": self.value, "unit": self.unit}
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp.isoformat()
        for k, v in self.extra:
            out[k] = v
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reading:
        """Rebuild a reading from :meth:`to_json` output (its exact inverse).

        Keys other than ``id``, ``value``, ``unit`` and ``timestamp`` become
        ``extra`` in their original order.

        Raises:
            KeyError: ``id`` or ``value`` is missing.
            ValueError: ``timestamp`` is not an ISO 8601 string.
        """
        ts = data.get("timestamp")
        return cls(
            id=data["id"],
            value=data["value"],
            unit=data.get("unit"),
            timestamp=datetime.fromisoformat(ts) if ts is not None else None,
            extra=tuple(
                (k, v) for k, v in data.items() if k not in ("id", "value", "unit", "timestamp")
            ),
        )


def _reading_factory() -> Callable[[str, Value, str | None, datetime | None, tuple[tuple[str, Any], ...]], Reading]:
    """``make_reading(id, value, unit, timestamp, extra)``: a Reading at about half the cost.

    A frozen dataclass ``__init__`` goes through ``object.__setattr__`` once per
    field; for the 30-100 readings of a telegram that is a third of a codec's
    decode time.  Setting the slots through their descriptors is the same thing
    without the detour.  Done only while ``Reading`` has exactly these fields and
    no ``__post_init__`` (checked here, next to the class); otherwise the real
    constructor is used.  The codecs' hot paths use it; everything else should
    call ``Reading(...)``.
    """
    names = tuple(f.name for f in fields(Reading))
    if names != ("id", "value", "unit", "timestamp", "extra") or hasattr(Reading, "__post_init__"):
        return lambda rid, value, unit, ts, extra: Reading(id=rid, value=value, unit=unit, timestamp=ts, extra=extra)
    new = object.__new__
    set_id, set_value, set_unit, set_timestamp, set_extra = (getattr(Reading, n).__set__ for n in names)

    def make(rid: str, value: Value, unit: str | None, ts: datetime | None,
             extra: tuple[tuple[str, Any], ...]) -> Reading:
        reading: Reading = new(Reading)
        set_id(reading, rid)
        set_value(reading, value)
        set_unit(reading, unit)
        set_timestamp(reading, ts)
        set_extra(reading, extra)
        return reading

    return make


make_reading: Final = _reading_factory()


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterFrame:
    """One complete readout decoded from a meter, as a codec returns it."""

    protocol: str
    meter_id: str | None  # the meter's own identification (serial), if it sends one
    timestamp: datetime | None  # the meter's own clock for the frame, timezone-aware
    checksum_ok: bool | None  # None where the protocol/version carries no checksum
    readings: tuple[Reading, ...]
    header: str = ""  # identification line ("/ISK5\\2M550T-1012")
    raw: bytes = b""
    offset: int = 0  # position of the frame's first byte in the fed stream

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "meter_id": self.meter_id,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "checksum_ok": self.checksum_ok,
            "readings": [r.to_json() for r in self.readings],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A frame as the gateway publishes and stores it: tied to a configured meter."""

    meter: str  # configured meter id (config `meter[].id`)
    protocol: str
    device_id: str | None
    timestamp: datetime  # meter time if it sent one, else reception time (UTC)
    received: datetime
    readings: tuple[Reading, ...]
    checksum_ok: bool | None = None
    header: str = ""  # the meter's identification line, e.g. "/ISK5\\2M550T-1012"

    def reading(self, id_: str) -> Reading | None:
        for r in self.readings:
            if r.id == id_:
                return r
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "meter": self.meter,
            "protocol": self.protocol,
            "device_id": self.device_id,
            "timestamp": self.timestamp.isoformat(),
            "received": self.received.isoformat(),
            "checksum_ok": self.checksum_ok,
            "header": self.header,
            "readings": [r.to_json() for r in self.readings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        """Rebuild a snapshot from :meth:`to_json` output (its exact inverse).

        Raises:
            KeyError: a required key is missing.
            ValueError: a timestamp is not an ISO 8601 string.
        """
        return cls(
            meter=data["meter"],
            protocol=data["protocol"],
            device_id=data["device_id"],
            timestamp=datetime.fromisoformat(data["timestamp"]),
            received=datetime.fromisoformat(data["received"]),
            checksum_ok=data["checksum_ok"],
            header=data.get("header", ""),  # absent in rows written before it existed
            readings=tuple(Reading.from_json(r) for r in data["readings"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxItem:
    """One snapshot queued in the store's outbox for one destination."""

    id: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceSignal:
    start: datetime
    end: datetime
    price_per_kwh: float
    currency: str = "EUR"
    source: str = ""
    tier: int | None = None  # tariff tier / price level (ZigBee SE PriceTier, 1 = cheapest)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandResponseEvent:
    event_id: str
    start: datetime
    end: datetime
    level: int = 1  # 0 = none, higher = stronger request to reduce
    target_power_w: float | None = None
    source: str = ""
    issuer: str = ""  # who sent it (OpenADR VTN id, utility, "mqtt")
    # 1-9 as ZigBee SE DRLC criticality levels: 1 green, 2-6 voluntary levels 1-5,
    # 7 emergency, 8 planned outage, 9 service disconnect.  A signal source maps
    # its own scale onto this one (OpenADR SIMPLE 1 moderate, 2 high, 3 special).
    criticality: int = 1
    load_classes: tuple[str, ...] = ()  # target load classes; () = every load
    load_adjustment_pct: float | None = None  # e.g. -30.0: reduce load by 30 %
    duty_cycle_pct: float | None = None  # e.g. 50.0: run at most half the time
    randomize_start_s: float = 0.0  # start somewhere in [start, start + this)
    randomize_end_s: float = 0.0  # end somewhere in [end, end + this)
    cancelled: bool = False  # a cancellation of ``event_id``
    supersedes: tuple[str, ...] = ()  # event ids this one replaces

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


class LoadAction(enum.Enum):
    SHED = "shed"
    RESTORE = "restore"
    LIMIT = "limit"  # run at no more than ``LoadCommand.limit_w``


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadCommand:
    load: str
    action: LoadAction
    reason: str
    rule: str = ""
    until: datetime | None = None  # fail-safe: restore no later than this
    limit_w: float | None = None  # for LoadAction.LIMIT
    actuator: str = ""  # the load's actuator address ("mqtt:home/boiler/set")
    issued: datetime | None = None  # the engine's ``now`` when it decided


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadState:
    load: str
    on: bool
    since: datetime
    override: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    rule: str = ""
    limit_w: float | None = None  # set while limited
    until: datetime | None = None  # fail-safe deadline of a shed, or end of an override
    power_w: float | None = None  # measured by the actuator, where it can
