"""Wired M-Bus (EN 13757-2 link layer, EN 13757-3 application layer), sans-IO.

* :mod:`.link`: frames, check sums, C field and FCB, the stream splitter;
* :mod:`.app`: CI, headers, data records (DIF/DIFE/VIF/VIFE), values and units;
* :mod:`.tables`: VIF/VIFE tables, media, manufacturer codes;
* :mod:`.decoder`: ``MbusDecoder`` for ``han-gateway decode --protocol mbus``;
* :mod:`.master`: the master's dialog (primary and secondary addressing, FCB,
  retries, multi-telegram reads, wildcard search) as a sans-IO session.
"""

from __future__ import annotations

from gateway.protocols.mbus.app import (
    DataRecord,
    FixedDataResponse,
    Header,
    MbusApplicationError,
    RecordError,
    SecondaryAddress,
    VariableDataResponse,
    decode_response,
)
from gateway.protocols.mbus.decoder import PROTOCOL, MbusDecoder, meter_frame
from gateway.protocols.mbus.link import (
    ControlFrame,
    FrameScanner,
    LongFrame,
    ShortFrame,
    SingleChar,
    decode_frame,
)

__all__ = [
    "PROTOCOL",
    "ControlFrame",
    "DataRecord",
    "FixedDataResponse",
    "FrameScanner",
    "Header",
    "LongFrame",
    "MbusApplicationError",
    "MbusDecoder",
    "RecordError",
    "SecondaryAddress",
    "ShortFrame",
    "SingleChar",
    "VariableDataResponse",
    "decode_frame",
    "decode_response",
    "meter_frame",
]
