"""Price / DR message schema and Ed25519 signatures (pure; see gateway/signals)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import SignalError
from gateway.signals.messages import decode_json, parse_dr, parse_price
from gateway.signals.signing import (
    Verifier,
    canonical,
    load_public_key,
    public_key_text,
    sign,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def code(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(SignalError) as exc:
        fn(*args, **kw)  # type: ignore[operator]
    return exc.value.code


# ------------------------------------------------------------------ schema
def test_price_defaults_and_offsets() -> None:
    p = parse_price({"price": 0.31, "tier": 2, "start": "2026-11-22T18:00:00+01:00"}, now=NOW,
                    source="mqtt")
    assert p.price_per_kwh == 0.31 and p.tier == 2 and p.currency == "EUR"
    assert p.start == datetime(2026, 11, 22, 17, 0, tzinfo=UTC)
    assert p.end - p.start == timedelta(days=1) and p.source == "mqtt"
    assert parse_price({"price": -0.05}, now=NOW).start == NOW  # negative prices happen


@pytest.mark.parametrize("msg, why", [
    ({}, "price: required"),
    ({"price": "0.3"}, "price: expected a number"),
    ({"price": True}, "price: expected a number"),
    ({"price": 0.3, "tier": 0}, "tier"),
    ({"price": 0.3, "currency": "euro"}, "currency"),
    ({"price": 0.3, "start": "2026-11-22T18:00:00"}, "UTC offset"),
    ({"price": 0.3, "start": "2026-11-22T18:00Z", "end": "2026-11-22T17:00Z"}, "after start"),
    ({"price": 0.3, "end": "2026-12-22T17:00Z"}, "7 days"),
    ({"price": 0.3, "prize": 1}, "unknown key(s): prize"),
    ({"price": 10**400}, "price: expected a number from"),
])
def test_price_refusals_name_the_key(msg: dict[str, object], why: str) -> None:
    with pytest.raises(SignalError, match=re.escape(why)) as exc:
        parse_price(msg, now=NOW)
    assert exc.value.code == "schema"


def test_dr_event_fields_cancel_and_supersede() -> None:
    e = parse_dr({"event_id": "evt-1", "duration_s": 1800, "criticality": 7,
                  "load_classes": ["ev", "water_heater"], "duty_cycle_pct": 50,
                  "randomize_start_s": 120, "supersedes": ["evt-0"], "issuer": "dso"},
                 now=NOW, source="mqtt")
    assert (e.start, e.end) == (NOW, NOW + timedelta(minutes=30))
    assert e.criticality == 7 and e.level == 7 and e.load_classes == ("ev", "water_heater")
    assert e.duty_cycle_pct == 50 and e.randomize_start_s == 120 and e.supersedes == ("evt-0",)
    assert e.issuer == "dso" and not e.cancelled
    c = parse_dr({"event_id": "evt-1", "cancel": True}, now=NOW)
    assert c.cancelled and c.end - c.start == timedelta(hours=1)
    assert code(parse_dr, {"event_id": "e", "end": "2026-11-22T13:00Z", "duration_s": 5},
                now=NOW) == "schema"
    assert code(parse_dr, {"event_id": "a/b"}, now=NOW) == "schema"
    assert code(parse_dr, {"event_id": "e", "load_classes": ["EV!"]}, now=NOW) == "schema"


def test_decode_json_refuses_non_objects_nan_and_huge() -> None:
    assert code(decode_json, b"[1]") == "malformed"
    assert code(decode_json, b'{"price": NaN}') == "malformed"
    assert code(decode_json, b"\xff") == "malformed"
    assert code(decode_json, b"{" + b" " * 20000 + b"}") == "malformed"
    assert decode_json(b'{"price": 1}') == {"price": 1}


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_signal_error(data: bytes) -> None:
    for parse in (parse_price, parse_dr):
        try:
            parse(decode_json(data), now=NOW)
        except SignalError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=8)


@given(st.dictionaries(st.sampled_from(["price", "tier", "start", "end", "currency", "event_id",
                                        "criticality", "duration_s", "load_classes", "cancel",
                                        "supersedes", "level", "signature", "seq"]),
                       json_values, max_size=6))
def test_arbitrary_objects_only_ever_raise_signal_error(obj: dict[str, object]) -> None:
    for parse in (parse_price, parse_dr):
        try:
            parse(obj, now=NOW)
        except SignalError:
            pass


# --------------------------------------------------------------- signatures
KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


def verifier(require: bool = True) -> Verifier:
    return Verifier({"dso": KEY.public_key()}, require=require)


def test_canonical_json_is_order_and_space_independent() -> None:
    a = canonical({"b": 1, "a": "é", "signature": "x"})
    assert a == canonical(json.loads(' { "a" : "é", "b": 1 } ')) == '{"a":"é","b":1}'.encode()


def test_signed_message_verifies_and_any_change_breaks_it() -> None:
    msg = sign({"price": 0.3}, KEY, key_id="dso", seq=5, expires=NOW + timedelta(hours=1))
    assert verifier().check(msg, now=NOW, last_seq={}) is not None
    for key, value in (("price", 0.31), ("seq", 6), ("expires", "2026-11-22T14:00:00Z")):
        assert code(verifier().check, {**msg, key: value}, now=NOW, last_seq={}) == "bad_signature"


def test_refusals_each_have_their_code() -> None:
    exp = NOW + timedelta(hours=1)
    v = verifier()
    assert code(v.check, {"price": 0.3}, now=NOW, last_seq={}) == "unsigned"
    assert verifier(require=False).check({"price": 0.3}, now=NOW, last_seq={}) is None
    foreign = sign({"price": 0.3}, OTHER, key_id="dso", seq=1, expires=exp)
    assert code(v.check, foreign, now=NOW, last_seq={}) == "bad_signature"
    # a signed message is checked even when signatures are optional
    assert code(verifier(require=False).check, foreign, now=NOW, last_seq={}) == "bad_signature"
    unknown = sign({"price": 0.3}, OTHER, key_id="mallory", seq=1, expires=exp)
    assert code(v.check, unknown, now=NOW, last_seq={}) == "unknown_key"
    ok = sign({"price": 0.3}, KEY, key_id="dso", seq=7, expires=exp)
    assert code(v.check, ok, now=NOW, last_seq={"dso": 7}) == "replayed"
    assert code(v.check, ok, now=NOW, last_seq={"dso": 9}) == "replayed"
    assert v.check(ok, now=NOW, last_seq={"dso": 6}) is not None
    assert code(v.check, ok, now=exp, last_seq={}) == "expired"
    far = sign({"price": 0.3}, KEY, key_id="dso", seq=8, expires=NOW + timedelta(days=3))
    assert code(v.check, far, now=NOW, last_seq={}) == "expired"
    assert code(v.check, {**ok, "seq": "7"}, now=NOW, last_seq={}) == "bad_signature"


def test_public_key_from_base64_or_pem(tmp_path: Path) -> None:
    pub = KEY.public_key()
    assert load_public_key(public_key_text(pub)) == pub
    pem = tmp_path / "dso.pem"
    pem.write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    assert load_public_key("dso.pem", base_dir=tmp_path) == pub
    with pytest.raises(ValueError, match="32-byte Ed25519"):
        load_public_key("nope.pem", base_dir=tmp_path)
