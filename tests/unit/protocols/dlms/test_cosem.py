"""COSEM mapping: every amshan push test (Aidon, Kaifa, Kamstrup) gives its expected OBIS
elements and decoded values; scaler/unit, clock, registers, profile rows, generic bodies."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.errors import FramingError
from gateway.model import Reading
from gateway.protocols.dlms import axdr
from gateway.protocols.dlms.apdu import CaptureObjectDefinition, DataNotification, decode_apdu
from gateway.protocols.dlms.axdr import CosemDateTime, Data, DataType, decode_data
from gateway.protocols.dlms.cosem import (
    CLOCK,
    UNITS,
    ClassId,
    PushContent,
    ScalerUnit,
    clock_time,
    extended_register_reading,
    profile_rows,
    push_content,
    register_reading,
    scale,
)
from gateway.protocols.dlms.hdlc import split_llc
from gateway.protocols.obis import ObisCode

VECTORS = Path(__file__).resolve().parents[4].parent / "shared" / "vectors" / "dlms"
VENDORS = {name: json.loads((VECTORS / "amshan" / f"{name}.json").read_text())
           for name in ("aidon", "kaifa", "kamstrup", "autodecoder")}

# amshan's decoded field names -> OBIS C.D.E (A = 1, B = 0 or 1: Kamstrup uses B = 1)
_PHASES = {"l1": 20, "l2": 40, "l3": 60}
NAMES: dict[str, tuple[int, int, int]] = {
    "active_power_import": (1, 7, 0), "active_power_export": (2, 7, 0),
    "reactive_power_import": (3, 7, 0), "reactive_power_export": (4, 7, 0),
    "active_power_import_total": (1, 8, 0), "active_power_export_total": (2, 8, 0),
    "reactive_power_import_total": (3, 8, 0), "reactive_power_export_total": (4, 8, 0),
    "current_l1": (31, 7, 0), "current_l2": (51, 7, 0), "current_l3": (71, 7, 0),
    "voltage_l1": (32, 7, 0), "voltage_l2": (52, 7, 0), "voltage_l3": (72, 7, 0),
}
for _phase, _base in _PHASES.items():
    for _name, _c in (("active_power_import", 1), ("active_power_export", 2),
                      ("reactive_power_import", 3), ("reactive_power_export", 4)):
        NAMES[f"{_name}_{_phase}"] = (_base + _c, 7, 0)
# amshan also names the manufacturer, which it guesses from the list; we keep the list
# identifier (MeterFrame.header) and do not guess.
NOT_PRODUCED = {"meter_manufacturer"}


def cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for vendor, data in VENDORS.items():
        for test in data["tests"]:
            out.append((vendor, test))
    return out


CASES = cases()


def body_and_notification(vendor: str, test: dict[str, Any]) -> tuple[Data, DataNotification | None]:
    frames = VENDORS[vendor]["frames"]
    body: Data | None = None
    notification: DataNotification | None = None
    for name in test["frames"]:
        raw = bytes.fromhex(frames[name])
        if name.startswith("NOTIFICATION_BODY"):
            body = decode_data(raw)
        else:
            llc, apdu = split_llc(raw)
            assert llc == bytes.fromhex("E6E700")
            decoded = decode_apdu(apdu)
            assert isinstance(decoded, DataNotification)
            assert decoded.encode() == apdu
            notification = decoded
    if notification is not None:
        if body is not None:
            assert notification.body == body  # the bare body is the one in the frame
        body = notification.body
    assert body is not None
    return body, notification


Element = tuple[str | None, Data, ScalerUnit | None]


def elements(body: Data) -> list[Element]:
    """(OBIS a.b.c.d.e.f as amshan writes it, value, scaler_unit) per element of a body."""
    out: list[Element] = []
    items = body.items
    i = 0
    while i < len(items):
        item = items[i]
        if item.type is DataType.STRUCTURE and item.items and _obis(item.items[0]):
            members = item.items
            su = ScalerUnit.from_data(members[2]) if len(members) > 2 else None
            out.append((_obis(members[0]), members[1], su))
        elif _obis(item) and i + 1 < len(items):
            out.append((_obis(item), items[i + 1], None))
            i += 1
        else:
            out.append((None, item, None))
        i += 1
    return out


def amshan_value(want: Any) -> Any:
    """amshan writes scaled decimals as {"decimal": "1.3"}."""
    return float(want["decimal"]) if isinstance(want, dict) and "decimal" in want else want


def _obis(d: Data) -> str | None:
    if d.type is DataType.OCTET_STRING and isinstance(d.value, bytes) and len(d.value) == 6:
        return ".".join(str(b) for b in d.value)
    return None


def text_of(d: Data) -> object:
    if isinstance(d.value, bytes):
        return d.value.decode("latin-1")
    return d.value


def reading(readings: tuple[Reading, ...], cde: tuple[int, int, int]) -> Reading:
    found = []
    for r in readings:
        try:
            code = ObisCode.parse(r.id)
        except FramingError:
            continue
        if (code.c, code.d, code.e) == cde:
            found.append(r)
    assert len(found) == 1, (cde, readings)
    return found[0]


@pytest.mark.parametrize(("vendor", "test"), CASES,
                         ids=[f"{v}-{t['test']}" for v, t in CASES])
def test_amshan_case(vendor: str, test: dict[str, Any]) -> None:
    if not test["frames"]:
        # autodecoder.json: amshan's auto-detection tests carry no frames of their own
        assert vendor == "autodecoder" and not test["expected_obis_elements"]
        assert not test["expected_other"]
        return
    body, notification = body_and_notification(vendor, test)
    found = elements(body)
    for expected in test["expected_obis_elements"]:
        matches = [(d, su) for obis, d, su in found if obis == expected["obis"]]
        assert matches, expected
        value, su = matches[0]
        assert value.type.name.lower() == expected["value_type"], expected
        got = su.apply(value.value) if su is not None else text_of(value)  # type: ignore[arg-type]
        want = amshan_value(expected["value"])
        if isinstance(want, str):
            assert got == want, expected
        else:
            assert got == pytest.approx(want), expected
    content = push_content(notification if notification is not None else body)
    checked = 0
    for entry in test["expected_other"]:
        expr, want = entry["expr"], entry["expected"]
        checked += _check(expr, want, body, found, content)
    assert checked == len([e for e in test["expected_other"]
                           if e["expr"] != "len(decoded)"
                           and not any(n in e["expr"] for n in NOT_PRODUCED)])


def _check(expr: str, want: Any, body: Data, found: list[Element],
           content: PushContent) -> int:
    """Check one amshan expectation; returns 1 if checked, 0 if not applicable."""
    if expr == "len(decoded)" or any(n in expr for n in NOT_PRODUCED):
        return 0  # amshan's count of its own fields; its manufacturer guess
    if expr.endswith("notification_body.length"):
        # amshan's Kaifa parser counts OBIS/value pairs, its others count items
        assert want in (len(body.items), len(found))
        return 1
    if ".list_items[" in expr:
        index = int(expr.split("list_items[")[1].split("]")[0])
        if expr.endswith(".index"):
            assert 0 <= index < len(body.items) and want == index
        elif expr.endswith(".value.datetime"):
            stamp = CosemDateTime.decode(body.items[index].value)  # type: ignore[arg-type]
            assert stamp.to_naive() == datetime.fromisoformat(want["datetime"])
        else:
            assert text_of(body.items[index]) == want
        return 1
    if expr.startswith(("date_time.", "rtc.")):
        clocks = [(obis, d) for obis, d, _ in found
                  if obis and obis.split(".")[2:5] == ["1", "0", "0"]]
        assert len(clocks) == 1
        obis, d = clocks[0]
        if expr.endswith(".obis"):
            assert obis == want
        elif expr.endswith(("content_type", "value_type")):
            assert d.type.name.lower() == want
        else:
            stamp = clock_time(d)
            got = stamp.to_datetime() or stamp.to_naive()
            assert got == datetime.fromisoformat(want["datetime"])
        return 1
    name = expr.removeprefix("decoded['").removesuffix("']")
    if name == "list_ver_id":
        assert content.list_id == want
    elif name == "meter_id":
        assert content.meter_id == want
    elif name == "meter_type":
        types = [r for r in content.readings if r.id in ("0-0:96.1.7", "1-1:96.1.1")]
        assert [r.value for r in types] == [want]
    elif name == "meter_datetime":
        clock = reading(content.readings, (1, 0, 0))
        assert isinstance(clock.value, str)
        assert datetime.fromisoformat(clock.value) == datetime.fromisoformat(want["datetime"])
    else:
        got = reading(content.readings, NAMES[name])
        assert got.value == pytest.approx(want)
        assert got.unit in ("W", "var", "Wh", "varh", "A", "V")
    return 1


def test_every_amshan_frame_is_used() -> None:
    for vendor, data in VENDORS.items():
        used = {name for test in data["tests"] for name in test["frames"]}
        assert used == set(data["frames"]), vendor


# ---------------------------------------------------------------- scaling
@pytest.mark.parametrize(("value", "scaler", "expected"), [
    (13, -1, 1.3), (33813, -3, 33.813), (2272138, 1, 22721380), (5, 0, 5), (-7, 2, -700),
    (1.5, 1, 15.0), (1000, -3, 1.0),
])
def test_scale(value: float, scaler: int, expected: float) -> None:
    got = scale(value, scaler)
    assert got == expected and type(got) is type(expected)


def test_scaler_unit() -> None:
    su = ScalerUnit.from_data(decode_data(bytes.fromhex("02020FFF1623")))
    assert su == ScalerUnit(scaler=-1, unit=35) and su.unit_text == "V"
    assert su.apply(2274) == 227.4
    assert su.to_data().encode() == bytes.fromhex("02020FFF1623")
    assert ScalerUnit(unit=255).unit_text is None  # count: no unit
    assert (UNITS[27], UNITS[30], UNITS[32], UNITS[33], UNITS[13]) == ("W", "Wh", "varh", "A", "m³")
    with pytest.raises(FramingError):
        ScalerUnit.from_data(axdr.structure(axdr.unsigned(1), axdr.enum(27)))


def test_register_reading_and_clock() -> None:
    got = register_reading(ObisCode(1, 0, 1, 8, 0), axdr.double_long_unsigned(12937),
                           axdr.structure(axdr.integer(0), axdr.enum(30)))
    assert got == Reading(id="1-0:1.8.0", value=12937, unit="Wh")
    assert register_reading(ObisCode(1, 0, 1, 8, 0), axdr.null()) is None
    assert register_reading(ObisCode(0, 0, 96, 1, 0), axdr.octet_string(b"\x01\x02")) == Reading(
        id="0-0:96.1.0", value="0102")
    assert register_reading(ObisCode(0, 0, 96, 14, 0), axdr.boolean(True)) == Reading(
        id="0-0:96.14.0", value=True)
    stamp = CosemDateTime.decode(bytes.fromhex("07E5091B01092F0F00FF8880"))
    assert clock_time(axdr.octet_string(stamp.encode())) == stamp
    assert clock_time(axdr.date_time(stamp)) == stamp
    with pytest.raises(FramingError):
        clock_time(axdr.octet_string(b"short"))
    clock = register_reading(CLOCK, axdr.octet_string(stamp.encode()))
    assert clock is not None and clock.value == "2021-09-27T09:47:15+02:00"
    assert int(ClassId.CLOCK) == 8 and str(CLOCK) == "0-0:1.0.0"


def test_extended_register_reading() -> None:
    capture = axdr.octet_string(bytes.fromhex("07E5091B01092F0F00FF8880"))
    got = extended_register_reading(ObisCode(1, 0, 1, 6, 0), axdr.double_long_unsigned(4321),
                                    axdr.structure(axdr.integer(0), axdr.enum(27)),
                                    axdr.unsigned(0), capture)
    assert got == Reading(id="1-0:1.6.0", value=4321, unit="W",
                          timestamp=datetime(2021, 9, 27, 9, 47, 15,
                                             tzinfo=timezone(timedelta(hours=2))),
                          extra=(("status", 0),))
    assert extended_register_reading(ObisCode(1, 0, 1, 6, 0), axdr.null(),
                                     ScalerUnit(scaler=0, unit=27)) is None
    with pytest.raises(FramingError):
        extended_register_reading(ObisCode(1, 0, 1, 6, 0), axdr.unsigned(1),
                                  ScalerUnit(), capture_time=axdr.unsigned(3))


def test_profile_rows() -> None:
    objects = axdr.array(
        CaptureObjectDefinition(class_id=8, instance=CLOCK, attribute=2).to_data(),
        CaptureObjectDefinition(class_id=3, instance=ObisCode(1, 0, 1, 8, 0), attribute=2,
                                data_index=1).to_data(),
    )
    stamp = axdr.octet_string(bytes(12))
    buffer = axdr.array(axdr.structure(stamp, axdr.double_long_unsigned(1)),
                        axdr.structure(stamp, axdr.double_long_unsigned(2)))
    rows = profile_rows(buffer, objects)
    assert [r["1-0:1.8.0/2:1"].value for r in rows] == [1, 2]
    assert list(rows[0]) == ["0-0:1.0.0/2", "1-0:1.8.0/2:1"]
    with pytest.raises(FramingError):
        profile_rows(axdr.array(axdr.structure(stamp)), objects)


# -------------------------------------------------------------- generic
def test_a_body_in_no_known_layout_gives_positional_readings() -> None:
    body = axdr.structure(axdr.unsigned(5), axdr.array(axdr.visible_string("x"), axdr.float32(1.5)),
                          axdr.null(), axdr.bit_string("101"))
    content = push_content(body)
    assert [(r.id, r.value) for r in content.readings] == [
        ("body.0", 5), ("body.1.0", "x"), ("body.1.1", 1.5), ("body.3", "101")]
    single = push_content(axdr.octet_string(b"\x00\x01"))
    assert [(r.id, r.value) for r in single.readings] == [("body", "0001")]
    assert (single.meter_id, single.list_id, single.timestamp) == (None, None, None)


def test_notification_time_and_meter_zone() -> None:
    body = axdr.structure(axdr.octet_string(ObisCode(1, 0, 1, 7, 0).to_bytes()),
                          axdr.double_long_unsigned(100),
                          axdr.structure(axdr.integer(0), axdr.enum(27)))
    dn = DataNotification(long_invoke_id_and_priority=1, body=body,
                          date_time=bytes.fromhex("07E30C1001073B28FF8000FF"))
    naive = push_content(dn)
    assert naive.timestamp is None
    assert naive.readings[0] == Reading(id="0-0:1.0.0", value="2019-12-16T07:59:40")
    assert naive.readings[1] == Reading(id="1-0:1.7.0", value=100, unit="W")
    oslo = push_content(dn, meter_tz=ZoneInfo("Europe/Oslo"))
    assert oslo.timestamp == datetime(2019, 12, 16, 7, 59, 40, tzinfo=timezone(timedelta(hours=1)))
    assert oslo.readings[0].value == "2019-12-16T07:59:40+01:00"


def test_logical_device_name_ranks_first() -> None:
    body = axdr.structure(
        axdr.octet_string(ObisCode(0, 0, 96, 1, 0).to_bytes()), axdr.visible_string("SERIAL"),
        axdr.octet_string(ObisCode(0, 0, 42, 0, 0).to_bytes()), axdr.octet_string(b"KFM1234"),
    )
    assert push_content(body).meter_id == "KFM1234"
