"""Wired M-Bus: RSP_UD decode time against pyMeterBus, and the polling schedule's use of
the line.

``decode`` rows: every libmbus capture in ``shared/vectors/mbus/libmbus/frames`` (the
same bytes for both decoders, interleaved in one run), per-frame medians.  Ours is the
full ``decode --protocol mbus`` path (bytes → ``MeterFrame`` with scaled ``Reading``s):

* ``warm``: one decoder, the frame seen before (the DIB/VIB interpretation cache is
  warm, as when a gateway polls the same meters again; the values are decoded anew);
* ``cold``: the interpretation caches cleared before every frame (first sight of a
  meter layout);
* ``stream``: telegrams of the virtual bus read one hour apart (changing values).

pyMeterBus is measured doing the equivalent work: ``meterbus.load(frame)`` then
``.body.interpreted`` (its ``load`` only splits records; values, units and storage
numbers are computed on access).  Frames pyMeterBus cannot decode are left out of both
medians and counted.

``polling`` rows: the real :class:`MbusReader` (poll interval 0) against the virtual
bus on a pty, which delays every reply by its time on the wire at the bus baud rate.
Theoretical time of each request/response cycle: (request + reply) × 11 bits + 11 bit
times turnaround + 33 bit times idle, at the baud rate; ``efficiency`` = theoretical
time of the cycles done / wall time taken (the goal is ≥ 0.90).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import VECTORS, median

FRAMES = VECTORS / "mbus" / "libmbus" / "frames"


def _frames() -> list[tuple[str, bytes]]:
    return [(p.stem, bytes.fromhex(json.loads(p.read_text())["frame_hex"]))
            for p in sorted(FRAMES.glob("*.json"))]  # fmt: skip


def _time_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def _pymeterbus() -> Callable[[bytes], object] | None:
    try:
        import meterbus
    except ImportError:  # the bench extra is not installed
        return None

    def decode(frame: bytes) -> object:
        return meterbus.load(frame).body.interpreted

    return decode


def decode_rows(quick: bool) -> list[dict[str, Any]]:
    from gateway.model import MeterFrame
    from gateway.protocols.mbus import MbusDecoder, app, decoder

    frames = _frames()
    theirs = _pymeterbus()
    n = 50 if quick else 300
    repeats = 3 if quick else 7
    warm: list[float] = []
    cold: list[float] = []
    ref: list[float] = []
    ours_common: list[float] = []
    failed = 0
    dec = MbusDecoder()
    for _name, raw in frames:
        events = dec.feed(raw)
        if [type(e) for e in events] != [MeterFrame]:
            raise RuntimeError(f"our decoder refused a libmbus frame: {events!r}")
        usable = theirs is not None
        if theirs is not None:
            try:
                theirs(raw)
            except Exception:  # noqa: BLE001 - pyMeterBus raises all sorts on frames it cannot read
                usable = False
                failed += 1

        def cold_once(raw: bytes = raw) -> None:
            for cache in (app._CODINGS, app._PLANS, app._F32_CACHE, app._ADDRESSES, decoder._LABELS):
                cache.clear()
            MbusDecoder().feed(raw)

        w, c, r = [], [], []
        for _ in range(repeats):  # interleaved, so that a noisy neighbour hits all alike
            w.append(_time_us(lambda raw=raw: dec.feed(raw), n))
            c.append(_time_us(cold_once, max(n // 5, 5)))
            if usable and theirs is not None:
                r.append(_time_us(lambda raw=raw: theirs(raw), max(n // 10, 3)))
        warm.append(median(w))
        cold.append(median(c))
        if r:
            ref.append(median(r))
            ours_common.append(median(w))
    rows: list[dict[str, Any]] = []
    base = {"scenario": "mbus-decode", "frames": len(frames)}
    rows.append({**base, "kind": "warm", "ours_median_us": round(median(warm), 2),
                 "ours_p90_us": round(statistics.quantiles(warm, n=10)[-1], 2),
                 "ours_max_us": round(max(warm), 2)})  # fmt: skip
    rows.append({**base, "kind": "cold", "ours_median_us": round(median(cold), 2),
                 "ours_max_us": round(max(cold), 2)})  # fmt: skip
    if ref:
        rows.append({
            **base, "kind": "vs pyMeterBus (frames both decode)", "frames": len(ref),
            "pymeterbus_failed": failed, "ours_median_us": round(median(ours_common), 2),
            "pymeterbus_median_us": round(median(ref), 1),
            "speedup": round(median(ref) / median(ours_common), 1),
        })  # fmt: skip
    rows.append(_stream_row(quick))
    return rows


def _stream_row(quick: bool) -> dict[str, Any]:
    from gateway.protocols.mbus import MbusDecoder
    from gateway.protocols.mbus.link import req_ud2
    from gateway.sim.mbus import make_bus

    t0 = datetime(2026, 1, 15, 7, 0, tzinfo=UTC)
    now = [t0]
    bus = make_bus(4, clock=lambda: now[0])
    telegrams: list[bytes] = []
    fcb = True
    for hour in range(25 if quick else 100):
        now[0] = t0 + timedelta(hours=hour)
        for m in bus.meters:
            for _ in range(2):  # the gas meter's second telegram too
                pieces = bus.handle(req_ud2(m.primary, fcb=fcb).encode(), hour * 3600.0)
                fcb = not fcb
                telegrams.append(b"".join(p for _, p in pieces))
    dec = MbusDecoder()
    runs = []
    for _ in range(5 if quick else 11):
        t = time.perf_counter()
        for raw in telegrams:
            dec.feed(raw)
        runs.append((time.perf_counter() - t) / len(telegrams) * 1e6)
    return {"scenario": "mbus-decode", "kind": "stream (virtual bus, values changing)",
            "frames": len(telegrams), "ours_median_us": round(median(runs), 2)}  # fmt: skip


# ------------------------------------------------------------------ polling
async def _poll(baud: int, meters: int, seconds: float) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    from gateway.bus import Bus
    from gateway.config import MeterConfig
    from gateway.meters.mbus import MbusReader
    from gateway.protocols.mbus.master import cycle_time_s
    from gateway.sim.mbus import make_bus, serve_pty

    bus = make_bus(meters, baud=baud, jitter_bits=0, kinds=("heat", "water", "electricity"))
    log: list[tuple[float, int, int]] = []  # (time, request bytes, reply bytes)
    handle = bus.handle

    def logged(data: bytes, now: float) -> list[tuple[float, bytes]]:
        out = handle(data, now)
        if out:
            log.append((now, len(data), sum(len(p) for _, p in out)))
        return out

    bus.handle = logged  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as d:
        link = str(Path(d) / "mbus")
        ready = asyncio.Event()
        sim = asyncio.create_task(serve_pty(bus, link_path=link, on_ready=lambda _p: ready.set()))
        await ready.wait()
        cfg = MeterConfig(id="bench", protocol="mbus", port=link, baudrate=baud,
                          options={"primary_addresses": list(range(1, meters + 1)),
                                   "poll_interval_s": 0})  # fmt: skip
        reader = MbusReader(cfg)
        task = asyncio.create_task(reader.run(Bus()))
        await asyncio.sleep(seconds)
        task.cancel()
        sim.cancel()
        for t in (task, sim):
            with contextlib.suppress(asyncio.CancelledError):
                await t
    # Skip the start (SND_NKE to each slave) and the cycle cut by the cancellation.
    cycles = [entry for entry in log if entry[1] == 5 and entry[2] > 1][1:-1]
    if len(cycles) < 3:
        raise RuntimeError(f"too few cycles at {baud} Bd: {len(cycles)}")
    first, last = cycles[0][0], cycles[-1][0]
    done = cycles[:-1]  # the cycles that completed between the first and last request
    theory = sum(cycle_time_s(req, rsp, baud) for _t, req, rsp in done)
    elapsed = last - first
    return {
        "scenario": "mbus-polling", "baud": baud, "meters": meters, "cycles": len(done),
        "reply_bytes_avg": round(statistics.mean(r for _t, _q, r in done), 1),
        "theoretical_cycles_per_s": round(len(done) / theory, 3),
        "achieved_cycles_per_s": round(len(done) / elapsed, 3),
        "efficiency": round(theory / elapsed, 3),
        "errors": reader.counters.errors,
    }  # fmt: skip


def polling_rows(quick: bool) -> list[dict[str, Any]]:
    seconds = 6.0 if quick else 30.0
    rows = [asyncio.run(_poll(2400, 3, seconds))]
    if not quick:
        rows.append(asyncio.run(_poll(9600, 3, seconds / 2)))
        rows.append(asyncio.run(_poll(38400, 3, seconds / 3)))
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    return decode_rows(quick) + polling_rows(quick)


if __name__ == "__main__":
    for row in run(quick=True):
        print("  ".join(f"{k}={v}" for k, v in row.items()))
