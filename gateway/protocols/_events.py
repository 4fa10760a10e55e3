"""Events shared by every decoder (besides the protocol's own frames)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.errors import ProtocolError

DiscardReason = Literal["checksum", "overflow", "garbage", "unsupported", "decryption", "framing"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Discarded:
    """Input the decoder threw away; ``error`` is the typed cause."""

    reason: DiscardReason
    error: ProtocolError
    raw: bytes
    offset: int
