"""A virtual DSMR / P1 meter: telegrams of a plausible household, no I/O.

``DsmrSimulator(variant).telegram(now)`` returns the bytes a meter of that
variant would push at ``now``: a DSMR 5 (NL, one per second), DSMR 4.2 (NL,
one per 10 s), e-MUCS (Fluvius, BE) or Luxembourg Smarty (encrypted with
general-glo-ciphering) telegram with a correct CRC.

The household: a base load of 150-300 W (fridge cycling), morning and
evening peaks, random appliance runs (kettle, washing machine, oven), noise,
and for ``dsmr5``/``belgian`` a 3 kWp PV system exporting around midday.
Energy registers integrate the power between calls (tariff by time of day),
the gas meter follows a heating season and hot-water peaks and is read over
the M-Bus channel every 5 min (hourly on DSMR 4).  Output is deterministic
for a given ``seed`` and sequence of ``now`` values; ``now`` may go backwards
(registers then stand still).

Not modelled: power failures and voltage sags/swells (their counters stay
at what a quiet grid shows), text messages, breaker state changes, the
Smarty's reactive energy quadrants beyond a constant power factor.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from gateway.errors import LocalProtocolError
from gateway.protocols.dlms_gcm import SMARTY_AUTH_KEY, check_key
from gateway.protocols.dsmr import crc16_arc, encrypt_telegram
from gateway.sim.household import Household, gauss_peak

__all__ = ["DsmrSimulator", "Variant"]

Variant = Literal["dsmr5", "dsmr4", "belgian", "smarty"]

_LOCAL: Final = ZoneInfo("Europe/Amsterdam")  # Brussels and Luxembourg keep the same time


@dataclass(frozen=True, slots=True, kw_only=True)
class _Profile:
    header: str
    version: str | None  # 1-3:0.2.8
    interval_s: float
    gas_period_s: int
    pv_peak_w: float
    low_tariff_is_1: bool  # NL: tariff 1 = low (night/weekend); BE: tariff 1 = day


_PROFILES: Final[dict[str, _Profile]] = {
    "dsmr5": _Profile(
        header="/ISK5\\2M550T-1012",
        version="50",
        interval_s=1.0,
        gas_period_s=300,
        pv_peak_w=3000.0,
        low_tariff_is_1=True,
    ),
    "dsmr4": _Profile(
        header="/KFM5KAIFA-METER",
        version="42",
        interval_s=10.0,
        gas_period_s=3600,
        pv_peak_w=0.0,
        low_tariff_is_1=True,
    ),
    "belgian": _Profile(
        header="/FLU5\\253769484_A",
        version=None,
        interval_s=1.0,
        gas_period_s=300,
        pv_peak_w=3000.0,
        low_tariff_is_1=False,
    ),
    "smarty": _Profile(
        header="/Lux5\\253663629_D",
        version="42",
        interval_s=1.0,
        gas_period_s=300,
        pv_peak_w=0.0,
        low_tariff_is_1=False,
    ),
}

# Share of the household load on each phase.



def _timestamp(local: datetime) -> str:
    # DSMR: YYMMDDhhmmss + S during daylight saving time, W otherwise.
    return local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")


def _hex(text: str) -> str:
    return text.encode("ascii").hex().upper()


class DsmrSimulator:
    """Telegram generator for one virtual meter (see the module docstring)."""

    def __init__(
        self,
        variant: Variant,
        *,
        serial: str = "E0044007382246019",
        key: bytes | None = None,
        auth_key: bytes | None = None,
        seed: int = 0,
        pv_peak_w: float | None = None,
    ) -> None:
        """Create a virtual meter.

        Raises:
            LocalProtocolError: an unknown variant, a non-ASCII serial, a
                missing or malformed key for ``smarty``.
        """
        profile = _PROFILES.get(variant)
        if profile is None:
            raise LocalProtocolError(f"unknown DSMR variant {variant!r}")
        if not serial.isascii() or not serial.isalnum():
            raise LocalProtocolError("serial must be ASCII letters and digits")
        if variant == "smarty":
            if key is None:
                raise LocalProtocolError("the smarty variant encrypts: a key is required")
            check_key(key, "key")
        self.variant: Final = variant
        self._profile = profile
        self._serial = serial
        self._key = key
        self._auth_key = auth_key if auth_key is not None else SMARTY_AUTH_KEY
        self._pv_peak_w = profile.pv_peak_w if pv_peak_w is None else pv_peak_w
        self._rng = random.Random(seed)
        rng = self._rng
        # Registers in Wh / m3, started at a plausible few years of use.
        self._import_wh = [rng.uniform(2e6, 6e6), rng.uniform(2e6, 6e6)]  # tariff 1, 2
        self._export_wh = (
            [rng.uniform(0, 1e6), rng.uniform(0, 2e6)] if self._pv_peak_w else [0.0, 0.0]
        )
        self._reactive_varh = [rng.uniform(1e5, 5e5), rng.uniform(1e5, 5e5)]  # import, export
        self._gas_m3 = rng.uniform(1000.0, 5000.0)
        self._gas_reading: tuple[datetime, float] | None = None
        digits = "".join(c for c in serial if c.isdigit()) or "0"
        self._system_title = b"SAG" + (int(digits) % (1 << 40)).to_bytes(5, "big")
        self._frame_counter = rng.randrange(1, 1 << 20)
        self._last: datetime | None = None
        self._power_w = 0.0  # net import (negative: export) at the previous call
        self._phase_w = (0.0, 0.0, 0.0)
        # solar noon at about 5 degrees east (the Low Countries)
        self._household = Household(rng, base_w=160.0, pv_peak_w=self._pv_peak_w,
                                    pv_noon_h=12.7, tz=_LOCAL)
        self._voltage_drift = [0.0, 0.0, 0.0]
        # e-MUCS demand registers: 15-min average, monthly peak, history.
        self._quarter: tuple[datetime, float] | None = None  # start, import Wh at start
        self._demand_w = 0.0
        self._month_peak: tuple[datetime, float] | None = None
        self._history: list[tuple[datetime, datetime | None, float]] = []

    @property
    def interval_s(self) -> float:
        """Seconds between telegrams for this variant (DSMR 4: 10 s, others 1 s)."""
        return self._profile.interval_s

    # ------------------------------------------------------------------ model
    def _gas_m3_h(self, local: datetime) -> float:
        day = local.timetuple().tm_yday
        hour = local.hour + local.minute / 60
        heating = max(0.0, math.cos(2 * math.pi * (day - 15) / 365)) * (
            0.7 if 6 <= hour < 23 else 0.25
        )
        hot_water = 0.8 * gauss_peak(hour, 7.5, 0.3) + 0.6 * gauss_peak(hour, 19.5, 0.4)
        return heating + hot_water

    def _integrate(self, start: datetime, end: datetime, end_power_w: float) -> None:
        """Advance the registers from ``start`` to ``end``."""
        for seconds, p0, p1, at in self._household.segments(start, end, self._power_w,
                                                            end_power_w):
            local = at.astimezone(_LOCAL)
            tariff = self._tariff_index(local)
            hours = seconds / 3600
            imported = (max(p0, 0.0) + max(p1, 0.0)) / 2 * hours
            exported = (max(-p0, 0.0) + max(-p1, 0.0)) / 2 * hours
            self._import_wh[tariff] += imported
            self._export_wh[tariff] += exported
            # A constant power factor around 0.95 inductive.
            self._reactive_varh[0] += imported * 0.33
            self._reactive_varh[1] += exported * 0.05
            self._gas_m3 += self._gas_m3_h(local) * hours

    def _tariff_index(self, local: datetime) -> int:
        """0 for register x.8.1, 1 for x.8.2."""
        low = local.weekday() >= 5 or not 7 <= local.hour < 23
        if self._profile.low_tariff_is_1:
            return 0 if low else 1
        return 1 if low else 0

    def _gas_capture(self, now: datetime) -> tuple[datetime, float]:
        period = self._profile.gas_period_s
        epoch = int(now.timestamp())
        captured_at = datetime.fromtimestamp(epoch - epoch % period, UTC)
        previous = self._gas_reading
        # A clock set back moves the capture back too; the value never decreases.
        if previous is None or captured_at != previous[0]:
            # The register a moment ago, at the capture time, estimated with
            # the current flow; never below the previous capture.
            behind_h = (now - captured_at).total_seconds() / 3600
            value = self._gas_m3 - self._gas_m3_h(now.astimezone(_LOCAL)) * behind_h
            if previous is not None:
                value = max(value, previous[1])
            self._gas_reading = (captured_at, value)
        assert self._gas_reading is not None
        return self._gas_reading

    def _update_demand(self, now: datetime) -> None:
        """e-MUCS 1-0:1.4.0 / 1.6.0 / 98.1.0 bookkeeping."""
        imported = self._import_wh[0] + self._import_wh[1]
        epoch = int(now.timestamp())
        quarter_start = datetime.fromtimestamp(epoch - epoch % 900, UTC)
        if self._quarter is None or quarter_start > self._quarter[0]:
            if self._quarter is not None:
                wh_at_start = self._quarter[1]
                self._demand_w = (imported - wh_at_start) / 0.25
                self._record_peak(quarter_start, self._demand_w)
            self._quarter = (quarter_start, imported)
        else:
            elapsed_h = max((now - self._quarter[0]).total_seconds() / 3600, 1 / 3600)
            self._demand_w = (imported - self._quarter[1]) / elapsed_h

    def _record_peak(self, at: datetime, demand_w: float) -> None:
        local = at.astimezone(_LOCAL)
        peak = self._month_peak
        if peak is not None and peak[0].astimezone(_LOCAL).month != local.month:
            month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            self._history.insert(0, (month_start, peak[0], peak[1]))
            del self._history[13:]
            peak = None
        if peak is None or demand_w > peak[1]:
            self._month_peak = (at, demand_w)

    # --------------------------------------------------------------- telegram
    def telegram(self, now: datetime) -> bytes:
        """Return the telegram the meter sends at ``now`` (timezone-aware; naive means UTC).

        For ``smarty`` the whole general-glo-ciphering frame, with the next
        frame counter.
        """
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        local = now.astimezone(_LOCAL)
        dt_s = 0.0 if self._last is None else (now - self._last).total_seconds()
        self._household.update(now, dt_s)
        phases = self._household.instant(local)
        total = sum(phases)
        if self._last is not None:
            self._integrate(self._last, now, total)
        if self._last is None or now > self._last:
            self._last = now
        self._power_w = total
        self._phase_w = phases
        lines = self._lines(now, local)
        body = "\r\n".join(lines) + "\r\n!"
        raw = body.encode("latin-1")
        telegram = raw + f"{crc16_arc(raw):04X}\r\n".encode("ascii")
        if self.variant != "smarty":
            return telegram
        assert self._key is not None
        self._frame_counter += 1
        return encrypt_telegram(
            telegram,
            key=self._key,
            auth_key=self._auth_key,
            system_title=self._system_title,
            frame_counter=self._frame_counter,
        )

    def _voltages(self) -> list[float]:
        rng = self._rng
        out = []
        for i, power in enumerate(self._phase_w):
            self._voltage_drift[i] += 0.05 * (0.0 - self._voltage_drift[i]) + rng.gauss(0.0, 0.15)
            # Import pulls the local voltage down, export pushes it up.
            out.append(231.0 + self._voltage_drift[i] - power / 1000.0 * 0.8)
        return out

    def _lines(self, now: datetime, local: datetime) -> list[str]:
        profile = self._profile
        variant = self.variant
        ts = _timestamp(local)
        imp = [f"{wh / 1000:010.3f}" for wh in self._import_wh]
        exp = [f"{wh / 1000:010.3f}" for wh in self._export_wh]
        tariff = f"{self._tariff_index(local) + 1:04d}"
        total = self._power_w
        import_kw = f"{max(total, 0.0) / 1000:06.3f}"
        export_kw = f"{max(-total, 0.0) / 1000:06.3f}"
        volts = self._voltages()
        amps = [abs(p) / v for p, v in zip(self._phase_w, volts, strict=True)]
        gas_at, gas_m3 = self._gas_capture(now)
        gas_ts = _timestamp(gas_at.astimezone(_LOCAL))
        gas = f"{gas_m3:09.3f}"
        serial_hex = _hex(self._serial)
        gas_serial_hex = _hex("G" + self._serial[1:])

        lines = [profile.header, ""]
        if variant == "belgian":
            self._update_demand(now)
            lines += [
                "0-0:96.1.4(50217)",
                f"0-0:96.1.1({serial_hex})",
                f"0-0:1.0.0({ts})",
                f"1-0:1.8.1({imp[0]}*kWh)",
                f"1-0:1.8.2({imp[1]}*kWh)",
                f"1-0:2.8.1({exp[0]}*kWh)",
                f"1-0:2.8.2({exp[1]}*kWh)",
                f"0-0:96.14.0({tariff})",
                f"1-0:1.4.0({self._demand_w / 1000:06.3f}*kW)",
                self._month_peak_line(now),
                self._history_line(),
            ]
        elif variant == "smarty":
            lines += [
                f"1-3:0.2.8({profile.version})",
                f"0-0:1.0.0({ts})",
                f"0-0:42.0.0({serial_hex})",
                f"1-0:1.8.0({(self._import_wh[0] + self._import_wh[1]) / 1000:010.3f}*kWh)",
                f"1-0:2.8.0({(self._export_wh[0] + self._export_wh[1]) / 1000:010.3f}*kWh)",
                f"1-0:3.8.0({self._reactive_varh[0] / 1000:010.3f}*kvarh)",
                f"1-0:4.8.0({self._reactive_varh[1] / 1000:010.3f}*kvarh)",
            ]
        else:
            lines += [
                f"1-3:0.2.8({profile.version})",
                f"0-0:1.0.0({ts})",
                f"0-0:96.1.1({serial_hex})",
                f"1-0:1.8.1({imp[0]}*kWh)",
                f"1-0:1.8.2({imp[1]}*kWh)",
                f"1-0:2.8.1({exp[0]}*kWh)",
                f"1-0:2.8.2({exp[1]}*kWh)",
                f"0-0:96.14.0({tariff})",
            ]
        lines += [f"1-0:1.7.0({import_kw}*kW)", f"1-0:2.7.0({export_kw}*kW)"]
        if variant == "smarty":
            lines += [
                f"1-0:3.7.0({max(total, 0.0) * 0.33 / 1000:06.3f}*kvar)",
                f"1-0:4.7.0({max(-total, 0.0) * 0.05 / 1000:06.3f}*kvar)",
                "0-0:17.0.0(77.376*kVA)",
                "0-0:96.3.10(1)",
            ]
        if variant in ("dsmr5", "dsmr4", "smarty"):
            lines += [
                "0-0:96.7.21(00004)",
                *([] if variant == "smarty" else ["0-0:96.7.9(00002)"]),
            ]
        if variant in ("dsmr5", "dsmr4"):
            lines.append("1-0:99.97.0(1)(0-0:96.7.19)(190326095015W)(0000002014*s)")
        if variant != "belgian":
            lines += [f"1-0:{c}.32.0(00000)" for c in (32, 52, 72)]
            lines += [f"1-0:{c}.36.0(00000)" for c in (32, 52, 72)]
            lines.append("0-0:96.13.0()")
        lines += [f"1-0:{c}.7.0({v:05.1f}*V)" for c, v in zip((32, 52, 72), volts, strict=True)]
        if variant == "belgian":
            lines += [f"1-0:{c}.7.0({a:06.2f}*A)" for c, a in zip((31, 51, 71), amps, strict=True)]
        else:
            lines += [
                f"1-0:{c}.7.0({round(a):03d}*A)" for c, a in zip((31, 51, 71), amps, strict=True)
            ]
        lines += [
            f"1-0:{c}.7.0({max(p, 0.0) / 1000:06.3f}*kW)"
            for c, p in zip((21, 41, 61), self._phase_w, strict=True)
        ]
        lines += [
            f"1-0:{c}.7.0({max(-p, 0.0) / 1000:06.3f}*kW)"
            for c, p in zip((22, 42, 62), self._phase_w, strict=True)
        ]
        if variant == "belgian":
            lines += [
                "0-0:96.3.10(1)",
                "0-0:17.0.0(999.9*kW)",
                "1-0:31.4.0(999*A)",
                "0-0:96.13.0()",
                "0-1:24.1.0(003)",
                f"0-1:96.1.1({gas_serial_hex})",
                "0-1:24.4.0(1)",
                f"0-1:24.2.3({gas_ts})({gas}*m3)",
            ]
        elif variant != "smarty":
            lines += [
                "0-1:24.1.0(003)",
                f"0-1:96.1.0({gas_serial_hex})",
                f"0-1:24.2.1({gas_ts})({gas}*m3)",
            ]
        return lines

    def _month_peak_line(self, now: datetime) -> str:
        # Before the first quarter hour has completed the month has no peak yet.
        at, demand_w = self._month_peak if self._month_peak is not None else (now, 0.0)
        return f"1-0:1.6.0({_timestamp(at.astimezone(_LOCAL))})({demand_w / 1000:06.3f}*kW)"

    def _history_line(self) -> str:
        cells = "".join(
            f"({_timestamp(month)})"
            f"({_timestamp(at.astimezone(_LOCAL)) if at else '632525252525W'})"
            f"({demand_w / 1000:06.3f}*kW)"
            for month, at, demand_w in self._history
        )
        return f"0-0:98.1.0({len(self._history)})(1-0:1.6.0)(1-0:1.6.0){cells}"
