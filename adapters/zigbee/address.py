"""Actuator addresses ``zigbee:<ieee>/<endpoint>[?rated_w=W]`` (no zigpy import: used by ``check``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import parse_qs

__all__ = ["ActuatorAddress", "parse_actuator"]

_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True, kw_only=True)
class ActuatorAddress:
    ieee: str  # canonical "00:0d:6f:00:0a:bc:de:f0"
    endpoint: int
    rated_w: float | None = None  # enables LIMIT through Level Control


def parse_actuator(address: str) -> ActuatorAddress:
    """Parse ``<ieee>/<endpoint>[?rated_w=W]`` (the part after ``zigbee:``).

    The IEEE address may be written with or without colons or dashes.

    Raises:
        ValueError: with a message for ``han-gateway check``.
    """
    path, _, query = address.partition("?")
    ieee_text, sep, ep_text = path.partition("/")
    if not sep:
        raise ValueError("expected <ieee>/<endpoint>, e.g. 00:0d:6f:00:0a:bc:de:f0/1")
    digits = ieee_text.replace(":", "").replace("-", "")
    if len(digits) != 16 or not set(digits) <= _HEX:
        raise ValueError(f"{ieee_text!r} is not an IEEE address (16 hex digits)")
    if not ep_text.isdigit() or not 1 <= int(ep_text) <= 240:
        raise ValueError(f"endpoint {ep_text!r} is not in 1..240")
    rated: float | None = None
    if query:
        try:
            params = parse_qs(query, strict_parsing=True)
        except ValueError:
            raise ValueError(f"cannot read options {query!r}; expected rated_w=<W>") from None
        unknown = set(params) - {"rated_w"}
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}; only rated_w")
        try:
            rated = float(params["rated_w"][-1])
        except ValueError:
            raise ValueError("rated_w is not a number") from None
        if not math.isfinite(rated) or rated <= 0:
            raise ValueError("rated_w must be a positive number of watts")
    ieee = ":".join(digits[i:i + 2] for i in range(0, 16, 2)).lower()
    return ActuatorAddress(ieee=ieee, endpoint=int(ep_text), rated_w=rated)
