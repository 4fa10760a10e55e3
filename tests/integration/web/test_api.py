"""/api, /metrics and the access rules over loopback HTTP (aiohttp client against the real
server, store and bus; the rule engine's side of overrides answered on the bus)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.model import DemandResponseEvent, PriceSignal, Reading, Snapshot
from gateway.web import WebConfig, WebContext, WebServer, WebServerError

from .conftest import PASSWORD, Stack, build_stack, seed_history

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = await build_stack(tmp_path, override_timeout_s=1.0)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


def live_snapshot(power_kw: float, t1: float = 5000.0, t2: float = 4000.0) -> Snapshot:
    now = datetime.now(UTC)
    return Snapshot(meter="main", protocol="dsmr", device_id="x", timestamp=now, received=now, readings=(
        Reading(id="1-0:1.8.1", value=t1, unit="kWh"), Reading(id="1-0:1.8.2", value=t2, unit="kWh"),
        Reading(id="1-0:1.7.0", value=power_kw, unit="kW"), Reading(id="1-0:2.7.0", value=0.0, unit="kW")))


async def login(http: aiohttp.ClientSession, url: str, password: str = PASSWORD) -> tuple[int, dict[str, Any]]:
    async with http.post(url + "api/login", json={"password": password}) as r:
        return r.status, await r.json()


async def test_live_document_follows_the_bus(stack: Stack, http: aiohttp.ClientSession) -> None:
    stack.bus.publish(live_snapshot(1.234))
    now = datetime.now(UTC)
    stack.bus.publish(PriceSignal(start=now - timedelta(minutes=5), end=now + timedelta(hours=1),
                                  price_per_kwh=0.31, tier=2, source="test"))
    stack.bus.publish(DemandResponseEvent(event_id="ev1", start=now + timedelta(minutes=10),
                                          end=now + timedelta(minutes=40), target_power_w=1500.0))
    async with http.get(stack.url + "api/live") as r:
        assert r.status == 200
        doc = await r.json()
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert doc["meter"] == "main" and doc["power_import_w"] == pytest.approx(1234.0)
    assert doc["price"]["price_per_kwh"] == 0.31 and doc["price"]["current"] is True
    (ev,) = doc["dr_events"]
    assert ev["event_id"] == "ev1" and not ev["active"] and 500 < ev["starts_in_s"] <= 600
    assert [ld["name"] for ld in doc["loads"]] == ["boiler"] and doc["loads"][0]["state"] is None


async def test_event_stream_sends_live_updates(stack: Stack, http: aiohttp.ClientSession) -> None:
    stack.bus.publish(live_snapshot(0.5))
    async with http.get(stack.url + "api/events") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        seen: list[float] = []
        async with asyncio.timeout(20):
            async for line in r.content:
                if line.startswith(b"data: "):
                    import json

                    seen.append(json.loads(line[6:])["power_import_w"])
                    if len(seen) == 1:
                        stack.bus.publish(live_snapshot(2.0))
                    if 2000.0 in seen:
                        break
    assert seen[0] == 500.0 and seen[-1] == 2000.0


async def test_today_energy_and_cost(stack: Stack, http: aiohttp.ClientSession) -> None:
    now = datetime.now(UTC)
    await seed_history(stack.store, end=now, days=3)
    stack.bus.publish(live_snapshot(1.0))
    stack.bus.publish(PriceSignal(start=now - timedelta(days=2), end=now + timedelta(days=1), price_per_kwh=0.5))
    async with http.get(stack.url + "api/live") as r:
        today = (await r.json())["today"]
    midnight = datetime.combine(now.astimezone(stack.server.zone).date(), datetime.min.time(),
                                tzinfo=stack.server.zone)
    if now - midnight < timedelta(hours=1):
        pytest.skip("too close to local midnight for a stored hour of today")
    assert today["import_kwh"] > 0
    assert today["cost"] == pytest.approx(today["import_kwh"] * 0.5, rel=1e-3)


async def test_history_compares_and_exports_csv(stack: Stack, http: aiohttp.ClientSession) -> None:
    now = datetime.now(UTC)
    await seed_history(stack.store, end=now, days=380)
    stack.bus.publish(live_snapshot(1.0))
    day = (now.astimezone(stack.server.zone) - timedelta(days=2)).date()  # a whole seeded day
    q = f"period=day&date={day.isoformat()}&compare=previous"
    async with http.get(stack.url + "api/history?" + q) as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["previous_date"] == (day - timedelta(days=7)).isoformat()
    cur, prev = doc["current"], doc["previous"]
    assert len(doc["labels"]) == len(cur["import_kwh"]) == len(prev["import_kwh"]) in (23, 24, 25)
    assert all(v is not None and v > 0 for v in cur["import_kwh"] + prev["import_kwh"])
    peak = cur["peak"]
    assert peak["value"] == max(cur["import_kwh"])
    assert doc["labels"][peak["index"]] in ("18:00", "19:00", "20:00")  # the seeded evening peak
    assert doc["peak_demand"]["power_w"] > 1000
    # a year later in winter uses more than the summer: the comparison carries real values
    async with http.get(stack.url + f"api/history?period=year&date={day.isoformat()}") as r:
        year = await r.json()
    assert year["compare"] == "year" and len(year["labels"]) == 12
    assert any(v for v in year["previous"]["import_kwh"])
    async with http.get(stack.url + "api/history.csv?" + q) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in r.headers["Content-Disposition"]
        lines = (await r.text()).splitlines()
    assert lines[0] == "interval_start,import_kwh,export_kwh,previous_start,previous_import_kwh,previous_export_kwh"
    assert len(lines) == 1 + len(doc["labels"])
    first = lines[1].split(",")
    assert float(first[1]) == pytest.approx(cur["import_kwh"][0], abs=1e-6)
    assert float(first[4]) == pytest.approx(prev["import_kwh"][0], abs=1e-6)


@pytest.mark.parametrize("query", ["period=decade", "date=2026-13-01", "period=month&compare=week",
                                   "date=1900-01-01",
                                   "meter=nope", "meter=../x"])
async def test_history_rejects_bad_parameters(stack: Stack, http: aiohttp.ClientSession, query: str) -> None:
    stack.bus.publish(live_snapshot(1.0))
    async with http.get(stack.url + "api/history?" + query) as r:
        assert r.status in (400, 404)
        assert "error" in await r.json()


async def test_override_needs_login_and_csrf(stack: Stack, http: aiohttp.ClientSession) -> None:
    url = stack.url + "api/loads/boiler/override"
    async with http.post(url, json={"mode": "off"}) as r:
        assert r.status == 401
    assert stack.responder.requests == [], "nothing reaches the bus without a session"
    assert (await login(http, stack.url, "wrong password"))[0] == 401
    status, doc = await login(http, stack.url)
    assert status == 200 and doc["csrf_token"]
    cookie = next(c for c in http.cookie_jar if c.key == "hg_session")
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    async with http.post(url, json={"mode": "off"}) as r:
        assert r.status == 403, "a session without the CSRF token is refused"
    async with http.post(url, json={"mode": "off"}, headers={"X-CSRF-Token": doc["csrf_token"],
                                                             "Origin": "http://evil.example"}) as r:
        assert r.status == 403
    async with http.post(url, json={"mode": "off", "duration_s": 600},
                         headers={"X-CSRF-Token": doc["csrf_token"]}) as r:
        assert r.status == 200
        res = await r.json()
    assert res["ok"] is True
    (req,) = stack.responder.requests
    assert (req.load, req.mode, req.source, req.duration_s) == ("boiler", "off", "web", 600.0)
    assert req.request_id == res["request_id"]
    assert stack.bus.load_states["boiler"].on is False
    # an unknown load: 404 at once, without asking the rule engine
    async with http.post(stack.url + "api/loads/garage/override", json={"mode": "on"},
                         headers={"X-CSRF-Token": doc["csrf_token"]}) as r:
        assert r.status == 404
        assert "no load named" in (await r.json())["error"]
    assert len(stack.responder.requests) == 1
    # refused by the rule engine: 409 with its reason
    stack.responder.loads = ()
    async with http.post(url, json={"mode": "on"}, headers={"X-CSRF-Token": doc["csrf_token"]}) as r:
        assert r.status == 409
        assert "no load named" in (await r.json())["reason"]
    stack.responder.loads = ("boiler",)
    # no answer at all: 504
    stack.responder.silent = True
    async with http.post(url, json={"mode": "on"}, headers={"X-CSRF-Token": doc["csrf_token"]}) as r:
        assert r.status == 504
    # logged out: refused again
    async with http.post(stack.url + "api/logout") as r:
        assert r.status == 200
    async with http.post(url, json={"mode": "on"}, headers={"X-CSRF-Token": doc["csrf_token"]}) as r:
        assert r.status == 401


@pytest.mark.parametrize("body", [{"mode": "sideways"}, {"mode": "limit"}, {"mode": "on", "limit_w": 5},
                                  {"mode": "on", "duration_s": -1}, {"mode": "on", "duration_s": True}, []])
async def test_override_validates_the_body(stack: Stack, http: aiohttp.ClientSession, body: Any) -> None:
    _, doc = await login(http, stack.url)
    async with http.post(stack.url + "api/loads/boiler/override", json=body,
                         headers={"X-CSRF-Token": doc["csrf_token"]}) as r:
        assert r.status == 400
    assert stack.responder.requests == []


async def test_no_password_means_no_changes(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    s = await build_stack(tmp_path, password_hash=None)
    try:
        assert (await login(http, s.url))[0] == 403
        async with http.post(s.url + "api/loads/boiler/override", json={"mode": "off"}) as r:
            assert r.status == 403
            assert "no password" in (await r.json())["error"]
        async with http.get(s.url + "api/session") as r:
            assert (await r.json())["password_set"] is False
    finally:
        await s.close()


async def test_failed_logins_are_throttled(stack: Stack, http: aiohttp.ClientSession) -> None:
    codes = [(await login(http, stack.url, f"guess {i}"))[0] for i in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    assert (await login(http, stack.url))[0] == 429, "even the right password waits out the window"


async def test_rule_reload(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.post(stack.url + "api/rules/reload") as r:
        assert r.status == 401
    _, doc = await login(http, stack.url)
    async with http.post(stack.url + "api/rules/reload", headers={"X-CSRF-Token": doc["csrf_token"]}) as r:
        assert r.status == 200 and (await r.json())["ok"] is True


async def test_health_and_metrics(stack: Stack, http: aiohttp.ClientSession) -> None:
    stack.health["meters"]["main"].update(frames=42, errors=3, checksum_errors=2, decryption_errors=1)
    stack.bus.publish(live_snapshot(0.75))
    async with http.get(stack.url + "api/health") as r:
        doc = await r.json()
    (m,) = doc["meters"]
    assert (m["id"], m["frames"], m["checksum_errors"], m["decryption_errors"]) == ("main", 42, 2, 1)
    assert m["frames_per_minute"] == 1 and m["last_reading"] is not None
    assert doc["version"] == "0.0-test" and doc["uptime_s"] >= 0
    async with http.get(stack.url + "metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    lines = text.splitlines()
    assert 'han_meter_frames_total{meter="main"} 42.0' in lines
    assert 'han_meter_errors_total{kind="checksum",meter="main"} 2.0' in lines
    assert any(ln.startswith('han_reading{id="1-0:1.7.0",meter="main",quantity="power_import",unit="W"} 750')
               for ln in lines)
    assert any(ln.startswith("process_resident_memory_bytes ") for ln in lines)
    assert any(ln.startswith("process_cpu_seconds_total ") for ln in lines)


async def test_the_page_and_its_files(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.url) as r:
        html = await r.text()
        assert r.status == 200 and "<title>Energy at home</title>" in html
    for path in ("static/app.js", "static/app.css", "static/uPlot.iife.min.js", "static/uPlot.min.css"):
        async with http.get(stack.url + path) as r:
            assert r.status == 200, path
    assert "http://" not in html and "https://" not in html, "no external references"


async def test_start_fails_clearly_when_the_port_is_taken(tmp_path: Path, stack: Stack) -> None:
    port = int(stack.url.rsplit(":", 1)[1].strip("/"))
    server = WebServer(WebContext(
        gateway_id="t", config=WebConfig(listen=f"127.0.0.1:{port}"), bus=stack.bus, store=stack.store,
        health=dict, loads=list, reload_rules=None, version="x", started=datetime.now(UTC)))
    with pytest.raises(WebServerError, match=f"cannot listen on 127.0.0.1:{port}"):
        await server.start()
    with socket.socket() as s:  # the failed start left nothing bound
        s.bind(("127.0.0.1", 0))
    assert date.today()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "han-gateway test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "web.crt", tmp / "web.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_serves_https_with_a_secure_cookie(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    s = await build_stack(tmp_path, tls_cert=cert, tls_key=key)
    try:
        assert s.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            async with http.post(s.url + "api/login", json={"password": PASSWORD}) as r:
                assert r.status == 200
                assert "Secure" in r.headers["Set-Cookie"] and "HttpOnly" in r.headers["Set-Cookie"]
        async with aiohttp.ClientSession() as http:  # an untrusting client is refused by TLS
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(s.url + "api/live")
    finally:
        await s.close()


async def test_unreadable_tls_files_fail_clearly(tmp_path: Path, stack: Stack) -> None:
    server = WebServer(WebContext(
        gateway_id="t", config=WebConfig(listen="127.0.0.1:0", tls_cert=tmp_path / "nope.crt",
                                         tls_key=tmp_path / "nope.key"),
        bus=stack.bus, store=stack.store, health=dict, loads=list, reload_rules=None, version="x",
        started=datetime.now(UTC)))
    with pytest.raises(WebServerError, match="cannot load tls_cert/tls_key"):
        await server.start()
