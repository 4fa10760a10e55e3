"""What the ZigBee adapter publishes on the bus besides LoadFeedback (no zigpy import here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["DrlcEventStatus", "PriceAck"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DrlcEventStatus:
    """A device's DRLC ReportEventStatus (SE 1.4 D.2.3.3.1), for logs and MQTT forwarding."""

    device: str  # IEEE address, "00:0d:6f:..."
    endpoint: int
    issuer_event_id: int
    event_id: str | None  # the DemandResponseEvent this answers, if the gateway sent it
    status: int  # EventStatus code
    status_name: str  # "received", "started", "opted_out", ... or "0x.." when unknown
    status_time: datetime
    criticality_applied: int
    load_adjustment_applied_pct: int | None = None
    duty_cycle_applied_pct: int | None = None
    received: datetime

    def to_json(self) -> dict[str, Any]:
        """JSON-able form, e.g. for ``han/<gateway>/dr/<event>/status`` on MQTT."""
        return {
            "device": self.device, "endpoint": self.endpoint, "issuer_event_id": self.issuer_event_id,
            "event_id": self.event_id, "status": self.status, "status_name": self.status_name,
            "status_time": self.status_time.isoformat(), "criticality_applied": self.criticality_applied,
            "load_adjustment_applied_pct": self.load_adjustment_applied_pct,
            "duty_cycle_applied_pct": self.duty_cycle_applied_pct, "received": self.received.isoformat(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceAck:
    """A device's Price Acknowledgement (logged and counted, not published)."""

    device: str
    endpoint: int
    provider_id: int
    issuer_event_id: int
    ack_time: datetime
