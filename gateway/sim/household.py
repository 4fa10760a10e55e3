"""The household behind every virtual electricity meter: load, appliances, PV, clouds.

A smooth daily load curve (base, fridge cycles, morning, midday and evening
peaks, later mornings at weekends), random appliance runs on one phase (kettle,
washing machine, oven: about one every 40 minutes), optional PV with a
seasonal day length and a cloud factor that wanders over minutes.  The
simulators (DSMR, SML) own their registers and wire formats; they share this
model so that their households behave alike.  All randomness comes from the
simulator's own ``random.Random``, in a fixed order, so a seed gives the same
meter every time.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, tzinfo
from typing import Final

__all__ = ["PHASE_SHARE", "Household"]

PHASE_SHARE: Final = (0.45, 0.32, 0.23)  # how the household load splits over L1-L3
INTEGRATION_STEP_S: Final = 60.0
MAX_STEPS: Final = 2000  # longer gaps are integrated in coarser steps

#: One step of a register integration: (seconds, power at start, power at end, end time).
Segment = tuple[float, float, float, datetime]


def gauss_peak(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2))


class Household:
    def __init__(self, rng: random.Random, *, base_w: float, pv_peak_w: float,
                 pv_noon_h: float, tz: tzinfo) -> None:
        """``pv_noon_h``: solar noon in local standard time (the meter's longitude)."""
        self.rng = rng
        self.base_w = base_w
        self.pv_peak_w = pv_peak_w
        self.pv_noon_h = pv_noon_h
        self.tz = tz
        self.appliance_until: datetime | None = None
        self.appliance_w = 0.0
        self.appliance_phase = 0
        self.cloud = 0.8  # slowly varying share of clear-sky PV output

    def load_w(self, local: datetime) -> float:
        """Noise-free household load at a local time."""
        hour = local.hour + local.minute / 60 + local.second / 3600
        morning = 9.0 if local.weekday() >= 5 else 7.0
        fridge = 90.0 if (local.hour * 60 + local.minute) % 45 < 15 else 0.0
        return (
            self.base_w
            + 40.0 * math.sin(2 * math.pi * hour / 24)
            + fridge
            + 900.0 * gauss_peak(hour, morning + 0.5, 0.7)
            + 300.0 * gauss_peak(hour, 12.5, 1.2)
            + 1400.0 * gauss_peak(hour, 19.0, 1.5)
        )

    def pv_w(self, local: datetime) -> float:
        """Noise-free PV output (clear sky times the current cloud factor)."""
        if not self.pv_peak_w:
            return 0.0
        season = math.sin(2 * math.pi * (local.timetuple().tm_yday - 80) / 365)  # +1 midsummer
        day_length = 12.0 + 4.3 * season
        noon = self.pv_noon_h + (1.0 if local.dst() else 0.0)
        hour = local.hour + local.minute / 60 + local.second / 3600
        x = (hour - (noon - day_length / 2)) / day_length
        if not 0.0 < x < 1.0:
            return 0.0
        clear_sky = math.pow(math.sin(math.pi * x), 1.3) * (0.65 + 0.35 * season)
        return self.pv_peak_w * clear_sky * self.cloud

    def update(self, now: datetime, dt_s: float) -> None:
        """Start and end appliance runs and move the clouds, ``dt_s`` after the last call."""
        rng = self.rng
        if self.appliance_until is not None and now >= self.appliance_until:
            self.appliance_until = None
            self.appliance_w = 0.0
        # About one appliance run every 40 minutes on average.
        if self.appliance_until is None and dt_s > 0 and rng.random() < min(1.0, dt_s / 2400.0):
            kind = rng.random()
            if kind < 0.5:
                power, duration = 2000.0, rng.uniform(90, 240)  # kettle
            elif kind < 0.8:
                power, duration = 1800.0, rng.uniform(600, 1800)  # washing machine
            else:
                power, duration = 2400.0, rng.uniform(900, 2700)  # oven
            self.appliance_w = power
            self.appliance_phase = rng.randrange(3)
            self.appliance_until = now + timedelta(seconds=duration)
        # The cloud factor wanders between 0.1 and 1 over minutes.
        if dt_s > 0:
            pull = min(1.0, dt_s / 600.0)
            self.cloud += pull * (0.75 - self.cloud) + rng.gauss(
                0.0, 0.03 * math.sqrt(min(dt_s, 600.0))
            )
            self.cloud = min(1.0, max(0.1, self.cloud))

    def instant(self, local: datetime) -> tuple[float, float, float]:
        """Net power per phase (W, positive = import) at ``local``, with noise."""
        load = self.load_w(local) * (1.0 + self.rng.gauss(0.0, 0.03))
        pv_phase = self.pv_w(local) / 3
        phases = [load * share - pv_phase for share in PHASE_SHARE]
        phases[self.appliance_phase] += self.appliance_w
        return (phases[0], phases[1], phases[2])

    def segments(self, start: datetime, end: datetime, start_power_w: float,
                 end_power_w: float) -> list[Segment]:
        """How to integrate the registers from ``start`` to ``end``.

        A short step is one trapezoid between the previous and the new power,
        so the registers agree with the powers the meter showed; a long gap
        is cut into steps of the noise-free model.
        """
        dt_s = (end - start).total_seconds()
        if dt_s <= 0:
            return []
        if dt_s <= INTEGRATION_STEP_S:
            return [(dt_s, start_power_w, end_power_w, end)]
        steps = min(MAX_STEPS, math.ceil(dt_s / INTEGRATION_STEP_S))
        step_s = dt_s / steps
        out: list[Segment] = []
        previous = start_power_w
        for i in range(1, steps + 1):
            at = start + timedelta(seconds=step_s * i)
            local = at.astimezone(self.tz)
            power = end_power_w if i == steps else self.load_w(local) - self.pv_w(local)
            out.append((step_s, previous, power, at))
            previous = power
        return out
