"""Wired M-Bus reader: poll every configured slave on one bus, back to back.

Drives the sans-IO :class:`~gateway.protocols.mbus.master.MasterSession` over a
transport (serial device at 2400 8E1 by default, ``socket://`` M-Bus gateways, ptys):
it performs the session's ``Send`` events, feeds it what the port returns and calls
``on_timeout`` when the session's deadline passes.  Addressing, FCB, retries,
multi-telegram reads and every timeout derived from the baud rate are the session's
business.

Schedule: one *round* reads every configured slave in turn, each request following the
previous reply after the bus idle time only, so the line is kept busy; rounds start
every ``poll_interval_s`` (0: the next round starts at once).  A slave that does not
answer is skipped for 1, 2, 4 … up to ``max_skip_rounds`` rounds, so that dead meters
do not eat the line's time (every skipped round is logged once per failure burst).

Each slave becomes its own meter in the gateway: snapshots and status are published
as ``<meter id>-<address>``, the address being the primary address (``heat-5``) or the
8-digit secondary id (``heat-12345678``).  The configured meter id itself reports the
bus's status (online while at least one slave answers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.backoff import Backoff
from gateway.bus import MeterStatus
from gateway.clock import Clock
from gateway.config import MeterConfig
from gateway.errors import LocalProtocolError
from gateway.meters.base import MeterReader, Opener
from gateway.model import MeterFrame
from gateway.protocols._events import Discarded
from gateway.protocols.mbus.app import SecondaryAddress
from gateway.protocols.mbus.decoder import meter_frame
from gateway.protocols.mbus.master import (
    DeviceRead,
    MasterEvent,
    MasterSession,
    ReadFailed,
    Retrying,
    Send,
    SessionState,
    SetBaudrate,
    Target,
)
from gateway.transport import Transport, open_transport

log = logging.getLogger(__name__)

__all__ = ["MbusOptions", "MbusReader"]


class MbusOptions(BaseModel):
    """``[meter.options]`` of a ``protocol = "mbus"`` meter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    primary_addresses: tuple[int, ...] = Field(
        default=(), description="primary addresses 0..250 of the slaves to read"
    )
    secondary_addresses: tuple[str, ...] = Field(
        default=(),
        description="secondary addresses: 8 id digits, libmbus' 16 hex digits, or ID-MAN-VV-MEDIUM",
    )
    poll_interval_s: float = Field(default=60.0, ge=0, description="start of one round to the next (0: back to back)")
    retries: int = Field(default=3, ge=0, le=10, description="repeats of a request that got no or a garbled answer")
    timeout_margin_s: float = Field(
        default=0.1, ge=0, le=10,
        description="added to the standard's reply window (330 bit times + 50 ms); USB and TCP converters need ~0.1 s",
    )  # fmt: skip
    max_telegrams: int = Field(default=16, ge=1, le=256, description="telegrams per read (more records follow)")
    max_skip_rounds: int = Field(default=8, ge=0, le=1000, description="longest pause for a slave that does not answer")

    @field_validator("primary_addresses")
    @classmethod
    def _primary(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [a for a in v if not 0 <= a <= 250]
        if bad:
            raise ValueError(f"primary addresses are 0..250, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError("a primary address is listed twice")
        return v

    @field_validator("secondary_addresses")
    @classmethod
    def _secondary(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for text in v:
            try:
                address = SecondaryAddress.parse(text)
            except LocalProtocolError as exc:
                raise ValueError(str(exc)) from None
            if "F" in address.id:
                raise ValueError(f"{text!r}: wildcard digits cannot be read (use han-gateway mbus scan)")
        return v

    @model_validator(mode="after")
    def _some(self) -> Self:
        if not self.primary_addresses and not self.secondary_addresses:
            raise ValueError("list the slaves to read in primary_addresses and/or secondary_addresses")
        ids = [SecondaryAddress.parse(t).id for t in self.secondary_addresses]
        if len(set(ids)) != len(ids):
            raise ValueError("a secondary address is listed twice")
        return self

    def targets(self) -> list[Target]:
        return [*self.primary_addresses, *(SecondaryAddress.parse(t) for t in self.secondary_addresses)]


@dataclass(slots=True)
class _Slave:
    target: Target
    meter: str  # "<configured id>-<address>"
    failures: int = 0
    skip_until: int = 0  # round number
    online: bool | None = None
    reads: int = 0


class MbusReader(MeterReader):
    Options = MbusOptions
    line_defaults = (2400, 8, "E")  # EN 13757-2: 8E1; 2400 Bd is the usual rate

    def __init__(self, cfg: MeterConfig, *, clock: Clock | None = None,
                 opener: Opener = open_transport, backoff: Backoff | None = None) -> None:
        super().__init__(cfg, clock=clock, opener=opener, backoff=backoff)
        self.rounds = 0  # rounds completed (over all sessions)
        self.slaves: list[_Slave] = []

    @property
    def options(self) -> MbusOptions:
        opts = self.cfg.protocol_options
        if opts is None:  # built without parse_config (tests, `read`): validate here
            opts = MbusOptions.model_validate(self.cfg.options)
        assert isinstance(opts, MbusOptions)
        return opts

    async def session(self, transport: Transport) -> None:
        opts = self.options
        baud, _, _ = self.cfg.line_settings()
        tz = ZoneInfo(self.cfg.timezone) if self.cfg.timezone else None
        master = MasterSession(
            baud=baud, retries=opts.retries, timeout_margin_s=opts.timeout_margin_s,
            max_telegrams=opts.max_telegrams,
        )  # fmt: skip
        if not self.slaves:
            self.slaves = [_Slave(target=t, meter=f"{self.cfg.id}-{_suffix(t)}") for t in opts.targets()]
        await transport.set_baudrate(baud)
        while True:
            started = self.clock.monotonic()
            answered = 0
            for slave in self.slaves:
                if slave.skip_until > self.rounds:
                    continue
                results = await self.drive(
                    transport, master, master.read(slave.target, now=self.clock.monotonic())
                )
                answered += self._account(slave, results, opts, tz)
            self.rounds += 1
            if answered == 0:
                self._status(False, f"no M-Bus slave answered in round {self.rounds}")
            wait = opts.poll_interval_s - (self.clock.monotonic() - started)
            if wait > 0:
                await self.clock.sleep(wait)
            else:
                await asyncio.sleep(0)  # let other tasks run between back-to-back rounds

    async def drive(
        self, transport: Transport, master: MasterSession, events: Sequence[MasterEvent]
    ) -> list[MasterEvent]:
        """Drive one master operation to its end; returns its result events."""
        results: list[MasterEvent] = []
        await self._perform(transport, events, results)
        while master.state is not SessionState.IDLE:
            deadline = master.deadline()
            timeout = None if deadline is None else max(deadline - self.clock.monotonic(), 0.0)
            try:
                async with asyncio.timeout(timeout):
                    data = await transport.read()
            except TimeoutError:
                await self._perform(transport, master.on_timeout(now=self.clock.monotonic()), results)
                continue
            await self._perform(transport, master.feed(data, now=self.clock.monotonic()), results)
        return results

    async def _perform(
        self, transport: Transport, events: Sequence[MasterEvent], results: list[MasterEvent]
    ) -> None:
        for ev in events:
            if isinstance(ev, Send):
                await transport.write(ev.data)
            elif isinstance(ev, SetBaudrate):
                await transport.set_baudrate(ev.baud)
            else:
                results.append(ev)

    def _account(
        self, slave: _Slave, results: list[MasterEvent], opts: MbusOptions, tz: ZoneInfo | None
    ) -> int:
        answered = 0
        for ev in results:
            if isinstance(ev, DeviceRead):
                frame: MeterFrame = meter_frame(ev.telegrams, raw=ev.raw, meter_tz=tz)
                self.publish_frame(frame, meter=slave.meter)
                slave.reads += 1
                if slave.failures:
                    log.info("meter %s: answering again after %d failed read(s)", slave.meter, slave.failures)
                slave.failures = 0
                slave.skip_until = 0
                self._slave_status(slave, True, "receiving")
                answered = 1
            elif isinstance(ev, ReadFailed):
                self.counters.errors += 1
                slave.failures += 1
                skip = min(2 ** (slave.failures - 1), opts.max_skip_rounds)
                slave.skip_until = self.rounds + 1 + skip if skip else 0
                if slave.failures == 1:
                    log.warning("meter %s: read failed after %d attempt(s): %s", slave.meter, ev.attempts, ev.error)
                self._slave_status(slave, False, f"read failed: {ev.error}")
            elif isinstance(ev, Retrying):
                log.debug("meter %s: attempt %d failed: %s", slave.meter, ev.attempt, ev.error)
            elif isinstance(ev, Discarded):
                self.counters.garbage += 1
        return answered

    def _slave_status(self, slave: _Slave, online: bool, detail: str) -> None:
        if slave.online == online:
            return  # published on changes only (the reader's own status carries details)
        slave.online = online
        if self._bus is not None:
            self._bus.publish(MeterStatus(meter=slave.meter, online=online, detail=detail,
                                          frames=slave.reads, errors=slave.failures))  # fmt: skip


def _suffix(target: Target) -> str:
    return str(target) if isinstance(target, int) else target.id
