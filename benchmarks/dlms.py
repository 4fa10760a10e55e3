"""Encrypted DLMS push decode: our DlmsPushDecoder against dlms-cosem and Gurux.

Same frames, same run, medians of interleaved runs (a noisy neighbour hits all alike).
Each run decodes a stream of distinct frames with increasing invocation counters
through one decoder (as a meter pushes them; ours refuses replays, so the same frame
fed twice would measure the refusal).  Cases:

* ``udp-vectors``: dlms-cosem's own 13 UDP-wrapper general-glo-ciphering pushes
  (SC 0x30, key MYDUMMYGLOBALKEY, a 34-octet octet-string body);
* ``aidon-se-glo``: the amshan Aidon SE list (27 OBIS elements with scaler_unit, the
  largest Nordic push we have) as a DataNotification, general-glo-ciphered (SC 0x30) in
  the UDP wrapper — what an encrypting Nordic meter (Kamstrup DK) sends;
* ``austria-apdu``: the NOE Kaifa MA309 push (DLMS_FACTS §3: SC 0x20, encryption only,
  35 items) as a bare general-glo-ciphering APDU, re-encrypted with increasing counters;
* ``austria-mbus``: the same inside its two M-Bus long frames (ours only: neither peer
  reads DLMS over the M-Bus link layer);
* ``aidon-se-live`` / ``austria-live``: the same two lists as a live meter pushes them:
  the clock moves every push, every instantaneous value (power, current, voltage:
  OBIS D = 7) changes every push, the energy registers (D = 8) every tenth.  Our
  decoder reuses the reading of a value that did not change since the last push of
  the same list (the cases above repeat one body, so everything is reused there);
  these cases show what a real stream costs.

Work done per frame — ours: framing, decryption with tag check, APDU decoding, A-XDR
decoding, mapping to OBIS readings with scaling (a ``MeterFrame``).  dlms-cosem 21.3
(the MIT version): wrapper, ``GeneralGlobalCipher``, ``to_plain_apdu``,
``DataNotification`` and ``parse_as_dlms_data`` of the body (no OBIS mapping; it cannot
decrypt encryption-only APDUs, so it has no Austrian figure).  Gurux: ``getData`` of a
``GXDLMSSecureClient`` (wrapper or PDU interface), which decodes the body to Python
values; Gurux prints a line per frame, sent to /dev/null during its runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import VECTORS, median

TARGET_US = 25.0
DUMMY_KEY = b"MYDUMMYGLOBALKEY"
AUSTRIA_KEY = bytes.fromhex("36C66639E48A8CA4D6BC8B282A793BBB")
AUSTRIA_WIRE = bytes.fromhex(
    "68FAFA6853FF000167DB084B464D675000000981F8200000002388D5AB4F97515AAFC6B88D2F85DAA7A0E3C0C4"
    "0D004535C397C9D037AB7DBDA329107615444894A1A0DD7E85F02D496CECD3FF46AF5FB3C9229CFE8F3EE4606AB2"
    "E1F409F36AAD2E50900A4396FC6C2E083F373233A69616950758BFC7D63A9E9B6E99E21B2CBC2B934772CA51FD4D"
    "69830711CAB1F8CFF25F0A329337CBA51904F0CAED88D61968743C8454BA922EB00038182C22FE316D16F2A9F544D"
    "6F75D51A4E92A1C4EF8AB19A2B7FEAA32D0726C0ED80229AE6C0F7621A4209251ACE2B2BC66FF0327A653BB686C75"
    "6BE033C7A281F1D2A7E1FA31C3983E15F8FD16CC5787E6F5171668"
    "14146853FF110167419A3CFDA44BE438C96F0E38BF83D98316")

Run = Callable[[], int]


# ------------------------------------------------------------------ frames
def udp_vectors() -> list[bytes]:
    data = json.loads((VECTORS / "dlms" / "dlms_cosem" / "udp_wrapper_general_glo_ciphering.json")
                      .read_text())
    return [bytes.fromhex(c["wrapper_frame_hex"]) for c in data["cases"]]


def aidon_glo_frames(count: int) -> list[bytes]:
    from gateway.protocols.dlms import security
    from gateway.protocols.dlms.apdu import DataNotification
    from gateway.protocols.dlms.axdr import decode_data
    from gateway.protocols.dlms.wrapper import WrapperFrame

    frames = json.loads((VECTORS / "dlms" / "amshan" / "aidon.json").read_text())["frames"]
    body = decode_data(bytes.fromhex(frames["NOTIFICATION_BODY_SE_LIST"]))
    plain = DataNotification(long_invoke_id_and_priority=0x40000001, body=body,
                             date_time=bytes.fromhex("07E30C1001073B28FF8000FF")).encode()
    out = []
    for counter in range(1, count + 1):
        apdu = security.cipher_apdu(plain, kind="general-glo", security_control=0x30,
                                    system_title=b"AIDxxxxx", invocation_counter=counter,
                                    key=DUMMY_KEY, auth_key=DUMMY_KEY)
        out.append(WrapperFrame(source_wport=1, destination_wport=16, apdu=apdu).encode())
    return out


def _live(body: Any, k: int) -> Any:
    """``body`` as push number ``k`` of a live meter (see the module docstring)."""
    from gateway.protocols.dlms.axdr import Data, DataType

    def vary(value: Data, d: int | None, index: int) -> Data:
        if isinstance(value.value, int) and not isinstance(value.value, bool):
            if d == 7:
                return Data(type=value.type, value=value.value + (k * 7919 + index * 104729) % 97)
            if d == 8:
                return Data(type=value.type, value=value.value + k // 10)
        if value.type is DataType.OCTET_STRING and isinstance(value.value, bytes) \
                and len(value.value) == 12:  # a date-time: the seconds move
            raw = bytearray(value.value)
            raw[6] = k % 60
            return Data(type=value.type, value=bytes(raw))
        return value

    items = list(body.value)
    if all(i.type is DataType.STRUCTURE for i in items):  # {OBIS, value[, su]} each
        for n, item in enumerate(items):
            members = list(item.value)
            members[1] = vary(members[1], members[0].value[3], n)
            items[n] = Data(type=item.type, value=tuple(members))
    else:  # OBIS, value[, su] runs
        d = None
        for n, item in enumerate(items):
            if item.type is DataType.OCTET_STRING and len(item.value) == 6:
                d = item.value[3]
                continue
            items[n] = vary(item, d, n)
            if item.type is not DataType.STRUCTURE:
                d = None
    return Data(type=body.type, value=tuple(items))


def aidon_live_frames(count: int) -> list[bytes]:
    from gateway.protocols.dlms import security
    from gateway.protocols.dlms.apdu import DataNotification
    from gateway.protocols.dlms.axdr import decode_data
    from gateway.protocols.dlms.wrapper import WrapperFrame

    frames = json.loads((VECTORS / "dlms" / "amshan" / "aidon.json").read_text())["frames"]
    body = decode_data(bytes.fromhex(frames["NOTIFICATION_BODY_SE_LIST"]))
    out = []
    for counter in range(1, count + 1):
        stamp = bytearray.fromhex("07E30C1001073B28FF8000FF")
        stamp[6] = counter % 60
        plain = DataNotification(long_invoke_id_and_priority=0x40000001,
                                 body=_live(body, counter), date_time=bytes(stamp)).encode()
        apdu = security.cipher_apdu(plain, kind="general-glo", security_control=0x30,
                                    system_title=b"AIDxxxxx", invocation_counter=counter,
                                    key=DUMMY_KEY, auth_key=DUMMY_KEY)
        out.append(WrapperFrame(source_wport=1, destination_wport=16, apdu=apdu).encode())
    return out


def austria_live_apdus(count: int) -> list[bytes]:
    from gateway.protocols.dlms import security
    from gateway.protocols.dlms.apdu import DataNotification

    plain, first = _austria_plain()
    notification = DataNotification.decode(plain)
    out = []
    for n in range(count):
        live = DataNotification(long_invoke_id_and_priority=notification.long_invoke_id_and_priority,
                                body=_live(notification.body, n + 1),
                                date_time=notification.date_time).encode()
        out.append(security.cipher_apdu(live, kind="general-glo", security_control=0x20,
                                        system_title=bytes.fromhex("4B464D6750000009"),
                                        invocation_counter=first + n, key=AUSTRIA_KEY))
    return out


def _austria_plain() -> tuple[bytes, int]:
    from gateway.protocols.dlms.apdu import GeneralGloCiphering, decode_apdu
    from gateway.protocols.dlms.security import decipher_apdu

    apdu = AUSTRIA_WIRE[9:254] + AUSTRIA_WIRE[256 + 9 : -2]
    glo = decode_apdu(apdu)
    assert isinstance(glo, GeneralGloCiphering)
    return decipher_apdu(glo, key=AUSTRIA_KEY), glo.invocation_counter


def austria_apdus(count: int) -> list[bytes]:
    from gateway.protocols.dlms import security

    plain, first = _austria_plain()
    return [security.cipher_apdu(plain, kind="general-glo", security_control=0x20,
                                 system_title=bytes.fromhex("4B464D6750000009"),
                                 invocation_counter=first + n, key=AUSTRIA_KEY)
            for n in range(count)]


def mbus_frames(apdu: bytes, *, size: int = 245) -> bytes:
    """The APDU in M-Bus long frames as the Austrian meters send them (CI: segment, FIN)."""
    parts = [apdu[i : i + size] for i in range(0, len(apdu), size)]
    out = bytearray()
    for n, part in enumerate(parts):
        ci = n | (0x10 if n == len(parts) - 1 else 0)
        body = bytes((0x53, 0xFF, ci, 0x01, 0x67)) + part
        out += bytes((0x68, len(body), len(body), 0x68)) + body
        out += bytes((sum(body) & 0xFF, 0x16))
    return bytes(out)


# ------------------------------------------------------------------ runners
def ours(frames: list[bytes], key: bytes, auth_key: bytes | None, passes: int = 1) -> Run:
    from gateway.model import MeterFrame
    from gateway.protocols.dlms.push import DlmsPushDecoder

    check = DlmsPushDecoder(key=key, auth_key=auth_key)
    for frame in frames:  # every one decodes (outside the timing)
        events = check.feed(frame)
        if len(events) != 1 or not isinstance(events[0], MeterFrame):
            raise RuntimeError(f"our decoder did not return one MeterFrame: {events!r}")

    def go() -> int:
        for _ in range(passes):  # a new decoder per pass: the counters start over
            feed = DlmsPushDecoder(key=key, auth_key=auth_key).feed
            for frame in frames:
                feed(frame)
        return len(frames) * passes

    return go


def dlms_cosem(frames: list[bytes], key: bytes, passes: int = 1) -> Run | None:
    try:
        from dlms_cosem.protocol.wrappers import DlmsUdpMessage
        from dlms_cosem.protocol.xdlms import DataNotification, GeneralGlobalCipher
        from dlms_cosem.utils import parse_as_dlms_data
    except ImportError:  # the bench extra is not installed
        return None

    def one(frame: bytes) -> Any:
        pdu = DlmsUdpMessage.from_bytes(frame)
        glo = GeneralGlobalCipher.from_bytes(pdu.data)
        plain = glo.to_plain_apdu(key, key)
        notification = DataNotification.from_bytes(plain)
        return parse_as_dlms_data(notification.body)

    for frame in frames:
        if one(frame) is None:
            raise RuntimeError("dlms-cosem did not decode the push")

    def go() -> int:
        for _ in range(passes):
            for frame in frames:
                one(frame)
        return len(frames) * passes

    return go


def gurux(frames: list[bytes], key: bytes, *, wrapper: bool, encryption_only: bool = False
          ) -> Run | None:
    try:
        from gurux_dlms import GXByteBuffer, GXReplyData
        from gurux_dlms.enums import Authentication, InterfaceType, Security
        from gurux_dlms.secure import GXDLMSSecureClient
    except ImportError:
        return None

    def client() -> Any:
        c = GXDLMSSecureClient(True, 1, 1, Authentication.NONE, None,
                               InterfaceType.WRAPPER if wrapper else InterfaceType.PDU)
        c.ciphering.security = (Security.ENCRYPTION if encryption_only
                                else Security.AUTHENTICATION_ENCRYPTION)
        c.ciphering.blockCipherKey = key
        c.ciphering.authenticationKey = key
        return c

    def run(c: Any, frame: bytes) -> Any:
        notify = GXReplyData()
        c.getData(GXByteBuffer(frame), GXReplyData(), notify)
        return notify.value

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        c = client()
        for frame in frames:
            if run(c, frame) is None:
                raise RuntimeError("Gurux did not decode the push")

    def go() -> int:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            c = client()
            for frame in frames:
                run(c, frame)
        return len(frames)

    return go


# -------------------------------------------------------------------- rows
def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("dlms-cosem", "gurux-dlms"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} absent")
    return ", ".join(out)


def _per_frame_us(fn: Run) -> float:
    t0 = time.perf_counter()
    n = fn()
    return (time.perf_counter() - t0) / n * 1e6


def _row(case: str, frames: int, ours_run: Run, peers: dict[str, Run | None],
         repeats: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"ours": []}
    runs.update({name: [] for name, fn in peers.items() if fn is not None})
    ours_run()  # warm up: key schedules, caches
    for fn in peers.values():
        if fn is not None:
            fn()
    for _ in range(repeats):
        runs["ours"].append(_per_frame_us(ours_run))
        for name, fn in peers.items():
            if fn is not None:
                runs[name].append(_per_frame_us(fn))
    our_us = median(runs["ours"])
    row: dict[str, Any] = {"scenario": "dlms", "case": case, "frames": frames,
                           "peers": _versions(),
                           "ours_us": round(our_us, 2), "ours_min_us": round(min(runs["ours"]), 2),
                           "target_us": TARGET_US, "meets_target": our_us <= TARGET_US}
    for name, fn in peers.items():
        if fn is None:
            row[f"{name}_us"] = None
            continue
        their_us = median(runs[name])
        row[f"{name}_us"] = round(their_us, 1)
        row[f"speedup_vs_{name}"] = round(their_us / our_us, 1)
    return row


def run(quick: bool = False) -> list[dict[str, Any]]:
    repeats = 5 if quick else 15
    count = 20 if quick else 100
    rows = []
    vectors = udp_vectors()
    passes = 4 if quick else 20  # 13 frames are too short a run to time alone
    rows.append(_row("udp-vectors", len(vectors) * passes,
                     ours(vectors, DUMMY_KEY, DUMMY_KEY, passes),
                     {"dlms_cosem": dlms_cosem(vectors, DUMMY_KEY, passes),
                      "gurux": gurux(vectors, DUMMY_KEY, wrapper=True)}, repeats))
    aidon = aidon_glo_frames(count)
    rows.append(_row("aidon-se-glo", len(aidon), ours(aidon, DUMMY_KEY, DUMMY_KEY),
                     {"dlms_cosem": dlms_cosem(aidon, DUMMY_KEY),
                      "gurux": gurux(aidon, DUMMY_KEY, wrapper=True)}, repeats))
    austria = austria_apdus(count)
    rows.append(_row("austria-apdu", len(austria), ours(austria, AUSTRIA_KEY, None),
                     {"dlms_cosem": None,
                      "gurux": gurux(austria, AUSTRIA_KEY, wrapper=False, encryption_only=True)},
                     repeats))
    framed = [mbus_frames(apdu) for apdu in austria]
    rows.append(_row("austria-mbus", len(framed), ours(framed, AUSTRIA_KEY, None), {}, repeats))
    aidon_live = aidon_live_frames(count)
    rows.append(_row("aidon-se-live", len(aidon_live), ours(aidon_live, DUMMY_KEY, DUMMY_KEY),
                     {"dlms_cosem": dlms_cosem(aidon_live, DUMMY_KEY),
                      "gurux": gurux(aidon_live, DUMMY_KEY, wrapper=True)}, repeats))
    austria_live = austria_live_apdus(count)
    rows.append(_row("austria-live", len(austria_live), ours(austria_live, AUSTRIA_KEY, None),
                     {"dlms_cosem": None,
                      "gurux": gurux(austria_live, AUSTRIA_KEY, wrapper=False,
                                     encryption_only=True)}, repeats))
    return rows


if __name__ == "__main__":
    for result in run(quick=False):
        print(result)
