"""Rule evaluation cost per snapshot: 100 loads, 50 rules (issue 4 target: <= 1 ms).

The snapshots are real DSMR 5 telegrams from the virtual meter
(``DsmrSimulator``, an evening with appliances switching), decoded before the
clock starts; each one goes through ``Engine.observe`` and ``Engine.evaluate``
as the daemon would do it.  The rule set mixes every action: 10 peak limiters
(by class or priority), 15 shed rules (price, 5-minute means, time of day, DR
criticality), 10 limits following the export surplus, 10 duty cycles and 5
restore rules, with a price that changes every 15 minutes and a DR event in
the middle, so that the engine does decide things while it is timed.

``python -m benchmarks.rules [--quick]`` prints the rows; ``run(quick)`` returns
them for the benchmark runner.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import median, percentile

CLASSES = ("hvac", "water_heater", "ev", "pool_pump", "smart_appliance")
N_LOADS = 100
TARGET_US = 1000.0


def rule_text() -> str:
    out: list[str] = []
    for i in range(N_LOADS):
        cls = CLASSES[i % len(CLASSES)]
        out.append(
            f'[[load]]\nname = "load_{i:03d}"\nactuator = "mqtt:bench/load_{i:03d}/set"\n'
            f'rated_power = "{0.2 + (i % 15) * 0.2:.1f} kW"\npriority = {i % 10}\n'
            f'classes = ["{cls}"]\nmin_on = "{(i % 4) * 30}s"\nmin_off = "{(i % 3) * 30}s"\n'
            f'max_shed = "1h"\n' + ('min_power = "1.4 kW"\n' if cls == "ev" else "")
        )
    out.append('[settings]\ntimezone = "Europe/Amsterdam"\nrestore_delay = "30s"\n')
    rules: list[str] = []
    for i in range(10):
        limit = 2.0 + 0.4 * i
        sel = f'loads = ["class:{CLASSES[i % len(CLASSES)]}"]' if i % 2 else f"max_priority = {i}"
        rules.append(f'id = "peak-{i}"\nwhen = "import_power_kw > {limit:.1f} kW"\nfor = "5s"\n'
                     f'action = "peak_limit"\nlimit = "{limit:.1f} kW"\n{sel}\n')
    conditions = [
        "price > {p}", "avg(import_power_kw, 5m) > {p} * 8 kW",
        "time_between(17:00, 21:00) and weekday <= fri and price > {p}",
        "dr.criticality >= 3 and max(import_power_kw, 1m) > {p} * 5 kW",
        "net_power_kw > {p} * 10 kW or (tariff == 2 and price > {p})",
    ]
    for i in range(15):
        cond = conditions[i % len(conditions)].format(p=0.2 + 0.02 * i)
        rules.append(f'id = "shed-{i}"\nwhen = "{cond}"\nfor = "30s"\nuntil = "not ({cond})"\n'
                     f'until_for = "30s"\naction = "shed"\n'
                     f'loads = ["class:{CLASSES[i % len(CLASSES)]}"]\nmax_priority = {i % 10}\n')
    for i in range(10):
        ev = f"load_{2 + 5 * i:03d}"  # class ev
        rules.append(f'id = "limit-{i}"\nwhen = "not time_between(23:00, 06:00)"\n'
                     f'action = "limit"\nloads = ["{ev}"]\n'
                     f'power = "export_power_kw - import_power_kw + load.{ev}.power_kw"\n')
    for i in range(10):
        rules.append(f'id = "cycle-{i}"\nwhen = "dr.active and dr.duty_cycle_pct < 100"\n'
                     f'action = "cycle"\nduty = "dr.duty_cycle_pct"\nperiod = "15m"\n'
                     f'dr_targets = true\nloads = ["class:hvac"]\nmax_priority = {i}\n')
    for i in range(5):
        rules.append(f'id = "keep-{i}"\nwhen = "hour < 6 or load.load_{i:03d}.off_for > 50m"\n'
                     f'action = "restore"\nloads = ["load_{i:03d}"]\n')
    out.extend(f"[[rule]]\n{r}" for r in rules)
    return "\n".join(out)


def snapshots(count: int) -> list[Any]:
    """Decoded DSMR 5 telegrams of an evening, one a second, as Snapshots."""
    from gateway.model import MeterFrame, Snapshot
    from gateway.protocols.dsmr import DsmrDecoder
    from gateway.sim.dsmr import DsmrSimulator

    sim = DsmrSimulator("dsmr5", seed=4)
    dec = DsmrDecoder()
    t = datetime(2026, 1, 15, 17, 0, tzinfo=UTC)
    out = []
    for _ in range(count):
        t += timedelta(seconds=1)
        for frame in dec.feed(sim.telegram(t)):
            if isinstance(frame, MeterFrame):
                out.append(Snapshot(meter="main", protocol="dsmr", device_id=frame.meter_id,
                                    timestamp=frame.timestamp or t, received=t,
                                    readings=frame.readings))
    return out


def _measure(count: int) -> tuple[list[float], list[float], int, int]:
    from gateway.model import DemandResponseEvent, PriceSignal
    from gateway.rules import Engine, parse_rule_texts

    rules = parse_rule_texts([("bench.toml", rule_text())])
    assert len(rules.loads) == N_LOADS and len(rules.rules) == 50
    snaps = snapshots(count)
    engine = Engine(rules, rng_seed=1, log_commands=False)
    both: list[float] = []
    evaluate_only: list[float] = []
    commands = 0
    for k, snap in enumerate(snaps):
        now = snap.received
        if k % 900 == 0:  # a new quarter-hour price
            engine.set_price(PriceSignal(start=now, end=now + timedelta(minutes=15),
                                         price_per_kwh=(0.15, 0.45, 0.25, 0.6)[(k // 900) % 4]))
        if k == len(snaps) // 3:
            engine.set_dr_event(DemandResponseEvent(
                event_id="bench", start=now, end=now + timedelta(minutes=20), criticality=4,
                duty_cycle_pct=50.0, load_classes=("hvac", "water_heater")), now)
        t0 = time.perf_counter()
        engine.observe(snap)
        t1 = time.perf_counter()
        commands += len(engine.evaluate(now))
        t2 = time.perf_counter()
        both.append((t2 - t0) * 1e6)
        evaluate_only.append((t2 - t1) * 1e6)
    return both, evaluate_only, commands, len(snaps)


def run(quick: bool = False) -> list[dict[str, Any]]:
    count = 600 if quick else 3600
    both, evaluate_only, commands, n = _measure(count)
    rows = []
    for case, values in (("observe+evaluate", both), ("evaluate", evaluate_only)):
        p99 = percentile(values, 99)
        rows.append({
            "scenario": "rules", "case": case, "loads": N_LOADS, "rules": 50, "snapshots": n,
            "commands": commands, "median_us": round(median(values), 1),
            "p99_us": round(p99, 1), "max_us": round(max(values), 1),
            "target_us": TARGET_US, "ok": p99 <= TARGET_US,
        })
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print("  ".join(f"{k}={v}" for k, v in row.items()))
