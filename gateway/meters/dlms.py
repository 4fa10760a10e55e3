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
"""

from __future__ import annotations

import asyncio
import logging
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
from gateway.protocols.obis import ObisCode
from gateway.transport import Transport, open_transport

log = logging.getLogger(__name__)

__all__ = ["DlmsOptions", "DlmsReader"]

PROTOCOL = "dlms"
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
    ciphering: Literal["glo", "general-glo"] = "glo"
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
        return ClientSettings(authentication=o.authentication, password=self._password(),
                              key=key, auth_key=auth_key,
                              system_title=bytes.fromhex(o.system_title),
                              invocation_counter=invocation_counter, ciphering=o.ciphering,
                              timeout_s=o.timeout_s)

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
        decoder = DlmsPushDecoder(key=key, auth_key=auth_key, meter_tz=tz)
        while True:
            data = await self.read_or_stale(transport)
            if data is not None:
                self.handle(decoder.feed(data))

    async def _start_client(self, transport: Transport) -> DlmsClient:
        o = self.options
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

