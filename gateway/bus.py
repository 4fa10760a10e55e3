"""In-process async pub/sub between meters, signal inputs, rules, store and adapters.

Every subscriber has its own bounded queue.  ``publish`` never blocks: when a
subscriber's queue is full its oldest item is dropped and counted, so one slow
consumer never stalls a meter or another consumer.  Durable delivery is not the
bus's job: snapshots that must survive go through the store's outbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from datetime import datetime

from gateway.model import DemandResponseEvent, LoadState, PriceSignal, Snapshot

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterStatus:
    """Health of one meter reader, published on every change."""

    meter: str
    online: bool  # receiving valid frames recently
    detail: str = ""
    frames: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxChanged:
    """The store appended rows to the outbox (adapters wake up and drain)."""

    last_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalInput:
    """A price or DR message as received by an input (MQTT topic, KNX/BACnet write, ...).

    Inputs do not parse or trust it: ``gateway.signals`` checks the JSON
    schema and, where configured, the Ed25519 signature, then publishes a
    ``PriceSignal`` / ``DemandResponseEvent`` or a ``SignalRejected``.
    """

    kind: str  # "price" | "dr"
    payload: bytes
    source: str  # "mqtt", "web", "knx", ... (for logs and the audit trail)
    received: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalRejected:
    """A signal input that was refused, with the reason (published on MQTT's error topic)."""

    kind: str
    source: str
    reason: str
    received: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OverrideRequest:
    """A person asks for a load to be on, off, limited or back under the rules ("auto").

    Every path (MQTT ``load/<name>/set``, the web page, a BACnet override
    object) publishes this; the rule runner answers with an ``OverrideResult``
    and, when accepted, a new ``LoadState``.
    """

    request_id: str
    load: str
    mode: str  # "on" | "off" | "limit" | "auto"
    source: str
    limit_w: float | None = None
    duration_s: float | None = None  # None: the load's configured default expiry


@dataclass(frozen=True, slots=True, kw_only=True)
class OverrideResult:
    request_id: str
    load: str
    ok: bool
    reason: str = ""  # why it was refused (unknown load, bad mode, ...)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadFeedback:
    """What an actuator reports on its own (status address, attribute report)."""

    actuator: str  # the full address, e.g. "knx:1/2/3"
    on: bool
    at: datetime
    power_w: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DrEventReport:
    """What a device says about a DR event it was sent (ZigBee DRLC ReportEventStatus, ...).

    Published by the adapter that heard it; the MQTT adapter forwards it to
    ``han/<gateway>/dr/<event>/report`` and the rule runner keeps it in the audit trail.
    """

    event_id: str  # the DemandResponseEvent it answers ("" when the device's id is not ours)
    device: str  # the device's address in its network (IEEE address, ...)
    status: str  # received, started, completed, opted_out, ... (the network's own names)
    at: datetime  # when the device says it happened
    source: str  # the network: "zigbee"
    detail: dict[str, Any] = field(default_factory=dict)  # the network's fields, JSON-able


class Subscription(Generic[T]):
    def __init__(self, bus: Bus, kinds: tuple[type[Any], ...], maxsize: int) -> None:
        self._bus = bus
        self.kinds = kinds
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _offer(self, item: T) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    async def get(self) -> T:
        return await self._queue.get()

    def get_nowait(self) -> T | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def qsize(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._bus._subs.discard(self)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[T]:
        while True:
            yield await self._queue.get()


class Bus:
    def __init__(self) -> None:
        self._subs: set[Subscription[Any]] = set()
        self.last_snapshot: dict[str, Snapshot] = {}
        self.last_status: dict[str, MeterStatus] = {}
        # the current signals and load states, for late subscribers (web page, adapters)
        self.last_price: PriceSignal | None = None
        self.dr_events: dict[str, DemandResponseEvent] = {}  # known, not cancelled
        self.load_states: dict[str, LoadState] = {}

    def subscribe(self, *kinds: type[T], maxsize: int = 1000) -> Subscription[T]:
        sub: Subscription[T] = Subscription(self, kinds, maxsize)
        self._subs.add(sub)
        return sub

    def publish(self, item: object) -> None:
        if isinstance(item, Snapshot):
            self.last_snapshot[item.meter] = item
        elif isinstance(item, MeterStatus):
            self.last_status[item.meter] = item
        elif isinstance(item, LoadState):
            self.load_states[item.load] = item
        elif isinstance(item, PriceSignal):
            self.last_price = item
        elif isinstance(item, DemandResponseEvent):
            if item.cancelled:
                self.dr_events.pop(item.event_id, None)
            else:
                for old in item.supersedes:
                    self.dr_events.pop(old, None)
                self.dr_events[item.event_id] = item
        for sub in tuple(self._subs):
            if isinstance(item, sub.kinds):
                sub._offer(item)
