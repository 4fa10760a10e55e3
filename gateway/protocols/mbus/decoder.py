"""``han-gateway decode --protocol mbus``: a byte stream of M-Bus frames to MeterFrames.

Every RSP_UD long frame (C field 08/18/28/38) with a variable or fixed data structure
becomes one :class:`~gateway.model.MeterFrame`:

* ``meter_id``: the secondary address as ``<8 id digits>-<manufacturer>-<version as
  two hex digits>-<medium>``, e.g. ``12345678-LUG-02-heat`` (:attr:`SecondaryAddress.label`);
  fixed data structures, which carry no manufacturer or version: ``<id>-<medium>``;
  short-header frames (CI 7A/78): ``None``.
* ``readings``: one per data record in frame order, manufacturer data after a 0F/1F
  DIF as a last reading ``manufacturer_data`` (hex text) when there is any.  Each
  reading: ``value`` scaled to ``unit`` (``int`` where exact, ``float`` otherwise;
  dates as ``YYYY-MM-DD`` / ``YYYY-MM-DDTHH:MM:SS`` local meter time; text and binary
  as strings), and in ``extra``: ``quantity``, ``function`` (``instantaneous``,
  ``max``, ``min``, ``error``), ``storage``, ``tariff``, ``subunit``, plus
  ``qualifier`` (what combinable VIFEs say), ``error`` (a record error VIFE) and
  ``invalid: true`` (a date/time with the IV bit) where they apply.
* Reading ids are stable per record *coding*, whatever the value or exponent:
  ``<quantity>[_<qualifier>…][_max|_min|_error][_s<storage>][_t<tariff>][_u<subunit>]``.
  The quantity comes from the VIF (:mod:`tables`: ``energy``, ``volume``,
  ``flow_temperature``, ``datetime``, ``fabrication_number``, ``voltage`` …); a
  plain-text VIF gives ``text_<the text as a slug>``, a manufacturer-specific VIF
  ``manufacturer_specific_<its VIFEs in hex>``, an unassigned code
  ``reserved_vif6f``/``reserved_fd7c``/``reserved_fb40``.  Each combinable VIFE that
  changes the meaning adds a qualifier (``per_hour``, ``upper_limit``,
  ``lower_limit_first_duration``, ``start``, ``l1`` for the 2013+ phase extension,
  ``m<hex>`` for manufacturer VIFEs); scaling VIFEs and record-error VIFEs add none.
  Storage, tariff and subunit appear when not 0.  A coding that occurs again in the
  same frame (several telegrams count as one frame) gets ``_2``, ``_3`` … appended.
  Examples: ``energy``, ``volume_flow_max_s5``, ``energy_t2_u1``, ``voltage_l2``.
* ``header``: ``"<MAN> M-Bus <medium> meter v<version>"``, so that the manufacturer and
  model show in Home Assistant's device registry.
* ``timestamp``: the meter's clock (the instantaneous, storage-0 date/time record) when
  the decoder knows the meter's time zone (M-Bus sends local time without offset).

Frames from the master (requests, selections, SND_UD), ACKs and short frames are not
data and produce no event.  A checksum error is ``Discarded(reason="checksum")``, a
broken frame or record ``Discarded(reason="framing")`` with a
:class:`~gateway.protocols.mbus.app.RecordError`, a slave's application error (CI 70)
``Discarded(reason="unsupported")`` with an
:class:`~gateway.protocols.mbus.app.MbusApplicationError`, other CIs
``Discarded(reason="unsupported")``.  Error offsets are stream positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Final

from gateway.errors import RemoteProtocolError, UnsupportedError
from gateway.model import MeterFrame, Reading
from gateway.protocols._events import Discarded
from gateway.protocols.mbus import app
from gateway.protocols.mbus.link import C_RSP_UD, DIR_MASTER, FrameScanner, LongFrame, ScanItem

__all__ = ["PROTOCOL", "MbusDecoder", "MbusEvent", "frame_header", "meter_frame"]

PROTOCOL: Final = "mbus"

MbusEvent = MeterFrame | Discarded


def frame_header(resp: app.Response) -> str:
    """The identification text of a response (``MeterFrame.header``)."""
    if isinstance(resp, app.FixedDataResponse):
        return f"M-Bus {resp.medium} meter (fixed data)"
    return _header_text(resp.header.address if resp.header is not None else None)


def _meter_id(resp: app.Response) -> str | None:
    if isinstance(resp, app.FixedDataResponse):
        return f"{resp.id}-{resp.medium}"
    if resp.header is None or resp.header.address is None:
        return None
    return resp.header.address.label


def _meter_time(readings: Sequence[Reading], tz: tzinfo | None) -> datetime | None:
    if tz is None:
        return None
    for r in readings:
        if (
            r.extra[:5] == _CLOCK_EXTRA
            and isinstance(r.value, str)
            and len(r.value) >= 16
            and _INVALID not in r.extra
        ):
            try:
                return datetime.fromisoformat(r.value).replace(tzinfo=tz)
            except ValueError:
                return None  # an invalid date (day 0, month 13): no meter time
    return None


_INVALID: Final = ("invalid", True)
_CLOCK_EXTRA: Final = (
    ("quantity", "datetime"),
    ("function", "instantaneous"),
    ("storage", 0),
    ("tariff", 0),
    ("subunit", 0),
)


def meter_frame(
    responses: Sequence[tuple[LongFrame, app.Response]],
    *,
    raw: bytes = b"",
    offset: int = 0,
    meter_tz: tzinfo | None = None,
) -> MeterFrame:
    """One MeterFrame for one telegram or for all telegrams of a multi-telegram read.

    Reading ids are unique across the telegrams (later duplicates get ``_2`` …);
    manufacturer data of every telegram are joined into ``manufacturer_data``.
    """
    records: list[tuple[bytes, bytes]] = []
    mfr = b""
    fixed: tuple[Reading, ...] = ()
    msb_first = False
    for _frame, resp in responses:
        if isinstance(resp, app.FixedDataResponse):
            fixed += app.fixed_readings(resp)
            continue
        msb_first = msb_first or resp.msb_first
        records.extend((r.coding, r.data) for r in resp.records)
        mfr += resp.manufacturer_data
    readings = fixed + app.readings(records, msb_first=msb_first)
    if mfr:
        readings += (_manufacturer_reading(mfr),)
    first = responses[0][1]
    return MeterFrame(
        protocol=PROTOCOL,
        meter_id=_meter_id(first),
        timestamp=_meter_time(readings, meter_tz),
        checksum_ok=True,
        readings=readings,
        header=frame_header(first),
        raw=raw,
        offset=offset,
    )


class MbusDecoder:
    """Stream decoder: ``feed(bytes)``/``feed_eof()`` → ``MeterFrame | Discarded``.

    Incomplete input is kept (at most one frame, 261 bytes); see the module docstring
    for what becomes which event.  ``meter_tz`` is the zone of the meters' clocks.
    """

    def __init__(self, *, meter_tz: tzinfo | None = None) -> None:
        self._scanner = FrameScanner()
        self._tz = meter_tz

    def feed(self, data: bytes) -> list[MbusEvent]:
        return self._events(self._scanner.feed(data))

    def feed_eof(self) -> list[MbusEvent]:
        return self._events(self._scanner.feed_eof())

    def _events(self, items: list[ScanItem]) -> list[MbusEvent]:
        out: list[MbusEvent] = []
        for item in items:
            if isinstance(item, Discarded):
                out.append(item)
                continue
            frame, at, raw = item
            if not isinstance(frame, LongFrame) or frame.control & DIR_MASTER:
                continue  # ACK, requests, selections: not meter data
            if frame.control & 0x0F != C_RSP_UD:
                error = UnsupportedError(
                    f"long frame with C field 0x{frame.control:02X} is not a RSP_UD", offset=at + 4
                )
                out.append(Discarded(reason="unsupported", error=error, raw=raw, offset=at))
                continue
            try:
                if frame.ci in _FAST_CIS:
                    # The hot path: no record objects, straight to readings.
                    header, pairs, _offsets, mfr, _more = app.parse_variable(
                        frame.ci, frame.data, at + 7
                    )
                    out.append(self._frame(header, pairs, mfr, raw, at))
                    continue
                resp = app.decode_response(frame.ci, frame.data, offset=at + 7)
            except (app.MbusApplicationError, UnsupportedError) as exc:
                out.append(Discarded(reason="unsupported", error=exc, raw=raw, offset=at))
                continue
            except RemoteProtocolError as exc:
                out.append(Discarded(reason="framing", error=exc, raw=raw, offset=at))
                continue
            out.append(meter_frame(((frame, resp),), raw=raw, offset=at, meter_tz=self._tz))
        return out

    def _frame(
        self,
        header: app.Header | None,
        pairs: list[tuple[bytes, bytes]],
        mfr: bytes,
        raw: bytes,
        at: int,
    ) -> MeterFrame:
        readings = app.readings(pairs)
        if mfr:
            readings += (_manufacturer_reading(mfr),)
        address = header.address if header is not None else None
        meter_id, text = _labels(address)
        return MeterFrame(
            protocol=PROTOCOL,
            meter_id=meter_id,
            timestamp=_meter_time(readings, self._tz) if self._tz is not None else None,
            checksum_ok=True,
            readings=readings,
            header=text,
            raw=raw,
            offset=at,
        )


_FAST_CIS: Final = frozenset({app.CI_VARIABLE, app.CI_VARIABLE_SHORT, app.CI_VARIABLE_NO_HEADER})


def _manufacturer_reading(mfr: bytes) -> Reading:
    return Reading(id="manufacturer_data", value=mfr.hex(" ").upper(), unit=None,
                   extra=(("quantity", "manufacturer_data"),))  # fmt: skip


def _header_text(address: app.SecondaryAddress | None) -> str:
    return _labels(address)[1]


_LABELS: dict[app.SecondaryAddress, tuple[str | None, str]] = {}


def _labels(address: app.SecondaryAddress | None) -> tuple[str | None, str]:
    """(meter_id, header text) of an address, cached: a bus has few meters."""
    if address is None:
        return None, "M-Bus meter"
    hit = _LABELS.get(address)
    if hit is None:
        if len(_LABELS) > 4096:
            _LABELS.clear()
        text = f"{address.manufacturer_code} M-Bus {address.medium_name} meter v{address.version}"
        hit = _LABELS[address] = (address.label, text)
    return hit



