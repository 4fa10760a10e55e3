"""Swedish and Austrian P1 telegrams, for which shared/vectors holds no capture.

The telegrams are hand-built here after the published formats (Swedish branch
recommendation for the HAN port; Energienetze Steiermark's P1 port, which sends the
telegram inside DLMS general-glo-ciphering like the Luxembourg Smarty), so they are
not captures.  To keep this from being a self-fulfilling test, CRC, encryption and
values are cross-checked with dsmr_parser's own SWEDEN and
AUSTRIA_ENERGIENETZE_STEIERMARK specifications, an independent implementation.
"""

from __future__ import annotations

from decimal import Decimal

from dsmr_parser import telegram_specifications
from dsmr_parser.parsers import TelegramParser

from gateway.model import MeterFrame
from gateway.protocols._checks import crc16_arc_table
from gateway.protocols.dsmr import DsmrDecoder, encrypt_telegram

SWEDEN_BODY = (
    "/ELL5\\253833635_A\r\n\r\n"
    "0-0:1.0.0(210217184019W)\r\n"
    "1-0:1.8.0(00006678.394*kWh)\r\n"
    "1-0:2.8.0(00000000.000*kWh)\r\n"
    "1-0:3.8.0(00000021.988*kvarh)\r\n"
    "1-0:4.8.0(00001020.971*kvarh)\r\n"
    "1-0:1.7.0(0001.727*kW)\r\n"
    "1-0:2.7.0(0000.000*kW)\r\n"
    "1-0:3.7.0(0000.000*kvar)\r\n"
    "1-0:4.7.0(0000.309*kvar)\r\n"
    "1-0:21.7.0(0001.023*kW)\r\n"
    "1-0:41.7.0(0000.350*kW)\r\n"
    "1-0:61.7.0(0000.353*kW)\r\n"
    "1-0:22.7.0(0000.000*kW)\r\n"
    "1-0:42.7.0(0000.000*kW)\r\n"
    "1-0:62.7.0(0000.000*kW)\r\n"
    "1-0:32.7.0(240.3*V)\r\n"
    "1-0:52.7.0(240.1*V)\r\n"
    "1-0:72.7.0(241.3*V)\r\n"
    "1-0:31.7.0(004.2*A)\r\n"
    "1-0:51.7.0(001.6*A)\r\n"
    "1-0:71.7.0(001.7*A)\r\n"
    "!"
)

AUSTRIA_BODY = (
    "/EST5\\253710000_A\r\n\r\n"
    "1-3:0.2.8(50)\r\n"
    "0-0:1.0.0(230313154523W)\r\n"
    "0-0:96.1.0(1ESY1234567890)\r\n"
    "1-0:1.8.0(000013.456*kWh)\r\n"
    "1-0:2.8.0(000001.002*kWh)\r\n"
    "1-0:1.7.0(00.540*kW)\r\n"
    "1-0:2.7.0(00.000*kW)\r\n"
    "!"
)


def seal(body: str) -> str:
    return body + f"{crc16_arc_table(body.encode('ascii')):04X}\r\n"


KEY = bytes.fromhex("0123456789ABCDEF0123456789ABCDEF")
AK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")


def their_values(telegram: object) -> dict[float, str | None]:
    out = {}
    for _name, obj in telegram:  # type: ignore[attr-defined]
        value = getattr(obj, "value", None)
        if isinstance(value, Decimal):
            out[float(value)] = getattr(obj, "unit", None)
    return out


def check(frame: object, checks: dict[str, tuple[float, str]], theirs: dict[float, str | None]) -> None:
    assert isinstance(frame, MeterFrame)
    ours = {r.id: (r.value, r.unit) for r in frame.readings}
    for obis, (value, unit) in checks.items():
        assert ours[obis] == (value, unit)
        assert theirs.get(value) == unit
    assert frame.timestamp is not None and frame.timestamp.utcoffset().total_seconds() == 3600  # type: ignore[union-attr]


def test_swedish_telegram_agrees_with_dsmr_parser() -> None:
    text = seal(SWEDEN_BODY)
    theirs = their_values(TelegramParser(telegram_specifications.SWEDEN, apply_checksum_validation=True).parse(text))
    (frame,) = DsmrDecoder().feed(text.encode("ascii"))
    assert isinstance(frame, MeterFrame) and frame.checksum_ok is True
    check(frame, {"1-0:1.8.0": (6678.394, "kWh"), "1-0:4.8.0": (1020.971, "kvarh"), "1-0:1.7.0": (1.727, "kW"),
                  "1-0:72.7.0": (241.3, "V"), "1-0:71.7.0": (1.7, "A")}, theirs)


def test_austrian_encrypted_telegram_agrees_with_dsmr_parser() -> None:
    plaintext = seal(AUSTRIA_BODY).encode("ascii")
    frame_bytes = encrypt_telegram(plaintext, key=KEY, auth_key=AK, system_title=b"EST\x00\x01\x02\x03\x04",
                                   frame_counter=7)
    parser = TelegramParser(telegram_specifications.AUSTRIA_ENERGIENETZE_STEIERMARK)
    theirs = their_values(parser.parse(frame_bytes.hex(), encryption_key=KEY.hex(), authentication_key=AK.hex()))
    (frame,) = DsmrDecoder(key=KEY, auth_key=AK).feed(frame_bytes)
    check(frame, {"1-0:1.8.0": (13.456, "kWh"), "1-0:2.8.0": (1.002, "kWh"), "1-0:1.7.0": (0.54, "kW")}, theirs)
    assert isinstance(frame, MeterFrame) and frame.meter_id == "1ESY1234567890"
