"""IEC 62056-21 reader: poll an optical-port meter (modes A–D).

Drives the sans-IO ``ClientSession`` over a transport: it performs the
session's ``Send``/``SetBaudrate`` actions, feeds it what the port returns,
and calls ``on_timeout`` when the session's deadline passes (reaction times,
retries and the baud switch timing are the session's business, not ours).
Mode D meters push on their own; the session then only listens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from gateway.meters.base import MeterReader
from gateway.model import MeterFrame
from gateway.protocols._events import Discarded
from gateway.protocols.iec62056_21 import (
    ClientSession,
    Send,
    SessionFailed,
    SessionState,
    SetBaudrate,
)
from gateway.transport import Transport

log = logging.getLogger(__name__)


class Iec62056Reader(MeterReader):
    line_defaults = (300, 7, "E")  # the sign-on speed; the session switches up
    async def session(self, transport: Transport) -> None:
        while True:
            started = self.clock.monotonic()
            await self.readout(transport)
            wait = self.cfg.poll_interval_s - (self.clock.monotonic() - started)
            await self.clock.sleep(max(wait, 0.0))

    async def readout(self, transport: Transport) -> None:
        """One sign-on → identification → option select → data readout dialog."""
        tz = ZoneInfo(self.cfg.timezone) if self.cfg.timezone else None
        sess = ClientSession(mode=self.cfg.mode, address=self.cfg.address, max_baud=self.cfg.max_baudrate,
                             reaction_time_s=self.cfg.reaction_time_s, meter_tz=tz)
        baud, _, _ = self.cfg.line_settings()
        await transport.set_baudrate(baud)
        await self._perform(transport, sess.start(now=self.clock.monotonic()))
        while sess.state not in (SessionState.DONE, SessionState.ERROR):
            deadline = sess.deadline()
            timeout = None if deadline is None else max(deadline - self.clock.monotonic(), 0.0)
            try:
                async with asyncio.timeout(timeout):
                    data = await transport.read()
            except TimeoutError:
                await self._perform(transport, sess.on_timeout(now=self.clock.monotonic()))
                continue
            await self._perform(transport, sess.feed(data, now=self.clock.monotonic()))

    async def _perform(self, transport: Transport, items: Sequence[object]) -> None:
        frames: list[MeterFrame | Discarded] = []
        for item in items:
            if isinstance(item, Send):
                await transport.write(item.data)
            elif isinstance(item, SetBaudrate):
                await transport.set_baudrate(item.baud)
            elif isinstance(item, (MeterFrame, Discarded)):
                frames.append(item)
            elif isinstance(item, SessionFailed):
                self.counters.errors += 1
                self.burst.error("readout failed after %d attempt(s): %s", item.attempts, item.error)
                self._status(False, f"readout failed: {item.error}")
        self.handle(frames)
