"""Config validation: every problem names the file, the key path and what was expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import key_path, load_config, meter_keys
from gateway.errors import ConfigError

GOOD = """
[gateway]
id = "home"
data_dir = "{data}"

[[meter]]
id = "main"
protocol = "dsmr"
port = "/dev/ttyUSB0"
key_file = "main.key"

[[meter]]
id = "optical"
protocol = "iec62056-21"
port = "socket://127.0.0.1:2001"

[adapter.mqtt]
url = "mqtt://127.0.0.1:1883"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gateway.toml"
    p.write_text(text)
    return p


def test_key_path_formats_lists_and_dicts() -> None:
    assert key_path(("meter", 0, "port")) == "meter[0].port"
    assert key_path(("adapter", "mqtt", "url")) == "adapter.mqtt.url"


def test_good_config_loads(tmp_path: Path) -> None:
    (tmp_path / "main.key").write_text("D491470F47126332B07D1923B3504188\n")
    os.chmod(tmp_path / "main.key", 0o600)
    cfg = load_config(write(tmp_path, GOOD.format(data=tmp_path)))
    assert [m.id for m in cfg.meter] == ["main", "optical"]
    assert cfg.meter[0].line_settings() == (115200, 8, "N")
    assert cfg.meter[1].line_settings() == (300, 7, "E")
    assert "mqtt" in cfg.adapter_configs()
    key, auth = meter_keys(cfg.meter[0], cfg.base_dir)
    assert key == bytes.fromhex("D491470F47126332B07D1923B3504188") and auth is None


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    bad = """
[gateway]
id = "has spaces"
[[meter]]
id = "m"
protocol = "modbus"
[[meter]]
id = "x"
protocol = "dsmr"
port = "http://nope"
key = "abc"
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, bad))
    keys = {k for _, k, _ in info.value.problems}
    assert {"gateway.id", "meter[0].protocol", "meter[0].port", "meter[1].port", "meter[1].key"} <= keys
    assert all(f.endswith("gateway.toml") for f, _, _ in info.value.problems)
    # a secret's bad value is never echoed back
    assert not any("abc" in m for _, k, m in info.value.problems if k == "meter[1].key")


def test_unknown_key_duplicate_meter_and_unknown_adapter(tmp_path: Path) -> None:
    text = """
[[meter]]
id = "m"
protocol = "dsmr"
port = "/dev/x"
prot = "typo"
[[meter]]
id = "m"
protocol = "dsmr"
port = "/dev/y"
[adapter.carrier_pigeon]
x = 1
[adapter.mqtt]
urll = "mqtt://x"
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    msgs = {k: m for _, k, m in info.value.problems}
    assert "unknown key" in msgs["meter[0].prot"]
    assert "duplicate" in msgs["meter[1].id"]
    assert "unknown adapter" in msgs["adapter.carrier_pigeon"]
    assert "adapter.mqtt.urll" in msgs or "adapter.mqtt.url" in msgs


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[gateway\nid=1"))
    assert info.value.problems[0][1] == "(syntax)"
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert "cannot read" in info.value.problems[0][2]


def test_key_file_problems(tmp_path: Path) -> None:
    text = GOOD.format(data=tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))  # main.key does not exist
    assert info.value.problems[0][1] == "meter[0].key_file"
    (tmp_path / "main.key").write_text("not a key")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "32 hexadecimal digits" in info.value.problems[0][2]


def test_check_command_exit_status_and_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[[meter]]\nid = "m"\nprotocol = "dsmr"\n[gateway]\nid = "a b"\n')
    assert main(["check", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert any(line.startswith(f"{path}: meter[0].port: ") for line in lines)
    assert any(line.startswith(f"{path}: gateway.id: ") for line in lines)
    (tmp_path / "main.key").write_text("D491470F47126332B07D1923B3504188")
    os.chmod(tmp_path / "main.key", 0o600)
    assert main(["check", "--config", str(write(tmp_path, GOOD.format(data=tmp_path)))]) == 0


def test_han_gateway_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("han-gateway")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("han-gateway ")
    out = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("han-gateway ")


def test_protocol_options_are_checked_by_the_reader(tmp_path: Path) -> None:
    text = '[[meter]]\nid = "m"\nprotocol = "dsmr"\nport = "/dev/x"\n[meter.options]\nwhatever = 1\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert [(k, m) for _, k, m in info.value.problems] == [("meter[0].options", "protocol dsmr takes no options")]
