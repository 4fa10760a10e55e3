"""DSMR/P1 push reader: the meter sends a telegram every 1 s (DSMR 5) or 10 s (DSMR 4)."""

from __future__ import annotations

from gateway.config import meter_keys
from gateway.meters.base import MeterReader
from gateway.protocols.dsmr import DsmrDecoder
from gateway.transport import Transport


class DsmrReader(MeterReader):
    async def session(self, transport: Transport) -> None:
        key, auth_key = meter_keys(self.cfg, self.base_dir)
        decoder = DsmrDecoder(key=key, auth_key=auth_key)
        while True:
            data = await self.read_or_stale(transport)
            if data is not None:
                self.handle(decoder.feed(data))
