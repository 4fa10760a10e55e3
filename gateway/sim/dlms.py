"""A virtual DLMS/COSEM meter: ``han-gateway simulate-meter --protocol dlms``.

The meter (a :class:`~gateway.protocols.dlms.server.DlmsServer` per connection over one
shared object model) has:

* Clock 0-0:1.0.0.255 (the wall clock in ``timezone``), logical device name
  0-0:42.0.0.255 (``HGW`` + serial), meter serial 0-0:96.1.0.255;
* Registers (class 3) 1-0:1.8.0 / 2.8.0 (Wh, double-long-unsigned, scaler 0),
  1-0:1.7.0 / 2.7.0 (W), 1-0:32.7.0 (V, scaler -1): a household with some PV, the
  energy registers the exact integrals of the power, so any two reads agree;
* Profile generic 1-0:99.1.0: 15-minute rows {clock, 1-0:1.8.0, 2-0:2.8.0} for the last
  ``profile_days`` days (selective access by range and entry; block transfer when the
  buffer exceeds the PDU size);
* a push of {clock, 1.8.0, 2.8.0, 1.7.0, 2.7.0, 32.7.0} as a DataNotification every
  ``push_interval_s`` (0: no push) to every TCP client, or as HDLC UI frames on the pty.

Carriers: the TCP wrapper (``--listen tcp://HOST:PORT``, server wPort 1, any client
wPort); HDLC on a pty (``--pty``; server address ``server_address`` /
``physical_address``, at 9600 Bd); with ``mode_e=true`` on the pty, IEC 62056-21 mode E
first: the optical sign-on at 300 Bd is answered with ``/HGW5\\2DLMS-SIM``, and after
``ACK 2 5 2`` the meter switches to HDLC at 9600 Bd (after the HDLC DISC it goes back to
300 Bd and waits for the next sign-on).

``--option`` keys: ``authentication`` (none, lls, hls-gmac), ``password``,
``system_title`` (16 hex digits), ``max_pdu_size``, ``profile_days``, ``push_interval_s``,
``mode_e``, ``timezone``, ``serial``, ``server_address``, ``physical_address``.
``--key``/``--auth-key`` switch ciphering on (security suite 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, cast
from zoneinfo import ZoneInfo

from gateway.errors import ConfigError, FramingError
from gateway.protocols.dlms import axdr, hdlc
from gateway.protocols.dlms.apdu import CaptureObjectDefinition
from gateway.protocols.dlms.axdr import CosemDateTime, Data
from gateway.protocols.dlms.client import HdlcFraming, WrapperFraming
from gateway.protocols.dlms.cosem import CLOCK, LOGICAL_DEVICE_NAME, ClassId, ScalerUnit
from gateway.protocols.dlms.server import (
    ClockObject,
    CosemObject,
    DataObject,
    DlmsServer,
    ProfileGenericObject,
    RegisterObject,
    SecurityCounters,
    ServerConnection,
    ServerSettings,
)
from gateway.protocols.dlms.wrapper import WrapperFrame
from gateway.protocols.iec62056_21 import AckOptionSelect, IdentificationMessage, Send
from gateway.protocols.obis import ObisCode
from gateway.sim.iec62056_21 import PtyMeter, SimAction, SwitchBaud, Wait

__all__ = ["DlmsMeter", "HdlcSession", "MeterOptions", "run_cli", "serve_pty", "serve_tcp"]

log = logging.getLogger(__name__)

IMPORT = ObisCode(1, 0, 1, 8, 0, 255)
EXPORT = ObisCode(1, 0, 2, 8, 0, 255)
POWER_IN = ObisCode(1, 0, 1, 7, 0, 255)
POWER_OUT = ObisCode(1, 0, 2, 7, 0, 255)
VOLTAGE = ObisCode(1, 0, 32, 7, 0, 255)
SERIAL = ObisCode(0, 0, 96, 1, 0, 255)
LOAD_PROFILE = ObisCode(1, 0, 99, 1, 0, 255)
DAY_S = 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterOptions:
    """The virtual meter's settings (the ``--option`` keys)."""

    authentication: str = "none"
    password: bytes | None = None
    key: bytes | None = None
    auth_key: bytes | None = None
    system_title: bytes = b"HGWSIM\x00\x01"
    max_pdu_size: int = 1024
    profile_days: int = 3
    push_interval_s: float = 0.0
    mode_e: bool = False
    timezone: str = "UTC"
    serial: str = "12345678"
    server_address: int = 1
    physical_address: int = 17
    reaction_time_s: float = 0.2


class DlmsMeter:
    """The object model: deterministic in the wall time (``now`` returns UTC)."""

    def __init__(self, options: MeterOptions | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.options = options or MeterOptions()
        self.now = now
        self.tz: tzinfo = ZoneInfo(self.options.timezone)
        self._push_server: DlmsServer | None = None
        # One set of invocation counters for every connection, association and push:
        # a real meter never reuses its own counter and remembers the clients'.
        self.counters = SecurityCounters()

    # A day curve of consumption (≈250-850 W) and of PV (0-1800 W around noon UTC):
    # closed-form integrals make every register a pure function of the time.
    @staticmethod
    def consumption_w(t: float) -> float:
        return 550.0 + 300.0 * math.sin(2 * math.pi * t / DAY_S)

    @staticmethod
    def consumption_wh(t: float) -> float:
        return (550.0 * t - 300.0 * DAY_S / (2 * math.pi) * math.cos(2 * math.pi * t / DAY_S)) / 3600

    @staticmethod
    def production_w(t: float) -> float:
        return max(0.0, 1800.0 * math.sin(2 * math.pi * (t / DAY_S - 0.25)))

    @staticmethod
    def production_wh(t: float) -> float:
        # the daily mean of the clipped sine (1800/π W): a register that grows steadily
        return 1800.0 / math.pi * t / 3600

    def _t(self, when: datetime | None = None) -> float:
        return (when or self.now()).timestamp()

    def import_wh(self, when: datetime | None = None) -> int:
        t = self._t(when)
        return int(self.consumption_wh(t) - self.consumption_wh(1.7e9)) + 1_000_000

    def export_wh(self, when: datetime | None = None) -> int:
        t = self._t(when)
        return int(self.production_wh(t) - self.production_wh(1.7e9)) + 200_000

    def local_now(self) -> datetime:
        return self.now().astimezone(self.tz)

    def profile_rows(self) -> list[tuple[Data, ...]]:
        now = self.now()
        period = 900
        last = int(now.timestamp()) // period * period
        first = last - int(self.options.profile_days * DAY_S)
        rows: list[tuple[Data, ...]] = []
        for t in range(first + period, last + 1, period):
            when = datetime.fromtimestamp(t, UTC)
            rows.append((
                axdr.octet_string(CosemDateTime.from_datetime(when.astimezone(self.tz)).encode()),
                axdr.double_long_unsigned(self.import_wh(when)),
                axdr.double_long_unsigned(self.export_wh(when)),
            ))
        return rows

    def objects(self) -> dict[tuple[int, ObisCode], CosemObject]:
        o = self.options
        ldn = ("HGW" + o.serial).encode()
        energy = ScalerUnit(scaler=0, unit=30)
        objs: list[CosemObject] = [
            ClockObject(CLOCK, self.local_now),
            DataObject(LOGICAL_DEVICE_NAME, axdr.octet_string(ldn)),
            DataObject(SERIAL, axdr.visible_string(o.serial)),
            RegisterObject(IMPORT, lambda: axdr.double_long_unsigned(self.import_wh()), energy),
            RegisterObject(EXPORT, lambda: axdr.double_long_unsigned(self.export_wh()), energy),
            RegisterObject(POWER_IN, lambda: axdr.double_long_unsigned(
                int(self.consumption_w(self._t()))), ScalerUnit(scaler=0, unit=27)),
            RegisterObject(POWER_OUT, lambda: axdr.double_long_unsigned(
                int(self.production_w(self._t()))), ScalerUnit(scaler=0, unit=27)),
            RegisterObject(VOLTAGE, lambda: axdr.long_unsigned(
                2300 + int(20 * math.sin(self._t() / 60))), ScalerUnit(scaler=-1, unit=35)),
            ProfileGenericObject(
                LOAD_PROFILE,
                (CaptureObjectDefinition(class_id=ClassId.CLOCK, instance=CLOCK, attribute=2),
                 CaptureObjectDefinition(class_id=ClassId.REGISTER, instance=IMPORT, attribute=2),
                 CaptureObjectDefinition(class_id=ClassId.REGISTER, instance=EXPORT, attribute=2)),
                self.profile_rows, capture_period_s=900, meter_tz=self.tz,
                profile_entries=96 * max(o.profile_days, 1)),
        ]
        return {(obj.class_id, obj.logical_name): obj for obj in objs}

    def settings(self) -> ServerSettings:
        o = self.options
        auth = o.authentication
        if auth not in ("none", "lls", "hls-gmac"):
            raise ConfigError([("(command line)", "--option authentication",
                                "expected none, lls or hls-gmac")])
        return ServerSettings(authentication=auth, password=o.password,  # type: ignore[arg-type]
                              key=o.key, auth_key=o.auth_key, system_title=o.system_title,
                              max_pdu_size=o.max_pdu_size)

    def server(self) -> DlmsServer:
        return DlmsServer(self.objects(), self.settings(), counters=self.counters)

    def push_body(self) -> Data:
        """Aidon-style push list: ``array of {OBIS, value[, scaler_unit]}``."""
        def item(obis: ObisCode, value: Data, su: ScalerUnit | None = None) -> Data:
            parts = [axdr.octet_string(obis.to_bytes()), value]
            if su is not None:
                parts.append(su.to_data())
            return axdr.structure(*parts)

        t = self._t()
        return axdr.array(
            item(CLOCK, axdr.octet_string(CosemDateTime.from_datetime(self.local_now()).encode())),
            item(LOGICAL_DEVICE_NAME, axdr.octet_string(("HGW" + self.options.serial).encode())),
            item(IMPORT, axdr.double_long_unsigned(self.import_wh()), ScalerUnit(scaler=0, unit=30)),
            item(EXPORT, axdr.double_long_unsigned(self.export_wh()), ScalerUnit(scaler=0, unit=30)),
            item(POWER_IN, axdr.double_long_unsigned(int(self.consumption_w(t))),
                 ScalerUnit(scaler=0, unit=27)),
            item(POWER_OUT, axdr.double_long_unsigned(int(self.production_w(t))),
                 ScalerUnit(scaler=0, unit=27)),
            item(VOLTAGE, axdr.long_unsigned(2300 + int(20 * math.sin(t / 60))),
                 ScalerUnit(scaler=-1, unit=35)),
        )

    def push_notification(self) -> bytes:
        """The next pushed DataNotification APDU (general-glo-ciphered with ``key``).

        One invocation counter for all the meter's pushes, whichever carrier: a receiver
        refuses a counter that does not increase (a replay)."""
        if self._push_server is None:
            self._push_server = self.server()
        return self._push_server.notification(self.push_body(), when=self.local_now())


# -------------------------------------------------------------- HDLC / mode E
class _Phase(enum.Enum):
    SIGN_ON = "sign-on"  # 300 Bd, waiting for /?…!
    OPTION = "option"  # identification sent, waiting for ACK 2 Z 2
    HDLC = "hdlc"


class HdlcSession:
    """The meter side of the pty line (the session interface of
    :class:`gateway.sim.iec62056_21.PtyMeter`): mode E sign-on then HDLC, or HDLC only."""

    def __init__(self, meter: DlmsMeter) -> None:
        self.meter = meter
        o = meter.options
        self.mode_e = o.mode_e
        self.initial_baud = 300 if o.mode_e else 9600
        self._server_addr = hdlc.HdlcAddress(upper=o.server_address, lower=o.physical_address)
        self._phase = _Phase.SIGN_ON if o.mode_e else _Phase.HDLC
        self._buf = bytearray()
        self._deadline: float | None = None
        self._conn = self._connection()

    def _connection(self) -> ServerConnection:
        # The client address is learnt from the first frame: accept the public client
        # (16) and management (1) the way most meters do, one at a time.
        link = _AnyClientLink(server=self._server_addr)
        return ServerConnection(server=self.meter.server(), framing=HdlcFraming(link))

    def deadline(self) -> float | None:
        return self._deadline

    def on_timeout(self, *, now: float) -> list[SimAction]:
        self._deadline = None
        if self._phase is _Phase.OPTION:
            self._phase = _Phase.SIGN_ON  # no option select in time: start over
            self._buf.clear()
        return []

    def feed(self, data: bytes, *, now: float) -> list[SimAction]:
        if self._phase is _Phase.HDLC:
            out = self._conn.receive(data)
            actions: list[SimAction] = [Send(data=out)] if out else []
            if self._conn.closed and self.mode_e:
                # DISC ends the HDLC session: back to the optical sign-on speed
                self._phase = _Phase.SIGN_ON
                self._conn = self._connection()
                actions.append(Wait(seconds=0.05))
                actions.append(SwitchBaud(baud=300))
            return actions
        self._buf += bytes(b & 0x7F for b in data)
        if self._phase is _Phase.SIGN_ON:
            end = self._buf.find(b"!\r\n")
            if end < 0:
                del self._buf[:-64]
                return []
            del self._buf[: end + 3]
            ident = IdentificationMessage(manufacturer="HGW", baud_char="5",
                                          identification="DLMS-SIM", enhanced=("2",))
            self._phase = _Phase.OPTION
            self._deadline = now + 5.0
            return [Wait(seconds=self.meter.options.reaction_time_s), Send(data=ident.encode())]
        if len(self._buf) < 6:
            return []
        start = self._buf.find(b"\x06")
        if start < 0 or len(self._buf) - start < 6:
            return []
        try:
            select = AckOptionSelect.decode(bytes(self._buf[start : start + 6]))
        except FramingError:
            self._phase = _Phase.SIGN_ON
            self._buf.clear()
            return []
        self._buf.clear()
        self._deadline = None
        if not select.is_hdlc or select.baud is None:
            self._phase = _Phase.SIGN_ON
            return []
        self._phase = _Phase.HDLC
        return [SwitchBaud(baud=select.baud)]

    def push(self) -> bytes:
        """A pushed DataNotification in an HDLC UI frame to the public client (16)."""
        apdu = self.meter.push_notification()
        return hdlc.HdlcFrame(destination=hdlc.HdlcAddress(upper=16), source=self._server_addr,
                              control=hdlc.control_u(hdlc.FrameKind.UI),
                              information=hdlc.LLC_RESPONSE + apdu).encode()


class _AnyClientLink(hdlc.HdlcLink):
    """A server link that takes whichever client address an SNRM comes from."""

    def __init__(self, *, server: hdlc.HdlcAddress) -> None:
        super().__init__(role="server", client=hdlc.HdlcAddress(upper=16), server=server,
                         parameters=hdlc.HdlcParameters(max_info_tx=128, max_info_rx=128))

    def receive(self, data: bytes) -> tuple[list[hdlc.LinkEvent], list[bytes]]:
        # Peek at SNRM frames to learn the client address before the link checks it.
        for ev in hdlc.HdlcFrameDecoder().feed(data):
            if (isinstance(ev, hdlc.FrameReceived) and ev.frame.kind is hdlc.FrameKind.SNRM
                    and ev.frame.destination.same(self.server)):
                self.client = ev.frame.source
        return super().receive(data)


async def serve_pty(meter: DlmsMeter, *, link: str | None = None,
                    on_ready: Callable[[str], object] | None = None) -> None:
    """HDLC (or mode E, then HDLC) on a new pty until cancelled; pushes UI frames every
    ``push_interval_s`` when set."""
    session = HdlcSession(meter)
    # PtyMeter drives any object with the MeterSession interface (initial_baud,
    # deadline, feed, on_timeout) and checks the line speed on the pty.
    with PtyMeter(cast(Any, lambda: session), link=link) as pty:
        if on_ready is not None:
            on_ready(pty.path)
        pusher = None
        if meter.options.push_interval_s > 0:
            async def push() -> None:
                while True:
                    await asyncio.sleep(meter.options.push_interval_s)
                    pty._write(session.push())

            pusher = asyncio.create_task(push())
        try:
            await pty.serve()
        finally:
            if pusher is not None:
                pusher.cancel()


async def serve_tcp(meter: DlmsMeter, host: str, port: int, *,
                    on_ready: Callable[[int], object] | None = None) -> None:
    """The TCP wrapper: one association per connection (wPort 1), until cancelled."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(server=meter.server(),
                                framing=WrapperFraming(local_wport=1, remote_wport=None))
        pusher = None
        if meter.options.push_interval_s > 0:
            async def push() -> None:
                while True:
                    await asyncio.sleep(meter.options.push_interval_s)
                    apdu = meter.push_notification()
                    writer.write(WrapperFrame(source_wport=1, destination_wport=16,
                                              apdu=apdu).encode())

            pusher = asyncio.create_task(push())
        try:
            while data := await reader.read(4096):
                out = conn.receive(data)
                if out:
                    writer.write(out)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            if pusher is not None:
                pusher.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_client, host, port)
    async with server:
        if on_ready is not None:
            on_ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()


# ------------------------------------------------------------------ command line
def _bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes", "on")


def meter_options(opts: dict[str, str], *, key: bytes | None = None,
                  auth_key: bytes | None = None, reaction_time_s: float = 0.2) -> MeterOptions:
    """``--option`` pairs as :class:`MeterOptions`.

    Raises:
        ConfigError: an unknown key or a bad value.
    """
    known = {"authentication", "password", "system_title", "max_pdu_size", "profile_days",
             "push_interval_s", "mode_e", "timezone", "serial", "server_address",
             "physical_address"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ConfigError([("(command line)", "--option",
                            f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")])
    try:
        return MeterOptions(
            authentication=opts.get("authentication", "none"),
            password=opts["password"].encode() if "password" in opts else None,
            key=key, auth_key=auth_key,
            system_title=bytes.fromhex(opts.get("system_title", "48475753494d0001")),
            max_pdu_size=int(opts.get("max_pdu_size", "1024")),
            profile_days=int(opts.get("profile_days", "3")),
            push_interval_s=float(opts.get("push_interval_s", "0")),
            mode_e=_bool(opts.get("mode_e", "false")),
            timezone=opts.get("timezone", "UTC"),
            serial=opts.get("serial", "12345678"),
            server_address=int(opts.get("server_address", "1")),
            physical_address=int(opts.get("physical_address", "17")),
            reaction_time_s=reaction_time_s,
        )
    except ValueError as exc:
        raise ConfigError([("(command line)", "--option", str(exc))]) from None


async def run_cli(args: argparse.Namespace) -> int:
    from gateway.sim.cli import _listen_addr, options

    opts = meter_options(options(args), key=getattr(args, "key", None),
                         auth_key=getattr(args, "auth_key", None),
                         reaction_time_s=getattr(args, "reaction_time", 0.2) or 0.2)
    meter = DlmsMeter(opts)
    meter.settings()  # validate before opening anything
    if args.pty:
        what = "mode E (300 Bd sign-on, then HDLC at 9600 Bd)" if opts.mode_e else "HDLC at 9600 Bd"

        def ready(path: str) -> None:
            print(f"virtual DLMS meter on {path} ({what})", flush=True)

        await serve_pty(meter, link=args.link, on_ready=ready)
    else:
        host, port = _listen_addr(args.listen)

        def bound(p: int) -> None:
            print(f"virtual DLMS meter on socket://{host}:{p} (TCP wrapper)", flush=True)

        await serve_tcp(meter, host, port, on_ready=bound)
    return 0


def profile_window(meter: DlmsMeter) -> tuple[datetime, datetime]:
    """The first and last row time of the load profile (for tests)."""
    rows: Sequence[tuple[Data, ...]] = meter.profile_rows()
    first = CosemDateTime.decode(cast(bytes, rows[0][0].value)).to_datetime()
    last = CosemDateTime.decode(cast(bytes, rows[-1][0].value)).to_datetime()
    assert first is not None and last is not None
    return first, last
