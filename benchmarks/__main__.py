"""``python -m benchmarks [--quick] [--only NAME ...] [--json PATH]``

Without ``--only``: every scenario — the four of the backbone (decode, latency,
throughput, resources) and every other module here with a ``run(quick=False)``
(M-Bus, SML, DLMS codecs against their baselines, the rule engine).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks import decode, gateway_run

Scenario = Callable[..., Any]

SCENARIOS: dict[str, Scenario] = {
    "decode": decode.run,
    "latency": gateway_run.latency,
    "throughput": gateway_run.throughput,
    "resources": gateway_run.resources,
}
_NOT_SCENARIOS = {"common", "decode", "gateway_run"}


def optional_scenarios() -> list[str]:
    """The other modules of this package (imported only when asked for)."""
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                  if not m.name.startswith("_") and m.name not in _NOT_SCENARIOS)


def scenario(name: str) -> Scenario:
    if name in SCENARIOS:
        return SCENARIOS[name]
    run: Scenario = importlib.import_module(f"benchmarks.{name}").run
    return run


def table(rows: list[dict[str, Any]]) -> str:
    """One aligned table per scenario (its rows may have different keys)."""
    out: list[str] = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        group = [r for r in rows if r["scenario"] == scenario]
        keys = [k for k in dict.fromkeys(k for r in group for k in r) if k != "scenario"]
        cells = [[str(r.get(k, "")) for k in keys] for r in group]
        widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
        out.append(f"== {scenario}")
        out.append("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
        out.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                   for row in cells)
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    ap.add_argument("--only", nargs="*", choices=[*SCENARIOS, *optional_scenarios()],
                    default=None)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/latest.json"))
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    load: dict[str, list[float]] = {}
    started = time.monotonic()
    for name in args.only or [*SCENARIOS, *optional_scenarios()]:
        print(f"running {name} …", file=sys.stderr, flush=True)
        before = os.getloadavg()[0]
        out = scenario(name)(quick=args.quick)
        # The 1-minute load average before and after: how busy the (shared) machine was.
        load[name] = [round(before, 2), round(os.getloadavg()[0], 2)]
        results.extend(out if isinstance(out, list) else [out])
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "quick": args.quick, "load_1min": load,
        "seconds": round(time.monotonic() - started), "results": results,
    }, indent=1))
    print(f"written to {args.json} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
