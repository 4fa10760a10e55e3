"""``/metrics`` in the Prometheus text format (prometheus-client).

A registry of its own per server (never the library's global one), holding
the process collector (CPU seconds, resident memory, open fds), the platform
collector, and one collector that reads a :class:`MetricsState` filled just
before each scrape: the async parts (outbox counts) are awaited by the
handler, so ``collect`` itself never touches the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from gateway.model import LoadState, Snapshot
from gateway.quantities import normalised_value, quantities_for


@dataclass(slots=True)
class MetricsState:
    """What one scrape reports; the counters in here live as long as the server."""

    gateway_id: str
    version: str
    started_ts: float
    load_decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # load, state, cause
    overrides: Counter[str] = field(default_factory=Counter)  # ok | refused | timeout
    sse_clients: int = 0
    # filled per scrape
    snapshots: Mapping[str, Snapshot] = field(default_factory=dict)
    health: Mapping[str, Any] = field(default_factory=dict)
    backlog: Mapping[str, int] = field(default_factory=dict)
    load_states: Mapping[str, LoadState] = field(default_factory=dict)
    price: tuple[float, str] | None = None
    dr_active: int = 0

    def note_load_state(self, st: LoadState) -> None:
        state = "limited" if st.limit_w is not None else ("on" if st.on else "off")
        self.load_decisions[(st.load, state, "override" if st.override else "rule")] += 1


def _counter(health: Any, key: str) -> int:
    if isinstance(health, Mapping):
        v = health.get(key, 0)
        return int(v) if isinstance(v, (int, float)) else 0
    return 0


class _GatewayCollector(Collector):
    def __init__(self, state: MetricsState) -> None:
        self.s = state

    def collect(self) -> Iterator[Any]:
        s = self.s
        info = InfoMetricFamily("han_gateway", "The gateway's id and version")
        info.add_metric([], {"gateway": s.gateway_id, "version": s.version})
        yield info
        start = GaugeMetricFamily("han_gateway_start_time_seconds", "When the web server started (Unix time)")
        start.add_metric([], s.started_ts)
        yield start

        reading = GaugeMetricFamily("han_reading", "Last numeric reading per meter and quantity (normalised unit)",
                                    labels=["meter", "quantity", "unit", "id"])
        for meter, snap in sorted(s.snapshots.items()):
            for r, q in quantities_for(snap):
                v = normalised_value(r, q)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    reading.add_metric([meter, q.key, q.unit or "", r.id], float(v))
        yield reading
        last = GaugeMetricFamily("han_meter_last_reading_timestamp_seconds", "Reception time of the last snapshot",
                                 labels=["meter"])
        for meter, snap in sorted(s.snapshots.items()):
            last.add_metric([meter], snap.received.timestamp())
        yield last

        meters = s.health.get("meters", {}) or {}
        online = GaugeMetricFamily("han_meter_online", "1 while the meter sends valid frames", labels=["meter"])
        frames = CounterMetricFamily("han_meter_frames", "Valid frames received", labels=["meter"])
        errors = CounterMetricFamily("han_meter_errors", "Frames discarded, by kind (all includes the others)",
                                     labels=["meter", "kind"])
        for meter, m in sorted(meters.items()):
            online.add_metric([meter], 1.0 if isinstance(m, Mapping) and m.get("online") else 0.0)
            frames.add_metric([meter], _counter(m, "frames"))
            errors.add_metric([meter, "all"], _counter(m, "errors"))
            errors.add_metric([meter, "checksum"], _counter(m, "checksum_errors"))
            errors.add_metric([meter, "decryption"], _counter(m, "decryption_errors"))
        yield online
        yield frames
        yield errors

        up = GaugeMetricFamily("han_adapter_up", "1 while the adapter reports healthy", labels=["adapter"])
        for name, h in sorted((s.health.get("adapters", {}) or {}).items()):
            ok = h.get("ok") if isinstance(h, Mapping) else getattr(h, "ok", False)
            up.add_metric([name], 1.0 if ok else 0.0)
        yield up
        backlog = GaugeMetricFamily("han_outbox_backlog", "Snapshots queued in the outbox", labels=["adapter"])
        for name, n in sorted(s.backlog.items()):
            backlog.add_metric([name], n)
        yield backlog

        restarts = CounterMetricFamily("han_component_restarts", "Restarts after a crash", labels=["component"])
        for name, c in sorted((s.health.get("components", {}) or {}).items()):
            restarts.add_metric([name], _counter(c, "restarts"))
        yield restarts

        load_on = GaugeMetricFamily("han_load_on", "1 while the load is on", labels=["load"])
        load_ovr = GaugeMetricFamily("han_load_override", "1 while a manual override holds the load",
                                     labels=["load"])
        for name, st in sorted(s.load_states.items()):
            load_on.add_metric([name], 1.0 if st.on else 0.0)
            load_ovr.add_metric([name], 1.0 if st.override else 0.0)
        yield load_on
        yield load_ovr
        decisions = CounterMetricFamily(
            "han_load_decisions", "Load states published since start, by resulting state and cause (rule or override)",
            labels=["load", "state", "cause"])
        for (load, state, cause), n in sorted(s.load_decisions.items()):
            decisions.add_metric([load, state, cause], n)
        yield decisions
        ovr = CounterMetricFamily("han_web_overrides", "Overrides asked through the web page, by result",
                                  labels=["result"])
        for result in ("ok", "refused", "timeout"):
            ovr.add_metric([result], s.overrides.get(result, 0))
        yield ovr

        price = GaugeMetricFamily("han_price_per_kwh", "Current energy price", labels=["currency"])
        if s.price is not None:
            price.add_metric([s.price[1]], s.price[0])
        yield price
        dr = GaugeMetricFamily("han_dr_events_active", "Demand-response events in force now")
        dr.add_metric([], s.dr_active)
        yield dr
        clients = GaugeMetricFamily("han_web_event_streams", "Open /api/events connections")
        clients.add_metric([], s.sse_clients)
        yield clients


def make_registry(state: MetricsState) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    reg.register(_GatewayCollector(state))
    return reg
