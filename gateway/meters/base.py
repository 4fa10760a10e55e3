"""What every meter reader shares: reconnect with backoff, stale detection,
error bursts logged once, and the mapping from a codec's MeterFrame to a Snapshot."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from gateway.backoff import Backoff
from gateway.bus import Bus, MeterStatus
from gateway.clock import Clock, RealClock
from gateway.config import MeterConfig
from gateway.errors import DecryptionError, TransportError
from gateway.model import MeterFrame, Snapshot
from gateway.protocols._events import Discarded
from gateway.transport import Transport, open_transport

log = logging.getLogger(__name__)

Opener = Callable[..., Awaitable[Transport]]


@dataclass(slots=True)
class MeterCounters:
    frames: int = 0
    errors: int = 0
    reconnects: int = 0
    checksum_errors: int = 0
    decryption_errors: int = 0
    garbage: int = 0


class ErrorBurst:
    """Log the first error of a burst, count the rest, summarise when data flows again."""

    def __init__(self, meter: str) -> None:
        self.meter = meter
        self.in_burst = 0

    def error(self, what: str, *args: object, level: int = logging.WARNING) -> None:
        if self.in_burst == 0:
            log.log(level, "meter %s: " + what, self.meter, *args)
        self.in_burst += 1

    def ok(self) -> None:
        if self.in_burst > 1:
            log.info("meter %s: receiving again after %d errors", self.meter, self.in_burst)
        elif self.in_burst == 1:
            log.info("meter %s: receiving again", self.meter)
        self.in_burst = 0


def describe_discard(ev: Discarded) -> str:
    err = ev.error
    if isinstance(err, DecryptionError):
        hints = {
            "wrong_key": "wrong decryption or authentication key (GCM tag does not verify); check key_file/auth_key_file",
            "no_key": "the meter sends encrypted telegrams but no key is configured (key_file)",
            "replay": "frame counter did not increase (replayed frame refused)",
            "not_encrypted": "a key is configured but the meter sends plaintext where ciphering was expected",
            "compressed": "the meter sends compressed ciphered frames, which are not supported",
            "truncated": "a ciphered frame is shorter than its header says (line noise or a cut frame)",
            "malformed": "a ciphered frame's header is malformed",
        }
        return hints.get(err.reason, f"cannot decrypt: {err}")
    return f"{ev.reason}: {err} (offset {ev.offset})"


class MeterReader:
    """Base class: subclasses implement ``session(transport)``, which reads until
    the port fails; this class owns reconnecting, health and snapshot publishing."""

    #: the pydantic model of the meter's ``options`` table, if the protocol has any
    Options: ClassVar[type[BaseModel] | None] = None
    #: baud rate, data bits, parity when the config does not set them
    line_defaults: ClassVar[tuple[int, int, str]] = (9600, 8, "N")

    def __init__(self, cfg: MeterConfig, *, clock: Clock | None = None,
                 opener: Opener = open_transport, backoff: Backoff | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or RealClock()
        self._open = opener
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.counters = MeterCounters()
        self.burst = ErrorBurst(cfg.id)
        self.online = False
        self.last_frame_at: float | None = None
        self._bus: Bus | None = None
        self._status_detail = "starting"
        self.base_dir: Path | None = None  # where relative key files are resolved (set by the supervisor)
        self.data_dir: Path | None = None  # for state kept across restarts (set by the supervisor)

    # ------------------------------------------------------------- health
    @property
    def status_detail(self) -> str:
        """What the reader is doing or what went wrong last ("receiving", "port lost: …")."""
        return self._status_detail

    def healthy(self) -> bool:
        """Running and not stuck: connected, or retrying within the backoff cap."""
        return self._status_detail != "crashed"

    def _status(self, online: bool, detail: str) -> None:
        changed = online != self.online or detail != self._status_detail
        self.online = online
        self._status_detail = detail
        if changed and self._bus is not None:
            self._bus.publish(MeterStatus(meter=self.cfg.id, online=online, detail=detail,
                                          frames=self.counters.frames, errors=self.counters.errors))

    # --------------------------------------------------------------- loop
    async def run(self, bus: Bus) -> None:
        self._bus = bus
        baud, bytesize, parity = self.cfg.line_settings()
        while True:
            try:
                transport = await self._open(self.cfg.port, baudrate=baud, bytesize=bytesize, parity=parity)
            except TransportError as exc:
                self.counters.errors += 1
                self.burst.error("cannot open %s: %s", self.cfg.port, exc)
                self._status(False, f"cannot open port: {exc}")
                await self.clock.sleep(self.backoff.next_delay())
                continue
            log.info("meter %s: port %s open", self.cfg.id, self.cfg.port)
            try:
                await self.session(transport)
            except TransportError as exc:
                self.counters.reconnects += 1
                self.burst.error("port lost: %s", exc)
                self._status(False, f"port lost: {exc}")
            finally:
                await transport.close()
            await self.clock.sleep(self.backoff.next_delay())

    async def session(self, transport: Transport) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ helpers
    def handle(self, events: list[MeterFrame | Discarded]) -> None:
        for ev in events:
            if isinstance(ev, MeterFrame):
                self.publish_frame(ev)
            elif ev.reason == "garbage":
                # Line noise, a half telegram after connecting, a converter's trailer
                # lines: counted, not an error of the meter.
                self.counters.garbage += 1
                log.debug("meter %s: skipped %d byte(s) of garbage", self.cfg.id, len(ev.raw))
            else:
                self.counters.errors += 1
                if isinstance(ev.error, DecryptionError):
                    self.counters.decryption_errors += 1
                    self.burst.error("%s", describe_discard(ev), level=logging.ERROR)
                else:
                    if ev.reason == "checksum":
                        self.counters.checksum_errors += 1
                    self.burst.error("discarded input: %s", describe_discard(ev))
                if not self.online or self.burst.in_burst == 1:
                    self._status(self.online, describe_discard(ev))

    def publish_frame(self, frame: MeterFrame, *, meter: str | None = None) -> None:
        """Publish ``frame`` as a Snapshot of ``meter`` (default: the configured meter id;
        a bus reader such as M-Bus passes one id per device on the bus)."""
        now = self.clock.now()
        self.counters.frames += 1
        self.last_frame_at = self.clock.monotonic()
        self.backoff.reset()
        self.burst.ok()
        self._status(True, "receiving")
        snap = Snapshot(
            meter=meter or self.cfg.id,
            protocol=frame.protocol,
            device_id=frame.meter_id,
            timestamp=frame.timestamp or now,
            received=now,
            readings=frame.readings,
            checksum_ok=frame.checksum_ok,
            header=frame.header,
        )
        assert self._bus is not None
        self._bus.publish(snap)

    async def read_or_stale(self, transport: Transport) -> bytes | None:
        """Read one chunk; None (after marking the meter stale) if nothing came in time."""
        try:
            async with asyncio.timeout(self.cfg.stale_after_s):
                return await transport.read()
        except TimeoutError:
            if self.online or self._status_detail == "starting":
                log.warning("meter %s: no data for %.0f s, marked stale", self.cfg.id, self.cfg.stale_after_s)
            self._status(False, f"stale: no data for {self.cfg.stale_after_s:.0f} s")
            return None


