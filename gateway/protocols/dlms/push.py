"""Pushed DLMS data notifications in a byte stream: the ``--protocol dlms`` decoder.

:class:`DlmsPushDecoder` finds, in any mix (IEC 62056-46/-47, Green Book ed. 9):

* HDLC frames (clause 8) with the LLC header, I or UI, segmented or not: the Nordic
  HAN pushes (Aidon, Kaifa, Kamstrup, L+G) over M-Bus physical layer at 2400 Bd;
* TCP/UDP wrapper PDUs (clause 7);
* bare general-glo-/ded-ciphering APDUs (``DB 08 …``), as some meters push them;
* M-Bus long frames carrying DLMS (EN 13757-2 link layer, DLMS transport of the
  Austrian P1 interface: ``68 L L 68 C A CI STSAP DTSAP data CS 16`` with CI b4 = last
  segment, b0-3 = segment number), the APDU split over several frames.

Each APDU may be a DataNotification (0x0F), an EventNotification (0xC2), or either
inside general-glo-ciphering (security suite 0, see :mod:`.security`): the GCM tag is
verified whenever the security control says the APDU is authenticated;
encryption-only APDUs (SC 0x20/0x21) are decrypted without a tag and must then be a
notification that decodes (else ``reason="wrong_key"``).  The invocation counter must
increase per system title (a replay is refused, ``reason="replay"``, and counted in
:attr:`DlmsPushDecoder.replays`); it is remembered only once a frame proved genuine.
Layouts are mapped by :func:`.cosem.fast_push_content` straight from the octets when
they are one of the two common ones, else through :class:`~.apdu.DataNotification` and
:func:`.cosem.push_content` (the same result); the layout of each list read by the fast
path is compiled (:class:`.cosem.PushLayout`) and the next pushes of that list are read
through it, as long as every octet but the values is the same.

Events: :class:`~gateway.model.MeterFrame` (``protocol="dlms"``; ``meter_id`` = the
logical device name 0-0:42.0.0 if the push holds one, else the system title in hex for
ciphered pushes, else the meter's serial number if the push holds one; ``timestamp``
from the notification's date-time or the clock in the body; readings keyed by OBIS,
values scaled, see :func:`.cosem.push_content`; ``header`` = the list identifier;
``checksum_ok`` True when an FCS, M-Bus checksum or GCM tag verified, else None) and
:class:`~gateway.protocols._events.Discarded` for everything else.  Every error's offset
is the stream offset of the frame's first octet.

Not implemented: general-ded-ciphering (refused with ``reason="no_key"``: a push has no
association to agree a dedicated key), service-specific ciphered APDUs (they need the
association's system title), general-ciphering (DD), compression, DSMR telegrams
inside general-glo-ciphering (``"unsupported"``: use ``--protocol dsmr``), HDLC octet
stuffing, EN 13757-3 M-Bus application data (``"unsupported"``: use ``--protocol mbus``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, tzinfo
from typing import Final

from gateway.errors import (
    ChecksumError,
    DecryptionError,
    FramingError,
    LocalProtocolError,
    ProtocolError,
    UnsupportedError,
)
from gateway.model import MeterFrame, Reading
from gateway.protocols._events import Discarded, DiscardReason
from gateway.protocols.dlms import hdlc
from gateway.protocols.dlms.apdu import (
    DataNotification,
    EventNotification,
    GeneralGloCiphering,
    decode_apdu,
)
from gateway.protocols.dlms.axdr import decode_length
from gateway.protocols.dlms.cosem import (
    PushContent,
    PushLayout,
    fast_push_content,
    push_content,
    register_reading,
)
from gateway.protocols.dlms.security import (
    AUTHENTICATED,
    BROADCAST,
    ENCRYPTED,
    ReplayGuard,
    check_key,
    decrypt,
)

__all__ = ["PROTOCOL", "DlmsEvent", "DlmsPushDecoder"]


def _frame_maker() -> Callable[..., MeterFrame]:
    """``MeterFrame(...)`` positionally, at a third of the cost (see dsmr.py's
    ``_reading_maker``): the slots are set through their descriptors instead of
    ``object.__setattr__``, only while MeterFrame has exactly these fields and no
    ``__post_init__``."""
    names = tuple(f.name for f in fields(MeterFrame))
    expected = ("protocol", "meter_id", "timestamp", "checksum_ok", "readings", "header", "raw",
                "offset")
    if names != expected or hasattr(MeterFrame, "__post_init__"):
        return lambda *values: MeterFrame(**dict(zip(expected, values, strict=True)))
    new = object.__new__
    s_protocol, s_meter, s_time, s_ok, s_readings, s_header, s_raw, s_offset = (
        getattr(MeterFrame, name).__set__ for name in names)

    def make(protocol: str, meter_id: str | None, timestamp: datetime | None,
             checksum_ok: bool | None, readings: tuple[Reading, ...], header: str, raw: bytes,
             offset: int) -> MeterFrame:
        frame: MeterFrame = new(MeterFrame)
        s_protocol(frame, protocol)
        s_meter(frame, meter_id)
        s_time(frame, timestamp)
        s_ok(frame, checksum_ok)
        s_readings(frame, readings)
        s_header(frame, header)
        s_raw(frame, raw)
        s_offset(frame, offset)
        return frame

    return make


_new_frame: Final = _frame_maker()

PROTOCOL: Final = "dlms"
DlmsEvent = MeterFrame | Discarded

_FLAG: Final = 0x7E
_MBUS_START: Final = 0x68
_MBUS_STOP: Final = 0x16
_GLO: Final = 0xDB
# first octets of the APDUs a push may carry in a wrapper PDU
_PUSH_TAGS: Final = frozenset({0x0F, 0xC2, 0xDB, 0xDC})
_LAYOUTS: Final = 4  # layouts kept per decoder (Norwegian meters alternate 3 lists)
_MAX_COMPILES: Final = 16  # then only while at least half the compiled ones get used
_START: Final = re.compile(rb"[\x7e\x68\x00\xdb]")  # where a frame may start


class DlmsPushDecoder:
    """Decodes pushed DLMS notifications from a byte stream (``feed``/``feed_eof``).

    ``key``: the global unicast encryption key (also the GMAC key); ``auth_key``: the
    authentication key (needed when the security control says "authenticated");
    ``broadcast_key``: for APDUs whose security control selects the broadcast key.
    ``meter_tz``: the meter's zone, for date-times sent without a UTC deviation (the
    Nordic meters send local time that way); without it those give no frame timestamp.
    ``max_frame`` bounds one APDU (segments joined) and so the buffer.
    """

    def __init__(
        self,
        *,
        key: bytes | None = None,
        auth_key: bytes | None = None,
        broadcast_key: bytes | None = None,
        meter_tz: tzinfo | None = None,
        max_frame: int = 65536,
        max_junk: int = 4096,
        replay_guard: ReplayGuard | None = None,
    ) -> None:
        """``replay_guard``: the invocation counters accepted so far (one restored from
        disk makes a frame replayed after a restart fail too; a fresh one when None).

        Raises:
        LocalProtocolError: a key that is not 16 bytes, ``max_frame`` < 2048 or
            ``max_junk`` < 16.
        """
        for name, value in (("key", key), ("auth_key", auth_key),
                            ("broadcast_key", broadcast_key)):
            if value is not None:
                check_key(value, name)
        if max_frame < 2048:
            raise LocalProtocolError("max_frame must be at least 2048")
        if max_junk < 16:
            raise LocalProtocolError("max_junk must be at least 16")
        self._key = bytes(key) if key is not None else None
        self._auth_key = bytes(auth_key) if auth_key is not None else None
        self._broadcast_key = bytes(broadcast_key) if broadcast_key is not None else None
        self._tz = meter_tz
        self._max_frame = max_frame
        self._max_junk = max_junk
        self._buf = bytearray()
        self._base = 0
        self._silent_until = 0
        self._junk_start = -1
        self._junk = bytearray()
        self._guard = replay_guard if replay_guard is not None else ReplayGuard()
        # compiled layouts of the lists this meter pushes (cosem.PushLayout), newest first
        self._layouts: list[PushLayout] = []
        self._layout_compiles = 0
        self._layout_hits = 0
        # segmented HDLC information per (destination, source): parts, raw frames, offset
        self._hdlc_parts: dict[tuple[hdlc.HdlcAddress, hdlc.HdlcAddress],
                               tuple[list[bytes], list[bytes], int]] = {}
        # M-Bus DLMS segments: next segment number, parts, raw frames, offset
        self._mbus: tuple[int, list[bytes], list[bytes], int] | None = None

    @property
    def buffered(self) -> int:
        """Octets held for an incomplete frame."""
        return len(self._buf)

    @property
    def replays(self) -> int:
        """How many replayed frames (invocation counter not increasing) were refused."""
        return self._guard.refused

    def feed(self, data: bytes) -> list[DlmsEvent]:
        """Add bytes; return the frames completed and the input discarded. Never raises."""
        events: list[DlmsEvent] = []
        self._buf += data
        self._run(events, final=False)
        return events

    def feed_eof(self) -> list[DlmsEvent]:
        """Report what is left; the decoder can then take a new stream (offsets and
        invocation counters carry on)."""
        events: list[DlmsEvent] = []
        self._run(events, final=True)
        if self._buf:  # pragma: no cover - _run(final=True) consumes everything
            self._to_junk(events, 0, len(self._buf))
            self._consume(len(self._buf))
        self._flush_junk(events)
        for parts, raws, offset in self._hdlc_parts.values():
            self._refuse(events, "framing", FramingError(
                "stream ended before the last HDLC segment", offset=offset, raw=b"".join(raws)))
        self._hdlc_parts.clear()
        if self._mbus is not None:
            _, _, raws, offset = self._mbus
            self._refuse(events, "framing", FramingError(
                "stream ended before the last M-Bus segment", offset=offset, raw=b"".join(raws)))
            self._mbus = None
        return events

    # -------------------------------------------------------------- scanning
    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._base += n

    def _run(self, events: list[DlmsEvent], *, final: bool) -> None:
        buf = self._buf
        pos = 0
        while pos < len(buf):
            first = buf[pos]
            if first == _FLAG:
                nxt = self._hdlc(events, pos, final)
            elif first == _MBUS_START:
                nxt = self._mbus_frame(events, pos, final)
            elif first == 0x00:
                nxt = self._wrapper(events, pos, final)
            elif first == _GLO:
                nxt = self._raw_ciphered(events, pos, final)
            else:
                nxt = self._skip(events, pos)
            if nxt < 0:
                break
            pos = nxt
        if pos:
            self._consume(pos)

    def _skip(self, events: list[DlmsEvent], pos: int) -> int:
        buf = self._buf
        found = _START.search(buf, pos + 1)
        end = found.start() if found is not None else len(buf)
        self._to_junk(events, pos, end)
        return end

    def _not_a_start(self, events: list[DlmsEvent], pos: int) -> int:
        self._to_junk(events, pos, pos + 1)
        return pos + 1

    def _to_junk(self, events: list[DlmsEvent], start: int, end: int) -> None:
        at = start
        while at < end:
            offset = self._base + at
            if offset < self._silent_until:  # inside a candidate already reported
                at = min(end, self._silent_until - self._base)
                continue
            if self._junk_start < 0:
                self._junk_start = offset
            take = min(end - at, self._max_junk - len(self._junk))
            self._junk += self._buf[at : at + take]
            at += take
            if len(self._junk) >= self._max_junk:
                self._flush_junk(events)

    def _flush_junk(self, events: list[DlmsEvent]) -> None:
        if self._junk_start < 0:
            return
        raw = bytes(self._junk)
        error = FramingError(f"{len(raw)} octets outside any DLMS frame",
                             offset=self._junk_start, raw=raw)
        events.append(Discarded(reason="garbage", error=error, raw=raw, offset=self._junk_start))
        self._junk_start = -1
        self._junk = bytearray()

    def _bad(self, events: list[DlmsEvent], reason: DiscardReason, error: ProtocolError,
             pos: int, end: int) -> int:
        """A false or damaged frame at ``pos``: report it, search on from ``pos + 1``."""
        self._flush_junk(events)
        raw = bytes(self._buf[pos:end])
        events.append(Discarded(reason=reason, error=error, raw=raw, offset=self._base + pos))
        self._silent_until = max(self._silent_until, self._base + end)
        return pos + 1

    def _refuse(self, events: list[DlmsEvent], reason: DiscardReason,
                error: ProtocolError) -> None:
        self._flush_junk(events)
        events.append(Discarded(reason=reason, error=error, raw=error.raw, offset=error.offset))

    # ------------------------------------------------------------------ HDLC
    def _hdlc(self, events: list[DlmsEvent], pos: int, final: bool) -> int:
        buf = self._buf
        if pos + 1 < len(buf) and buf[pos + 1] == _FLAG:
            return pos + 1
        outcome, end, found, reason = hdlc.scan_frame(buf, pos, final=final, base=self._base)
        if outcome == hdlc.NEED:
            return -1
        if outcome == hdlc.SKIP:
            return pos + 1
        if outcome == hdlc.BAD:
            assert isinstance(found, ProtocolError)
            return self._bad(events, reason, found, pos, end)
        assert isinstance(found, hdlc.HdlcFrame)
        self._flush_junk(events)
        self._silent_until = max(self._silent_until, self._base + end)
        self._on_hdlc_frame(events, found, bytes(buf[pos : end + 1]), self._base + pos)
        return end  # the closing flag may open the next frame

    def _on_hdlc_frame(self, events: list[DlmsEvent], frame: hdlc.HdlcFrame, raw: bytes,
                       offset: int) -> None:
        try:
            kind = frame.kind
        except UnsupportedError as exc:
            self._refuse(events, "unsupported", UnsupportedError(str(exc), offset=offset, raw=raw))
            return
        if kind not in (hdlc.FrameKind.I, hdlc.FrameKind.UI):
            return  # link control (SNRM, UA, RR, …): no data
        key = (frame.destination, frame.source)
        pending = self._hdlc_parts.get(key)
        if frame.segmented or pending is not None:
            if pending is None:
                if len(self._hdlc_parts) >= 16:  # bound the stations we track
                    self._hdlc_parts.clear()
                pending = ([], [], offset)
                self._hdlc_parts[key] = pending
            parts, raws, first = pending
            parts.append(frame.information)
            raws.append(raw)
            if sum(map(len, parts)) > self._max_frame:
                del self._hdlc_parts[key]
                self._refuse(events, "overflow", FramingError(
                    f"segmented APDU exceeds {self._max_frame} octets", offset=first,
                    raw=b"".join(raws)))
                return
            if frame.segmented:
                return
            del self._hdlc_parts[key]
            information, raw, offset = b"".join(parts), b"".join(raws), first
        else:
            information = frame.information
        _, apdu = hdlc.split_llc(information)
        self._on_apdu(events, apdu, raw, offset, checked=True)

    # ----------------------------------------------------------------- M-Bus
    def _mbus_frame(self, events: list[DlmsEvent], pos: int, final: bool) -> int:
        buf = self._buf
        n = len(buf)
        if n - pos < 4:
            return -1 if not final else self._not_a_start(events, pos)
        length = buf[pos + 1]
        if buf[pos + 2] != length or buf[pos + 3] != _MBUS_START or length < 3:
            return self._not_a_start(events, pos)
        total = length + 6
        offset = self._base + pos
        error: ProtocolError
        if n - pos < total:
            if not final:
                return -1
            error = FramingError("stream ended inside an M-Bus frame", offset=offset,
                                 raw=bytes(buf[pos:n]))
            return self._bad(events, "framing", error, pos, n)
        end = pos + total
        if buf[end - 1] != _MBUS_STOP:
            error = FramingError("no stop octet 0x16 where the M-Bus frame ends", offset=offset,
                                 raw=bytes(buf[pos:end]))
            return self._bad(events, "framing", error, pos, end)
        expected = sum(buf[pos + 4 : end - 2]) & 0xFF
        got = buf[end - 2]
        if got != expected:
            error = ChecksumError("M-Bus checksum does not match", expected=expected, got=got,
                                  offset=offset, raw=bytes(buf[pos:end]))
            return self._bad(events, "checksum", error, pos, end)
        self._flush_junk(events)
        self._silent_until = max(self._silent_until, self._base + end)
        raw = bytes(buf[pos:end])
        ci = buf[pos + 6]
        if ci & 0xE0 or length < 5:
            # EN 13757-3 application data (CI 0x72 …): an M-Bus meter, not DLMS.
            self._refuse(events, "unsupported", UnsupportedError(
                f"M-Bus frame with CI 0x{ci:02X} does not carry DLMS", offset=offset, raw=raw))
            return end
        self._on_mbus_segment(events, ci, bytes(buf[pos + 9 : end - 2]), raw, offset)
        return end

    def _on_mbus_segment(self, events: list[DlmsEvent], ci: int, data: bytes, raw: bytes,
                         offset: int) -> None:
        number, last = ci & 0x0F, bool(ci & 0x10)
        if self._mbus is None:
            if number != 0:
                self._refuse(events, "framing", FramingError(
                    f"M-Bus DLMS segment {number} without segment 0", offset=offset, raw=raw))
                return
            self._mbus = (0, [], [], offset)
        expected, parts, raws, first = self._mbus
        if number != expected:
            self._mbus = None
            self._refuse(events, "framing", FramingError(
                f"M-Bus DLMS segment {number}, expected {expected}", offset=first,
                raw=b"".join(raws) + raw))
            if number == 0:  # a new APDU starts: keep it
                self._on_mbus_segment(events, ci, data, raw, offset)
            return
        parts.append(data)
        raws.append(raw)
        if sum(map(len, parts)) > self._max_frame:
            self._mbus = None
            self._refuse(events, "overflow", FramingError(
                f"segmented APDU exceeds {self._max_frame} octets", offset=first,
                raw=b"".join(raws)))
            return
        if not last:
            self._mbus = ((expected + 1) & 0x0F, parts, raws, first)
            return
        self._mbus = None
        self._on_apdu(events, b"".join(parts), b"".join(raws), first, checked=True)

    # --------------------------------------------------------------- wrapper
    def _wrapper(self, events: list[DlmsEvent], pos: int, final: bool) -> int:
        buf = self._buf
        n = len(buf)
        if n - pos < 2:
            return -1 if not final else self._not_a_start(events, pos)
        if buf[pos + 1] != 0x01:
            return self._not_a_start(events, pos)
        if n - pos < 9:
            return -1 if not final else self._not_a_start(events, pos)
        length = (buf[pos + 6] << 8) | buf[pos + 7]
        if length == 0 or length > self._max_frame or buf[pos + 8] not in _PUSH_TAGS:
            return self._not_a_start(events, pos)
        total = 8 + length
        if n - pos < total:
            if not final:
                return -1
            error = FramingError("stream ended inside a wrapper PDU", offset=self._base + pos,
                                 raw=bytes(buf[pos:n]))
            return self._bad(events, "framing", error, pos, n)
        self._flush_junk(events)
        end = pos + total
        self._silent_until = max(self._silent_until, self._base + end)
        raw = bytes(buf[pos:end])
        self._on_apdu(events, raw[8:], raw, self._base + pos, checked=False)
        return end

    # ------------------------------------------------------------ raw cipher
    def _raw_ciphered(self, events: list[DlmsEvent], pos: int, final: bool) -> int:
        buf = self._buf
        n = len(buf)
        if n - pos < 2:
            return -1 if not final else self._not_a_start(events, pos)
        if buf[pos + 1] != 0x08:
            return self._not_a_start(events, pos)
        head = pos + 10  # tag, title length, title
        if n <= head:
            return -1 if not final else self._not_a_start(events, pos)
        first = buf[head]
        width = 0 if first < 0x80 else first & 0x7F
        if not 0 <= width <= 2 or first == 0x80:
            return self._not_a_start(events, pos)
        if n < head + 2 + width:  # the length and the security control octet
            return -1 if not final else self._not_a_start(events, pos)
        length, start = decode_length(bytes(buf[head : head + 1 + width]), 0)
        start += head
        security_control = buf[start]
        if length < 5 or security_control & 0x0F or not security_control & (
                AUTHENTICATED | ENCRYPTED):
            return self._not_a_start(events, pos)  # not a plausible ciphered APDU
        end = start + length
        error: ProtocolError
        if end - pos > self._max_frame:
            error = FramingError(f"ciphered APDU of {end - pos} octets exceeds max_frame",
                                 offset=self._base + pos, raw=bytes(buf[pos:start]))
            return self._bad(events, "overflow", error, pos, start)
        if n < end:
            if not final:
                return -1
            error = DecryptionError("stream ended inside a ciphered APDU", reason="truncated",
                                    offset=self._base + pos, raw=bytes(buf[pos:n]))
            return self._bad(events, "decryption", error, pos, n)
        self._flush_junk(events)
        self._silent_until = max(self._silent_until, self._base + end)
        raw = bytes(buf[pos:end])
        self._on_apdu(events, raw, raw, self._base + pos, checked=False)
        return end

    # ------------------------------------------------------------------ APDUs
    def _on_apdu(self, events: list[DlmsEvent], apdu: bytes, raw: bytes, offset: int, *,
                 checked: bool) -> None:
        """Decrypt if needed, decode, map to a MeterFrame (or a Discarded)."""
        system_title: bytes | None = None
        authenticated = False
        try:
            plain = apdu
            first = apdu[0] if apdu else -1
            if first == 0xDB or first == 0xDC:
                if first == 0xDC:
                    raise DecryptionError(
                        "general-ded-ciphering needs a dedicated key (an association)",
                        reason="no_key")
                system_title, security_control, counter, ciphered = _glo_fields(apdu)
                authenticated = bool(security_control & AUTHENTICATED)
                plain = self._decipher(system_title, security_control, counter, ciphered)
                if plain[:1] == b"/":
                    raise UnsupportedError("a ciphered DSMR P1 telegram: use --protocol dsmr")
                if not authenticated and plain[:1] not in (b"\x0f", b"\xc2"):
                    # Without a tag, a wrong key shows only as noise.
                    raise DecryptionError("the decrypted bytes are not a notification: wrong key?",
                                          reason="wrong_key")
            try:
                content = self._content(plain)
            except FramingError as exc:
                if system_title is None or authenticated:
                    raise
                raise DecryptionError(f"the decrypted APDU does not decode ({exc}): wrong key?",
                                      reason="wrong_key") from None
            if system_title is not None:
                # Only now is the frame known to be genuine (tag verified, or the
                # plaintext decoded): a forged counter must not lock the meter out.
                self._guard.accept(system_title, counter)
        except DecryptionError as exc:
            self._refuse(events, "decryption", DecryptionError(
                str(exc), reason=exc.reason, offset=offset, raw=raw))
            return
        except UnsupportedError as exc:
            self._refuse(events, "unsupported", UnsupportedError(str(exc), offset=offset, raw=raw))
            return
        except ProtocolError as exc:
            self._refuse(events, "framing", FramingError(str(exc), offset=offset, raw=raw))
            return
        meter_id = content.logical_device_name or (
            system_title.hex().upper() if system_title else None) or content.meter_id
        events.append(_new_frame(PROTOCOL, meter_id, content.timestamp,
                                 True if checked or authenticated else None, content.readings,
                                 content.list_id or "", raw, offset))

    def _content(self, plain: bytes) -> PushContent:
        """The push content of a plain APDU.

        Raises:
            FramingError: malformed.
            UnsupportedError: not a data or event notification.
        """
        if plain[:1] == b"\x0f":
            fast = self._fast_notification(plain)
            if fast is not None:
                return fast
            return push_content(DataNotification.decode(plain), meter_tz=self._tz)
        decoded = decode_apdu(plain)
        if isinstance(decoded, EventNotification):
            reading = register_reading(decoded.attribute.instance, decoded.value,
                                       meter_tz=self._tz)
            return PushContent(readings=(reading,) if reading is not None else (),
                               timestamp=None, meter_id=None, list_id=None)
        raise UnsupportedError(f"{type(decoded).__name__} is not a push notification")

    def _fast_notification(self, plain: bytes) -> PushContent | None:
        """A DataNotification read straight into readings (see cosem.fast_push_content);
        None when the general decoder must do it."""
        n = len(plain)
        if n < 7:
            return None
        first = plain[5]  # the date-time: OCTET STRING, or the 09 0C / 19 forms
        if first == 0x09 and plain[6] == 0x0C:
            pos = 19
            stamp_raw = plain[7:19]
        elif first == 0x19:
            pos = 18
            stamp_raw = plain[6:18]
        elif first < 0x80:
            pos = 6 + first
            stamp_raw = plain[6:pos]
        else:
            return None
        if pos > n:
            return None
        for layout in self._layouts:
            content = layout.content(plain, pos, stamp_raw, self._tz)
            if content is not None:
                self._layout_hits += 1
                return content
        result = fast_push_content(plain, pos, stamp_raw, meter_tz=self._tz)
        if result is None or result[1] != n:
            return None
        # A new list (or the first): compile its layout for the next pushes.  A meter
        # whose every push differs in a constant octet (a string changing length)
        # stops being compiled for after a while: the layouts would never be used.
        if self._layout_compiles < _MAX_COMPILES or self._layout_compiles <= 2 * self._layout_hits:
            compiled = PushLayout.compile(plain, pos)
            if compiled is not None:
                self._layout_compiles += 1
                self._layouts.insert(0, compiled)
                del self._layouts[_LAYOUTS:]
        return result[0]

    def _decipher(self, system_title: bytes, security_control: int, counter: int,
                  ciphered: bytes) -> bytes:
        self._guard.check(system_title, counter)
        key = self._broadcast_key if security_control & BROADCAST else self._key
        if key is None:
            which = "broadcast key" if security_control & BROADCAST else "key"
            raise DecryptionError(f"encrypted push but no {which} configured", reason="no_key")
        return decrypt(ciphered, security_control=security_control, system_title=system_title,
                       invocation_counter=counter, key=key, auth_key=self._auth_key)


def _glo_fields(apdu: bytes) -> tuple[bytes, int, int, bytes]:
    """System title, security control, invocation counter and ciphered octets of a
    general-glo-ciphering APDU (read in place: every encrypted push passes here).

    Raises:
        FramingError: not a well-formed general-glo-ciphering APDU.
        DecryptionError: ``reason="malformed"``: the system title is not 8 octets.
    """
    if len(apdu) > 11 and apdu[1] == 8 and apdu[10] < 0x80:
        end = 11 + apdu[10]
        if end == len(apdu) and apdu[10] >= 5:
            return (apdu[2:10], apdu[11], int.from_bytes(apdu[12:16], "big"), apdu[16:end])
    glo = GeneralGloCiphering.decode(apdu)  # the long length forms, and the errors
    if len(glo.system_title) != 8:
        raise DecryptionError(f"system title of {len(glo.system_title)} octets, expected 8",
                              reason="malformed")
    return glo.system_title, glo.security_control, glo.invocation_counter, glo.ciphered
