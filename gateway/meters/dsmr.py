"""DSMR/P1 push reader: the meter sends a telegram every 1 s (DSMR 5) or 10 s (DSMR 4)."""

from __future__ import annotations

from gateway.config import meter_keys
from gateway.meters.base import MeterReader
from gateway.protocols.dsmr import DsmrDecoder
from gateway.transport import Transport


class DsmrReader(MeterReader):
    line_defaults = (115200, 8, "N")  # DSMR 4/5; DSMR 2.2/3 meters need 9600 7E1 in the config
    _decoder: DsmrDecoder | None = None

    async def session(self, transport: Transport) -> None:
        if self._decoder is None:
            key, auth_key = meter_keys(self.cfg, self.base_dir)
            # One decoder for the reader's lifetime: the Smarty frame counter (replay
            # protection) must survive reconnects.
            self._decoder = DsmrDecoder(key=key, auth_key=auth_key)
        decoder = self._decoder
        try:
            while True:
                data = await self.read_or_stale(transport)
                if data is not None:
                    self.handle(decoder.feed(data))
        finally:
            # A telegram cut by the disconnect must not be glued to the next stream.
            self.handle(decoder.feed_eof())
