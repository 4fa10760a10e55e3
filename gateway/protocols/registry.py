"""Which decoder handles which ``--protocol`` (for ``han-gateway decode``).

Entries import lazily so that listing protocols costs nothing.  A protocol
adds one line here; every decoder has ``feed(bytes)`` and ``feed_eof()``
returning ``MeterFrame | Discarded`` events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DecoderFactory = Callable[..., Any]


def _dsmr(*, key: bytes | None = None, auth_key: bytes | None = None) -> Any:
    from gateway.protocols.dsmr import DsmrDecoder

    return DsmrDecoder(key=key, auth_key=auth_key)


def _iec62056_21(*, key: bytes | None = None, auth_key: bytes | None = None) -> Any:
    from gateway.protocols.iec62056_21 import ReadoutDecoder

    return ReadoutDecoder()


def _mbus(*, key: bytes | None = None, auth_key: bytes | None = None) -> Any:
    from gateway.protocols.mbus.decoder import MbusDecoder

    return MbusDecoder()


def _dlms(*, key: bytes | None = None, auth_key: bytes | None = None) -> Any:
    from gateway.protocols.dlms.push import DlmsPushDecoder

    return DlmsPushDecoder(key=key, auth_key=auth_key)


def _sml(*, key: bytes | None = None, auth_key: bytes | None = None) -> Any:
    from gateway.protocols.sml import SmlDecoder

    return SmlDecoder()


DECODERS: dict[str, DecoderFactory] = {
    "dsmr": _dsmr,
    "iec62056-21": _iec62056_21,
    "mbus": _mbus,
    "sml": _sml,
    "dlms": _dlms,
}


def make_decoder(protocol: str, *, key: bytes | None = None, auth_key: bytes | None = None) -> Any:
    return DECODERS[protocol](key=key, auth_key=auth_key)
