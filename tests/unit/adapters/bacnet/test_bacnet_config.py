"""``[adapter.bacnet]`` validation, the actuator syntax, units and the plaintext warnings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapters.bacnet import BacnetConfig, parse_actuator, plugin
from adapters.bacnet.address import ActuatorAddress
from adapters.bacnet.objects import engineering_units
from gateway.config import parse_config
from gateway.errors import ConfigError


def test_minimal_config() -> None:
    cfg = BacnetConfig(device_instance=1234, address="192.168.1.10/24")
    assert (cfg.local.host, cfg.local.prefix, cfg.local.port) == ("192.168.1.10", 24, 47808)
    assert cfg.name_for("home") == "han-gateway-home"


@pytest.mark.parametrize("section, where", [
    ({"device_instance": 1, "address": "192.168.1.10"}, "address"),
    ({"device_instance": 1, "address": "192.168.1.300/24"}, "address"),
    ({"device_instance": 1, "address": "192.168.1.10/24:0"}, "address"),
    ({"device_instance": 4194303, "address": "10.0.0.1/8"}, "device_instance"),
    ({"device_instance": 1, "address": "10.0.0.1/8", "colour": "red"}, "colour"),
    ({"device_instance": 1, "address": "10.0.0.1/8", "quantities": ["power import"]}, "quantities"),
    ({"device_instance": 1, "address": "10.0.0.1/8", "instances": {"power_import": 3}}, "instances"),
    ({"device_instance": 1, "address": "10.0.0.1/8", "loads": {"a": {"instance": 1}, "b": {"instance": 1}}}, "loads"),
    ({"device_instance": 1, "address": "10.0.0.1/8", "loads": {"boiler": {"instance": 1000}}}, "loads"),
    ({"device_instance": 1, "address": "10.0.0.1/8", "cov_increment": {"W": -1}}, "cov_increment"),
    ({"device_instance": 1, "address": "10.0.0.1/8", "foreign_device": {"bbmd": "10.1.1.1"},
      "bbmd_peers": ["10.0.0.1/8:47808"]}, ""),
])
def test_invalid_sections(section: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as exc:
        BacnetConfig.model_validate(section)
    locs = [".".join(str(p) for p in e["loc"]) for e in exc.value.errors()]
    assert any(loc.startswith(where) for loc in locs), locs


def test_config_errors_name_the_key_path() -> None:
    raw = {"adapter": {"bacnet": {"device_instance": 1, "address": "nonsense"}}}
    with pytest.raises(ConfigError) as exc:
        parse_config(raw, file="gw.toml")
    assert any(k == "adapter.bacnet.address" for _f, k, _m in exc.value.problems)


@pytest.mark.parametrize("text, expected", [
    ("192.168.1.20/binary-output:3",
     ActuatorAddress(host="192.168.1.20", port=47808, object_type="binary-output", instance=3, priority=8,
                     shed=False, restore=None)),
    ("192.168.1.20:47809/analog-value:7@10",
     ActuatorAddress(host="192.168.1.20", port=47809, object_type="analog-value", instance=7, priority=10,
                     shed=0.0, restore=None)),
    ("10.0.0.5/binary-value:2@16?shed=active&restore=inactive",
     ActuatorAddress(host="10.0.0.5", port=47808, object_type="binary-value", instance=2, priority=16,
                     shed=True, restore=False)),
    ("10.0.0.5/multi-state-output:1@9?shed=3&restore=relinquish",
     ActuatorAddress(host="10.0.0.5", port=47808, object_type="multi-state-output", instance=1, priority=9,
                     shed=3, restore=None)),
])
def test_actuator_addresses(text: str, expected: ActuatorAddress) -> None:
    assert parse_actuator(text) == expected
    assert plugin.actuator_problem(text) is None


@pytest.mark.parametrize("text, problem", [
    ("binary-output:3", "expected"),
    ("192.168.1.999/binary-output:3", "IPv4"),
    ("192.168.1.20:70000/binary-output:3", "port"),
    ("192.168.1.20/analog-input:3", "commandable"),
    ("192.168.1.20/binary-output:4194303", "instance"),
    ("192.168.1.20/binary-output:3@17", "priority"),
    ("192.168.1.20/binary-output:3@1", "life safety"),
    ("192.168.1.20/binary-output:3@6", "minimum on/off"),
    ("192.168.1.20/binary-output:3?shed=maybe", "not a binary value"),
    ("192.168.1.20/analog-value:3?bogus=1", "unknown option"),
    ("192.168.1.20/multi-state-value:3?shed=0", "not a multistate value"),
])
def test_bad_actuator_addresses(text: str, problem: str) -> None:
    got = plugin.actuator_problem(text)
    assert got is not None and problem in got


def test_engineering_units() -> None:
    assert [engineering_units(u) for u in ("W", "kW", "Wh", "kWh", "V", "A", "Hz", "m³", None, "furlong")] == [
        "watts", "kilowatts", "wattHours", "kilowattHours", "volts", "amperes", "hertz", "cubicMeters",
        "noUnits", "noUnits"]


def test_warnings_say_bacnet_ip_is_unauthenticated() -> None:
    cfg = BacnetConfig(device_instance=1, address="10.0.0.1/8")
    (only,) = plugin.warnings(cfg)
    assert "unauthenticated" in only and "10.0.0.1" in only
    cfg = BacnetConfig.model_validate({"device_instance": 1, "address": "0.0.0.0/0",
                                       "loads": {"boiler": {"instance": 1, "override": True}},
                                       "foreign_device": {"bbmd": "10.1.1.1:47808"}})
    text = "\n".join(plugin.warnings(cfg))
    assert "boiler" in text and "foreign-device" in text and "specific interface" in text
