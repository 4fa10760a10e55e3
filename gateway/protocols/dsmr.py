"""DSMR / P1 telegrams (NEN-EN-IEC 62056-21 mode D framing, DSMR P1 companion standard).

Implemented:

* Telegram framing of DSMR 2.2, 3.0, 4.x and 5.0 (P1 companion standard 5.0.2,
  6.2 "Representation of P1 telegram"): ``/`` identification line, data lines,
  ``!`` end line with an optional CRC.  The CRC (6.2: CRC16, polynomial
  x^16+x^15+x^2+1, LSB first, computed over ``/`` .. ``!`` inclusive; i.e.
  CRC-16/ARC) is checked when present.  DSMR 2.2/3 send ``!`` without a CRC
  (``checksum_ok=None``); some meters send it without zero padding (``!B9F``).
* Country and vendor variants with captures in the test vectors: Belgian
  e-MUCS (Fluvius), Luxembourg Smarty, Hungarian (E.ON), Irish (Iskra, with a
  literal 0x02 in the identification line), EasyMeter Q3D (``*255`` OBIS F
  groups, gateway lines and 0xFF filler after the telegram).  The Swedish and
  Austrian variants follow the same rules (no captures to test against).
* Encrypted P1 (Luxembourg Smarty): DLMS general-glo-ciphering frames
  (see :mod:`gateway.protocols.dlms_gcm`), mixed freely with plaintext
  telegrams on one stream.  The GCM tag is the integrity check: a decrypted
  telegram whose inner CRC does not match (as in the published Smarty
  captures) is reported with ``checksum_ok=False`` but not rejected.  The frame
  counter must strictly increase per decoder (replay protection).
* COSEM values as the meter sends them: numbers become ``int``/``float``,
  units are kept verbatim, ``YYMMDDhhmmssX`` timestamps (X = W: UTC+1, S:
  UTC+2, absent: Europe/Amsterdam local time) become timezone-aware datetimes,
  M-Bus channel values ``0-n:24.2.1(ts)(value*unit)`` carry their own
  timestamp, the power failure event log (1-0:99.97.0) and the Belgian
  maximum demand history (0-0:98.1.0) become event lists, and the DSMR 2.2/3
  gas reading (0-n:24.3.0 with the value on the next line) is understood.

Not implemented: mode A-C of IEC 62056-21 (request/response, baud switching,
BCC), DSMR "smart meter requests" (the RTS line is the transport's business),
validation of which objects a given DSMR version must contain, units
conversion (the mapping layer does that), and DLMS security beyond
general-glo-ciphering with security suite 0.

Events are :class:`gateway.model.MeterFrame` for good telegrams and
:class:`gateway.protocols._events.Discarded` for everything thrown away;
``Discarded(reason="garbage")`` is informational (bytes between telegrams,
such as the tail of a telegram when a port is opened mid-stream).  A CRC
mismatch is ``Discarded(reason="checksum")`` carrying ``ChecksumError`` with
``expected`` = the CRC computed over the telegram and ``got`` = the CRC the
meter sent.  Every error's ``offset`` is the frame's first byte in the stream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo

from gateway.errors import (
    ChecksumError,
    DecryptionError,
    FramingError,
    LocalProtocolError,
    UnsupportedError,
)
from gateway.model import MeterFrame, Reading, make_reading
from gateway.protocols._checks import crc16_arc
from gateway.protocols._events import Discarded, DiscardReason
from gateway.protocols.obis import normalise_id

__all__ = ["DsmrDecoder", "DsmrEvent", "crc16_arc", "encrypt_telegram", "parse_timestamp"]

DsmrEvent = MeterFrame | Discarded

# The general-glo-ciphering tag and system title length, as in dlms_gcm (a
# test checks that they agree).  dlms_gcm itself, and with it the
# ``cryptography`` package and the DLMS stack (~10 MB of a gateway's RSS), is
# imported only where a stream is encrypted: most P1 ports are not.
_GLO: Final = 0xDB
_TITLE_LEN: Final = 8

# ----------------------------------------------------------------- timestamps
_TZ_WINTER: Final = timezone(timedelta(hours=1))
_TZ_SUMMER: Final = timezone(timedelta(hours=2))
_TZ_LOCAL: Final = ZoneInfo("Europe/Amsterdam")
_TZ_BY_FLAG: Final = {"W": _TZ_WINTER, "S": _TZ_SUMMER, "": _TZ_LOCAL}
_TIMESTAMP: Final = re.compile(r"\d{12}[WS]?")


def parse_timestamp(text: str) -> datetime | None:
    """Parse a DSMR ``YYMMDDhhmmssX`` timestamp; ``None`` if it is not a valid one.

    X is ``W`` (normal time, UTC+01:00) or ``S`` (daylight saving time,
    UTC+02:00) as DSMR 4+ specifies; without X (DSMR 2.2/3) the time is local
    time in Europe/Amsterdam.  YY is 2000-2069, or 1970-1999 for YY >= 70.
    """
    if _TIMESTAMP.fullmatch(text) is None:
        return None
    year = int(text[0:2])
    try:
        return datetime(
            # YY >= 70: 1970-01-01 01:00 is how M-Bus channels without a
            # reading yet say "no time" (the Unix epoch in CET).
            (1900 if year >= 70 else 2000) + year,
            int(text[2:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            tzinfo=_TZ_BY_FLAG[text[12:]],
        )
    except ValueError:
        return None  # e.g. Fluvius "632525252525W" for "no maximum yet"


def _iso(text: str) -> str | None:
    ts = parse_timestamp(text)
    return ts.isoformat() if ts is not None else None


# --------------------------------------------------------------------- values
_MAX_NUMBER_LEN: Final = 32  # longer digit strings stay text (int() caps at 4300 digits)


def _number(text: str) -> int | float | None:
    """``int`` for plain digits, ``float`` for a decimal, ``None`` for anything else.

    Stricter than ``int()``/``float()`` on purpose: those accept ``1_0``,
    ``nan``, ``inf``, exponents and surrounding spaces, none of which is a
    COSEM value.  ``isdecimal`` is exact here because the text is Latin-1.
    """
    if len(text) > _MAX_NUMBER_LEN:
        return None
    if text.isdecimal():
        return int(text)
    head, dot, tail = text.partition(".")
    negative = head[:1] == "-"
    if negative:
        head = head[1:]
    if not head.isdecimal():
        return None
    if not dot:
        return int(text)
    if tail.isdecimal():
        return float(text)
    return None


def _json_value(text: str) -> int | float | str:
    number = _number(text)
    return text if number is None else number


def _hex_text(text: str) -> str | None:
    """Decode hex-coded text (DSMR 4+ text messages and ids) if it is printable ASCII."""
    # isalnum first: bytes.fromhex would silently skip spaces.
    if not text or len(text) % 2 or not text.isalnum():
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    if not raw.isascii():
        return None
    decoded = raw.decode("ascii")
    return decoded if decoded.isprintable() else None


Value = int | float | str



# How the single value of an object is represented, by OBIS groups C.D.
_NUMBER, _TEXT, _HEX_TEXT, _CLOCK = range(4)
_KIND_BY_CD: Final = {
    (96, 1): _TEXT,  # equipment identifiers (hex or digits: never a number)
    (42, 0): _TEXT,  # COSEM logical device name
    (0, 0): _TEXT,  # device address / serial (EasyMeter, Iskra)
    (96, 13): _HEX_TEXT,  # consumer text messages, hex coded since DSMR 3
}
_CLOCK_ID: Final = "0-0:1.0.0"
# Which object names the meter in MeterFrame.meter_id, best first: 0-0:96.1.1
# (DSMR), 0-0:96.1.0 (Iskra IE, E.ON HU), 0-0:96.1.255 (EasyMeter), and the
# COSEM logical device name 0-0:42.0.0 (Smarty, which sends no 96.1.x).
_METER_ID_RANK: Final = {"96.1.1": 0, "96.1.0": 1, "96.1.255": 2, "42.0.0": 3}
_METER_ID_LINE: Final = re.compile(
    r"\n0-0:(96\.1\.1|96\.1\.0|96\.1\.255|42\.0\.0)(?:\*255)?\(([^)\r\n]*)\)"
)
_CLOCK_LINE: Final = re.compile(r"\n0-0:1\.0\.0(?:\*255)?\(([^)\r\n]*)\)")
_OBIS: Final = re.compile(r"(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\*\d{1,3})?")


@lru_cache(maxsize=1024)
def _describe(obis: str) -> tuple[str, int, str] | None:
    """Return (reading id, value kind, "C.D.E") for an OBIS text, ``None`` if it is not one."""
    m = _OBIS.fullmatch(obis)
    if m is None:
        return None
    rid = normalise_id(obis)
    kind = _CLOCK if rid == _CLOCK_ID else _KIND_BY_CD.get((int(m[3]), int(m[4])), _NUMBER)
    return rid, kind, f"{int(m[3])}.{int(m[4])}.{int(m[5])}"


# One data line: OBIS, first value, its unit, and any further "(...)" groups,
# which may continue on the next line (DSMR 2.2/3 gas: the value follows on a
# line of its own).  The OBIS part is matched loosely and checked by
# _describe(), which is cached: the strict pattern here costs 40 % more.
_OBJECT: Final = re.compile(
    r"\n([^(\r\n]++)\(([^)*\n]*+)(?:\*([^)\n]*+))?\)(\([^\r\n]*+(?:\r?\n\([^\r\n]*+)*+)?"
)
_GROUP: Final = re.compile(r"\(([^()*]*)(?:\*([^()]*))?\)")

Values = list[tuple[str, str]]


def _profile(values: Values, width: int) -> tuple[int, list[Values]] | None:
    """Split a DSMR buffer ``(count)(column obis)...(row values)...``, or ``None``."""
    count = _number(values[0][0])
    if not isinstance(count, int):
        return None
    columns = 1
    while columns < len(values) and _OBIS.fullmatch(values[columns][0]):
        columns += 1
    cells = values[columns:]
    if columns == 1 or len(cells) % width:
        return None
    return count, [cells[i : i + width] for i in range(0, len(cells), width)]


def _power_failures(rid: str, values: Values) -> Reading | None:
    # 1-0:99.97.0(count)(0-0:96.7.19)(end of failure)(duration*s)...
    profile = _profile(values, 2)
    if profile is None:
        return None
    count, rows = profile
    events = [
        {"end": _iso(end), "duration_s": _json_value(duration)} for (end, _), (duration, _) in rows
    ]
    return Reading(id=rid, value=count, extra=(("events", events),))


def _demand_history(rid: str, values: Values) -> Reading | None:
    # e-MUCS 0-0:98.1.0(count)(1-0:1.6.0)(1-0:1.6.0)(captured)(occurred)(max demand*kW)...
    profile = _profile(values, 3)
    if profile is None:
        return None  # e.g. E.ON Hungary billing values: generic below
    count, rows = profile
    events = [
        {
            "captured": _iso(captured),
            "occurred": _iso(occurred),
            "value": _json_value(v),
            "unit": unit or None,
        }
        for (captured, _), (occurred, _), (v, unit) in rows
    ]
    return Reading(id=rid, value=count, extra=(("events", events),))


def _legacy_gas(rid: str, values: Values) -> Reading | None:
    # DSMR 2.2/3: 0-1:24.3.0(ts)(00)(60)(1)(0-1:24.2.1)(m3) CR LF (00001.001)
    if len(values) < 7:
        return None
    value, unit = values[-1]
    return Reading(
        id=rid,
        value=_json_value(value),
        unit=unit or values[5][0] or None,
        timestamp=parse_timestamp(values[0][0]),
    )


_MULTI_BY_CDE: Final[dict[str, Callable[[str, Values], Reading | None]]] = {
    "99.97.0": _power_failures,
    "98.1.0": _demand_history,
    "24.3.0": _legacy_gas,
}


def _item(text: str, unit: str) -> dict[str, Any]:
    value: Any = _iso(text) if len(text) == 13 and _TIMESTAMP.fullmatch(text) else None
    return {"value": value if value is not None else _json_value(text), "unit": unit or None}


def _multi(rid: str, cde: str, values: Values) -> Reading:
    handler = _MULTI_BY_CDE.get(cde)
    if handler is not None:
        reading = handler(rid, values)
        if reading is not None:
            return reading
    (first, first_unit), (last, last_unit) = values[0], values[-1]
    if len(values) == 2 and not first_unit and _TIMESTAMP.fullmatch(first):
        # (capture time)(value*unit): M-Bus channels 24.2.x, e-MUCS 1-0:1.6.0
        return Reading(
            id=rid,
            value=_json_value(last),
            unit=last_unit or None,
            timestamp=parse_timestamp(first),
        )
    return Reading(
        id=rid,
        value=_json_value(last),
        unit=last_unit or None,
        extra=(("values", [_item(t, u) for t, u in values]),),
    )


# ------------------------------------------------------------------- framing
_HEADER_MAX: Final = 128  # "/XXX5 identification" is far shorter
# IEC 62056-21 identification line: "/", three letters (the manufacturer), the
# rest up to CR LF.  No parentheses (those mark data lines) and no control
# characters, except the 0x02 that Iskra IE meters send.
_HEADER_LINE: Final = re.compile(rb"/[A-Za-z]{3}[^()\x00\x01\x03-\x1f\x7f]{0,122}\r?\n")
_HEADER_PREFIX: Final = re.compile(
    rb"/[A-Za-z]{0,3}|/[A-Za-z]{3}[^()\x00\x01\x03-\x1f\x7f]{0,122}\r?"
)
_UNDECIDED: Final = -2
_TRAILER: Final = re.compile(rb"([0-9A-Fa-f]{0,4})\r?\n")
_TRAILER_IN_PAYLOAD: Final = re.compile(rb"([0-9A-Fa-f]{0,4})\r?(?:\n|\Z)")
_TRAILER_PREFIX: Final = re.compile(rb"[0-9A-Fa-f]{0,4}\r?")
_TRAILER_MAX: Final = 6
_END: Final = b"\n!"
_LF, _BANG, _SLASH = 0x0A, 0x21, 0x2F  # "\n", "!", "/"
_FILLER: Final = b"\r\n \t\x00\xff"  # line noise between telegrams that is not worth an event


def _find_pair(buf: bytearray, first: int, second: int, start: int, stop: int) -> int:
    """``buf.find(bytes((first, second)), start, stop)``, four times faster.

    A one-byte find is a memchr; ``second`` ("!" or 0x08) is rare inside a
    telegram, so few candidates need the check of the byte before.
    """
    i = buf.find(second, start + 1, stop)
    while i >= 0 and buf[i - 1] != first:
        i = buf.find(second, i + 1, stop)
    return i - 1 if i >= 0 else -1


def _header_end(buf: bytes | bytearray, at: int, horizon: int, settled: bool) -> int:
    """Index of the LF ending an identification line that starts at ``at``.

    -1 if there is none, ``_UNDECIDED`` if bytes up to ``horizon`` do not tell
    yet and more may come (``settled`` is false).
    """
    end = min(horizon, at + _HEADER_MAX)
    m = _HEADER_LINE.match(buf, at, end)
    if m is not None:
        return m.end() - 1
    if not settled and end - at < _HEADER_MAX and _HEADER_PREFIX.fullmatch(buf, at, end):
        return _UNDECIDED
    return -1


def _next_start(
    buf: bytearray, start: int, stop: int, horizon: int, settled: bool
) -> tuple[int, int]:
    """(first frame start in ``[start, stop)`` or -1, first undecided "/" or -1)."""
    cut = _find_pair(buf, _GLO, _TITLE_LEN, start, stop)
    slash = buf.find(_SLASH, start, cut if cut >= 0 else stop)
    while slash >= 0:
        header = _header_end(buf, slash, horizon, settled)
        if header >= 0:
            return slash, -1
        if header == _UNDECIDED:
            return -1, slash
        slash = buf.find(_SLASH, slash + 1, cut if cut >= 0 else stop)
    return cut, -1


class DsmrDecoder:
    """Incremental P1 decoder: bytes in, :class:`MeterFrame` / :class:`Discarded` out.

    ``key`` enables decryption of general-glo-ciphering frames (Smarty);
    ``auth_key`` defaults to the fixed Luxembourg authentication key.  Any
    split of a stream into ``feed`` calls yields the same events.  The buffer
    never holds more than ``max_frame`` bytes between calls.
    """

    def __init__(
        self, *, key: bytes | None = None, auth_key: bytes | None = None, max_frame: int = 16384
    ) -> None:
        """Create a decoder.

        Raises:
            LocalProtocolError: a key that is not 16 bytes, or ``max_frame`` < 256.
        """
        if key is not None:
            from gateway.protocols import dlms_gcm

            dlms_gcm.check_key(key, "key")
        if max_frame < 2 * _HEADER_MAX:
            raise LocalProtocolError(f"max_frame must be at least {2 * _HEADER_MAX}")
        self._key = bytes(key) if key is not None else None
        self._auth_key = bytes(auth_key) if auth_key is not None else None  # None: Smarty's
        self._max_frame = max_frame
        self._buf = bytearray()
        self._base = 0  # stream offset of self._buf[0]
        self._scan = 0  # where the search for the end of the pending telegram resumes
        self._last_counter = -1
        # A run of bytes outside any frame, reported once it ends.
        self._junk_start = -1
        self._junk_len = 0
        self._junk_raw = bytearray()
        self._junk_noisy = False
        # The previous telegram's lines and what they became (see _telegram).
        self._recent: tuple[Sequence[tuple[str, str, str, str]], list[Reading | None]] = ((), [])

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[DsmrEvent]:
        """Add bytes; return the frames completed and the input discarded so far.

        Never raises for any input: malformed bytes become ``Discarded`` events.
        """
        events: list[DsmrEvent] = []
        step = self._max_frame
        for at in range(0, len(data), step) if len(data) > step else (0,):
            self._buf += data[at : at + step]
            self._process(events, final=False)
        return events

    def feed_eof(self) -> list[DsmrEvent]:
        """Report what is left at the end of the stream.

        The decoder can then take a new stream: offsets keep counting and the
        frame counter is still remembered (a replay across reconnects is one).
        """
        events: list[DsmrEvent] = []
        self._process(events, final=True)
        self._flush_junk(events)
        self._base += len(self._buf)
        self._buf.clear()
        self._scan = 0
        return events

    # ------------------------------------------------------------- internals
    def _process(self, events: list[DsmrEvent], *, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        while pos < n:
            first = buf[pos]
            if first == 0x2F:  # "/"
                nxt = self._plain(events, pos, final)
            elif first == _GLO:
                nxt = self._ciphered(events, pos, final)
            else:
                nxt = self._skip(events, pos, final)
            if nxt < 0:
                break  # need more bytes
            if nxt != pos:
                self._scan = 0
            pos = nxt
        if pos:
            del buf[:pos]
            self._base += pos

    def _skip(self, events: list[DsmrEvent], pos: int, final: bool) -> int:
        """Bytes up to the next possible frame start are junk."""
        buf = self._buf
        n = len(buf)
        end = buf.find(b"/", pos + 1)
        if end < 0:
            end = n
        cipher = buf.find(_GLO, pos + 1, end)
        if 0 <= cipher:
            end = cipher
        self._junk(events, pos, end)
        return end

    def _junk(self, events: list[DsmrEvent], start: int, end: int) -> None:
        # Runs are cut at max_frame bytes so that reporting does not depend
        # on how the stream was split.
        while start < end:
            if self._junk_start < 0:
                self._junk_start = self._base + start
            take = min(end - start, self._max_frame - self._junk_len)
            part = bytes(self._buf[start : start + take])
            self._junk_raw += part
            if not self._junk_noisy and part.translate(None, _FILLER):
                self._junk_noisy = True
            self._junk_len += take
            start += take
            if self._junk_len >= self._max_frame:
                self._flush_junk(events)

    def _flush_junk(self, events: list[DsmrEvent]) -> None:
        if self._junk_start < 0:
            return
        if self._junk_noisy:
            raw = bytes(self._junk_raw)
            error = FramingError(
                f"{self._junk_len} bytes outside any telegram", offset=self._junk_start, raw=raw
            )
            events.append(
                Discarded(reason="garbage", error=error, raw=raw, offset=self._junk_start)
            )
        self._junk_start = -1
        self._junk_len = 0
        self._junk_raw = bytearray()
        self._junk_noisy = False

    def _plain(self, events: list[DsmrEvent], pos: int, final: bool) -> int:
        """Decide on the telegram that the "/" at ``pos`` starts; -1: need more bytes."""
        buf = self._buf
        n = len(buf)
        header_end = _header_end(buf, pos, n, final or n - pos >= _HEADER_MAX)
        if header_end == _UNDECIDED:
            return -1
        if header_end < 0:
            # Not an identification line: a "/" in noise or in ciphertext.
            return self._skip(events, pos, final)
        offset = self._base + pos
        limit = min(n, pos + self._max_frame)
        settled = final or limit - pos >= self._max_frame  # no later byte can change the verdict
        scan = max(header_end, pos + self._scan)
        bang = _find_pair(buf, _LF, _BANG, scan, limit)
        stop = bang if bang >= 0 else limit
        # A new frame inside this one: bytes were lost (even mid-line), so the
        # next identification line or ciphered frame starts over.
        cut, undecided = _next_start(buf, scan, stop, limit, settled)
        if cut >= 0:
            self._flush_junk(events)
            self._discard(events, "framing", "telegram cut short by a new frame", pos, cut)
            return cut
        if bang < 0:
            if undecided < 0 and limit - pos >= self._max_frame:
                self._flush_junk(events)
                message = f"no telegram end within {self._max_frame} bytes"
                self._discard(events, "overflow", message, pos, limit)
                return limit
            if final:
                self._flush_junk(events)
                self._discard(events, "framing", "stream ended inside a telegram", pos, n)
                return n
            # Resume where a marker may straddle this feed and the next one.
            self._scan = (undecided if undecided >= 0 else n) - 1 - pos
            return -1
        bang += 1  # index of "!"
        frame_limit = pos + self._max_frame
        tail = min(n, bang + 1 + _TRAILER_MAX, frame_limit)
        trailer = _TRAILER.match(buf, bang + 1, tail)
        if trailer is not None:
            end = trailer.end()
            crc_text = trailer.group(1)
        elif tail - (bang + 1) < _TRAILER_MAX and _TRAILER_PREFIX.fullmatch(buf, bang + 1, tail):
            if tail == frame_limit:
                self._flush_junk(events)
                message = f"telegram longer than {self._max_frame} bytes"
                self._discard(events, "overflow", message, pos, tail)
                return tail
            if not final:
                self._scan = bang - 1 - pos
                return -1
            end = n  # the last telegram of a capture may lack its final newline
            crc_text = bytes(buf[bang + 1 : n]).rstrip(b"\r")
        else:
            self._flush_junk(events)
            self._discard(events, "framing", "malformed checksum line after '!'", pos, bang + 1)
            return bang + 1
        self._flush_junk(events)
        raw = bytes(buf[pos:end])
        events.append(
            self._telegram(
                raw, offset, header_end - pos, bang - pos, crc_text, wire=raw, ciphered=False
            )
        )
        return end

    def _discard(
        self,
        events: list[DsmrEvent],
        reason: DiscardReason,
        message: str,
        start: int,
        end: int,
    ) -> None:
        raw = bytes(self._buf[start:end])
        offset = self._base + start
        events.append(
            Discarded(
                reason=reason,
                error=FramingError(message, offset=offset, raw=raw),
                raw=raw,
                offset=offset,
            )
        )

    def _ciphered(self, events: list[DsmrEvent], pos: int, final: bool) -> int:
        """Decide on the general-glo-ciphering frame the 0xDB at ``pos`` may start."""
        buf = self._buf
        n = len(buf)
        if n - pos < 2:
            return self._skip(events, pos, final) if final else -1
        if buf[pos + 1] != _TITLE_LEN:
            return self._skip(events, pos, final)
        from gateway.protocols import dlms_gcm

        offset = self._base + pos
        try:
            total = dlms_gcm.frame_length(buf, pos)
        except DecryptionError as exc:
            return self._cipher_error(events, pos, pos + 2, str(exc), "malformed")
        if total is not None and total > self._max_frame:
            return self._cipher_error(
                events,
                pos,
                pos + 2,
                f"ciphered frame of {total} bytes exceeds max_frame",
                "malformed",
            )
        if total is None or n - pos < total:
            if not final:
                return -1
            return self._cipher_error(
                events, pos, n, "stream ended inside a ciphered frame", "truncated"
            )
        self._flush_junk(events)
        frame = bytes(buf[pos : pos + total])
        events.append(self._decrypt(frame, offset))
        return pos + total

    def _cipher_error(
        self, events: list[DsmrEvent], start: int, end: int, message: str, reason: str
    ) -> int:
        self._flush_junk(events)
        raw = bytes(self._buf[start:end])
        offset = self._base + start
        error = DecryptionError(message, reason=reason, offset=offset, raw=raw)
        events.append(Discarded(reason="decryption", error=error, raw=raw, offset=offset))
        return end

    def _decrypt(self, frame: bytes, offset: int) -> DsmrEvent:
        def refuse(message: str, reason: str) -> Discarded:
            error = DecryptionError(message, reason=reason, offset=offset, raw=frame)
            return Discarded(reason="decryption", error=error, raw=frame, offset=offset)

        if self._key is None:
            return refuse("encrypted frame but no key configured", "no_key")
        from gateway.protocols import dlms_gcm

        try:
            glo = dlms_gcm.parse_frame(frame)
        except DecryptionError as exc:
            return refuse(str(exc), exc.reason)
        if glo.frame_counter <= self._last_counter:
            return refuse(
                f"frame counter {glo.frame_counter} not above {self._last_counter}", "replay"
            )
        try:
            auth_key = self._auth_key if self._auth_key is not None else dlms_gcm.SMARTY_AUTH_KEY
            plaintext = dlms_gcm.decrypt(glo, key=self._key, auth_key=auth_key)
        except DecryptionError as exc:
            return refuse(str(exc), exc.reason)
        except UnsupportedError as exc:
            unsupported = UnsupportedError(str(exc), offset=offset, raw=frame)
            return Discarded(reason="unsupported", error=unsupported, raw=frame, offset=offset)
        # The tag verified: the frame is authentic whatever its content.
        self._last_counter = glo.frame_counter
        header_end = _header_end(plaintext, 0, len(plaintext), True)
        bang = plaintext.rfind(_END) + 1
        trailer = _TRAILER_IN_PAYLOAD.match(plaintext, bang + 1) if bang > 0 else None
        if (
            not plaintext.startswith(b"/")
            or header_end < 0
            or bang <= header_end
            or trailer is None
        ):
            framing = FramingError(
                "decrypted payload is not a P1 telegram", offset=offset, raw=frame
            )
            return Discarded(reason="framing", error=framing, raw=frame, offset=offset)
        return self._telegram(
            plaintext, offset, header_end, bang, trailer.group(1), wire=frame, ciphered=True
        )

    def _telegram(
        self,
        data: bytes,
        offset: int,
        header_end: int,
        bang: int,
        crc_text: bytes,
        *,
        wire: bytes,
        ciphered: bool,
    ) -> DsmrEvent:
        """Check and parse one telegram: ``data[0]`` is "/", ``data[bang]`` is "!"."""
        checksum_ok: bool | None = None
        if crc_text:
            got = int(crc_text, 16)
            expected = crc16_arc(data[: bang + 1])
            checksum_ok = got == expected
            if not checksum_ok and not ciphered:
                error = ChecksumError(
                    f"CRC {got:04X} in telegram, {expected:04X} computed",
                    expected=expected,
                    got=got,
                    offset=offset,
                    raw=wire,
                )
                return Discarded(reason="checksum", error=error, raw=wire, offset=offset)
        text = data.decode("latin-1")
        rows = _OBJECT.findall(text, header_end, bang)
        # Meters repeat most lines unchanged from one telegram to the next,
        # in the same order: reuse the previous telegram's Reading where the
        # line is identical (Readings are immutable).
        prev_rows, prev_readings = self._recent
        if len(prev_rows) != len(rows):
            prev_rows = ()
        readings: list[Reading | None] = []
        append = readings.append
        for i, row in enumerate(rows):
            if prev_rows and prev_rows[i] == row:
                append(prev_readings[i])
                continue
            obis, value, unit, rest = row
            info = _describe(obis)
            if info is None:
                append(None)  # not an OBIS line: ignored
                continue
            rid, kind, cde = info
            if rest:
                groups: Values = [(value, unit)]
                groups += _GROUP.findall(rest)
                append(_multi(rid, cde, groups))
            elif kind == _NUMBER:
                # _number() inlined for the two common shapes: this loop is
                # the hot path of the gateway.
                if len(value) > _MAX_NUMBER_LEN:
                    number: Value = value
                elif value.isdecimal():
                    number = int(value)
                elif value.replace(".", "", 1).isdecimal():
                    number = float(value)
                else:
                    number = _json_value(value)
                append(make_reading(rid, number, unit or None, None, ()))
            elif kind == _CLOCK:
                ts = parse_timestamp(value)
                append(make_reading(rid, ts.isoformat() if ts else value, unit or None, None, ()))
            elif kind == _HEX_TEXT:
                append(make_reading(rid, _hex_text(value) or value, unit or None, None, ()))
            else:
                append(make_reading(rid, value, unit or None, None, ()))
        self._recent = (rows, readings)
        # Frame-level fields by a second, C-speed look at the text rather
        # than a test on every line in the loop above.
        clock = _CLOCK_LINE.search(text, header_end, bang)
        timestamp = parse_timestamp(clock[1]) if clock else None
        meter_id: str | None = None
        best = len(_METER_ID_RANK)
        for cde, value in _METER_ID_LINE.findall(text, header_end, bang):
            if value and _METER_ID_RANK[cde] < best:
                best = _METER_ID_RANK[cde]
                meter_id = _hex_text(value) or value
        return MeterFrame(
            protocol="dsmr",
            meter_id=meter_id,
            timestamp=timestamp,
            checksum_ok=checksum_ok,
            readings=tuple(filter(None, readings)),
            header=text[:header_end].rstrip("\r"),
            raw=wire,
            offset=offset,
        )


def encrypt_telegram(
    plaintext: bytes,
    *,
    key: bytes,
    auth_key: bytes | None = None,
    system_title: bytes,
    frame_counter: int,
) -> bytes:
    """Wrap a P1 telegram in a general-glo-ciphering frame as a Smarty meter sends it.

    ``auth_key`` defaults to the Luxembourg authentication key.

    Raises:
        LocalProtocolError: bad key, system title or frame counter (see
            :func:`gateway.protocols.dlms_gcm.encrypt`).
    """
    from gateway.protocols import dlms_gcm

    return dlms_gcm.encrypt(
        plaintext,
        key=key,
        auth_key=auth_key if auth_key is not None else dlms_gcm.SMARTY_AUTH_KEY,
        system_title=system_title,
        frame_counter=frame_counter,
    )
