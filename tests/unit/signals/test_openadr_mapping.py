"""The OpenADR VEN's pure parts: event mapping, opt policy, reported values, config."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.errors import SignalError
from gateway.model import MeterFrame, Snapshot
from gateway.protocols.dsmr import DsmrDecoder
from gateway.signals.openadr import (
    SIMPLE_TO_CRITICALITY,
    OpenAdrConfig,
    criticality_from_simple,
    map_event,
    meter_values,
    opt_for,
    resource_class,
    simple_level,
)
from gateway.sim.dsmr import DsmrSimulator

START = datetime(2026, 11, 22, 17, 0, tzinfo=UTC)


def event(*, level: float = 2.0, duration: timedelta = timedelta(minutes=30),
          status: str = "far", modification: int = 0, targets: list[dict[str, Any]] | None = None,
          tolerance: dict[str, Any] | None = None, signals: list[dict[str, Any]] | None = None,
          test_event: bool = False) -> dict[str, Any]:
    """An event dict shaped as openleadr hands it to ``on_event`` (seen on the wire)."""
    period: dict[str, Any] = {"dtstart": START, "duration": duration}
    if tolerance is not None:
        period["tolerance"] = tolerance
    if targets is None:
        targets = [{"ven_id": "ven1"}]
    by_type: dict[str, list[str]] = {}
    for t in targets:
        for k, v in t.items():
            by_type.setdefault(k, []).append(v)
    return {
        "active_period": period,
        "event_descriptor": {"event_id": "ev1", "event_status": status,
                             "modification_number": modification, "market_context": "oadr://x",
                             "priority": 0, "test_event": test_event,
                             "created_date_time": START - timedelta(hours=1)},
        "event_signals": signals if signals is not None else [{
            "current_value": 0.0, "signal_id": "s1", "signal_name": "SIMPLE",
            "signal_type": "level",
            "intervals": [{"dtstart": START, "duration": duration, "signal_payload": level,
                           "uid": 0}],
        }],
        "response_required": "always",
        "targets": targets,
        "targets_by_type": by_type,
    }


# ------------------------------------------------------------------ levels
def test_simple_levels_map_onto_drlc_criticality() -> None:
    assert [criticality_from_simple(x) for x in (0, 1, 2, 3)] == [1, 3, 5, 7]
    assert criticality_from_simple(2.4) == 5  # rounded
    assert criticality_from_simple(-1) == 1 and criticality_from_simple(12) == 7  # clamped


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_level_gives_a_valid_criticality(x: float) -> None:
    c = criticality_from_simple(x)
    assert 1 <= c <= 9
    assert c == SIMPLE_TO_CRITICALITY[simple_level(x)]


@given(st.floats(allow_nan=False, allow_infinity=False),
       st.floats(allow_nan=False, allow_infinity=False))
def test_criticality_never_falls_as_the_level_rises(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert criticality_from_simple(lo) <= criticality_from_simple(hi)


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf])
def test_a_non_finite_level_is_refused(x: float) -> None:
    with pytest.raises(ValueError):
        criticality_from_simple(x)
    with pytest.raises(SignalError):
        map_event(event(level=x), issuer="VTN")


# ------------------------------------------------------------------ events
def test_an_event_maps_onto_the_model() -> None:
    dr = map_event(event(level=2, targets=[{"ven_id": "ven1"}, {"resource_id": "boiler"}],
                         tolerance={"tolerate": {"startafter": timedelta(minutes=2)}}),
                   issuer="VTN-1")
    assert dr.event_id == "ev1"
    assert dr.issuer == "VTN-1" and dr.source == "openadr"
    assert (dr.start, dr.end) == (START, START + timedelta(minutes=30))
    assert (dr.level, dr.criticality) == (2, 5)
    assert dr.load_classes == ("boiler",)
    assert (dr.randomize_start_s, dr.randomize_end_s) == (120.0, 120.0)
    assert not dr.cancelled and dr.supersedes == ()


@given(level=st.floats(allow_nan=False, allow_infinity=False),
       seconds=st.integers(min_value=0, max_value=7 * 86400),
       startafter=st.integers(min_value=0, max_value=3600))
def test_mapping_keeps_start_duration_and_level(level: float, seconds: int,
                                                startafter: int) -> None:
    dr = map_event(event(level=level, duration=timedelta(seconds=seconds),
                         tolerance={"tolerate": {"startafter": timedelta(seconds=startafter)}}),
                   issuer="VTN", open_ended_s=600.0)
    assert dr.start == START
    assert dr.duration_s == (seconds if seconds else 600.0)
    assert dr.level == simple_level(level)
    assert dr.criticality == criticality_from_simple(level)
    assert dr.randomize_start_s == startafter


def test_the_strongest_interval_sets_the_level() -> None:
    sig = {"signal_name": "SIMPLE", "signal_type": "level", "signal_id": "s", "intervals": [
        {"dtstart": START, "duration": timedelta(minutes=10), "signal_payload": 1.0, "uid": 0},
        {"dtstart": START + timedelta(minutes=10), "duration": timedelta(minutes=10),
         "signal_payload": 3.0, "uid": 1},
    ]}
    assert map_event(event(signals=[sig]), issuer="V").criticality == 7


def test_cancel_and_modification() -> None:
    cancelled = map_event(event(status="cancelled", modification=1), issuer="V")
    assert cancelled.cancelled and cancelled.supersedes == ()
    modified = map_event(event(modification=2), issuer="V")
    assert not modified.cancelled and modified.supersedes == ("ev1",)


def test_load_control_signals() -> None:
    sigs = [
        {"signal_name": "LOAD_CONTROL", "signal_type": "x-loadControlPercentOffset",
         "signal_id": "a", "intervals": [{"dtstart": START, "duration": timedelta(hours=1),
                                          "signal_payload": -30.0, "uid": 0}]},
        {"signal_name": "LOAD_CONTROL", "signal_type": "x-loadControlCapacity", "signal_id": "b",
         "intervals": [{"dtstart": START, "duration": timedelta(hours=1), "signal_payload": 0.5,
                        "uid": 0}]},
    ]
    dr = map_event(event(signals=sigs), issuer="V")
    assert (dr.load_adjustment_pct, dr.duty_cycle_pct) == (-30.0, 50.0)
    assert (dr.criticality, dr.level) == (3, 0)


def test_an_event_without_a_usable_signal_is_refused() -> None:
    price = [{"signal_name": "ELECTRICITY_PRICE", "signal_type": "price", "signal_id": "p",
              "intervals": [{"dtstart": START, "duration": timedelta(hours=1),
                             "signal_payload": 0.3, "uid": 0}]}]
    with pytest.raises(SignalError, match="no SIMPLE or LOAD_CONTROL"):
        map_event(event(signals=price), issuer="V")
    bad = event()
    del bad["event_descriptor"]["event_id"]
    with pytest.raises(SignalError, match="eventID"):
        map_event(bad, issuer="V")


def test_resource_ids_become_load_classes() -> None:
    assert resource_class("Boiler-1", {}) == "boiler_1"
    assert resource_class("42", {}) == "r_42"
    assert resource_class("EVSE-7", {"EVSE-7": "ev"}) == "ev"
    dr = map_event(event(targets=[{"resource_id": "EVSE-7"}, {"resource_id": "Pool Pump"}]),
                   issuer="V", resource_classes={"EVSE-7": "ev"})
    assert dr.load_classes == ("ev", "pool_pump")


# ------------------------------------------------------------------ opting
def test_opt_policy() -> None:
    base = map_event(event(level=3, targets=[{"resource_id": "pool"}]), issuer="V")
    assert opt_for(base)[0] == "optIn"
    assert opt_for(base, max_criticality=5) == (
        "optOut", "criticality 7 above max_criticality 5")
    assert opt_for(base, load_classes=("ev",))[0] == "optOut"
    assert opt_for(base, load_classes=("ev", "pool"))[0] == "optIn"
    everyone = map_event(event(level=1), issuer="V")  # no resource target: every load
    assert opt_for(everyone, load_classes=("ev",))[0] == "optIn"


# ------------------------------------------------------------------ reports
def dsmr_snapshot() -> Snapshot:
    sim = DsmrSimulator("dsmr5", seed=3)
    now = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
    sim.telegram(now - timedelta(seconds=1))
    frames = [e for e in DsmrDecoder().feed(sim.telegram(now)) if isinstance(e, MeterFrame)]
    assert len(frames) == 1
    f = frames[0]
    return Snapshot(meter="main", protocol="dsmr", device_id=f.meter_id,
                    timestamp=f.timestamp or now, received=now, readings=f.readings)


def test_reported_values_come_from_the_dsmr_registers() -> None:
    snap = dsmr_snapshot()
    power = snap.reading("1-0:1.7.0")
    t1, t2 = snap.reading("1-0:1.8.1"), snap.reading("1-0:1.8.2")
    assert power is not None and power.unit == "kW"
    assert t1 is not None and t2 is not None and t1.unit == "kWh"
    values = meter_values(snap)
    assert values["power"] == pytest.approx(float(power.value) * 1000.0)
    assert values["energy"] == pytest.approx((float(t1.value) + float(t2.value)) * 1000.0)


def test_nothing_is_reported_from_a_snapshot_without_the_readings() -> None:
    snap = Snapshot(meter="m", protocol="x", device_id=None, timestamp=START, received=START,
                    readings=())
    assert meter_values(snap) == {}


# ------------------------------------------------------------------ config
def test_config_defaults_are_secure(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="insecure_http"):
        OpenAdrConfig(vtn_url="http://127.0.0.1:8080/OpenADR2/Simple/2.0b", ven_name="v")
    cfg = OpenAdrConfig(vtn_url="http://127.0.0.1:8080/OpenADR2/Simple/2.0b/", ven_name="v",
                        insecure_http=True)
    assert cfg.vtn_url.endswith("/2.0b") and cfg.sign_messages and cfg.check_hostname
    with pytest.raises(ValidationError, match="extra"):
        OpenAdrConfig(vtn_url="https://vtn/", ven_name="v", pasword="x")  # type: ignore[call-arg]
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ValidationError, match="go together"):
        OpenAdrConfig(vtn_url="https://vtn/", ven_name="v", cert_file=cert)
    with pytest.raises(ValidationError, match="needs ca_file"):
        OpenAdrConfig(vtn_url="https://vtn/", ven_name="v", cert_file=cert, key_file=cert)
    with pytest.raises(ValidationError, match="no such file"):
        OpenAdrConfig(vtn_url="https://vtn/", ven_name="v", cert_file=cert, key_file=cert,
                      ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValidationError, match="ftp"):
        OpenAdrConfig(vtn_url="ftp://vtn/", ven_name="v")


def test_relative_certificate_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    for name in ("ven.pem", "ven.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    data = {"vtn_url": "https://vtn/", "ven_name": "v", "cert_file": "ven.pem",
            "key_file": "ven.key", "ca_file": "ca.pem"}
    cfg = OpenAdrConfig.model_validate(data, context={"base_dir": tmp_path})
    assert cfg.cert_file == tmp_path / "ven.pem" and cfg.ca_file == tmp_path / "ca.pem"
    with pytest.raises(ValidationError, match="no such file"):
        OpenAdrConfig.model_validate(data, context={"base_dir": tmp_path / "elsewhere"})


@pytest.mark.parametrize(("seconds", "ok"), [(1, True), (15, True), (7, False), (60, True),
                                             (90, False), (900, True), (3600, True),
                                             (5400, False), (86400, True)])
def test_report_intervals_fit_openleadrs_cron_schedule(seconds: int, ok: bool) -> None:
    def make() -> OpenAdrConfig:
        return OpenAdrConfig(vtn_url="https://vtn/", ven_name="v", report_interval_s=seconds)

    if ok:
        assert make().report_interval_s == seconds
    else:
        with pytest.raises(ValidationError, match="divide"):
            make()


def test_the_vtn_fingerprint_is_compared_in_openleadrs_spelling() -> None:
    cfg = OpenAdrConfig(vtn_url="https://vtn/", ven_name="v",
                        vtn_fingerprint="ab:cd:ef:01:23:45:67:89:ab:cd")
    assert cfg.vtn_fingerprint == "AB:CD:EF:01:23:45:67:89:AB:CD"
    with pytest.raises(ValidationError):
        OpenAdrConfig(vtn_url="https://vtn/", ven_name="v", vtn_fingerprint="AB:CD")


def test_the_passphrase_never_shows() -> None:
    cfg = OpenAdrConfig.model_validate(
        {"vtn_url": "https://vtn/", "ven_name": "v", "key_passphrase": "hunter2"})
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.model_dump())


def test_price_signals_one_per_interval_with_currency_and_skips() -> None:
    from datetime import UTC, datetime, timedelta

    from gateway.errors import SignalError
    from gateway.signals.openadr import map_prices

    start = datetime(2026, 11, 22, 17, 0, tzinfo=UTC)

    def event(*signals: dict[str, object]) -> dict[str, object]:
        return {"event_descriptor": {"event_id": "p"},
                "active_period": {"dtstart": start, "duration": timedelta(hours=2)},
                "event_signals": list(signals)}

    hourly = {"signal_name": "ELECTRICITY_PRICE", "signal_type": "price",
              "intervals": [{"duration": timedelta(hours=1), "signal_payload": 0.3},
                            {"duration": timedelta(hours=1), "signal_payload": 0.1}]}
    got = map_prices(event(hourly), default_currency="SEK")
    assert [(p.start, p.end, p.price_per_kwh, p.currency) for p in got] == [
        (start, start + timedelta(hours=1), 0.3, "SEK"),
        (start + timedelta(hours=1), start + timedelta(hours=2), 0.1, "SEK")]
    with_unit = {**hourly, "measurement": {"name": "currencyPerKWh", "unit": "eur"}}
    assert {p.currency for p in map_prices(event(with_unit))} == {"EUR"}
    relative = {**hourly, "signal_type": "priceRelative"}
    simple = {"signal_name": "SIMPLE", "signal_type": "level",
              "intervals": [{"duration": timedelta(hours=1), "signal_payload": 1}]}
    assert map_prices(event(relative, simple)) == []
    broken = {**hourly, "intervals": [{"duration": timedelta(0), "signal_payload": 0.3}]}
    with pytest.raises(SignalError, match="without a duration"):
        map_prices(event(broken))
    nan = {**hourly, "intervals": [{"duration": timedelta(hours=1), "signal_payload": "x"}]}
    with pytest.raises(SignalError, match="expected a number"):
        map_prices(event(nan))
