"""An OpenADR 2.0b VEN (Virtual End Node) built on openleadr.

What it does (OpenADR 2.0b profile specification, simpleHttp pull model):

- registers with the VTN (``oadrCreatePartyRegistration``), then polls it
  (``oadrPoll``) every ``poll_interval_s`` (default: the interval the VTN asks
  for in its registration answer);
- maps each event of an ``oadrDistributeEvent`` to a
  :class:`~gateway.model.DemandResponseEvent` (:func:`map_event`), decides to
  opt in or out (:func:`opt_for`), answers the VTN with ``oadrCreatedEvent``
  and publishes the events it opted into on the bus; a cancellation is
  published with ``cancelled=True``;
- offers a ``TELEMETRY_USAGE`` report with the configured meter's import power
  (``powerReal``, W, from OBIS ``1-0:1.7.0``) and import energy
  (``energyReal``, Wh, ``1-0:1.8.0`` or the sum of the tariff registers
  ``1-0:1.8.1``...``1-0:1.8.4``), taken from ``bus.last_snapshot``, and sends
  it at the interval the VTN requests (``oadrUpdateReport``);
- survives VTN outages: every failed exchange ends the session, and a new one
  (a fresh openleadr client that registers again) starts after a
  :class:`~gateway.backoff.Backoff` delay.

The mapping of an event (all of it in :func:`map_event`, pure):

- ``event_id`` is the VTN's eventID; ``issuer`` the VTN's vtnID; ``source``
  is ``"openadr"``.
- ``start`` is the active period's dtstart; ``end`` is dtstart + duration.  A
  duration of zero (an event open until cancelled) ends after
  ``open_ended_s`` (default 4 h) as a fail-safe.
- ``level`` is the SIMPLE signal's level (0 normal, 1 moderate, 2 high,
  3 special), the highest over the event's intervals (one event in the model
  carries one level); ``criticality`` maps it onto ZigBee SE DRLC's 1-9 scale
  with :data:`SIMPLE_TO_CRITICALITY`: 0 -> 1 (green), 1 -> 3, 2 -> 5 (voluntary
  levels 2 and 4), 3 -> 7 (emergency).  Levels are rounded and clamped to
  0-3 first (some VTNs send 1.0).
- ``LOAD_CONTROL`` signals: ``x-loadControlPercentOffset`` becomes
  ``load_adjustment_pct`` (the strongest reduction), ``x-loadControlCapacity``
  (0.0-1.0 of capacity) becomes ``duty_cycle_pct``.  An event with only a
  LOAD_CONTROL signal gets criticality 3 (as SIMPLE moderate).
- ``load_classes`` are the ``resourceID`` targets of the event and of its
  signals, mapped through ``resource_classes`` or else made into class names
  (lower case, ``[a-z0-9_]``); no resource target means every load.
- ``tolerance/tolerate/startafter`` becomes ``randomize_start_s`` and also
  ``randomize_end_s``: OpenADR shifts the whole event by the random delay, the
  model draws start and end within their windows.
- a ``modificationNumber`` above 0 supersedes the earlier version of the same
  event (``supersedes=(event_id,)``); status ``cancelled`` sets ``cancelled``.

The opt policy (:func:`opt_for`): opt in, unless the event's criticality
exceeds ``max_criticality`` or ``load_classes`` is configured and the event
targets classes of which none is configured.  Opted-out events are not
published; an event opted into before and out of by a modification is
published as cancelled.

Price events: ``ELECTRICITY_PRICE`` signals of type ``price`` become one
``PriceSignal`` per interval (see :func:`map_prices`); a price-only event is
opted in.  Not supported: relative prices and multipliers (``priceRelative``,
``priceMultiplier``: they need a base price; such events are opted
out of), per-interval levels (the strongest interval counts for the whole
event), the push model and XMPP, the VTN's own reports (``oadrRegisterReport``
from the VTN), ``oadrCreateOpt`` availability schedules, test events
(``testEvent``) are answered but never published.  Reports are sent by
openleadr's scheduler on wall-clock time; values that could not be sent while
the VTN was away are not resent.  openleadr uses ``ca_file`` only together
with a client certificate: without ``cert_file`` the VTN's TLS certificate is
checked against the system's CAs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.backoff import Backoff
from gateway.bus import Bus
from gateway.clock import Clock, RealClock
from gateway.errors import SignalError
from gateway.model import DemandResponseEvent, PriceSignal, Snapshot
from gateway.quantities import normalised_value, quantities_for

__all__ = [
    "SIMPLE_TO_CRITICALITY",
    "R_ID_ENERGY",
    "R_ID_POWER",
    "OpenAdrConfig",
    "OpenAdrVen",
    "VenHealth",
    "criticality_from_simple",
    "map_event",
    "meter_values",
    "opt_for",
    "resource_class",
    "simple_level",
]

log = logging.getLogger(__name__)

OptType = Literal["optIn", "optOut"]

#: OpenADR SIMPLE level -> ZigBee SE DRLC criticality (1 green, 2-6 voluntary
#: levels 1-5, 7 emergency).  Evenly spread over the voluntary band, with
#: "special" as an emergency so that rules acting on ``>= 7`` act on it.
SIMPLE_TO_CRITICALITY: Final[Mapping[int, int]] = {0: 1, 1: 3, 2: 5, 3: 7}
#: Criticality of an event that carries only a LOAD_CONTROL signal.
LOAD_CONTROL_CRITICALITY: Final = 3

_CLASS = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NOT_CLASS = re.compile(r"[^a-z0-9_]+")
# Report ids: stable across restarts so a VTN can keep its report requests
# (the reportSpecifierID is "<gateway id>-telemetry").
R_ID_POWER: Final = "import_power_w"
R_ID_ENERGY: Final = "import_energy_wh"


# ------------------------------------------------------------------ config
class OpenAdrConfig(BaseModel):
    """``[signals.openadr]``: the VEN's settings.

    Secure by default: ``https://`` with a client certificate (``cert_file``,
    ``key_file``) that also signs every message, and ``vtn_fingerprint`` to
    check the VTN's signatures.  What each relaxation gives away:

    - ``insecure_http = true`` (needed for ``http://``): events and reports
      travel in clear and the VTN is not authenticated, so anyone on the path
      can send events that shed loads.  For a test VTN on loopback only.
    - no ``vtn_fingerprint``: the VTN's XML signatures are not checked; only
      TLS vouches for the messages.
    - ``sign_messages = false``: the VTN cannot check that messages come from
      this VEN beyond the TLS client certificate.
    - ``check_hostname = false``: any certificate from the CA is accepted for
      the VTN, whatever its name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    vtn_url: str  # the VTN's base URL: https://vtn.example/OpenADR2/Simple/2.0b
    ven_name: str = Field(min_length=1, max_length=128)
    ven_id: str | None = Field(default=None, min_length=1, max_length=128,
                               description="known venID; omitted: the VTN assigns one")
    cert_file: Path | None = None  # PEM: TLS client certificate and XML signing certificate
    key_file: Path | None = None
    key_passphrase: SecretStr | None = None
    ca_file: Path | None = None  # PEM CA bundle for the VTN's TLS certificate (with cert_file)
    vtn_fingerprint: str | None = Field(default=None,
                                        pattern=r"^([0-9A-Fa-f]{2}:){9}[0-9A-Fa-f]{2}$")
    sign_messages: bool = True
    check_hostname: bool = True
    insecure_http: bool = False
    poll_interval_s: float | None = Field(default=None, ge=1.0, le=86400.0)
    meter: str | None = None  # whose readings to report; None: no reports
    reports: tuple[Literal["power", "energy"], ...] = ("power", "energy")
    report_interval_s: int = Field(default=60, ge=1, le=86400)
    stale_after_s: float = Field(default=120.0, gt=0)  # older readings are not reported
    max_criticality: int = Field(default=9, ge=1, le=9)
    load_classes: tuple[str, ...] = ()
    resource_classes: dict[str, str] = Field(default_factory=dict)
    open_ended_s: float = Field(default=4 * 3600.0, gt=0, le=7 * 86400.0)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")  # price events without a unit
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_cap_s: float = Field(default=300.0, gt=0)

    @field_validator("vtn_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("cert_file", "key_file", "ca_file")
    @classmethod
    def _file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        # Relative paths are relative to the config file's folder when the loader
        # says where that is (``model_validate(..., context={"base_dir": dir})``).
        if v is None:
            return None
        base = (info.context or {}).get("base_dir")
        if not v.is_absolute() and base is not None:
            v = Path(base) / v
        if not v.is_file():
            raise ValueError(f"{v}: no such file")
        return v

    @field_validator("vtn_fingerprint")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        # openleadr compares the text exactly, with upper-case hex digits
        return v.upper() if v is not None else None

    @field_validator("load_classes")
    @classmethod
    def _classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            if not _CLASS.match(c):
                raise ValueError(f"{c!r}: expected a class name of lower-case letters, "
                                 "digits and '_'")
        return v

    @field_validator("resource_classes")
    @classmethod
    def _resource_classes(cls, v: dict[str, str]) -> dict[str, str]:
        for rid, c in v.items():
            if not _CLASS.match(c):
                raise ValueError(f"{rid!r} = {c!r}: expected a class name of lower-case letters, "
                                 "digits and '_'")
        return v

    @field_validator("report_interval_s")
    @classmethod
    def _interval(cls, v: int) -> int:
        # openleadr schedules reports with cron fields (*/n seconds, minutes or hours),
        # so only intervals that divide a minute, an hour or a day come out regular.
        if v < 60 and 60 % v == 0:
            return v
        if v < 3600 and v % 60 == 0 and 3600 % v == 0:
            return v
        if v % 3600 == 0 and 86400 % v == 0:
            return v
        raise ValueError("expected seconds that divide a minute (1-30), whole minutes that divide "
                         "an hour, or whole hours that divide a day")

    @model_validator(mode="after")
    def _security(self) -> OpenAdrConfig:
        if urlsplit(self.vtn_url).scheme == "http" and not self.insecure_http:
            raise ValueError("vtn_url is http://: set insecure_http = true to allow an "
                             "unencrypted, unauthenticated VTN (tests only)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("cert_file needs ca_file (the CA that signed the VTN's certificate)")
        if self.ca_file is not None and self.cert_file is None:
            raise ValueError("ca_file is used only with cert_file/key_file (openleadr checks the "
                             "VTN against the system CAs otherwise)")
        if self.retry_cap_s < self.retry_base_s:
            raise ValueError("retry_cap_s must be at least retry_base_s")
        return self


# ------------------------------------------------------------ pure mapping
def simple_level(value: float) -> int:
    """A SIMPLE signal payload as a level 0-3 (rounded, clamped).

    Raises:
        ValueError: the payload is not a finite number.
    """
    if not math.isfinite(value):
        raise ValueError(f"SIMPLE level {value!r} is not a finite number")
    return min(3, max(0, round(value)))


def criticality_from_simple(value: float) -> int:
    """A SIMPLE signal payload as a criticality 1-9 (see :data:`SIMPLE_TO_CRITICALITY`).

    Raises:
        ValueError: the payload is not a finite number.
    """
    return SIMPLE_TO_CRITICALITY[simple_level(value)]


def resource_class(resource_id: str, mapping: Mapping[str, str]) -> str:
    """The load class a resourceID stands for: ``mapping``'s, or the id made a class name."""
    if resource_id in mapping:
        return mapping[resource_id]
    name = _NOT_CLASS.sub("_", resource_id.lower()).strip("_") or "resource"
    if not name[0].isalpha():
        name = f"r_{name}"
    return name[:32]


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SignalError("schema", f"{what}: expected a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise SignalError("schema", f"{what}: {x!r} is not a finite number")
    return x


def _seconds(value: Any, what: str) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, timedelta):
        raise SignalError("schema", f"{what}: expected a duration, got {value!r}")
    return max(0.0, value.total_seconds())


def _resource_ids(targets: Any) -> Iterable[str]:
    if isinstance(targets, Mapping):  # grouped by type: {"resource_id": [...], ...}
        ids = targets.get("resource_id") or ()
        yield from (i for i in ids if isinstance(i, str))
        return
    for t in targets or ():
        if isinstance(t, Mapping) and isinstance(t.get("resource_id"), str):
            yield t["resource_id"]


def map_event(event: Mapping[str, Any], *, issuer: str, open_ended_s: float = 4 * 3600.0,
              resource_classes: Mapping[str, str] | None = None) -> DemandResponseEvent:
    """One openleadr event dict (as handed to ``on_event``) as a DemandResponseEvent.

    See the module docstring for the mapping.

    Raises:
        SignalError: (schema) the event lacks an id, a start or a duration,
            or has no SIMPLE or LOAD_CONTROL signal, or a payload is not a number.
    """
    event_id = _get(event, "event_descriptor", "event_id")
    if not isinstance(event_id, str) or not event_id:
        raise SignalError("schema", "event without an eventID")
    start = _get(event, "active_period", "dtstart")
    if not isinstance(start, datetime) or start.tzinfo is None:
        raise SignalError("schema", f"event {event_id}: no timezone-aware dtstart")
    duration_s = _seconds(_get(event, "active_period", "duration"), f"event {event_id}: duration")
    if duration_s == 0:
        duration_s = open_ended_s
    tolerance = _get(event, "active_period", "tolerance")
    startafter = None
    if isinstance(tolerance, Mapping):
        startafter = _get(tolerance, "tolerate", "startafter") or tolerance.get("startafter")
    randomize_s = _seconds(startafter, f"event {event_id}: startafter")

    signals = event.get("event_signals") or []
    if isinstance(signals, Mapping):  # openleadr nests them once in some versions
        signals = signals.get("event_signals") or []
    level: int | None = None
    adjustment: float | None = None
    capacity: float | None = None
    resources: list[str] = list(_resource_ids(event.get("targets_by_type") or event.get("targets")))
    for sig in signals:
        if not isinstance(sig, Mapping):
            continue
        name = str(sig.get("signal_name", "")).upper()
        stype = sig.get("signal_type")
        payloads = [_number(_get(i, "signal_payload"), f"event {event_id}: {name} payload")
                    for i in sig.get("intervals") or () if isinstance(i, Mapping)]
        if not payloads:
            continue
        if name == "SIMPLE":
            try:
                lv = max(simple_level(p) for p in payloads)
            except ValueError as exc:
                raise SignalError("schema", f"event {event_id}: {exc}") from None
            level = lv if level is None else max(level, lv)
        elif name == "LOAD_CONTROL" and stype == "x-loadControlPercentOffset":
            strongest = min(payloads)  # the largest reduction (most negative offset)
            adjustment = strongest if adjustment is None else min(adjustment, strongest)
        elif name == "LOAD_CONTROL" and stype == "x-loadControlCapacity":
            lowest = min(payloads)
            capacity = lowest if capacity is None else min(capacity, lowest)
        else:
            continue
        resources.extend(_resource_ids(sig.get("targets_by_type") or sig.get("targets")))
    if level is None and adjustment is None and capacity is None:
        raise SignalError("schema", f"event {event_id}: no SIMPLE or LOAD_CONTROL signal")
    criticality = (SIMPLE_TO_CRITICALITY[level] if level is not None
                   else LOAD_CONTROL_CRITICALITY)
    mapping = resource_classes or {}
    classes = tuple(sorted({resource_class(r, mapping) for r in resources}))
    modification = _get(event, "event_descriptor", "modification_number")
    status = _get(event, "event_descriptor", "event_status")
    cancelled = status == "cancelled"
    return DemandResponseEvent(
        event_id=event_id,
        start=start,
        end=start + timedelta(seconds=duration_s),
        level=level if level is not None else 0,
        source="openadr",
        issuer=issuer,
        criticality=criticality,
        load_classes=classes,
        load_adjustment_pct=max(-100.0, min(100.0, adjustment)) if adjustment is not None else None,
        duty_cycle_pct=(max(0.0, min(100.0, capacity * 100.0)) if capacity is not None else None),
        randomize_start_s=randomize_s,
        randomize_end_s=randomize_s,
        cancelled=cancelled,
        supersedes=((event_id,) if isinstance(modification, int) and modification > 0
                    and not cancelled else ()),
    )


def map_prices(event: Mapping[str, Any], *, default_currency: str = "EUR") -> list[PriceSignal]:
    """The ELECTRICITY_PRICE signals of an event (signal type ``price``: an absolute
    price per kWh) as one PriceSignal per interval, in order.  The currency is the
    signal's ``currencyPerKWh`` unit, else ``default_currency``.  Relative prices
    and multipliers (which need a base price the VEN does not know) are skipped.

    Raises:
        SignalError: (schema) a price interval without a duration or with a
            payload that is not a number, or no timezone-aware dtstart.
    """
    event_id = _get(event, "event_descriptor", "event_id")
    signals = event.get("event_signals") or []
    if isinstance(signals, Mapping):
        signals = signals.get("event_signals") or []
    out: list[PriceSignal] = []
    for sig in signals:
        if not isinstance(sig, Mapping) or str(sig.get("signal_name", "")).upper() != \
                "ELECTRICITY_PRICE" or sig.get("signal_type") != "price":
            continue
        start = _get(event, "active_period", "dtstart")
        if not isinstance(start, datetime) or start.tzinfo is None:
            raise SignalError("schema", f"event {event_id}: no timezone-aware dtstart")
        unit = _get(sig, "measurement", "unit")
        currency = unit if isinstance(unit, str) and len(unit) == 3 and unit.isalpha() \
            else default_currency
        at = start
        for interval in sig.get("intervals") or ():
            if not isinstance(interval, Mapping):
                continue
            own = interval.get("dtstart")
            begin = own if isinstance(own, datetime) and own.tzinfo is not None else at
            seconds = _seconds(interval.get("duration"), f"event {event_id}: price duration")
            if seconds <= 0:
                raise SignalError("schema", f"event {event_id}: a price interval without "
                                            "a duration")
            price = _number(interval.get("signal_payload"), f"event {event_id}: price")
            end = begin + timedelta(seconds=seconds)
            out.append(PriceSignal(start=begin, end=end, price_per_kwh=price,
                                   currency=currency.upper(), source="openadr"))
            at = end
    return out


def opt_for(dr: DemandResponseEvent, *, max_criticality: int = 9,
            load_classes: Iterable[str] = ()) -> tuple[OptType, str]:
    """Opt in or out of an event, with the reason (for the log)."""
    if dr.criticality > max_criticality:
        return "optOut", f"criticality {dr.criticality} above max_criticality {max_criticality}"
    ours = set(load_classes)
    if ours and dr.load_classes and not ours.intersection(dr.load_classes):
        return "optOut", f"targets {', '.join(dr.load_classes)}, none of them configured"
    return "optIn", "accepted"


def _energy_import_kwh(values: Mapping[str, float]) -> float | None:
    if "energy_import" in values:
        return values["energy_import"]
    tariffs = [values[k] for k in ("energy_import_t1", "energy_import_t2", "energy_import_t3",
                                   "energy_import_t4") if k in values]
    return sum(tariffs) if tariffs else None


def meter_values(snapshot: Snapshot) -> dict[str, float]:
    """What the VEN reports from a snapshot: ``power`` (import, W) and ``energy`` (import, Wh).

    Power is OBIS ``1-0:1.7.0`` (DSMR sends kW); energy is ``1-0:1.8.0`` or the
    sum of the tariff registers ``1-0:1.8.1``-``1-0:1.8.4``.  Missing readings
    are left out.
    """
    by_key: dict[str, float] = {}
    for reading, quantity in quantities_for(snapshot):
        value = normalised_value(reading, quantity)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            by_key[quantity.key] = float(value)
    out: dict[str, float] = {}
    if "power_import" in by_key:
        out["power"] = by_key["power_import"]
    energy_kwh = _energy_import_kwh(by_key)
    if energy_kwh is not None:
        out["energy"] = round(energy_kwh * 1000.0, 6)
    return out


# ------------------------------------------------------------------- VEN
@dataclass(frozen=True, slots=True, kw_only=True)
class VenHealth:
    """Same shape as ``adapters.base.Health`` (signals may not import adapters)."""

    ok: bool
    detail: str = ""
    counters: Mapping[str, int] = field(default_factory=dict)


class _RequestProblems(logging.Filter):
    """Keeps openleadr's per-request complaints out of the log, for the VEN to report.

    openleadr logs every failed HTTP exchange itself (two ERROR lines per
    attempt while the VTN is down, whole XML messages on a non-OK status);
    the VEN logs once per burst instead, with the last of these as the cause.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName != "_perform_request":
            return True
        self.last = record.getMessage().splitlines()[0][:200] if record.getMessage() else ""
        return False


class _SessionEnd(Exception):
    """Ends one session with the VTN; ``refused`` jumps the backoff to its cap."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(slots=True)
class _Seen:
    modification: int
    opt: OptType
    published: bool


class OpenAdrVen:
    """The VEN: ``await run()`` until cancelled; ``health()`` at any time.

    One openleadr ``OpenADRClient`` per session; a session registers, offers
    the reports, syncs events and polls until an exchange fails.
    """

    def __init__(self, config: OpenAdrConfig, bus: Bus, gateway_id: str,
                 clock: Clock | None = None) -> None:
        self._cfg = config
        self._bus = bus
        self._gateway_id = gateway_id
        self._clock: Clock = clock or RealClock()
        self._seen: dict[str, _Seen] = {}
        self._vtn_id = ""
        self._ven_id: str | None = config.ven_id
        self._registered = False
        self._failures = 0
        self._detail = "not started"
        self._problem = _RequestProblems()
        self._http_answers = 0  # HTTP responses received (any status)
        self._valid_answers = 0  # responses that passed schema and signature checks
        self.counters: dict[str, int] = {
            "registrations": 0, "polls": 0, "events": 0, "opt_in": 0, "opt_out": 0, "prices": 0,
            "published": 0, "reports": 0, "errors": 0,
        }

    # ---------------------------------------------------------------- public
    @property
    def vtn_id(self) -> str:
        return self._vtn_id

    @property
    def ven_id(self) -> str | None:
        return self._ven_id if self._registered else None

    def health(self) -> VenHealth:
        return VenHealth(ok=self._registered, detail=self._detail, counters=dict(self.counters))

    async def run(self) -> None:
        """Register, poll and report until cancelled; reconnect with backoff.

        Raises:
            ModuleNotFoundError: openleadr is not installed (``han-gateway[openadr]``).
        """
        import openleadr  # noqa: F401  (fail here, not at the first session)

        # openleadr sets its logger to INFO at import and logs every message
        # it handles (event details, report values) at INFO: keep warnings only.
        openleadr_log = logging.getLogger("openleadr")
        openleadr_log.setLevel(logging.WARNING)
        openleadr_log.addFilter(self._problem)
        try:
            await self._run()
        finally:
            openleadr_log.removeFilter(self._problem)

    async def _run(self) -> None:
        if self._cfg.cert_file is not None:
            from openleadr.utils import certificate_fingerprint

            try:  # what the utility registers for this VEN (not a secret)
                log.info("OpenADR: VEN certificate fingerprint %s",
                         certificate_fingerprint(self._cfg.cert_file.read_text()))
            except (OSError, ValueError) as exc:
                log.warning("OpenADR: cannot read %s: %s", self._cfg.cert_file, exc)
        backoff = Backoff(self._cfg.retry_base_s, self._cfg.retry_cap_s)
        while True:
            client: Any = None
            try:
                client = self._new_client()
                await self._session(client, backoff)
            except _SessionEnd as exc:
                self._registered = False
                self.counters["errors"] += 1
                self._failures += 1
                self._detail = str(exc)
                if self._failures == 1:
                    log.warning("OpenADR VTN %s: %s; retrying with backoff", self._cfg.vtn_url, exc)
                else:
                    log.debug("OpenADR VTN %s: %s (failure %d)", self._cfg.vtn_url, exc,
                              self._failures)
                if exc.refused:
                    backoff.jump_to_cap()
            finally:
                self._registered = False
                if client is not None:
                    await self._close(client)
            await self._clock.sleep(backoff.next_delay())

    # --------------------------------------------------------------- session
    def _new_client(self) -> Any:
        from openleadr import OpenADRClient

        cfg = self._cfg
        try:
            client = OpenADRClient(
                ven_name=cfg.ven_name,
                vtn_url=cfg.vtn_url,
                ven_id=self._ven_id,
                cert=str(cfg.cert_file) if cfg.cert_file else None,
                key=str(cfg.key_file) if cfg.key_file else None,
                passphrase=cfg.key_passphrase.get_secret_value() if cfg.key_passphrase else None,
                ca_file=str(cfg.ca_file) if cfg.ca_file else None,
                vtn_fingerprint=cfg.vtn_fingerprint,
                show_fingerprint=False,  # it would print to stdout
                disable_signature=not cfg.sign_messages,
                check_hostname=cfg.check_hostname,
            )
        except OSError as exc:  # openleadr reads the certificate and key here
            raise _SessionEnd(f"cannot read the certificate or key: {exc}", refused=True) from None
        client.add_handler("on_event", self._on_event)
        client.add_handler("on_update_event", self._on_event)
        client.add_hook("after_receive_xml", self._on_http_answer)
        client.add_hook("after_parse_xml", self._on_valid_answer)
        if cfg.meter is not None:
            interval = timedelta(seconds=cfg.report_interval_s)
            from openleadr import objects

            rate = objects.SamplingRate(min_period=interval, max_period=interval, on_change=False)
            specifier = f"{self._gateway_id}-telemetry"
            if "power" in cfg.reports:
                client.add_report(self._report_callback("power"), resource_id=cfg.meter,
                                  measurement="REAL_POWER", unit="W",
                                  report_specifier_id=specifier, r_id=R_ID_POWER,
                                  sampling_rate=rate, report_duration=interval)
            if "energy" in cfg.reports:
                client.add_report(self._report_callback("energy"), resource_id=cfg.meter,
                                  measurement="ENERGY_REAL", unit="Wh",
                                  report_specifier_id=specifier, r_id=R_ID_ENERGY,
                                  sampling_rate=rate, report_duration=interval)
        return client

    def _on_http_answer(self, _xml: str) -> None:
        self._http_answers += 1

    def _on_valid_answer(self, _message_type: str, payload: Mapping[str, Any]) -> None:
        self._valid_answers += 1
        vtn_id = payload.get("vtn_id") if isinstance(payload, Mapping) else None
        if isinstance(vtn_id, str) and vtn_id:
            self._vtn_id = vtn_id

    def _failed(self, http_before: int, what: str) -> _SessionEnd:
        cause = f" ({self._problem.last})" if self._problem.last else ""
        if self._http_answers == http_before:
            return _SessionEnd(f"{what}: no answer from the VTN{cause}")
        return _SessionEnd(f"{what}: the VTN's answer failed validation (schema, signature or "
                           f"HTTP status){cause}")

    async def _session(self, client: Any, backoff: Backoff) -> None:
        if not self._failures:  # while retrying, health keeps showing the last problem
            self._detail = "registering"
        self._problem.last = ""
        http_before, valid_before = self._http_answers, self._valid_answers
        try:
            await client.create_party_registration(ven_id=self._ven_id)
        except (KeyError, TypeError) as exc:  # openleadr indexing a malformed answer
            raise _SessionEnd(f"registration: malformed answer ({exc!r})") from None
        except OSError as exc:  # the TLS context: unreadable certificate, key or CA file
            raise _SessionEnd(f"TLS setup failed: {exc}", refused=True) from None
        if client.registration_id is None:
            if self._valid_answers == valid_before:
                raise self._failed(http_before, "registration")
            raise _SessionEnd("registration refused by the VTN", refused=True)
        self._ven_id = client.ven_id
        self._registered = True
        self.counters["registrations"] += 1
        if self._failures:
            log.info("OpenADR VTN %s: registered again after %d failed attempt(s)",
                     self._cfg.vtn_url, self._failures)
        else:
            log.info("OpenADR: registered with VTN %s as venID %s", self._vtn_id or "?",
                     self._ven_id)
        self._failures = 0
        backoff.reset()
        self._detail = f"registered with {self._vtn_id or 'VTN'} as {self._ven_id}"
        # openleadr keeps the loop for its re-registration path
        client.loop = asyncio.get_running_loop()
        if client.reports:
            client.scheduler.start()  # runs the report jobs the VTN asks for
            http_before = self._http_answers
            await client.register_reports(client.reports)
            if self._http_answers == http_before:
                raise self._failed(http_before, "report registration")
            # openleadr's worker that sends queued reports (it has no public starter)
            client.report_queue_task = asyncio.create_task(
                client._report_queue_worker(), name="openadr-reports")
        http_before = self._http_answers
        await client.sync_events()
        if self._http_answers == http_before:
            raise self._failed(http_before, "event sync")
        poll_s = self._cfg.poll_interval_s
        if poll_s is None:
            freq = client.poll_frequency
            poll_s = freq.total_seconds() if isinstance(freq, timedelta) else 10.0
        poll_s = min(max(poll_s, 1.0), 86400.0)
        while True:
            more = await self._poll(client)
            if not more:
                await self._clock.sleep(poll_s)

    async def _poll(self, client: Any) -> bool:
        """One oadrPoll; True when the VTN may have more messages queued."""
        self._problem.last = ""
        http_before = self._http_answers
        try:
            answer = await client.poll()
            response_type, payload = answer
        except (TypeError, ValueError) as exc:  # an empty body comes back as a bare None
            raise _SessionEnd(f"poll: malformed answer ({exc!r})") from None
        if response_type is None:
            raise self._failed(http_before, "poll")
        self.counters["polls"] += 1
        if response_type == "oadrResponse":
            return False
        if response_type == "oadrDistributeEvent":
            if payload.get("events"):
                # openleadr's event path: calls on_event / on_update_event for each
                # event and sends one oadrCreatedEvent with their opt types.
                await client._on_event(payload)
        elif response_type == "oadrCreateReport":
            if "report_requests" in payload:
                await client.create_report(payload)
        elif response_type == "oadrCancelReport":
            await client.cancel_report(payload)
        elif response_type == "oadrRequestReregistration":
            await client.send_response(service="EiRegisterParty")
            raise _SessionEnd("the VTN asked us to register again")
        elif response_type == "oadrCancelPartyRegistration":
            await client.on_cancel_party_registration(payload)
            raise _SessionEnd("the VTN cancelled our registration", refused=True)
        else:
            # not re-polled at once: a VTN that repeats it must not make us spin
            log.warning("OpenADR: %s from the VTN is not supported; ignored", response_type)
            return False
        return True

    async def _close(self, client: Any) -> None:
        try:
            if client.scheduler.running:
                client.scheduler.shutdown(wait=False)
        finally:
            task = client.report_queue_task
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if client.client_session is not None:
                await client.client_session.close()

    # ---------------------------------------------------------------- events
    async def _on_event(self, event: dict[str, Any]) -> OptType:
        """openleadr's on_event / on_update_event handler: publish and answer."""
        self.counters["events"] += 1
        event_id = _get(event, "event_descriptor", "event_id")
        modification = _get(event, "event_descriptor", "modification_number")
        mod = modification if isinstance(modification, int) else 0
        seen = self._seen.get(event_id) if isinstance(event_id, str) else None
        if seen is not None and seen.modification == mod:
            return seen.opt  # the VTN resent it (a new session): same answer, nothing new
        try:
            prices = map_prices(event, default_currency=self._cfg.currency)
        except SignalError as exc:
            log.warning("OpenADR: price event refused: %s", exc.reason)
            prices = []
        test_event = _get(event, "event_descriptor", "test_event") not in (None, False, "false")
        cancelled = _get(event, "event_descriptor", "event_status") == "cancelled"
        if prices and not test_event and not cancelled:
            for price in prices:
                self.counters["prices"] += 1
                self._bus.publish(price)
            log.info("OpenADR: event %s: %d price interval(s) from %s, %.4f-%.4f %s/kWh",
                     event_id, len(prices), prices[0].start.isoformat(),
                     min(p.price_per_kwh for p in prices), max(p.price_per_kwh for p in prices),
                     prices[0].currency)
        try:
            dr = map_event(event, issuer=self._vtn_id, open_ended_s=self._cfg.open_ended_s,
                           resource_classes=self._cfg.resource_classes)
        except SignalError as exc:
            if prices:  # a price-only event: taken as prices, nothing to shed
                self._seen[str(event_id)] = _Seen(modification=mod, opt="optIn", published=False)
                self.counters["opt_in"] += 1
                return "optIn"
            log.warning("OpenADR: opting out of an event: %s", exc.reason)
            self.counters["opt_out"] += 1
            return "optOut"
        if dr.cancelled:
            if seen is not None and seen.published:
                self._publish(dr)
            self._seen[dr.event_id] = _Seen(modification=mod, opt="optIn", published=False)
            log.info("OpenADR: event %s cancelled by %s", dr.event_id, dr.issuer)
            return "optIn"
        opt, reason = opt_for(dr, max_criticality=self._cfg.max_criticality,
                              load_classes=self._cfg.load_classes)
        publish = opt == "optIn" and not test_event and dr.end > self._clock.now()
        if publish:
            self._publish(dr)
        elif seen is not None and seen.published:
            # opted out of (or turned into a test of) an event published before
            self._publish(replace(dr, cancelled=True, supersedes=()))
        self._seen[dr.event_id] = _Seen(modification=mod, opt=opt, published=publish)
        self.counters["opt_in" if opt == "optIn" else "opt_out"] += 1
        log.info("OpenADR: %s event %s (criticality %d, %s - %s): %s%s", opt, dr.event_id,
                 dr.criticality, dr.start.isoformat(), dr.end.isoformat(), reason,
                 " (test event, not published)" if test_event else "")
        if len(self._seen) > 1000:  # forget the oldest answers; the VTN drops old events too
            for key in list(self._seen)[: len(self._seen) - 1000]:
                del self._seen[key]
        return opt

    def _publish(self, dr: DemandResponseEvent) -> None:
        self.counters["published"] += 1
        self._bus.publish(dr)

    # --------------------------------------------------------------- reports
    def _report_callback(self, kind: str) -> Callable[[], list[tuple[datetime, float]]]:
        def callback() -> list[tuple[datetime, float]]:
            return self._report_value(kind)

        return callback

    def _report_value(self, kind: str) -> list[tuple[datetime, float]]:
        """The newest reading for one report, or nothing when it is missing or stale."""
        meter = self._cfg.meter
        snap = self._bus.last_snapshot.get(meter) if meter is not None else None
        if snap is None:
            return []
        age = (self._clock.now() - snap.received).total_seconds()
        if age > self._cfg.stale_after_s:
            return []
        value = meter_values(snap).get(kind)
        if value is None:
            return []
        self.counters["reports"] += 1
        return [(snap.timestamp, value)]
