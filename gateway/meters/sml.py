"""SML push reader: eHZ / EDL21 meters send an SML file every 1-4 s, unasked.

The optical (IR) interface of an eHZ and most RS-485 adapters run at 9600 Bd
8N1 (FNN Lastenheft EDL / SML 1.04 transport version 1); a few meters need
another speed in the config.  The reader only listens: nothing is sent, so a
meter behind a read-only IR head works.

``[meter.options]``: ``crc = "auto"`` (default: CRC-16/X-25, or the
CRC-16/KERMIT that Holley DTZ541 sends on RS-485), ``"x25"`` or ``"kermit"``
to accept only one of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from gateway.meters.base import MeterReader
from gateway.protocols.sml import SmlDecoder
from gateway.transport import Transport


class SmlOptions(BaseModel):
    """The ``[meter.options]`` table of an SML meter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    crc: Literal["auto", "x25", "kermit"] = "auto"


class SmlReader(MeterReader):
    Options = SmlOptions
    line_defaults = (9600, 8, "N")

    async def session(self, transport: Transport) -> None:
        options = self.cfg.protocol_options
        crc = options.crc if isinstance(options, SmlOptions) else "auto"
        # A decoder per connection: SML keeps no state across files that a
        # reconnect should preserve, and a file cut by the disconnect must
        # not be glued to the next stream (feed_eof reports it).
        decoder = SmlDecoder(crc=crc)
        try:
            while True:
                data = await self.read_or_stale(transport)
                if data is not None:
                    self.handle(decoder.feed(data))
        finally:
            self.handle(decoder.feed_eof())
