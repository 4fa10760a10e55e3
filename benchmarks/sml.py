"""SML decode time per file: our SmlDecoder against smllib, same bytes, same run.

Cases (per good SML file; every decoder sees the very same bytes):

* ``captures stream``: each of the 25 captures in ../shared/vectors/sml fed to one
  decoder in reads of 256 bytes, as a meter's port delivers it (155 good files
  between leading garbage, cut and corrupted files).  Our decoder reuses the list entries that did
  not change since the previous file, so this is the realistic case.
* ``captures cold``: every good file fed alone to a fresh decoder (no reuse).
* ``simulator stream``: 300 files of the virtual eHZ one second apart on a
  morning (power and registers change every second), in reads of 256 bytes.

Ours does the whole job: transport (escapes, padding, CRC), every message with
its own CRC, every list entry, the mapping to readings (OBIS id, value x 10^scaler,
unit symbol).  smllib is measured two ways: ``parse_frame()``, which decodes every
message as ours does (but checks only the transport CRC and does not scale), and
``get_obis()``, its documented shortcut that looks only at ``77 07 01…`` entries
(OBIS A = 1) and skips the rest of the file.  Ours and smllib alternate within
each round; figures are medians over the rounds, the speedups medians of the
per-round ratios.

``python -m benchmarks.sml [--quick]`` runs this scenario alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import VECTORS, median

TARGET_US = 70.0  # issue 3: SML <= 70 us per file
TARGET_SPEEDUP = 10.0  # and >= 10x smllib

Runner = Callable[[], int]  # decodes a fixed workload, returns the number of good files


def _captures() -> list[bytes]:
    return [p.read_bytes() for p in sorted((VECTORS / "sml" / "libsml_testing").glob("*.bin"))]


def _good_frames(streams: Sequence[bytes]) -> list[bytes]:
    from gateway.protocols.sml import SmlTransportDecoder, TransportFrame

    frames = []
    for data in streams:
        decoder = SmlTransportDecoder()
        frames += [e.raw for e in decoder.feed(data) + decoder.feed_eof()
                   if isinstance(e, TransportFrame)]
    return frames


CHUNK = 256  # bytes per read, as a serial port at 9600 Bd hands them over


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _ours_stream(streams: Sequence[bytes]) -> Runner:
    from gateway.model import MeterFrame
    from gateway.protocols.sml import SmlDecoder

    chunked = [_chunks(data) for data in streams]

    def go() -> int:
        good = 0
        for chunks in chunked:
            decoder = SmlDecoder()
            for chunk in chunks:
                good += sum(1 for e in decoder.feed(chunk) if isinstance(e, MeterFrame))
            good += sum(1 for e in decoder.feed_eof() if isinstance(e, MeterFrame))
        return good

    return go


def _ours_cold(frames: Sequence[bytes]) -> Runner:
    from gateway.model import MeterFrame
    from gateway.protocols.sml import SmlDecoder

    def go() -> int:
        good = 0
        for raw in frames:
            good += sum(1 for e in SmlDecoder().feed(raw) if isinstance(e, MeterFrame))
        return good

    return go


def _smllib(streams: Sequence[bytes], mode: str) -> Runner | None:
    try:
        from smllib import SmlStreamReader
    except ImportError:  # the bench extra is not installed
        return None

    chunked = [_chunks(data) for data in streams]

    def decoded(reader: Any) -> bool | None:
        """One file from smllib: True decoded, False refused, None no complete file yet."""
        try:
            frame = reader.get_frame()
            if frame is None:
                return None
            frame.parse_frame() if mode == "parse" else frame.get_obis()
        except Exception:  # noqa: BLE001 - smllib raises CrcError, ValueError…: not counted
            return False
        return True

    def go() -> int:
        good = 0
        for chunks in chunked:
            reader = SmlStreamReader()
            for chunk in chunks:
                reader.add(chunk)
                while (result := decoded(reader)) is not None:
                    good += result
        return good

    return go


def _simulated(count: int) -> list[bytes]:
    from gateway.sim.sml import SmlSimulator

    sim = SmlSimulator("ehz", seed=1)
    t = datetime(2026, 1, 15, 7, 0, tzinfo=UTC)  # morning: the load moves
    out = []
    for _ in range(count):
        t += timedelta(seconds=1)
        out.append(sim.file(t))
    return out


def _timed(fn: Runner) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn()
    elapsed = time.perf_counter() - t0
    return elapsed / max(n, 1) * 1e6, n


def _row(case: str, ours: Runner, parse: Runner | None, obis: Runner | None,
         repeats: int) -> dict[str, Any]:
    ours_us: list[float] = []
    theirs: dict[str, list[float]] = {"parse": [], "obis": []}
    ratios: dict[str, list[float]] = {"parse": [], "obis": []}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        us, counts["ours"] = _timed(ours)
        ours_us.append(us)
        for name, runner in (("parse", parse), ("obis", obis)):
            if runner is None:
                continue
            their_us, counts[name] = _timed(runner)
            theirs[name].append(their_us)
            ratios[name].append(their_us / us)
    ours_median = median(ours_us)
    row: dict[str, Any] = {
        "scenario": "sml", "case": case, "files": counts["ours"],
        "ours_us": round(ours_median, 1), "ours_min_us": round(min(ours_us), 1),
        "target_us": TARGET_US, "meets_target_us": ours_median <= TARGET_US,
    }
    for name in ("parse", "obis"):
        if theirs[name]:
            row[f"smllib_{name}_us"] = round(median(theirs[name]), 1)
            row[f"smllib_{name}_files"] = counts[name]
            row[f"speedup_vs_smllib_{name}"] = round(median(ratios[name]), 1)
    return row


def run(quick: bool = False) -> list[dict[str, Any]]:
    repeats = 5 if quick else 21
    captures = _captures()
    frames = _good_frames(captures)
    simulated = _simulated(60 if quick else 300)
    sim_stream = [b"".join(simulated)]
    return [
        _row("captures stream", _ours_stream(captures), _smllib(captures, "parse"),
             _smllib(captures, "obis"), repeats),
        _row("captures cold", _ours_cold(frames), _smllib(frames, "parse"),
             _smllib(frames, "obis"), repeats),
        _row("simulator stream", _ours_stream(sim_stream), _smllib(sim_stream, "parse"),
             _smllib(sim_stream, "obis"), repeats),
    ]


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv[1:]):
        print("  ".join(f"{k}={v}" for k, v in result.items()))
