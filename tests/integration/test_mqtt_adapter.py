"""The MQTT adapter against a real mosquitto on loopback.

The outbox here is a small in-memory implementation of ``adapters.base.Outbox``
(the SQLite one is exercised end to end elsewhere); it appends, then tells the
adapter through the bus (``OutboxChanged``), as the store writer does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from adapters.base import Adapter, AdapterContext
from adapters.mqtt import ConnectionState, MqttAdapter, plugin
from gateway.bus import Bus, MeterStatus, OutboxChanged
from gateway.model import OutboxItem, Reading, Snapshot

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class MemoryOutbox:
    """``adapters.base.Outbox`` in memory, with a record of acks."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._rows: dict[int, Snapshot] = {}
        self._next = 1
        self.acked: list[int] = []

    def append(self, snapshot: Snapshot) -> int:
        row = self._next
        self._next += 1
        self._rows[row] = snapshot
        self._bus.publish(OutboxChanged(last_id=row))
        return row

    async def pending(self, *, after_id: int = 0, limit: int = 100) -> list[OutboxItem]:
        ids = [i for i in sorted(self._rows) if i > after_id][:limit]
        return [OutboxItem(id=i, snapshot=self._rows[i]) for i in ids]

    async def newest(self, *, limit: int = 1) -> list[OutboxItem]:
        ids = sorted(self._rows, reverse=True)[:limit]
        return [OutboxItem(id=i, snapshot=self._rows[i]) for i in ids]

    async def ack(self, ids: list[int]) -> None:
        for i in ids:
            if self._rows.pop(i, None) is not None:
                self.acked.append(i)

    async def count(self) -> int:
        return len(self._rows)


def snapshot(
    n: int,
    *,
    meter: str = "main",
    power_kw: float = 1.234,
    voltage: float = 230.1,
    extra: tuple[Reading, ...] = (),
) -> Snapshot:
    ts = T0 + timedelta(seconds=n)
    return Snapshot(
        meter=meter,
        protocol="dsmr",
        device_id="E0025000012345678",
        timestamp=ts,
        received=ts,
        readings=(
            Reading(id="header", value="/ISK5\\2M550T-1012"),
            Reading(id="1-3:0.2.8", value="50"),
            Reading(id="1-0:1.8.1", value=1000.0 + n, unit="kWh"),
            Reading(id="1-0:1.8.2", value=2000.5, unit="kWh"),
            Reading(id="1-0:1.7.0", value=power_kw, unit="kW"),
            Reading(id="1-0:32.7.0", value=voltage, unit="V"),
            Reading(id="0-0:96.14.0", value=2),
            Reading(id="0-1:24.2.1", value=500.25, unit="m3",
                    timestamp=ts - timedelta(minutes=5)),
            *extra,
        ),
        checksum_ok=True,
    )


@dataclass
class Rig:
    adapter: MqttAdapter
    outbox: MemoryOutbox
    bus: Bus
    gw: str

    @property
    def root(self) -> str:
        return f"han/{self.gw}"

    def append(self, snap: Snapshot) -> int:
        return self.outbox.append(snap)

    async def wait_health(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.adapter.health()):
                await asyncio.sleep(0.02)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await self.wait_health(lambda h: h.ok, timeout)

    async def wait_drained(self, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while await self.outbox.count():
                await asyncio.sleep(0.02)


RigFactory = Callable[..., Rig]


@pytest.fixture
async def rig() -> AsyncIterator[RigFactory]:
    """``rig(url, meters=("main",), **config) -> Rig`` with the adapter started."""
    rigs: list[Rig] = []

    def factory(url: str, *, meters: tuple[str, ...] = ("main",), start: bool = True,
                gw: str | None = None, **config: Any) -> Rig:
        bus = Bus()
        outbox = MemoryOutbox(bus)
        gw = gw or f"t{secrets.token_hex(3)}"
        settings: dict[str, Any] = {
            "url": url,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.3,
            "poll_interval_s": 0.2,
            "connect_timeout_s": 3.0,
            **config,
        }
        context = AdapterContext(gateway_id=gw, config=settings, outbox=outbox, meters=meters)
        adapter = plugin.create(context)
        r = Rig(adapter=adapter, outbox=outbox, bus=bus, gw=gw)
        rigs.append(r)
        return r

    yield factory
    for r in rigs:
        await r.adapter.stop()


async def started(r: Rig) -> Rig:
    await r.adapter.start(r.bus)
    return r


def publish_raw(broker: Any, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{secrets.token_hex(4)}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


# ------------------------------------------------------------------ tests
async def test_plugin_is_an_adapter(mosquitto: Any, rig: RigFactory) -> None:
    r = rig(mosquitto.url, start=False)
    assert plugin.name == "mqtt"
    assert isinstance(r.adapter, Adapter)
    assert r.adapter.health().ok is False


async def test_status_online_then_clean_offline(
    mosquitto: Any, rig: RigFactory, mqtt_subscriber: Any
) -> None:
    r = rig(mosquitto.url)
    sub = mqtt_subscriber(mosquitto, f"{r.root}/#")
    await started(r)
    await sub.wait_for(lambda m: m.topic == f"{r.root}/status" and m.text == "online")
    await r.wait_connected()
    assert r.adapter.state is ConnectionState.CONNECTED
    await r.adapter.stop()
    await sub.wait_for(lambda m: m.topic == f"{r.root}/status" and m.text == "offline")
    assert r.adapter.health().ok is False
    # the offline status is retained for late subscribers
    late = mqtt_subscriber(mosquitto, f"{r.root}/status")
    msg = await late.wait_for(lambda m: m.topic == f"{r.root}/status")
    assert (msg.text, msg.retain) == ("offline", True)


async def test_last_will_on_dropped_connection_then_reconnect(
    mosquitto: Any, rig: RigFactory, mqtt_subscriber: Any, abort_connections: Any
) -> None:
    r = await started(rig(mosquitto.url))
    sub = mqtt_subscriber(mosquitto, f"{r.root}/status")
    await sub.wait_for(lambda m: m.text == "online")
    await r.wait_connected()
    sub.clear()
    assert abort_connections(mosquitto.port, keep=(sub.local_port,)) >= 1
    await sub.wait_for(lambda m: m.text == "offline")  # the broker sent the will
    await sub.wait_until(lambda ms: [m.text for m in ms][-1:] == ["online"])
    await r.wait_health(lambda h: h.ok and h.counters["reconnects"] >= 1)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_state_and_quantity_topics(
    mosquitto: Any, rig: RigFactory, mqtt_subscriber: Any, protocol: str
) -> None:
    r = await started(rig(mosquitto.url, protocol=protocol))
    sub = mqtt_subscriber(mosquitto, f"{r.root}/#")
    await r.wait_connected()
    snap = snapshot(1)
    r.append(snap)
    meter = f"{r.root}/meter/main"
    state = await sub.wait_for(lambda m: m.topic == f"{meter}/state")
    assert state.json() == snap.to_json()
    await sub.wait_until(lambda ms: {f"{meter}/gas", f"{meter}/tariff"} <= {m.topic for m in ms})
    values = {m.topic.rsplit("/", 1)[1]: m.text for m in sub.messages if m.topic.startswith(meter)}
    assert values["energy_import_t1"] == "1001.0"
    assert values["energy_import_t2"] == "2000.5"
    assert values["power_import"] == "1234"  # kW -> W
    assert values["voltage_l1"] == "230.1"
    assert values["gas"] == "500.25"
    assert values["tariff"] == "2"
    assert values["availability"] == "online"
    await r.wait_drained()
    assert r.outbox.acked == [1]
    # retained for late subscribers
    late = mqtt_subscriber(mosquitto, f"{meter}/state", f"{meter}/power_import")
    msgs = await late.wait_until(lambda ms: len(ms) >= 2)
    assert all(m.retain for m in msgs)


async def test_meter_availability_follows_meter_status(
    mosquitto: Any, rig: RigFactory, mqtt_subscriber: Any
) -> None:
    r = await started(rig(mosquitto.url))
    topic = f"{r.root}/meter/main/availability"
    sub = mqtt_subscriber(mosquitto, topic)
    await r.wait_connected()
    r.bus.publish(MeterStatus(meter="main", online=True))
    await sub.wait_for(lambda m: m.text == "online")
    r.bus.publish(MeterStatus(meter="main", online=False, detail="no frames"))
    await sub.wait_for(lambda m: m.text == "offline")
    last = sub.last(topic)
    assert last is not None and last.text == "offline"


async def test_home_assistant_discovery(
    mosquitto: Any, rig: RigFactory, mqtt_subscriber: Any
) -> None:
    r = await started(rig(mosquitto.url, expire_after_s=120))
    sub = mqtt_subscriber(mosquitto, f"homeassistant/sensor/{r.gw}_main/+/config")
    await r.wait_connected()
    r.append(snapshot(1))
    base = f"homeassistant/sensor/{r.gw}_main"
    wanted = {f"{base}/{k}/config" for k in ("energy_import_t1", "energy_import_t2", "gas",
                                             "power_import", "voltage_l1", "tariff")}
    await sub.wait_until(lambda ms: wanted <= {m.topic for m in ms})
    configs = {m.topic.split("/")[3]: m.json() for m in sub.messages}
    energy = configs["energy_import_t1"]
    assert energy["device_class"] == "energy"
    assert energy["state_class"] == "total_increasing"
    assert energy["unit_of_measurement"] == "kWh"
    assert energy["unique_id"] == f"han_gateway_{r.gw}_main_energy_import_t1"
    assert energy["object_id"] == f"han_{r.gw}_main_energy_import_t1"
    assert energy["state_topic"] == f"{r.root}/meter/main/energy_import_t1"
    assert energy["availability_mode"] == "all"
    assert [a["topic"] for a in energy["availability"]] == [
        f"{r.root}/status",
        f"{r.root}/meter/main/availability",
    ]
    assert energy["expire_after"] == 120
    device = energy["device"]
    assert device["identifiers"] == [f"han_gateway_{r.gw}_main"]
    assert device["manufacturer"] == "Iskraemeco"
    assert device["model"] == "M550T-1012"
    assert device["sw_version"] == "5.0"
    assert energy["origin"]["name"] == "han-gateway"
    assert energy["origin"]["sw_version"]
    gas = configs["gas"]
    assert (gas["device_class"], gas["state_class"], gas["unit_of_measurement"]) == (
        "gas", "total_increasing", "m³")
    power = configs["power_import"]
    assert (power["device_class"], power["state_class"], power["unit_of_measurement"]) == (
        "power", "measurement", "W")
    assert "device_class" not in configs["tariff"]

    # Home Assistant restarted: its birth message makes us publish the configs again.
    sub.clear()
    publish_raw(mosquitto, "homeassistant/status", "online")
    await sub.wait_until(lambda ms: wanted <= {m.topic for m in ms if not m.retain})


async def test_stale_discovery_configs_are_cleared(
    mosquitto: Any, rig: RigFactory, mqtt_subscriber: Any
) -> None:
    gw = f"t{secrets.token_hex(3)}"
    other = f"{gw}_2"  # another gateway whose id shares our prefix
    def old_config(gateway: str, meter: str, key: str) -> str:
        return json.dumps({
            "unique_id": f"han_gateway_{gateway}_{meter}_{key}",
            "state_topic": f"han/{gateway}/meter/{meter}/{key}",
            "availability": [{"topic": f"han/{gateway}/status"}],
        })
    stale_gone_meter = f"homeassistant/sensor/{gw}_gone/energy_import/config"
    stale_key = f"homeassistant/sensor/{gw}_main/old_quantity/config"
    foreign = f"homeassistant/sensor/{other}_main/old_quantity/config"
    publish_raw(mosquitto, stale_gone_meter, old_config(gw, "gone", "energy_import"), retain=True)
    publish_raw(mosquitto, stale_key, old_config(gw, "main", "old_quantity"), retain=True)
    publish_raw(mosquitto, foreign, old_config(other, "main", "old_quantity"), retain=True)

    r = await started(rig(mosquitto.url, gw=gw, meters=("main",)))
    sub = mqtt_subscriber(mosquitto, "homeassistant/sensor/#")
    await r.wait_connected()
    r.append(snapshot(1))
    await sub.wait_until(
        lambda ms: {(stale_gone_meter, b""), (stale_key, b"")} <= {(m.topic, m.payload) for m in ms}
    )
    await r.wait_health(lambda h: h.counters["stale_cleared"] == 2)
    late = mqtt_subscriber(mosquitto, "homeassistant/sensor/#")
    await late.wait_for(lambda m: m.topic == foreign)  # someone else's: untouched
    await late.wait_for(lambda m: m.topic.endswith("/energy_import_t1/config"))
    assert late.on(stale_key) == [] and late.on(stale_gone_meter) == []
    publish_raw(mosquitto, foreign, b"", retain=True)


async def test_deadband_and_min_interval(
    mosquitto: Any, rig: RigFactory, mqtt_subscriber: Any
) -> None:
    r = await started(rig(
        mosquitto.url,
        deadband={"power_import": 50.0},
        min_interval_by_quantity={"voltage_l1": 3600.0},
    ))
    meter = f"{r.root}/meter/main"
    sub = mqtt_subscriber(mosquitto, f"{meter}/#")
    await r.wait_connected()
    for n, (kw, volts) in enumerate([(1.0, 230.0), (1.02, 231.0), (1.1, 232.0)], start=1):
        r.append(snapshot(n, power_kw=kw, voltage=volts))
        await sub.wait_until(lambda ms, n=n: len([m for m in ms if m.topic == f"{meter}/state"]) == n)
    await r.wait_drained()  # suppressed values do not hold back the acks
    await sub.wait_until(lambda ms: len([m for m in ms if m.topic == f"{meter}/energy_import_t1"]) == 3)
    assert [m.text for m in sub.on(f"{meter}/power_import")] == ["1000", "1100"]
    assert [m.text for m in sub.on(f"{meter}/voltage_l1")] == ["230.0"]
    assert r.adapter.health().counters["suppressed"] == 3


async def test_outage_store_and_forward(
    mosquitto_factory: Any, rig: RigFactory, mqtt_subscriber: Any
) -> None:
    broker = mosquitto_factory()
    r = await started(rig(broker.url, backlog_rate_per_s=25.0))
    meter = f"{r.root}/meter/main"
    sub = mqtt_subscriber(broker, f"{meter}/state", f"{meter}/history")
    await r.wait_connected()
    r.append(snapshot(0))
    await r.wait_drained()
    await sub.wait_for(lambda m: m.topic == f"{meter}/state")

    broker.stop()
    await r.wait_health(lambda h: not h.ok)
    for n in range(1, 41):
        r.append(snapshot(n))
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)  # the adapter keeps retrying meanwhile
    assert await r.outbox.count() == 40  # nothing acked without a broker
    assert r.adapter.health().counters["backlog"] == 40

    broker.start()
    # This blocks the loop until subscribed, so the adapter cannot publish before.
    sub2 = mqtt_subscriber(broker, f"{meter}/state", f"{meter}/history")
    await r.wait_health(lambda h: h.ok and h.counters["reconnects"] >= 1)

    def stamp(m: Any) -> str:
        return str(m.json()["timestamp"])

    # Live data keeps flowing while the backlog drains at 25/s.
    r.append(snapshot(41))
    live = snapshot(41).timestamp.isoformat()
    await sub2.wait_for(lambda m: m.topic.endswith("/state") and stamp(m) == live)
    assert len(sub2.on(f"{meter}/history")) < 39
    await r.wait_drained()

    every = {snapshot(n).timestamp.isoformat() for n in range(1, 42)}
    msgs = await sub2.wait_until(lambda ms: {stamp(m) for m in ms} >= every)
    history = [stamp(m) for m in msgs if m.topic.endswith("/history")]
    assert history == sorted(history)  # the backlog in id order
    assert len(history) == 39  # 1..39; 40 was the newest at reconnect and went live
    assert snapshot(40).timestamp.isoformat() not in history
    assert all(not m.retain for m in msgs if m.topic.endswith("/history"))
    assert sorted(r.outbox.acked) == list(range(1, 43))


async def test_unacknowledged_publications_are_sent_again(
    mosquitto_factory: Any, rig: RigFactory, mqtt_subscriber: Any
) -> None:
    broker = mosquitto_factory()
    r = await started(rig(broker.url, backlog_rate_per_s=500.0))
    await r.wait_connected()
    published = r.adapter.health().counters["published"]
    broker.pause()  # the broker reads nothing and acknowledges nothing
    for n in range(1, 21):
        r.append(snapshot(n))
    # The adapter wrote the messages to the socket, but no PUBACK can come back.
    await r.wait_health(lambda h: h.counters["published"] >= published + 20)
    await asyncio.sleep(0.2)
    assert r.outbox.acked == [] and await r.outbox.count() == 20
    broker.kill()  # the connection dies with every publication unacknowledged
    broker.start()
    sub = mqtt_subscriber(broker, f"{r.root}/meter/main/state", f"{r.root}/meter/main/history")
    await r.wait_drained()
    assert sorted(r.outbox.acked) == list(range(1, 21))
    stamps = {m.json()["timestamp"] for m in await sub.wait_until(lambda ms: len(ms) >= 20)}
    assert stamps == {snapshot(n).timestamp.isoformat() for n in range(1, 21)}


async def test_tls_with_password_and_client_cert(
    mosquitto_secure: Any, rig: RigFactory, mqtt_subscriber: Any, tmp_path: Any
) -> None:
    password_file = tmp_path / "mqtt.pass"
    password_file.write_text(mosquitto_secure.password + "\n")
    r = await started(rig(
        mosquitto_secure.tls_url,
        username=mosquitto_secure.username,
        password_file=str(password_file),
        tls_ca=str(mosquitto_secure.ca_path),
        tls_cert=str(mosquitto_secure.client_cert),
        tls_key=str(mosquitto_secure.client_key),
    ))
    sub = mqtt_subscriber(
        mosquitto_secure, f"{r.root}/#", tls=True,
        auth=(mosquitto_secure.username, mosquitto_secure.password),
    )
    await r.wait_connected()
    r.append(snapshot(1))
    await sub.wait_for(lambda m: m.topic == f"{r.root}/meter/main/state")
    await r.wait_drained()


async def test_plain_listener_with_password(
    mosquitto_secure: Any, rig: RigFactory, mqtt_subscriber: Any
) -> None:
    r = await started(rig(
        f"mqtt://127.0.0.1:{mosquitto_secure.port}",
        username=mosquitto_secure.username,
        password=mosquitto_secure.password,
    ))
    await r.wait_connected()
    r.append(snapshot(1))
    await r.wait_drained()


async def test_wrong_password_is_reported_and_retried(
    mosquitto_secure: Any, rig: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.mqtt")
    wrong = "not-the-password-" + secrets.token_hex(4)
    r = await started(rig(
        mosquitto_secure.tls_url,
        username=mosquitto_secure.username,
        password=wrong,
        tls_ca=str(mosquitto_secure.ca_path),
        reconnect_min_s=0.02,
        reconnect_max_s=0.1,
    ))
    await r.wait_health(lambda h: h.counters["auth_failures"] >= 3)
    health = r.adapter.health()
    assert health.ok is False
    assert health.detail == "authentication refused"
    assert r.adapter.state is ConnectionState.AUTH_REFUSED
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert errors, "an authentication failure must be logged as an error"
    text = errors[0].getMessage()
    assert mosquitto_secure.username in text and f"127.0.0.1:{mosquitto_secure.tls_port}" in text
    assert all(wrong not in rec.getMessage() for rec in caplog.records)
    assert wrong not in repr(r.adapter.config)


async def test_unreachable_broker_backs_off_without_crashing(rig: RigFactory) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = await started(rig(f"mqtt://127.0.0.1:{port}", reconnect_min_s=0.02, reconnect_max_s=0.05))
    r.append(snapshot(1))
    await r.wait_health(lambda h: h.counters["connect_failures"] >= 3)
    health = r.adapter.health()
    assert not health.ok and "cannot connect" in health.detail
    assert await r.outbox.count() == 1


async def test_control_state_published_and_dr_reports_forwarded(
    mosquitto: Any, rig: RigFactory, mqtt_subscriber: Any
) -> None:
    """Prices, DR events and load states on the bus become retained topics; a device's
    report about a DR event is forwarded; a cancelled event's retained topic is cleared."""
    from datetime import UTC, datetime, timedelta

    from gateway.bus import DrEventReport
    from gateway.model import DemandResponseEvent, LoadState, PriceSignal

    r = await started(rig(mosquitto.url, discovery=False))
    sub = mqtt_subscriber(mosquitto, f"{r.root}/price", f"{r.root}/dr/#", f"{r.root}/load/#")
    await r.wait_connected()
    now = datetime.now(UTC)
    r.bus.publish(PriceSignal(start=now, end=now + timedelta(hours=1), price_per_kwh=0.42, tier=3))
    r.bus.publish(DemandResponseEvent(event_id="e9", start=now, end=now + timedelta(hours=1),
                                      criticality=7))
    r.bus.publish(LoadState(load="boiler", on=False, since=now, rule="dr", reason="dr.criticality >= 5"))
    r.bus.publish(DrEventReport(event_id="e9", device="00:0d:6f:00:00:00:aa:01", status="received",
                                at=now, source="zigbee", detail={"issuer_event_id": 12}))
    report = await sub.wait_for(lambda m: m.topic == f"{r.root}/dr/e9/report")
    assert not report.retain and report.json()["status"] == "received"
    assert report.json()["detail"] == {"issuer_event_id": 12}
    price = await sub.wait_for(lambda m: m.topic == f"{r.root}/price")
    assert price.json()["price"] == 0.42 and price.json()["tier"] == 3
    state = await sub.wait_for(lambda m: m.topic == f"{r.root}/load/boiler/state")
    assert state.json()["state"] == "OFF" and state.json()["rule"] == "dr"
    await sub.wait_for(lambda m: m.topic == f"{r.root}/dr/e9" and m.json()["criticality"] == 7)
    # retained for a late subscriber; cleared when the event is cancelled
    late = mqtt_subscriber(mosquitto, f"{r.root}/dr/e9")
    assert (await late.wait_for(lambda m: m.topic == f"{r.root}/dr/e9")).retain
    r.bus.publish(DemandResponseEvent(event_id="e9", start=now, end=now + timedelta(hours=1),
                                      cancelled=True))
    await sub.wait_for(lambda m: m.topic == f"{r.root}/dr/e9" and m.payload == b"")
    for topic in (f"{r.root}/price", f"{r.root}/load/boiler/state"):
        publish_raw(mosquitto, topic, b"", retain=True)
