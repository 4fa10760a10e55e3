"""MQTT control topics: price and DR in, load overrides in, load states and signals out.

Topics under ``<base>/<gateway>/`` (payloads documented in the README):

- ``price/set``, ``dr/set`` (in): price and DR messages (JSON, see
  ``gateway/signals/messages.py``), passed to the signal gate unparsed;
  retained messages are ignored, so a stale one on the broker is never
  applied again at reconnect;
- ``load/<name>/set`` (in): a manual override, ``ON`` / ``OFF`` / ``AUTO`` or
  JSON ``{"mode": "off", "duration_s": 3600}`` (``mode`` on, off, limit with
  ``limit_w``, or auto to hand the load back to the rules);
- ``price`` (out, retained): the current price; ``dr/<event id>`` (out,
  retained; cleared when cancelled); ``load/<name>/state`` (out, retained):
  on/off, the rule and reason, override, fail-safe deadline;
- ``dr/<event id>/report`` (out): what a device said about the event (e.g. a
  ZigBee load controller's ReportEventStatus: received, started, opted out);
- ``error`` (out): every refused message, with the reason.

Actuators ``mqtt:<topic>``: SHED publishes ``payload_off`` (default ``OFF``),
RESTORE ``payload_on`` (``ON``), LIMIT the limit in watts as a number, at
QoS 1 and not retained; with ``actuator_json = true`` a JSON object
``{"state": "OFF", "limit_w": null, "load": ..., "rule": ..., "reason": ...,
"until": ...}`` instead.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from gateway.bus import DrEventReport
from gateway.model import DemandResponseEvent, LoadAction, LoadCommand, LoadState, PriceSignal

__all__ = ["Override", "actuator_payload", "dr_json", "dr_report_json", "error_json", "load_state_json",
           "parse_override", "price_json"]

_MODES = ("on", "off", "limit", "auto")
_MAX_OVERRIDE = 4096


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Override:
    __slots__ = ("duration_s", "limit_w", "mode")

    def __init__(self, mode: str, duration_s: float | None, limit_w: float | None) -> None:
        self.mode = mode
        self.duration_s = duration_s
        self.limit_w = limit_w


def parse_override(payload: bytes) -> Override:
    """``ON`` / ``OFF`` / ``AUTO`` or a JSON object; raises ValueError with the reason."""
    if len(payload) > _MAX_OVERRIDE:
        raise ValueError("override message too long")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("override message is not UTF-8") from None
    if text.lower() in _MODES and text.lower() != "limit":
        return Override(text.lower(), None, None)
    try:
        obj = json.loads(text)
    except ValueError:
        raise ValueError("expected ON, OFF, AUTO or a JSON object with mode") from None
    if not isinstance(obj, dict):
        raise ValueError("expected ON, OFF, AUTO or a JSON object with mode")
    unknown = set(obj) - {"mode", "state", "duration_s", "limit_w"}
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))[:100]}")
    mode = obj.get("mode", obj.get("state"))
    if not isinstance(mode, str) or mode.lower() not in _MODES:
        raise ValueError("mode: expected on, off, limit or auto")
    duration = obj.get("duration_s")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)
                                 or not math.isfinite(duration) or duration <= 0):
        raise ValueError("duration_s: expected a number of seconds > 0")
    limit = obj.get("limit_w")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                              or not math.isfinite(limit) or limit < 0):
        raise ValueError("limit_w: expected a number of watts >= 0")
    if mode.lower() == "limit" and limit is None:
        raise ValueError("mode limit needs limit_w")
    return Override(mode.lower(), None if duration is None else float(duration),
                    None if limit is None else float(limit))


def price_json(p: PriceSignal) -> str:
    return _dump({"price": p.price_per_kwh, "currency": p.currency, "tier": p.tier,
                  "start": _iso(p.start), "end": _iso(p.end), "source": p.source})


def dr_json(e: DemandResponseEvent) -> str:
    return _dump({"event_id": e.event_id, "start": _iso(e.start), "end": _iso(e.end),
                  "criticality": e.criticality, "level": e.level,
                  "load_classes": list(e.load_classes), "target_power_w": e.target_power_w,
                  "load_adjustment_pct": e.load_adjustment_pct,
                  "duty_cycle_pct": e.duty_cycle_pct, "issuer": e.issuer, "source": e.source})


def dr_report_json(r: DrEventReport) -> str:
    return _dump({"event_id": r.event_id, "device": r.device, "status": r.status,
                  "time": _iso(r.at), "source": r.source, "detail": r.detail})


def load_state_json(s: LoadState) -> str:
    return _dump({"load": s.load, "state": "ON" if s.on else "OFF", "on": s.on,
                  "since": _iso(s.since), "override": s.override, "rule": s.rule,
                  "reason": s.reason, "limit_w": s.limit_w, "until": _iso(s.until),
                  "power_w": s.power_w})


def error_json(kind: str, source: str, reason: str, at: datetime, topic: str = "") -> str:
    return _dump({"kind": kind, "source": source, "topic": topic, "reason": reason,
                  "time": _iso(at)})


def actuator_payload(cmd: LoadCommand, *, on: str, off: str, as_json: bool) -> str:
    if as_json:
        return _dump({"state": off if cmd.action is LoadAction.SHED else on,
                      "limit_w": cmd.limit_w, "load": cmd.load, "rule": cmd.rule,
                      "reason": cmd.reason, "until": _iso(cmd.until)})
    if cmd.action is LoadAction.LIMIT and cmd.limit_w is not None:
        return f"{cmd.limit_w:.0f}"
    return off if cmd.action is LoadAction.SHED else on
