"""What the supervisor hands the web server: the bus, the store and a few callables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.bus import Bus
from gateway.store import Store
from gateway.web.config import WebConfig


@dataclass(frozen=True, kw_only=True)
class WebContext:
    gateway_id: str
    config: WebConfig
    bus: Bus  # last_snapshot, last_status, last_price, dr_events, load_states; subscribe for live updates
    store: Store  # history, aggregates, register_deltas
    health: Callable[[], Mapping[str, Any]]  # Gateway.health(): meters, adapters (Health), components
    loads: Callable[[], Sequence[Mapping[str, Any]]]  # name, rated_power_w, priority, description, actuator
    reload_rules: Callable[[], Awaitable[str | None]] | None  # None = ok, else the error text
    version: str
    started: datetime
