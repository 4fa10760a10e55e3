"""Per-quantity publication filter: minimum interval, absolute deadband, heartbeat.

A value is published when at least ``min_interval_s`` passed since the last
publication of the same (meter, quantity) AND it moved by more than the
deadband (a deadband of 0 means "on change"; text values publish on change
when a deadband is set) — or, regardless of the deadband, when ``heartbeat_s``
passed, so that HA's ``expire_after`` never fires for a steady value.  With
the defaults (interval 0, no deadband) every value is published.
Time is passed in (monotonic seconds); the filter does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Value = int | float | str


@dataclass(slots=True)
class _Last:
    value: Value
    at: float


class Throttle:
    def __init__(
        self,
        *,
        min_interval_s: Callable[[str], float],
        deadband: Callable[[str], float | None],
        heartbeat_s: float = 0.0,
    ) -> None:
        self._min_interval_s = min_interval_s
        self._deadband = deadband
        self._heartbeat_s = heartbeat_s
        self._last: dict[tuple[str, str], _Last] = {}
        self.suppressed = 0

    def should_publish(self, meter: str, key: str, value: Value, *, now: float) -> bool:
        """Decide for one value and, when it is published, remember it."""
        last = self._last.get((meter, key))
        if last is not None and not self._wanted(key, last, value, now):
            self.suppressed += 1
            return False
        self._last[(meter, key)] = _Last(value, now)
        return True

    def forget(self, meter: str | None = None) -> None:
        """Publish the next value unconditionally (after a reconnect, say)."""
        if meter is None:
            self._last.clear()
            return
        for k in [k for k in self._last if k[0] == meter]:
            del self._last[k]

    def _wanted(self, key: str, last: _Last, value: Value, now: float) -> bool:
        elapsed = now - last.at
        if elapsed < self._min_interval_s(key):
            return False
        if self._heartbeat_s > 0 and elapsed >= self._heartbeat_s:
            return True
        band = self._deadband(key)
        if band is None:
            return True
        if isinstance(value, str) or isinstance(last.value, str):
            return value != last.value
        return abs(value - last.value) > band
