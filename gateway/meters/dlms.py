"""DLMS/COSEM meter reader: poll a meter as a DLMS client, or listen to its pushes.

``mode = "poll"``: drives the sans-IO :class:`~gateway.protocols.dlms.client.DlmsClient`
over the transport (``transport = "wrapper"``: TCP wrapper on ``socket://host:4059``;
``"hdlc"``: HDLC on a serial port or pty; ``"mode-e"``: the IEC 62056-21 optical
sign-on at 300 Bd, ``ACK 2 Z 2``, then HDLC at the offered rate up to 9600 Bd).  It
associates (no security, LLS with ``password_file``, HLS-GMAC; ciphered when the meter
has ``key_file``/``auth_key_file``), then every ``poll_interval_s`` reads the clock
(the frame's timestamp), each register's scaler_unit (once) and value, and publishes
one frame with the readings keyed by OBIS ``A-B:C.D.E``, scaled.  The association is
kept between polls (``keep_association``) or released after each; any error releases
what can be released and associates again after the backoff.

``load_profile`` (e.g. ``"1-0:99.1.0"``): after each poll the rows since the last one
read (on the first poll: the last ``load_profile_days`` days) are fetched with
selective access by range, the block transfer logged as progress, and each row
published as a frame of meter ``<id>-load-profile`` with the row's clock as timestamp.

``mode = "push"``: the port is only read; :class:`~gateway.protocols.dlms.push.DlmsPushDecoder`
decodes the notifications (HDLC, wrapper, M-Bus-carried, ciphered or not).

``ciphering = "general-ded"`` (or ``"ded"``): a fresh random dedicated key is proposed
in each association's AARQ and protects the xDLMS requests and replies after it.

Invocation counters survive restarts (:class:`CounterFile`, ``<data_dir>/dlms-<meter
id>.json``): the client's own counter never goes backwards, so the meter never sees a
(key, IV) pair twice and never refuses us as a replayer, and the meters' counters last
accepted stay the floor, so a frame recorded before a restart and replayed after it is
still refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.backoff import Backoff
from gateway.clock import Clock
from gateway.config import MeterConfig, meter_keys
from gateway.errors import ConfigError, DecryptionError, LocalProtocolError, ProtocolError
from gateway.meters.base import MeterReader, Opener
from gateway.model import MeterFrame, Reading
from gateway.protocols.dlms import hdlc
from gateway.protocols.dlms.apdu import (
    CaptureObjectDefinition,
    CosemAttributeDescriptor,
    DataAccessResult,
)
from gateway.protocols.dlms.axdr import Data
from gateway.protocols.dlms.client import (
    Associated,
    BlockReceived,
    ClientEvent,
    ClientSettings,
    DlmsClient,
    Framing,
    GetDone,
    HdlcFraming,
    ModeESignOn,
    Released,
    Send,
    SetBaudrate,
    WrapperFraming,
    range_access,
)
from gateway.protocols.dlms.cosem import (
    CLOCK,
    LOGICAL_DEVICE_NAME,
    ClassId,
    ScalerUnit,
    clock_time,
    register_reading,
)
from gateway.protocols.dlms.push import DlmsPushDecoder
from gateway.protocols.dlms.security import ReplayGuard
from gateway.protocols.obis import ObisCode
from gateway.transport import Transport, open_transport

log = logging.getLogger(__name__)

__all__ = ["CounterFile", "DlmsOptions", "DlmsReader"]

PROTOCOL = "dlms"
PUSH_SAVE_INTERVAL_S = 60.0
DEFAULT_OBJECTS = ("1-0:1.8.0", "1-0:2.8.0", "1-0:1.7.0", "1-0:2.7.0", "1-0:32.7.0")


def _obis(text: str) -> ObisCode:
    return ObisCode.parse(text)


class DlmsOptions(BaseModel):
    """``[meter.options]`` of a ``protocol = "dlms"`` meter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["poll", "push"] = Field(default="poll", description="poll as a client, or listen to pushes")
    transport: Literal["wrapper", "hdlc", "mode-e"] = Field(
        default="wrapper", description="TCP wrapper, HDLC, or IEC 62056-21 mode E (sign-on, then HDLC)")
    client_address: int = Field(default=16, ge=0, le=0x7F, description="client SAP / wPort (16 public, 1 management)")
    server_address: int = Field(default=1, ge=0, le=0x3FFF, description="logical device (HDLC upper address, wrapper wPort)")
    physical_address: int | None = Field(default=17, ge=0, le=0x3FFF, description="HDLC lower address (none: 1-octet address)")
    authentication: Literal["none", "lls", "hls-gmac"] = "none"
    password_file: Path | None = Field(default=None, description="file holding the LLS password")
    system_title: str = Field(default="4847570000000001", description="the client's system title, 16 hex digits")
    ciphering: Literal["glo", "general-glo", "ded", "general-ded"] = Field(
        default="glo", description="ded / general-ded: a new dedicated key per association")
    objects: tuple[str, ...] = Field(default=DEFAULT_OBJECTS, description="registers (class 3/4) to read, OBIS")
    data_objects: tuple[str, ...] = Field(default=(), description="Data objects (class 1) to read, OBIS")
    load_profile: str | None = Field(default=None, description="profile generic to fetch, e.g. 1-0:99.1.0")
    load_profile_days: float = Field(default=1.0, gt=0, le=366, description="how far back the first fetch goes")
    poll_interval_s: float = Field(default=60.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    keep_association: bool = True
    max_baudrate: int = Field(default=9600, description="mode E: highest rate to accept")

    @field_validator("objects", "data_objects")
    @classmethod
    def _obis_list(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for text in v:
            try:
                _obis(text)
            except (ProtocolError, ValueError) as exc:
                raise ValueError(f"{text!r} is not an OBIS code: {exc}") from None
        return v

    @field_validator("load_profile")
    @classmethod
    def _profile(cls, v: str | None) -> str | None:
        if v is not None:
            cls._obis_list((v,))
        return v

    @field_validator("system_title")
    @classmethod
    def _title(cls, v: str) -> str:
        try:
            if len(bytes.fromhex(v)) == 8:
                return v
        except ValueError:
            pass
        raise ValueError("expected 16 hexadecimal digits")


_E = TypeVar("_E")


class CounterFile:
    """The DLMS invocation counters of one meter, in ``<data_dir>/dlms-<meter>.json``.

    Why a file and not the SQLite store: a meter reader only publishes to the bus and
    never sees the store (DESIGN.md: meters import protocols, model and bus; only the
    supervisor composes), and the store's writer batches snapshots behind the bus, so
    a counter written through it could be lost or land after the frames it guards.  A
    few dozen octets written atomically (temporary file, fsync, rename, fsync of the
    folder) are durable the moment :meth:`save` returns.

    Our own counter is leased: the file holds a counter the client has *not* used yet
    (``invocation_counter``), written before the client goes past it; after a crash
    the client starts at that value, so a counter is never used twice while the file
    is written only once every :data:`LEASE` frames.  The meters' counters
    (``accepted``: system title -> last accepted counter) are written after each poll
    (push: when they changed, at most once per ``min_interval_s``): a frame accepted
    within that window before a crash could be replayed once after the restart.
    """

    LEASE = 1000

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lease_end = 0  # counters below this one may be used (persisted)
        self._written: tuple[int, dict[bytes, int]] | None = None
        # save() runs on a worker thread, and once more at the end of a session on the
        # loop: one writer at a time (a cancelled to_thread call keeps running).
        self._lock = threading.Lock()

    def load(self) -> tuple[int, dict[bytes, int]]:
        """(the first counter the client may use, the meters' accepted counters).

        Raises:
            ConfigError: the file exists but cannot be read or is not ours.
        """
        if self.path is None or not self.path.exists():
            return 1, {}
        try:
            doc = json.loads(self.path.read_text())
            ic = int(doc["invocation_counter"])
            accepted = {bytes.fromhex(k): int(v) for k, v in doc["accepted"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Starting from 1 could reuse counters (and IVs): refuse, let a person look.
            raise ConfigError([(str(self.path), "dlms invocation counters",
                                f"unreadable ({exc}); remove it only if the meter's keys "
                                "were changed")]) from None
        self.lease_end = ic
        self._written = (ic, accepted)
        return ic, accepted

    def lease(self, next_ic: int, accepted: dict[bytes, int]) -> None:
        """Make sure counters up to ``next_ic`` are covered before one is sent."""
        if next_ic >= self.lease_end:
            self.save(next_ic + self.LEASE, accepted)

    def save(self, lease_end: int, accepted: dict[bytes, int]) -> None:
        """Write the file atomically (no-op without a data dir or when unchanged).

        Raises:
            OSError: the data dir is not writable (the reader stops: running on would
                risk reusing counters after the next restart).
        """
        with self._lock:
            self._save(max(lease_end, self.lease_end), accepted)

    def _save(self, lease_end: int, accepted: dict[bytes, int]) -> None:
        if self.path is None or self._written == (lease_end, accepted):
            self.lease_end = lease_end
            return
        doc = {"invocation_counter": min(lease_end, 0xFFFFFFFF),
               "accepted": {k.hex().upper(): v for k, v in sorted(accepted.items())}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(json.dumps(doc, indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.lease_end = lease_end
        self._written = (lease_end, dict(accepted))


class DlmsReader(MeterReader):
    Options = DlmsOptions
    line_defaults = (9600, 8, "N")  # HDLC; mode E starts at 300 Bd by itself

    def __init__(self, cfg: MeterConfig, *, clock: Clock | None = None,
                 opener: Opener = open_transport, backoff: Backoff | None = None) -> None:
        super().__init__(cfg, clock=clock, opener=opener, backoff=backoff)
        # kept across sessions: the meter must see our invocation counter grow, and
        # scaler_units, the meter id and the profile position do not change
        self._ic = 1
        self._scalers: dict[ObisCode, ScalerUnit | None] = {}
        self._profile_from: datetime | None = None
        self._meter_id: str | None = None
        self._blocks = 0
        self._counters: CounterFile | None = None
        self._guard = ReplayGuard()
        self._accepted_saved_at = -1e18

    # ------------------------------------------------------------ counters
    def _counter_file(self) -> CounterFile:
        """Open (once) the counter file and restore the counters from it."""
        if self._counters is None:
            path = self.data_dir / f"dlms-{self.cfg.id}.json" if self.data_dir is not None else None
            counters = CounterFile(path)
            ic, accepted = counters.load()
            self._ic = max(self._ic, ic)
            self._guard = ReplayGuard(accepted)
            self._counters = counters
        return self._counters

    async def _save_counters(self, next_ic: int, *, lease: bool) -> None:
        counters = self._counter_file()
        if lease and next_ic < counters.lease_end:
            return  # covered: no write (the usual case, once every LEASE frames it is not)
        accepted = self._guard.counters()
        if lease:
            await asyncio.to_thread(counters.lease, next_ic, accepted)
        else:
            await asyncio.to_thread(counters.save, counters.lease_end, accepted)

    @property
    def options(self) -> DlmsOptions:
        opts = self.cfg.protocol_options
        if opts is None:  # built without parse_config (tests, `read`): validate here
            opts = DlmsOptions.model_validate(self.cfg.options)
        assert isinstance(opts, DlmsOptions)
        return opts

    # ------------------------------------------------------------ settings
    def _keys(self) -> tuple[bytes | None, bytes | None]:
        return meter_keys(self.cfg, self.base_dir)

    def _password(self) -> bytes | None:
        path = self.options.password_file
        if path is None:
            return None
        full = path if path.is_absolute() or self.base_dir is None else self.base_dir / path
        try:
            return full.read_text().strip().encode()
        except OSError as exc:
            raise ConfigError([(str(full), f"meter.{self.cfg.id}.options.password_file",
                                f"cannot read: {exc.strerror}")]) from None

    def _settings(self, invocation_counter: int) -> ClientSettings:
        o = self.options
        key, auth_key = self._keys()
        dedicated = o.ciphering in ("ded", "general-ded")
        if dedicated and key is None:
            raise ConfigError([("", f"meter.{self.cfg.id}.options.ciphering",
                                f"{o.ciphering!r} needs the meter's key_file")])
        return ClientSettings(authentication=o.authentication, password=self._password(),
                              key=key, auth_key=auth_key,
                              system_title=bytes.fromhex(o.system_title),
                              invocation_counter=invocation_counter, ciphering=o.ciphering,
                              # a new one for each association (GB9 9.2.2.2.3)
                              dedicated_key=secrets.token_bytes(16) if dedicated else None,
                              replay_guard=self._guard, timeout_s=o.timeout_s)

    def _framing(self) -> Framing:
        o = self.options
        if o.transport == "wrapper":
            return WrapperFraming(local_wport=o.client_address, remote_wport=o.server_address)
        link = hdlc.HdlcLink(role="client", client=hdlc.HdlcAddress(upper=o.client_address),
                             server=hdlc.HdlcAddress(upper=o.server_address, lower=o.physical_address))
        return HdlcFraming(link)

    # ------------------------------------------------------------- session
    async def session(self, transport: Transport) -> None:
        if self.options.mode == "push":
            await self._listen(transport)
            return
        while True:
            client = await self._start_client(transport)
            try:
                await self._poll_loop(transport, client)
            except ProtocolError as exc:
                self._ic = max(self._ic, client.invocation_counter)
                self.counters.errors += 1
                if isinstance(exc, DecryptionError):
                    self.counters.decryption_errors += 1
                self.burst.error("%s", exc, level=logging.ERROR)
                self._status(False, f"DLMS: {exc}")
                await self.clock.sleep(self.backoff.next_delay())
                if self.options.transport != "wrapper":
                    return  # the serial line is reopened (and mode E signs on again)

    async def _listen(self, transport: Transport) -> None:
        key, auth_key = self._keys()
        tz = ZoneInfo(self.cfg.timezone) if self.cfg.timezone else None
        self._counter_file()
        decoder = DlmsPushDecoder(key=key, auth_key=auth_key, meter_tz=tz,
                                  replay_guard=self._guard)
        try:
            while True:
                data = await self.read_or_stale(transport)
                if data is not None:
                    self.handle(decoder.feed(data))
                    # pushes come every few seconds: the counters go to disk at most
                    # once a minute (flash wear), see CounterFile
                    now = self.clock.monotonic()
                    if now - self._accepted_saved_at >= PUSH_SAVE_INTERVAL_S:
                        self._accepted_saved_at = now
                        await self._save_counters(self._ic, lease=False)
        finally:
            self._counter_file().save(self._counter_file().lease_end, self._guard.counters())

    async def _start_client(self, transport: Transport) -> DlmsClient:
        o = self.options
        self._counter_file()
        if o.transport == "mode-e":
            sign_on = ModeESignOn(max_baud=o.max_baudrate, timeout_s=max(o.timeout_s, 2.0))
            events: Sequence[Send | SetBaudrate] = sign_on.start(now=self.clock.monotonic())
            while True:
                for ev in events:
                    if isinstance(ev, Send):
                        await transport.write(ev.data)
                    else:
                        await transport.set_baudrate(ev.baud)
                if sign_on.done:
                    break
                events = await self._next(transport, sign_on)
            log.info("meter %s: mode E sign-on done (%s)", self.cfg.id, sign_on.identification)
        return DlmsClient(framing=self._framing(), settings=self._settings(self._ic))

    async def _next(self, transport: Transport, session: ModeESignOn) -> list[Send | SetBaudrate]:
        deadline = session.deadline()
        timeout = None if deadline is None else max(deadline - self.clock.monotonic(), 0.0)
        try:
            async with asyncio.timeout(timeout):
                data = await transport.read()
        except TimeoutError:
            return session.on_timeout(now=self.clock.monotonic())
        return session.feed(data, now=self.clock.monotonic())

    async def drive(self, transport: Transport, client: DlmsClient, events: list[ClientEvent],
                    until: type[_E]) -> _E:
        """Write the sends, feed the replies, until an event of type ``until`` comes.

        Raises:
            ProtocolError: from the client (rejected association, wrong key, …).
            ReadTimeout: the meter did not answer in time.
        """
        pending = list(events)
        while True:
            for ev in pending:
                if isinstance(ev, Send):
                    # the counter of this frame is on disk before the frame is on the wire
                    await self._save_counters(client.invocation_counter, lease=True)
                    await transport.write(ev.data)
                elif isinstance(ev, until):
                    return ev
                elif isinstance(ev, BlockReceived):
                    log.debug("meter %s: block %d (%d octets so far)", self.cfg.id,
                              ev.block_number, ev.octets)
                    self._blocks += 1
            deadline = client.deadline()
            if deadline is None:
                raise LocalProtocolError("nothing awaited and no result")
            try:
                async with asyncio.timeout(max(deadline - self.clock.monotonic(), 0.0)):
                    data = await transport.read()
            except TimeoutError:
                pending = client.on_timeout(now=self.clock.monotonic())
                continue
            pending = client.feed(data, now=self.clock.monotonic())

    async def get(self, transport: Transport, client: DlmsClient, class_id: int, obis: ObisCode,
                  attribute: int, **kw: object) -> Data | DataAccessResult:
        desc = CosemAttributeDescriptor(class_id=class_id, instance=obis, attribute=attribute)
        done = await self.drive(transport, client, client.get(desc, now=self.clock.monotonic(),
                                                              **kw),  # type: ignore[arg-type]
                                GetDone)
        return done.result

    async def _poll_loop(self, transport: Transport, client: DlmsClient) -> None:
        o = self.options
        await self.drive(transport, client, client.associate(now=self.clock.monotonic()), Associated)
        log.info("meter %s: associated (%s)", self.cfg.id, o.authentication)
        while True:
            started = self.clock.monotonic()
            frame = await self.poll(transport, client)
            self._ic = client.invocation_counter
            await self._save_counters(self._ic, lease=False)  # the meter's counters
            self.publish_frame(frame)
            if o.load_profile:
                await self.fetch_profile(transport, client, frame.timestamp)
            wait = o.poll_interval_s - (self.clock.monotonic() - started)
            if not o.keep_association:
                await self.drive(transport, client, client.release(now=self.clock.monotonic()), Released)
                await self.clock.sleep(max(wait, 0.0))
                return await self._poll_loop(transport, await self._start_client(transport))
            await self.clock.sleep(max(wait, 0.0))

    async def poll(self, transport: Transport, client: DlmsClient) -> MeterFrame:
        """One readout: clock, registers (scaler_unit once, then value), data objects."""
        o = self.options
        tz = ZoneInfo(self.cfg.timezone) if self.cfg.timezone else None
        timestamp: datetime | None = None
        value = await self.get(transport, client, ClassId.CLOCK, CLOCK, 2)
        if isinstance(value, Data):
            try:
                timestamp = clock_time(value).to_datetime(tz)
            except ProtocolError:
                timestamp = None
        if self._meter_id is None:
            ldn = await self.get(transport, client, ClassId.DATA, LOGICAL_DEVICE_NAME, 2)
            if isinstance(ldn, Data) and isinstance(ldn.value, bytes | str):
                text = ldn.value if isinstance(ldn.value, str) else ldn.value.decode("ascii", "replace")
                self._meter_id = text
        readings: list[Reading] = []
        for text in o.objects:
            obis = _obis(text)
            if obis not in self._scalers:
                su = await self.get(transport, client, ClassId.REGISTER, obis, 3)
                self._scalers[obis] = ScalerUnit.from_data(su) if isinstance(su, Data) else None
                if not isinstance(su, Data):
                    log.warning("meter %s: %s has no scaler_unit (%s)", self.cfg.id, obis, su.name)
            if self._scalers[obis] is None:
                continue
            value = await self.get(transport, client, ClassId.REGISTER, obis, 2)
            if isinstance(value, Data):
                reading = register_reading(obis, value, self._scalers[obis], meter_tz=tz)
                if reading is not None:
                    readings.append(reading)
        for text in o.data_objects:
            obis = _obis(text)
            value = await self.get(transport, client, ClassId.DATA, obis, 2)
            if isinstance(value, Data):
                reading = register_reading(obis, value, None, meter_tz=tz)
                if reading is not None:
                    readings.append(reading)
        return MeterFrame(protocol=PROTOCOL, meter_id=self._meter_id, timestamp=timestamp,
                          checksum_ok=None, readings=tuple(readings))

    async def fetch_profile(self, transport: Transport, client: DlmsClient,
                            meter_now: datetime | None) -> int:
        """Fetch the load profile rows not read yet; returns how many were published."""
        o = self.options
        assert o.load_profile is not None
        if meter_now is None:
            return 0
        obis = _obis(o.load_profile)
        tz = ZoneInfo(self.cfg.timezone) if self.cfg.timezone else None
        start = self._profile_from or meter_now - timedelta(days=o.load_profile_days)
        columns = await self.get(transport, client, ClassId.PROFILE_GENERIC, obis, 3)
        if not isinstance(columns, Data):
            log.warning("meter %s: load profile %s: %s", self.cfg.id, obis, columns.name)
            return 0
        defs = [CaptureObjectDefinition.from_data(c) for c in columns.items]
        before = self._blocks
        buffer = await self.get(transport, client, ClassId.PROFILE_GENERIC, obis, 2,
                                access=range_access(start, meter_now))
        if not isinstance(buffer, Data):
            log.warning("meter %s: load profile %s: %s", self.cfg.id, obis, buffer.name)
            return 0
        rows = buffer.items
        log.info("meter %s: load profile %s: %d row(s) since %s in %d block(s)", self.cfg.id,
                 obis, len(rows), start.isoformat(), self._blocks - before)
        published = 0
        for row in rows:
            values = row.items
            when: datetime | None = None
            readings: list[Reading] = []
            for d, v in zip(defs, values, strict=False):
                if d.class_id == ClassId.CLOCK:
                    try:
                        when = clock_time(v).to_datetime(tz)
                    except ProtocolError:
                        when = None
                    continue
                su = self._scalers.get(d.instance)
                reading = register_reading(d.instance, v, su, meter_tz=tz)
                if reading is not None:
                    readings.append(reading)
            if when is None:
                continue
            self.publish_frame(MeterFrame(protocol=PROTOCOL, meter_id=self._meter_id,
                                          timestamp=when, checksum_ok=None,
                                          readings=tuple(readings), header="load-profile"),
                               meter=f"{self.cfg.id}-load-profile")
            published += 1
            self._profile_from = when + timedelta(seconds=1)
        return published

