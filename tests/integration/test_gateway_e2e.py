"""End to end: virtual meter on a pty → the real daemon → real mosquitto → a separate
subscriber.  Faults: broker outage, SIGKILL mid-burst, TLS and refused passwords."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(400)


def write_config(tmp: Path, *, broker_url: str, port: str, gw: str = "e2e", extra_mqtt: str = "",
                 extra_meter: str = "") -> Path:
    cfg = tmp / "gateway.toml"
    cfg.write_text(f"""
[gateway]
id = "{gw}"
data_dir = "{tmp / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "main"
protocol = "dsmr"
port = "{port}"
stale_after_s = 30
{extra_meter}

[adapter.mqtt]
url = "{broker_url}"
reconnect_min_s = 0.2
reconnect_max_s = 2
{extra_mqtt}
""")
    return cfg


def db_path(tmp: Path) -> Path:
    return tmp / "data" / "gateway.sqlite3"


def db_query(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")



def received_timestamps(sub: Any, gw: str = "e2e", meter: str = "main") -> tuple[list[datetime], list[datetime]]:
    """(state timestamps, history timestamps) in arrival order."""
    state, history = [], []
    for m in sub.messages:
        if m.topic == f"han/{gw}/meter/{meter}/state" and not m.retain:
            state.append(datetime.fromisoformat(m.json()["timestamp"]))
        elif m.topic == f"han/{gw}/meter/{meter}/history":
            history.append(datetime.fromisoformat(m.json()["timestamp"]))
    return state, history


async def push_until(meter: Any, cond: Any, *, interval: float, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        meter.push()
        await asyncio.sleep(interval)
        if cond():
            return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def test_meter_to_broker_to_subscriber_with_discovery(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    sub = mqtt_subscriber(mosquitto, "han/#", "homeassistant/#")
    meter = meter_factory()
    gw = gateway_factory(write_config(tmp_path, broker_url=mosquitto.url, port=str(tmp_path / "p1")))
    state_topic = "han/e2e/meter/main/state"

    def live_states() -> list[Any]:
        # the session's broker may hold retained states of earlier tests' gateways
        return [m for m in sub.on(state_topic) if not m.retain]

    await push_until(meter, live_states, interval=0.2, timeout=30, what="first state")
    await sub.wait_for(lambda m: m.topic == "han/e2e/status" and m.text == "online" and not m.retain, timeout=10)
    state = live_states()[-1].json()
    assert state["meter"] == "main" and state["protocol"] == "dsmr" and state["checksum_ok"] is True
    ids = {r["id"]: r for r in state["readings"]}
    assert ids["1-0:1.8.1"]["unit"] == "kWh" and isinstance(ids["1-0:1.8.1"]["value"], float)
    # one value per quantity, and Home Assistant discovery for the energy dashboard
    power = await sub.wait_for(lambda m: m.topic == "han/e2e/meter/main/power_import" and not m.retain, timeout=10)
    float(power.text)
    cfg_msg = await sub.wait_for(
        lambda m: m.topic.startswith("homeassistant/sensor/e2e_main/") and m.topic.endswith("/config")
        and m.payload and m.json().get("device_class") == "energy", timeout=10)
    cfg = cfg_msg.json()
    # a subscriber that comes later (Home Assistant restarting) gets the config retained
    late = mqtt_subscriber(mosquitto, cfg_msg.topic)
    assert (await late.wait_for(lambda m: m.topic == cfg_msg.topic, timeout=10)).retain
    assert cfg["state_class"] == "total_increasing" and cfg["unit_of_measurement"] == "kWh"
    assert cfg["device"]["identifiers"] and cfg["state_topic"].startswith("han/e2e/meter/main/")
    avail = await sub.wait_for(lambda m: m.topic == "han/e2e/meter/main/availability" and not m.retain, timeout=10)
    assert avail.text == "online"
    # SIGHUP (a reload attempt) does not kill the daemon
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    assert gw.alive and "nothing to reload" in gw.log_text()
    # an orderly stop says offline and exits 0
    assert gw.terminate() == 0
    await sub.wait_for(lambda m: m.topic == "han/e2e/status" and m.text == "offline", timeout=10)
    assert "Traceback" not in gw.log_text()


async def test_broker_outage_of_60_s_loses_nothing(
    tmp_path: Path, mosquitto_factory: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    """Broker stopped for 60 s of 1 Hz telegrams, then restarted: the subscriber gets every
    reading, in order, none twice after de-duplication by timestamp."""
    broker = mosquitto_factory()
    # A durable subscriber session on a persistent broker: what the broker receives while
    # the subscriber is still reconnecting is queued for it, as for Home Assistant.
    broker.stop()
    broker.enable_persistence()
    broker.start()
    sub = mqtt_subscriber(broker, "han/e2e/meter/main/state", "han/e2e/meter/main/history", persistent=True)
    meter = meter_factory()
    gateway_factory(write_config(tmp_path, broker_url=broker.url, port=str(tmp_path / "p1"),
                                 extra_mqtt="backlog_rate_per_s = 50"))
    await push_until(meter, lambda: received_timestamps(sub)[0], interval=0.5, timeout=30, what="first state")
    first_seen = len(meter.sent)
    broker.stop()
    for _ in range(int(os.environ.get("OUTAGE_S", "60"))):  # 60 s of 1 Hz telegrams while the broker is down
        meter.push()
        await asyncio.sleep(1.0)
    broker.start()
    for _ in range(5):  # live data keeps flowing while the backlog drains
        meter.push()
        await asyncio.sleep(1.0)
    expected = set(meter.sent[first_seen - 1:])

    def complete() -> bool:
        state, history = received_timestamps(sub)
        return expected <= set(state) | set(history)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not complete() and loop.time() < deadline:
        await asyncio.sleep(0.2)
    state, history = received_timestamps(sub)
    got = set(state) | set(history)
    assert expected <= got, f"missing {sorted(expected - got)[:5]}… ({len(expected - got)} of {len(expected)})"
    assert history == sorted(history), "the backlog was not replayed in order"
    assert len(history) >= int(os.environ.get("OUTAGE_S", "60")) - 10  # the outage's readings came back as history
    # after de-duplication by timestamp, each reading exactly once
    dedup = sorted(got)
    assert len(dedup) == len(set(dedup))
    outbox = db_query(db_path(tmp_path), "select count(*) from outbox")[0][0]
    assert outbox <= 2  # everything acked (at most the in-flight newest)


async def test_sigkill_mid_burst_keeps_the_database_and_every_committed_reading(
    tmp_path: Path, mosquitto_factory: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    broker = mosquitto_factory()
    broker.stop()
    broker.enable_persistence()
    broker.start()
    sub = mqtt_subscriber(broker, "han/e2e/meter/main/state", "han/e2e/meter/main/history", persistent=True)
    meter = meter_factory()
    config = write_config(tmp_path, broker_url=broker.url, port=str(tmp_path / "p1"),
                          extra_mqtt="backlog_rate_per_s = 200")
    gw = gateway_factory(config)
    await push_until(meter, lambda: received_timestamps(sub)[0], interval=0.2, timeout=30, what="first state")
    broker.stop()  # make a backlog so the kill hits a gateway with unsent rows
    for _ in range(150):
        meter.push()
        await asyncio.sleep(0.01)
    broker.start()
    for _ in range(50):
        meter.push()
        await asyncio.sleep(0.005)
    gw.kill9()  # in the middle of the burst and of the backlog replay
    db = db_path(tmp_path)
    assert db_query(db, "pragma integrity_check") == [("ok",)]
    committed = {
        datetime.fromisoformat(json.loads(p)["timestamp"]) for (p,) in db_query(db, "select payload from outbox")
    }
    before = set(received_timestamps(sub)[0]) | set(received_timestamps(sub)[1])
    gw2 = gateway_factory(config)
    await asyncio.sleep(0.5)
    for _ in range(3):
        meter.push()
        await asyncio.sleep(0.3)

    def drained() -> bool:
        state, history = received_timestamps(sub)
        return committed <= set(state) | set(history)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not drained() and loop.time() < deadline:
        await asyncio.sleep(0.2)
    state, history = received_timestamps(sub)
    got = set(state) | set(history)
    assert committed - got == set(), f"{len(committed - got)} committed readings never delivered"
    # every reading acknowledged before the kill had reached the subscriber already
    assert before <= got
    assert gw2.alive
    assert gw2.terminate() == 0


async def test_tls_with_password_and_a_refused_password(
    tmp_path: Path, mosquitto_secure: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    broker = mosquitto_secure
    pw_file = tmp_path / "mqtt.password"
    pw_file.write_text(broker.password + "\n")
    os.chmod(pw_file, 0o600)
    sub = mqtt_subscriber(broker, "han/tls/#", auth=(broker.username, broker.password))
    meter = meter_factory()
    tls = (f'username = "{broker.username}"\npassword_file = "{pw_file}"\ntls_ca = "{broker.ca_path}"\n')
    gw = gateway_factory(write_config(tmp_path, broker_url=broker.tls_url, port=str(tmp_path / "p1"),
                                      gw="tls", extra_mqtt=tls))
    await push_until(meter, lambda: sub.on("han/tls/meter/main/state"), interval=0.2, timeout=30,
                     what="state over TLS")
    assert gw.terminate() == 0
    assert broker.password not in gw.log_text()

    wrong_dir = tmp_path / "wrong"
    wrong_dir.mkdir()
    bad = f'username = "{broker.username}"\npassword = "not-the-password"\ntls_ca = "{broker.ca_path}"\n'
    gw_bad = gateway_factory(write_config(wrong_dir, broker_url=broker.tls_url, port=str(tmp_path / "p1"),
                                          gw="tls", extra_mqtt=bad))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline and gw_bad.log_text().count("refused") < 2:
        meter.push()
        await asyncio.sleep(0.5)
    log = gw_bad.log_text()
    assert log.count("refused") >= 2, log[-2000:]  # a clear error, then retries with backoff
    assert gw_bad.alive, "a refused password must not crash the gateway"
    assert "not-the-password" not in log
    assert gw_bad.terminate() == 0


async def test_systemd_notify_ready_and_watchdog(
    tmp_path: Path, mosquitto: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    meter = meter_factory()
    gw = gateway_factory(write_config(tmp_path, broker_url=mosquitto.url, port=str(tmp_path / "p1"), gw="sd"),
                         env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    got: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline and sum("WATCHDOG=1" in g for g in got) < 2:
        meter.push()
        await asyncio.sleep(0.25)
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except BlockingIOError:
                break
    sock.close()
    assert any("READY=1" in g for g in got)
    assert sum("WATCHDOG=1" in g for g in got) >= 2  # pinged about every WatchdogSec/2
    gw.terminate()
