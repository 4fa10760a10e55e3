"""Capped exponential backoff with full jitter, as a small pure object.

``Backoff`` yields the next delay; ``reset()`` after a success; ``jump_to_cap()``
after an error that quick retries cannot fix (refused credentials), as
aioesphomeapi does.  Full jitter (a uniform draw in ``[0, ceiling]``, with a
floor of ``base``) spreads the reconnects of many gateways after a broker or
network outage, which aioesphomeapi's un-jittered backoff does not.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base_s: float = 1.0, cap_s: float = 60.0, *, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self.factor = factor
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        # Cap the exponent so the float never overflows however long we fail.
        ceiling = min(self.cap_s, self.base_s * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return max(self.base_s, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.attempts = 0

    def jump_to_cap(self) -> None:
        self.attempts = 64
