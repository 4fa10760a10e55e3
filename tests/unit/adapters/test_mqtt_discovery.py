"""Pure parts of the MQTT adapter: topics, discovery payloads, config, throttle."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

import gateway
from adapters.base import AdapterContext
from adapters.mqtt import MqttConfig, plugin
from adapters.mqtt.discovery import Topics, config_payload, device_info, topic_segment
from adapters.mqtt.throttle import Throttle
from gateway.errors import ConfigError
from gateway.model import Reading, Snapshot
from gateway.quantities import quantity_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOPICS = Topics(base="han", gateway="home", prefix="homeassistant")


def snap(*readings: Reading, protocol: str = "dsmr") -> Snapshot:
    return Snapshot(meter="main", protocol=protocol, device_id="E0025", timestamp=NOW,
                    received=NOW, readings=readings)


# ------------------------------------------------------------------ topics
def test_topic_layout() -> None:
    assert TOPICS.status == "han/home/status"
    assert TOPICS.state("main") == "han/home/meter/main/state"
    assert TOPICS.history("main") == "han/home/meter/main/history"
    assert TOPICS.availability("main") == "han/home/meter/main/availability"
    assert TOPICS.quantity("main", "gas") == "han/home/meter/main/gas"
    assert TOPICS.config("main", "gas") == "homeassistant/sensor/home_main/gas/config"
    assert TOPICS.ha_status == "homeassistant/status"
    assert TOPICS.discovery_filter == "homeassistant/sensor/+/+/config"


def test_topic_segments_have_no_wildcards_or_levels() -> None:
    assert topic_segment("a/b+c#") == "a_b_c_"
    assert Topics(base="han", gateway="x/y").status == "han/x_y/status"
    assert Topics(base="han", gateway="Home 1").node_id("Main.1") == "home_1_main_1"


def test_own_config_topics() -> None:
    assert TOPICS.is_own_config_topic("homeassistant/sensor/home_main/gas/config")
    assert not TOPICS.is_own_config_topic("homeassistant/sensor/other_main/gas/config")
    assert not TOPICS.is_own_config_topic("homeassistant/binary_sensor/home_main/x/config")
    nested = Topics(base="han", gateway="home", prefix="ha/disc")
    assert nested.is_own_config_topic("ha/disc/sensor/home_main/gas/config")


# --------------------------------------------------------------- discovery
def test_config_payload_for_an_energy_total() -> None:
    reading = Reading(id="1-0:1.8.1", value=1.0, unit="kWh")
    info = device_info(snap(Reading(id="header", value="/ISK5\\2M550T-1012"),
                            Reading(id="1-3:0.2.8", value="50"), reading))
    payload = config_payload(TOPICS, "main", quantity_for(reading), info, expire_after_s=60)
    assert payload == {
        "name": "Energy import tariff 1",
        "unique_id": "han_gateway_home_main_energy_import_t1",
        "object_id": "han_home_main_energy_import_t1",
        "state_topic": "han/home/meter/main/energy_import_t1",
        "availability": [{"topic": "han/home/status"},
                         {"topic": "han/home/meter/main/availability"}],
        "availability_mode": "all",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": ["han_gateway_home_main"],
            "name": "HAN main",
            "manufacturer": "Iskraemeco",
            "model": "M550T-1012",
            "sw_version": "5.0",
            "serial_number": "E0025",
        },
        "origin": {"name": "han-gateway", "sw_version": gateway.__version__},
        "device_class": "energy",
        "state_class": "total_increasing",
        "unit_of_measurement": "kWh",
        "expire_after": 60,
    }


def test_config_payload_for_gas_and_text() -> None:
    gas = config_payload(TOPICS, "main", quantity_for(Reading(id="0-1:24.2.1", value=1.0,
                                                              unit="m3")), device_info(snap()))
    assert (gas["device_class"], gas["state_class"], gas["unit_of_measurement"]) == (
        "gas", "total_increasing", "m³")
    assert "expire_after" not in gas
    text = config_payload(TOPICS, "main", quantity_for(Reading(id="0-0:96.13.0", value="hi")),
                          device_info(snap()))
    assert text["entity_category"] == "diagnostic"
    assert not {"device_class", "state_class", "unit_of_measurement"} & set(text)


def test_device_info_without_header_names_the_protocol() -> None:
    info = device_info(snap(protocol="sml"))
    assert (info.manufacturer, info.model, info.sw_version) == (None, "SML meter", None)
    mbus = device_info(snap(Reading(id="manufacturer", value="Kamstrup"), protocol="mbus"))
    assert (mbus.manufacturer, mbus.model) == ("Kamstrup", "M-Bus meter")


# ------------------------------------------------------------------ config
def test_config_defaults_and_derived_values() -> None:
    cfg = MqttConfig(url="mqtt://127.0.0.1")
    assert (cfg.host, cfg.port, cfg.tls, cfg.qos, cfg.keepalive_s) == ("127.0.0.1", 1883, False, 1,
                                                                       30)
    assert (cfg.discovery, cfg.discovery_prefix, cfg.base_topic) == (True, "homeassistant", "han")
    tls = MqttConfig(url="mqtts://broker.local")
    assert (tls.port, tls.tls, tls.broker) == (8883, True, "broker.local:8883")
    throttled = MqttConfig(url="mqtt://h:1884", min_interval_s=5,
                           min_interval_by_quantity={"gas": 60})
    assert throttled.port == 1884
    assert throttled.min_interval_for("power_import") == 5
    assert throttled.min_interval_for("gas") == 60


def test_password_is_never_in_repr() -> None:
    cfg = MqttConfig.model_validate({"url": "mqtt://h", "username": "u", "password": "s3cret"})
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg.model_dump())
    assert cfg.resolve_password() == "s3cret"


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"url": "http://x"},
        {"url": "mqtt://"},
        {"url": "mqtt://u:p@host"},
        {"qos": 0},
        {"base_topic": "han/#"},
        {"reconnect_min_s": 5, "reconnect_max_s": 1},
        {"tls_cert": "/c.pem"},
        {"deadband": {"power_import": -1}},
        {"unknown_key": 1},
    ],
)
def test_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MqttConfig.model_validate({"url": "mqtt://h", **bad} if bad else bad)


def test_plugin_turns_validation_errors_into_config_error() -> None:
    class NoOutbox:
        async def pending(self, *, after_id: int = 0, limit: int = 100) -> list[object]:
            return []

    ctx = AdapterContext(gateway_id="home", config={"url": "ftp://x", "qos": 7},
                         outbox=NoOutbox(), meters=())  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        plugin.create(ctx)
    paths = {p[1] for p in info.value.problems}
    assert {"adapter.mqtt.url", "adapter.mqtt.qos"} <= paths
    assert plugin.config_model is MqttConfig


def test_config_model_is_frozen() -> None:
    cfg = MqttConfig(url="mqtt://h")
    with pytest.raises(ValidationError):
        cfg.qos = 2


# ---------------------------------------------------------------- throttle
def test_throttle_default_publishes_everything() -> None:
    t = Throttle(min_interval_s=lambda _k: 0.0, deadband=lambda _k: None)
    assert all(t.should_publish("m", "power", 100, now=0.0) for _ in range(3))
    assert t.suppressed == 0


def test_throttle_deadband_min_interval_and_heartbeat() -> None:
    t = Throttle(
        min_interval_s=lambda k: 10.0 if k == "voltage" else 0.0,
        deadband=lambda k: 50.0 if k == "power" else (0.0 if k == "tariff" else None),
        heartbeat_s=300.0,
    )
    assert t.should_publish("m", "power", 1000, now=0.0)
    assert not t.should_publish("m", "power", 1040, now=1.0)
    assert t.should_publish("m", "power", 1060, now=2.0)
    assert t.should_publish("m", "power", 1060, now=302.0)  # heartbeat
    assert t.should_publish("m", "voltage", 230, now=0.0)
    assert not t.should_publish("m", "voltage", 240, now=5.0)
    assert t.should_publish("m", "voltage", 240, now=10.0)
    assert t.should_publish("m", "tariff", "1", now=0.0)
    assert not t.should_publish("m", "tariff", "1", now=1.0)
    assert t.should_publish("m", "tariff", "2", now=2.0)
    assert t.should_publish("other", "power", 1000, now=2.0)  # per meter
    t.forget("m")
    assert t.should_publish("m", "power", 1061, now=303.0)
    assert t.suppressed == 3
