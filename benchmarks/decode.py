"""Decode time per telegram: our DsmrDecoder against dsmr_parser, same telegrams, same run.

Three kinds of case, because our decoder reuses the ``Reading`` of every line
that did not change since the previous telegram:

* ``repeated``: one captured telegram fed again and again to one decoder.  Every
  line is a cache hit, so this is the best case, not a realistic one;
* ``stream``: a sequence of distinct ``DsmrSimulator("dsmr5")`` telegrams one
  second apart through one decoder, as a meter sends them (the clock, the
  power and voltage lines change every second, the counters now and then);
* ``cold``: a fresh decoder for every telegram (no reuse at all; the decoder's
  construction is included).

dsmr_parser parses the very same text in each case (it keeps no state between
telegrams, so its figure does not depend on the kind of case).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import VECTORS, median

CAPTURES = {
    "DSMR 5 (TELEGRAM_V5)": ("dsmr_parser/TELEGRAM_V5.txt", "V5"),
    "DSMR 4.2 (TELEGRAM_V4_2)": ("dsmr_parser/TELEGRAM_V4_2.txt", "V4"),
    "Belgian (FLUVIUS_V171)": ("dsmr_parser/TELEGRAM_FLUVIUS_V171.txt", "BELGIUM_FLUVIUS"),
}


def _per_item_us(fn: Callable[[], int], repeats: int) -> list[float]:
    """Run ``fn`` (which returns how many telegrams it decoded) ``repeats`` times."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        out.append((time.perf_counter() - t0) / n * 1e6)
    return out


def _check(frames: list[Any]) -> None:
    if len(frames) != 1 or hasattr(frames[0], "error"):
        raise RuntimeError(f"decoder did not return one good frame: {frames!r}")


def _ours_repeated(raw: bytes, n: int) -> Callable[[], int]:
    from gateway.protocols.dsmr import DsmrDecoder

    dec = DsmrDecoder()
    _check(dec.feed(raw))

    def go() -> int:
        feed = dec.feed
        for _ in range(n):
            feed(raw)
        return n

    return go


def _ours_stream(telegrams: Sequence[bytes]) -> Callable[[], int]:
    from gateway.protocols.dsmr import DsmrDecoder

    for t in telegrams:  # every one decodes (outside the timing)
        _check(DsmrDecoder().feed(t))

    def go() -> int:
        feed = DsmrDecoder().feed
        for t in telegrams:
            feed(t)
        return len(telegrams)

    return go


def _ours_cold(telegrams: Sequence[bytes]) -> Callable[[], int]:
    from gateway.protocols.dsmr import DsmrDecoder

    def go() -> int:
        for t in telegrams:
            DsmrDecoder().feed(t)
        return len(telegrams)

    return go


def _theirs(spec: str, texts: Sequence[str]) -> Callable[[], int] | None:
    try:
        from dsmr_parser import telegram_specifications
        from dsmr_parser.parsers import TelegramParser
    except ImportError:  # the bench extra is not installed
        return None
    parser = TelegramParser(getattr(telegram_specifications, spec), apply_checksum_validation=True)
    for t in texts:
        parser.parse(t)  # raises if it cannot: then the comparison would be meaningless

    def go() -> int:
        parse = parser.parse
        for t in texts:
            parse(t)
        return len(texts)

    return go


def _row(case: str, kind: str, ours: Callable[[], int], theirs: Callable[[], int] | None,
         repeats: int, telegrams: int) -> dict[str, Any]:
    # Interleave ours and theirs so that a noisy neighbour hits both alike.
    our_runs: list[float] = []
    their_runs: list[float] = []
    for _ in range(repeats):
        our_runs += _per_item_us(ours, 1)
        if theirs is not None:
            their_runs += _per_item_us(theirs, 1)
    our_us = median(our_runs)
    row: dict[str, Any] = {"scenario": "decode", "case": case, "kind": kind,
                           "telegrams": telegrams, "ours_us": round(our_us, 2),
                           "ours_min_us": round(min(our_runs), 2)}
    if theirs is not None:
        their_us = median(their_runs)
        row.update(dsmr_parser_us=round(their_us, 1), speedup=round(their_us / our_us, 1))
    return row


def simulated_telegrams(count: int, *, seed: int = 1) -> list[bytes]:
    from gateway.sim.dsmr import DsmrSimulator

    sim = DsmrSimulator("dsmr5", seed=seed)
    t = datetime(2026, 1, 15, 7, 0, tzinfo=UTC)  # morning: the load moves
    out = []
    for _ in range(count):
        t += timedelta(seconds=1)
        out.append(sim.telegram(t))
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    repeats = 5 if quick else 11
    n_rep = 200 if quick else 1000
    n_stream = 100 if quick else 400
    rows = []
    stream = simulated_telegrams(n_stream)
    stream_text = [t.decode("latin-1") for t in stream]
    rows.append(_row("DSMR 5 simulator", "stream", _ours_stream(stream),
                     _theirs("V5", stream_text), repeats, len(stream)))
    rows.append(_row("DSMR 5 simulator", "cold", _ours_cold(stream),
                     _theirs("V5", stream_text), repeats, len(stream)))
    for label, (path, spec) in CAPTURES.items():
        raw = (VECTORS / "dsmr" / path).read_bytes()
        text = raw.decode("latin-1")
        rows.append(_row(label, "cold", _ours_cold([raw] * 50),
                         _theirs(spec, [text] * 50), repeats, 50))
        rows.append(_row(label, "repeated", _ours_repeated(raw, n_rep),
                         _theirs(spec, [text] * 50), repeats, n_rep))
    return rows
