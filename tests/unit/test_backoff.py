from __future__ import annotations

import random

import pytest

from gateway.backoff import Backoff


def test_backoff_grows_is_capped_jittered_and_resets() -> None:
    b = Backoff(1.0, 60.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(200)]
    assert all(1.0 <= d <= 60.0 for d in delays)
    assert max(delays[:3]) <= 4.0  # early attempts stay short
    assert len({round(d, 3) for d in delays[20:]}) > 20  # jittered, not a fixed interval
    b.reset()
    assert b.next_delay() == 1.0  # first delay after a success is the base
    b.jump_to_cap()
    assert 1.0 <= b.next_delay() <= 60.0 and b.attempts > 60


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(5, 1)
