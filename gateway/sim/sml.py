"""A virtual SML meter (German eHZ / EDL21): one SML file per second, no I/O.

``SmlSimulator(variant).file(now)`` returns the transport frame a meter of
that variant pushes at ``now`` (SML 1.04 transport version 1, correct CRCs):

* ``"ehz"``: an EMH eHZ-H as on the optical port: OpenResponse, a
  GetListResponse with the manufacturer (129-129:199.130.3), the server id
  (1-0:0.0.9), import 1-0:1.8.0 with tariffs 1.8.1 / 1.8.2, export 2.8.0,
  the net power 16.7.0 and per-phase powers 36/56/76.7.0, the 48-byte public
  key (129-129:199.130.5), then a CloseResponse.
* ``"edl21"``: an FNN EDL21 meter in the Holley DTZ541 style: manufacturer
  1-0:96.50.1*1, server id 1-0:96.1.0, 1.8.0 / 2.8.0 with status and a
  seconds-index valTime, net power, phase voltages and currents, frequency.

``crc="kermit"`` sends the CRC the way Holley DTZ541 does on RS-485.

The household: a base load with morning and evening peaks, a fridge cycle,
now and then a kettle, washing machine or oven, noise, and optionally a PV
system (``pv_peak_w``) that exports around midday.  Registers integrate the
power between calls (import 1.8.1 by day, 1.8.2 at night), so they only
ever increase; ``now`` going backwards leaves them where they are.  Output
is deterministic for a given ``seed`` and sequence of ``now`` values.

Not modelled: signatures (listSignature stays empty), meter-side errors
(status bits stay at the normal-operation value), attention responses.
"""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from gateway.errors import ConfigError, LocalProtocolError
from gateway.protocols.obis import ObisCode
from gateway.sim.household import Household
from gateway.protocols.sml import (
    CloseResponse,
    CrcVariant,
    GetListResponse,
    ListEntry,
    OpenResponse,
    SmlMessage,
    SmlTime,
    encode_file,
    encode_transport,
)

__all__ = ["SmlSimulator", "Variant", "run_cli"]

Variant = Literal["ehz", "edl21"]
VARIANTS: Final[tuple[Variant, ...]] = ("ehz", "edl21")

_LOCAL: Final = ZoneInfo("Europe/Berlin")
# DLMS unit codes (see gateway.protocols.sml.DLMS_UNITS).
_WH, _W, _V, _A, _HZ = 30, 27, 35, 33, 44


def _obis(text: str) -> bytes:
    return ObisCode.parse(text).to_bytes()



class SmlSimulator:
    """SML file generator for one virtual meter (see the module docstring)."""

    interval_s: Final = 1.0

    def __init__(
        self,
        variant: Variant = "ehz",
        *,
        serial: int = 12345678,
        seed: int = 0,
        pv_peak_w: float = 0.0,
        crc: CrcVariant = "x25",
    ) -> None:
        """Create a virtual meter.

        Raises:
            LocalProtocolError: an unknown variant or CRC, a serial outside
                0..99999999, a negative PV peak.
        """
        if variant not in VARIANTS:
            raise LocalProtocolError(f"unknown SML variant {variant!r} (expected ehz or edl21)")
        if crc not in ("x25", "kermit"):
            raise LocalProtocolError(f"unknown CRC variant {crc!r} (expected x25 or kermit)")
        if not 0 <= serial <= 99_999_999:
            raise LocalProtocolError("serial must have at most 8 digits")
        if pv_peak_w < 0:
            raise LocalProtocolError("pv_peak_w must not be negative")
        self.variant: Final = variant
        self.crc: Final = crc
        flag = b"EMH" if variant == "ehz" else b"HLY"
        # DIN 43863-5 server id: type 0A, medium 1 (electricity), FLAG id,
        # fabrication block, serial number.
        self.server_id: Final = b"\x0a\x01" + flag + b"\x00" + serial.to_bytes(4, "big")
        self._flag = flag
        self._rng = random.Random(seed)
        rng = self._rng
        self._import_wh = [rng.uniform(2e6, 5e6), rng.uniform(5e5, 2e6)]  # tariff 1 (day), 2 (night)
        self._export_wh = rng.uniform(1e5, 2e6) if pv_peak_w else 0.0
        self._public_key = bytes(rng.randrange(256) for _ in range(48))
        self._uptime_s = rng.randrange(10**6, 10**8)  # the meter's seconds index at the first file
        self._transaction = rng.randrange(1 << 24)
        self._first: datetime | None = None
        self._last: datetime | None = None
        self._power_w = 0.0
        self._phase_w = (0.0, 0.0, 0.0)
        # solar noon at about 8.5 degrees east (central Germany)
        self._household = Household(rng, base_w=170.0, pv_peak_w=pv_peak_w, pv_noon_h=13.2,
                                    tz=_LOCAL)
        self._voltage = [230.0, 230.0, 230.0]

    # ------------------------------------------------------------------ model
    def _drift_voltages(self, dt_s: float) -> None:
        if dt_s > 0:
            pull = min(1.0, dt_s / 600.0)
            for i in range(3):
                self._voltage[i] += pull * (231.0 - self._voltage[i]) + self._rng.gauss(0.0, 0.4)

    def _integrate(self, start: datetime, end: datetime, end_power_w: float) -> None:
        for seconds, p0, p1, at in self._household.segments(start, end, self._power_w,
                                                            end_power_w):
            local = at.astimezone(_LOCAL)
            night = not 6 <= local.hour < 22
            hours = seconds / 3600
            self._import_wh[1 if night else 0] += (max(p0, 0.0) + max(p1, 0.0)) / 2 * hours
            self._export_wh += (max(-p0, 0.0) + max(-p1, 0.0)) / 2 * hours

    def _advance(self, now: datetime) -> int:
        """Move the model to ``now``; return the meter's seconds index."""
        local = now.astimezone(_LOCAL)
        dt_s = 0.0 if self._last is None else (now - self._last).total_seconds()
        self._household.update(now, dt_s)
        self._drift_voltages(dt_s)
        phases = self._household.instant(local)
        total = sum(phases)
        if self._last is not None:
            self._integrate(self._last, now, total)
        if self._first is None:
            self._first = now
        if self._last is None or now > self._last:
            self._last = now
        self._power_w = total
        self._phase_w = phases
        return self._uptime_s + max(0, int((self._last - self._first).total_seconds()))

    # ----------------------------------------------------------------- output
    def _next_transaction(self) -> bytes:
        self._transaction = (self._transaction + 1) & 0xFFFFFFFF
        return self._transaction.to_bytes(4, "big")

    def messages(self, now: datetime) -> tuple[SmlMessage, ...]:
        """The SML messages of the file sent at ``now`` (timezone-aware; naive means UTC)."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        seconds = self._advance(now)
        sensor_time = SmlTime(kind="sec_index", value=seconds)
        import_t1, import_t2 = (round(x * 10) for x in self._import_wh)
        export = round(self._export_wh * 10)
        power = self._power_w
        entries: list[ListEntry]
        if self.variant == "ehz":
            entries = [
                ListEntry(obj_name=_obis("129-129:199.130.3"), value=self._flag),
                ListEntry(obj_name=_obis("1-0:0.0.9"), value=self.server_id),
                ListEntry(
                    obj_name=_obis("1-0:1.8.0"),
                    status=0x182,
                    unit=_WH,
                    scaler=-1,
                    value=import_t1 + import_t2,
                ),
                ListEntry(obj_name=_obis("1-0:1.8.1"), unit=_WH, scaler=-1, value=import_t1),
                ListEntry(obj_name=_obis("1-0:1.8.2"), unit=_WH, scaler=-1, value=import_t2),
                ListEntry(obj_name=_obis("1-0:2.8.0"), unit=_WH, scaler=-1, value=export),
                ListEntry(obj_name=_obis("1-0:16.7.0"), unit=_W, scaler=-1, value=round(power * 10)),
            ]
            for c, phase_w in zip((36, 56, 76), self._phase_w, strict=True):
                entries.append(
                    ListEntry(
                        obj_name=bytes((1, 0, c, 7, 0, 255)),
                        unit=_W,
                        scaler=-1,
                        value=round(phase_w * 10),
                    )
                )
            entries.append(ListEntry(obj_name=_obis("129-129:199.130.5"), value=self._public_key))
            open_time = None
            list_name = None
        else:
            status = 0x1C0104
            entries = [
                ListEntry(obj_name=_obis("1-0:96.50.1*1"), value=self._flag),
                ListEntry(obj_name=_obis("1-0:96.1.0"), value=self.server_id),
                ListEntry(
                    obj_name=_obis("1-0:1.8.0"),
                    status=status,
                    val_time=sensor_time,
                    unit=_WH,
                    scaler=-1,
                    value=import_t1 + import_t2,
                ),
                ListEntry(
                    obj_name=_obis("1-0:2.8.0"),
                    status=status,
                    val_time=sensor_time,
                    unit=_WH,
                    scaler=-1,
                    value=export,
                ),
                ListEntry(obj_name=_obis("1-0:16.7.0"), unit=_W, scaler=0, value=round(power)),
            ]
            for c, volts in zip((32, 52, 72), self._voltage, strict=True):
                entries.append(
                    ListEntry(
                        obj_name=bytes((1, 0, c, 7, 0, 255)), unit=_V, scaler=-1, value=round(volts * 10)
                    )
                )
            for c, phase_w, volts in zip((31, 51, 71), self._phase_w, self._voltage, strict=True):
                entries.append(
                    ListEntry(
                        obj_name=bytes((1, 0, c, 7, 0, 255)),
                        unit=_A,
                        scaler=-2,
                        value=round(abs(phase_w) / volts * 100),
                    )
                )
            hertz = 50.0 + self._rng.gauss(0.0, 0.02)
            entries.append(
                ListEntry(obj_name=_obis("1-0:14.7.0"), unit=_HZ, scaler=-1, value=round(hertz * 10))
            )
            open_time = sensor_time
            list_name = _obis("1-0:98.10.255*255")  # the list name EDL21 meters send
        file_id = self._next_transaction()
        return (
            SmlMessage(
                transaction_id=self._next_transaction(),
                body=OpenResponse(
                    req_file_id=file_id, server_id=self.server_id, ref_time=open_time
                ),
            ),
            SmlMessage(
                transaction_id=self._next_transaction(),
                body=GetListResponse(
                    server_id=self.server_id,
                    list_name=list_name,
                    act_sensor_time=sensor_time,
                    val_list=tuple(entries),
                ),
            ),
            SmlMessage(transaction_id=self._next_transaction(), body=CloseResponse()),
        )

    def file(self, now: datetime) -> bytes:
        """The transport frame (escapes, padding, CRC) sent at ``now``."""
        return encode_transport(encode_file(self.messages(now)), crc=self.crc)


# ------------------------------------------------------------------ command
_OPTION_KEYS: Final = ("variant", "crc", "pv_peak_w", "seed", "serial")


async def run_cli(args: argparse.Namespace) -> int:
    """``han-gateway simulate-meter --protocol sml``: push files to a pty or TCP clients.

    ``--option variant=ehz|edl21``, ``crc=x25|kermit``, ``pv_peak_w=W``,
    ``seed=N``, ``serial=N``.

    Raises:
        ConfigError: an unknown or malformed option.
    """
    from gateway.sim.cli import _listen_addr, options
    from gateway.sim.runner import PtyMeter, push_to_pty, push_to_tcp

    opts = options(args)
    unknown = sorted(set(opts) - set(_OPTION_KEYS))
    if unknown:
        expected = ", ".join(_OPTION_KEYS)
        message = f"unknown SML option {unknown[0]!r} (expected {expected})"
        raise ConfigError([("(command line)", "--option", message)])
    variant = opts.get("variant", "ehz")
    crc = opts.get("crc", "x25")
    try:
        if variant not in VARIANTS or crc not in ("x25", "kermit"):
            raise ValueError("variant must be ehz or edl21, crc x25 or kermit")
        sim = SmlSimulator(
            "ehz" if variant == "ehz" else "edl21",
            crc="kermit" if crc == "kermit" else "x25",
            pv_peak_w=float(opts.get("pv_peak_w", "0")),
            seed=int(opts.get("seed", "0")),
            serial=int(opts.get("serial", "12345678")),
        )
    except (ValueError, LocalProtocolError) as exc:
        raise ConfigError([("(command line)", "--option", str(exc))]) from None
    interval = args.interval or sim.interval_s
    if args.pty:
        meter = PtyMeter(args.link)
        print(
            f"virtual SML {variant} meter on {meter.path} (one file every {interval:g} s, 9600 8N1)",
            flush=True,
        )
        try:
            await push_to_pty(meter, sim.file, interval)
        finally:
            meter.close()
    else:
        host, port = _listen_addr(args.listen)
        print(f"virtual SML {variant} meter on socket://{host}:{port}", flush=True)
        await push_to_tcp(host, port, sim.file, interval)
    return 0
