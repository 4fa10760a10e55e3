"""The M-Bus decoder on every libmbus capture in ../shared/vectors/mbus.

``frames/*.json`` carry libmbus' own decoding: ``expected_normalized`` (values
converted to base units: Wh, m³, s …, from ``*.norm.xml``) and ``expected_raw``.  Each
record must decode to the same quantity, function, storage number, tariff, subunit
("Device"), unit and value; the mapping from libmbus' names to ours is the table below.

Where libmbus and we disagree on purpose, the case is listed in ``DIVERGENCES`` with
the reason, and the test checks *our* value instead:

* libmbus ignores most combinable VIFEs; we apply them ("per input pulse" changes the
  unit, "duration of limit exceed" makes the value a duration in seconds);
* a BCD value with A-F digits (an error marker) is arithmetic nonsense in libmbus
  (``DDEBB4DD`` → 1311041.3); we report the digits as text;
* a type F date with the IV (invalid) bit set is zeroed by libmbus; we decode it and
  flag the reading ``"invalid": true``;
* libmbus gives the fixed data structure (CI 73) in the meter's units (kWh, l); we
  scale to the base units as for variable data.

``error_frames``: each must be refused with the typed error named in ``ERRORS``;
``unsupported_frames``: none may produce a MeterFrame except the one noted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import FramingError, GatewayError
from gateway.model import MeterFrame, Reading
from gateway.protocols._events import Discarded
from gateway.protocols.mbus import MbusDecoder, decode_frame, decode_response
from gateway.protocols.mbus.app import MbusApplicationError, RecordError
from gateway.protocols.mbus.link import LongFrame

ROOT = Path(__file__).resolve().parents[3]
VECTORS = ROOT.parent / "shared" / "vectors" / "mbus" / "libmbus"
FRAMES = sorted((VECTORS / "frames").glob("*.json"))
ERROR_FRAMES = sorted((VECTORS / "error_frames").glob("*.json"))
UNSUPPORTED = sorted((VECTORS / "unsupported_frames").glob("*.json"))

QUANTITY = {
    "Energy": "energy",
    "Volume": "volume",
    "Mass": "mass",
    "On time": "on_time",
    "Operating time": "operating_time",
    "Power": "power",
    "Volume flow": "volume_flow",
    "Mass flow": "mass_flow",
    "Flow temperature": "flow_temperature",
    "Return temperature": "return_temperature",
    "Temperature difference": "temperature_difference",
    "External temperature": "external_temperature",
    "Pressure": "pressure",
    "Time point (date)": "date",
    "Time point (date & time)": "datetime",
    "H.C.A.": "hca",
    "Averaging Duration": "averaging_duration",
    "Actuality Duration": "actuality_duration",
    "Fabrication No": "fabrication_number",
    "Manufacturer specific": "manufacturer_specific",
    "Error flags": "error_flags",
    "Digital Input": "digital_input",
    "Digital Output": "digital_output",
    "Firmware version": "firmware_version",
    "Software version": "software_version",
    "Model / Version": "model_version",
    "Parameter set identification": "parameter_set_id",
    "Customer location": "customer_location",
    "Reset counter": "reset_counter",
    "Special supplier information": "special_supplier_information",
    "Voltage": "voltage",
    "Current": "current",
    "Dimensionless": "dimensionless",
}
FUNCTION = {
    "Instantaneous value": "instantaneous",
    "Maximum value": "max",
    "Minimum value": "min",
    "Value during error state": "error",
}
UNIT = {"m^3": "m³", "m^3/h": "m³/h", "": None, "-": None, "Units for H.C.A.": None}

# (file, reading id) -> what we decode instead, and why (see the module docstring)
DIVERGENCES: dict[tuple[str, str], dict[str, Any]] = {
    ("EFE_Engelmann-Elster-SensoStar-2", "volume_per_input_pulse_0"): {"unit": "m³/pulse"},
    ("EFE_Engelmann-WaterStar", "volume_per_input_pulse_0"): {"unit": "m³/pulse"},
    ("ELS_Elster-F96-Plus", "power_error"): {"value": "DDDDEBBD"},
    ("ELS_Elster-F96-Plus", "volume_flow_error"): {"value": "DDEBBD"},
    ("abb_f95", "power_error"): {"value": "DDEBB4DD"},
    ("abb_f95", "volume_flow_error"): {"value": "EBB4DD"},
    ("REL-Relay-Padpuls2", "datetime"): {"value": "2015-07-09T21:33:00", "invalid": True},
    ("SEN_Pollustat", "volume_flow_lower_limit_first_duration"): {"unit": "s"},
    ("SEN_Pollustat", "volume_flow_upper_limit_first_duration"): {"unit": "s"},
}
# libmbus leaves the fixed data structure unscaled: (unit, factor to our base unit)
FIXED_UNITS = {"kWh": ("Wh", 1000), "l": ("m³", 0.001), "reserved but historic": ("m³", 0.001)}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def decode_all(data: bytes) -> list[MeterFrame | Discarded]:
    dec = MbusDecoder()
    return dec.feed(data) + dec.feed_eof()


def the_frame(data: bytes) -> MeterFrame:
    events = decode_all(data)
    assert len(events) == 1 and isinstance(events[0], MeterFrame), events
    return events[0]


def test_every_capture_is_covered() -> None:
    assert len(FRAMES) >= 60 and len(ERROR_FRAMES) >= 20 and len(UNSUPPORTED) >= 7


def _is_record(r: dict[str, Any]) -> bool:
    return len(r) > 1 and r.get("Function") not in ("More records follow", "Manufacturer specific")


def _same_number(expected: str, got: object) -> bool:
    assert isinstance(got, (int, float)) and not isinstance(got, bool), got
    return math.isclose(float(expected), got, rel_tol=1e-6, abs_tol=5e-7)


@pytest.mark.parametrize("path", FRAMES, ids=lambda p: p.stem)
def test_frame_decodes_to_libmbus_values(path: Path) -> None:
    case = load(path)
    frame = the_frame(bytes.fromhex(case["frame_hex"]))
    expected = case["expected_normalized"]
    info = expected["slave_information"]
    assert frame.protocol == "mbus" and frame.checksum_ok is True
    readings = [r for r in frame.readings if r.id != "manufacturer_data"]
    records = expected["records"]
    # libmbus puts manufacturer data (DIF 0F/1F) in a last pseudo-record
    mfr = [r["Value"] for r in records if len(r) > 1 and not _is_record(r) and r["Value"]]
    ours_mfr = [r.value for r in frame.readings if r.id == "manufacturer_data"]
    assert ours_mfr == mfr
    data_records = [r for r in records if len(r) <= 1 or _is_record(r)]
    assert len(readings) == len(data_records)
    for got, exp in zip(readings, data_records, strict=True):
        if len(exp) <= 1:
            # sen_pollutherm: VIF 7B without extension bit; libmbus prints an empty record
            assert dict(got.extra)["quantity"] == "reserved_vif7b"
            continue
        check_record(path.stem, got, exp)
    if "Manufacturer" in info:  # variable data: meter id = secondary address
        ident = frame.meter_id
        assert ident is not None
        digits, man, version, _medium = ident.split("-", 3)
        assert int(digits, 16) == int(info["Id"], 16)
        assert man == info["Manufacturer"] and int(version, 16) == int(info["Version"])
        assert frame.header.startswith(info["Manufacturer"] + " M-Bus ")


def check_record(name: str, got: Reading, exp: dict[str, Any]) -> None:
    extra = dict(got.extra)
    divergence = DIVERGENCES.get((name, got.id), {})
    if "Quantity" not in exp:  # fixed data structure (libmbus: unscaled)
        unit, factor = FIXED_UNITS[exp["Unit"]]
        assert got.unit == unit
        assert _same_number(str(float(exp["Value"]) * factor), got.value)
        return
    quantity = QUANTITY.get(exp["Quantity"])
    if quantity is None and exp["Quantity"] == "Reserved":
        assert str(extra["quantity"]).startswith("reserved_")
    elif quantity is None:  # a plain-text VIF: libmbus shows the text as the quantity
        assert extra["quantity"] == "plain_text" and got.unit == exp["Quantity"]
    else:
        assert extra["quantity"] == quantity, got
    assert extra["function"] == FUNCTION[exp["Function"]]
    assert extra["storage"] == int(exp["StorageNumber"])
    assert extra["tariff"] == int(exp.get("Tariff", 0))
    assert extra["subunit"] == int(exp.get("Device", 0))
    if quantity is not None and exp["Unit"] != "Reserved":
        assert got.unit == divergence.get("unit", UNIT.get(exp["Unit"], exp["Unit"]))
    if "value" in divergence:
        assert got.value == divergence["value"]
        assert extra.get("invalid", False) is divergence.get("invalid", False)
        return
    try:
        float(exp["Value"])
    except ValueError:  # text: dates, strings, binary
        assert got.value == exp["Value"].removesuffix("Z"), got
    else:
        assert _same_number(exp["Value"], got.value), (got, exp["Value"])


def test_reading_json_has_the_issue_shape() -> None:
    frame = the_frame(bytes.fromhex(load(VECTORS / "frames" / "frame2.json")["frame_hex"]))
    assert frame.to_json()["meter_id"] == "12345678-PAD-01-water"
    assert [r.to_json() for r in frame.readings] == [
        {"id": "volume", "value": 12.565, "unit": "m³", "quantity": "volume",
         "function": "instantaneous", "storage": 0, "tariff": 0, "subunit": 0},
        {"id": "volume_flow_max_s5", "value": 0.113, "unit": "m³/h", "quantity": "volume_flow",
         "function": "max", "storage": 5, "tariff": 0, "subunit": 0},
        {"id": "energy_t2_u1", "value": 218370, "unit": "Wh", "quantity": "energy",
         "function": "instantaneous", "storage": 0, "tariff": 2, "subunit": 1},
    ]  # fmt: skip


def test_duplicate_codings_get_numbered_ids() -> None:
    frame = the_frame(bytes.fromhex(load(VECTORS / "frames" / "eastron_sdm630.json")["frame_hex"]))
    ids = [r.id for r in frame.readings]
    assert ids[:6] == ["voltage", "voltage_2", "voltage_3", "voltage_4", "voltage_5", "voltage_6"]
    assert len(set(ids)) == len(ids)


# ------------------------------------------------------------ error frames
ERRORS: dict[str, tuple[type[GatewayError], str | int | None]] = {
    "application_busy": (MbusApplicationError, 0x08),
    "buffer_too_long": (MbusApplicationError, 0x02),
    "error": (MbusApplicationError, None),
    "premature_end_of_record": (MbusApplicationError, 0x04),
    "too_many_difes": (MbusApplicationError, 0x05),
    "too_many_readouts": (MbusApplicationError, 0x09),
    "too_many_records": (MbusApplicationError, 0x03),
    "too_many_vifes": (MbusApplicationError, 0x06),
    "unimplemented_ci": (MbusApplicationError, 0x01),
    "unspecified_error": (MbusApplicationError, 0x00),
    "premature_end_of_data1": (RecordError, "premature_end"),
    "premature_end_of_data2": (RecordError, "premature_end"),
    "premature_end_of_dif1": (RecordError, "premature_end"),
    "premature_end_of_dif2": (RecordError, "premature_end"),
    "premature_end_of_var_vif1": (RecordError, "premature_end"),
    "premature_end_of_vif1": (RecordError, "premature_end"),
    "too_long_var_vif": (RecordError, "premature_end"),
    "too_many_dife": (RecordError, "too_many_dife"),
    "too_many_vife": (RecordError, "too_many_vife"),
    "too_short_header": (RecordError, "short_header"),
}


@pytest.mark.parametrize("path", ERROR_FRAMES, ids=lambda p: p.stem)
def test_error_frame_is_refused_with_a_typed_error(path: Path) -> None:
    case = load(path)
    data = bytes.fromhex(case["frame_hex"])
    cls, detail = ERRORS[path.stem]
    frame = decode_frame(data)
    assert isinstance(frame, LongFrame)
    with pytest.raises(cls) as info:
        decode_response(frame.ci, frame.data, offset=7)
    err = info.value
    if isinstance(err, MbusApplicationError):
        assert err.code == detail
        expected_text = case.get("expected_raw", {}).get("slave_information", {}).get("Error")
        if expected_text:  # libmbus' wording, ours in lower case ("More than 10 DIFE´s")
            assert expected_text.lower().replace("´", "").split()[0] in err.text.lower()
    else:
        assert isinstance(err, RecordError) and err.kind == detail
        assert 7 <= err.offset <= len(data)
    # the stream decoder reports it as a Discarded event carrying the same error type
    (event,) = decode_all(data)
    assert isinstance(event, Discarded) and isinstance(event.error, cls) and event.offset == 0


def test_record_error_offset_points_into_the_stream() -> None:
    data = bytes.fromhex(load(VECTORS / "error_frames" / "too_many_dife.json")["frame_hex"])
    (event,) = decode_all(b"\x00\x00\x00" + data)[-1:]
    assert isinstance(event, Discarded) and isinstance(event.error, RecordError)
    # the 11th DIFE: 3 (prefix) + 4 (68 L L 68) + 3 (C A CI) + 12 (header) + two 5-byte
    # records + the DIF + 10 DIFEs before it
    assert event.error.offset == 3 + 4 + 3 + 12 + 5 + 5 + 1 + 10
    assert event.offset == 3


@pytest.mark.parametrize("path", UNSUPPORTED, ids=lambda p: p.stem)
def test_unsupported_frame_gives_no_reading(path: Path) -> None:
    text = load(path)["frame_hex"]
    data = bytes.fromhex(text[: len(text) // 2 * 2])  # manual_frame1 has an odd digit count
    events = decode_all(data)
    frames = [e for e in events if isinstance(e, MeterFrame)]
    if path.stem == "svm_f22_telegram2":
        # A well-formed RSP_UD whose only content is manufacturer data after DIF 1F
        # ("more records follow"); libmbus files it as unsupported, we read it as such.
        (frame,) = frames
        assert [r.id for r in frame.readings] == ["manufacturer_data"]
        return
    assert frames == []
    if path.stem.startswith("invalid_length"):
        (event,) = [e for e in events if isinstance(e, Discarded)]
        assert isinstance(event.error, FramingError)
    if path.stem.startswith("manual_frame") and path.stem != "manual_frame1":
        frame = decode_frame(data)  # master-to-slave SND_UD (set address): not a response
        assert isinstance(frame, LongFrame) and frame.from_master
