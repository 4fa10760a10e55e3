"""MQTT control payloads: override parsing and what actuators receive."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.mqtt.control import actuator_payload, load_state_json, parse_override
from adapters.mqtt.discovery import Topics
from gateway.model import LoadAction, LoadCommand, LoadState


@pytest.mark.parametrize("payload, mode, duration, limit", [
    (b"ON", "on", None, None), (b" off\n", "off", None, None), (b"Auto", "auto", None, None),
    (b'{"mode": "off", "duration_s": 900}', "off", 900.0, None),
    (b'{"state": "ON"}', "on", None, None),
    (b'{"mode": "limit", "limit_w": 1500}', "limit", None, 1500.0),
])
def test_override_payloads(payload: bytes, mode: str, duration: float | None,
                           limit: float | None) -> None:
    ov = parse_override(payload)
    assert (ov.mode, ov.duration_s, ov.limit_w) == (mode, duration, limit)


@pytest.mark.parametrize("payload, why", [
    (b"LIMIT", "expected ON, OFF, AUTO"), (b"1", "expected ON, OFF, AUTO"),
    (b'{"mode": "dim"}', "mode"), (b'{"mode": "limit"}', "limit_w"),
    (b'{"mode": "off", "duration_s": 0}', "duration_s"),
    (b'{"mode": "off", "duration_s": true}', "duration_s"),
    (b'{"mode": "off", "until": 5}', "unknown key"), (b"\xff", "UTF-8"),
])
def test_override_refusals(payload: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_override(payload)


@given(st.binary(max_size=200))
def test_override_parser_never_crashes(data: bytes) -> None:
    try:
        parse_override(data)
    except ValueError:
        pass


def test_actuator_payloads() -> None:
    t = datetime(2026, 11, 22, 12, tzinfo=UTC)
    shed = LoadCommand(load="boiler", action=LoadAction.SHED, reason="peak", rule="cap", until=t)
    limit = LoadCommand(load="ev", action=LoadAction.LIMIT, reason="solar", limit_w=3680.4)
    assert actuator_payload(shed, on="ON", off="OFF", as_json=False) == "OFF"
    assert actuator_payload(limit, on="ON", off="OFF", as_json=False) == "3680"
    assert actuator_payload(shed, on="1", off="0", as_json=True) == (
        '{"state":"0","limit_w":null,"load":"boiler","rule":"cap","reason":"peak",'
        '"until":"2026-11-22T12:00:00Z"}')
    st_json = load_state_json(LoadState(load="boiler", on=False, since=t, reason="peak",
                                        rule="cap", until=t))
    assert '"state":"OFF"' in st_json and '"until":"2026-11-22T12:00:00Z"' in st_json


def test_load_set_topics() -> None:
    t = Topics(base="han", gateway="home")
    assert t.load_from_set_topic("han/home/load/boiler/set") == "boiler"
    assert t.load_from_set_topic("han/home/load/a/b/set") is None
    assert t.load_from_set_topic("han/other/load/boiler/set") is None
    assert t.load_from_set_topic("han/home/load/boiler/state") is None
    assert (t.price_set, t.dr_set, t.error) == ("han/home/price/set", "han/home/dr/set",
                                                "han/home/error")
