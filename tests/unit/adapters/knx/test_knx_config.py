"""The KNX adapter's pure parts: config validation, actuator addresses, warnings, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.base import AdapterContext
from adapters.knx import KnxAdapter, KnxConfig, parse_actuator_address, plaintext_warning, plugin
from adapters.knx.config import UnitMismatch, resolve_dpt, unit_factor
from gateway.config import parse_config
from gateway.errors import AdapterError, ConfigError
from gateway.model import LoadAction, LoadCommand

POWER = {"value": "power_import", "group_address": "1/1/1", "dpt": "14.056"}


def cfg(**kw: Any) -> KnxConfig:
    base: dict[str, Any] = {"gateway_host": "192.0.2.10", "exposure": [POWER]}
    base.update(kw)
    return KnxConfig.model_validate(base)


def problem(**kw: Any) -> str:
    with pytest.raises(ValidationError) as err:
        cfg(**kw)
    return str(err.value)


# ------------------------------------------------------------------ config
def test_defaults_and_derived() -> None:
    c = cfg()
    assert c.connection == "tunnelling" and c.gateway_port == 3671 and c.rate_limit_per_s == 20
    assert c.peer == "tunnel 192.0.2.10:3671/UDP" and not c.secure
    assert c.exposed_addresses() == frozenset({"1/1/1"})
    assert cfg(connection="routing", gateway_host=None).peer == "routing 224.0.23.12:3671"


@pytest.mark.parametrize(
    ("exposure", "needle"),
    [
        ({"group_address": "32/0/0"}, "group address"),
        ({"group_address": "1/8/0"}, "group address"),
        ({"group_address": "0/0/0"}, "broadcast"),
        ({"group_address": "1.1.1"}, "group address"),
        ({"dpt": "99.999"}, "unknown datapoint type"),
        ({"dpt": "1.001"}, "not numeric"),
        ({"dpt": "13.013"}, "kWh"),  # a power in W cannot go out as kWh
        ({"value": "energy_import", "dpt": "14.056"}, "kWh"),
        ({"value": "price", "dpt": "5.006"}, "DPT 9 or DPT 14"),
        ({"value": "dr_level", "dpt": "14.056"}, "DPT 5 or DPT 20"),
        ({"value": "tariff", "dpt": "9"}, "DPT 5 or DPT 20"),
        ({"value": "price", "dpt": "14", "meter": "main"}, "does not come from a meter"),
        ({"value": "Power Import"}, "quantity key"),
        ({"deadband": -1}, "greater than or equal"),
        ({"min_interval_s": -1}, "greater than or equal"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_exposures(exposure: dict[str, Any], needle: str) -> None:
    assert needle in problem(exposure=[{**POWER, **exposure}])


def test_good_exposures() -> None:
    c = cfg(exposure=[
        POWER,
        {"value": "power_import", "group_address": "1/1/2", "dpt": "9.024", "meter": "main"},
        {"value": "energy_import", "group_address": "1/1/3", "dpt": "13.013", "deadband": 1},
        {"value": "voltage_l1", "group_address": "1/1/4", "dpt": "14.027"},
        {"value": "current_l1", "group_address": "1/1/5", "dpt": "14.019"},
        {"value": "price", "group_address": "1/1/6", "dpt": "14"},
        {"value": "price", "group_address": "1/1/7", "dpt": "9"},
        {"value": "tariff", "group_address": "1/1/8", "dpt": "5.006"},
        {"value": "dr_level", "group_address": "1/1/9", "dpt": "20.1207"},
        {"value": "price_tier", "group_address": "1/1/10", "dpt": "5.010"},
        {"value": "power_import", "group_address": "1/300", "dpt": "power"},  # 2-level, xknx name
    ])
    assert [e.datapoint.main for e in c.exposure] == [14, 9, 13, 14, 14, 14, 9, 5, 20, 5, 14]
    assert c.exposure[-1].group_address == "1/1/44"  # 1/300 in 3-level notation


def test_dpt20_is_one_octet() -> None:
    dp = resolve_dpt("20.102")
    assert dp.main == 20 and dp.transcoder.to_knx(3).value == (3,)


def test_unit_factor() -> None:
    assert unit_factor("W", "kW") == 1e-3
    assert unit_factor("kWh", "Wh") == 1e3
    assert unit_factor("W", None) == 1.0 and unit_factor("EUR", "W") == 1.0
    with pytest.raises(UnitMismatch):
        unit_factor("kWh", "W")


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"gateway_host": None}, "needs gateway_host"),
        ({"connection": "tunnelling_tcp", "gateway_host": None}, "needs gateway_host"),
        ({"connection": "knx-usb"}, "routing"),
        ({"individual_address": "1.1"}, "individual address"),
        ({"individual_address": "16.1.1"}, "individual address"),
        ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "reconnect_max_s"),
        ({"keyring_password": "x"}, "without `keyring`"),
        ({"keyring": "k.knxkeys"}, "tunnelling_tcp"),
        ({"connection": "routing", "keyring": "k", "keyring_password": "a",
          "keyring_password_file": "f"}, "either"),
        ({"exposure": [POWER, {**POWER, "value": "power_export"}]}, "of exposure[0]"),
        ({"rate_limit_per_s": -1}, "greater than or equal"),
        ({"gateway": "x"}, "Extra inputs"),
    ],
)
def test_bad_connection(kw: dict[str, Any], needle: str) -> None:
    assert needle in problem(**kw)


def test_keyring_password_never_shown(tmp_path: Path) -> None:
    c = cfg(connection="tunnelling_tcp", keyring="k.knxkeys", keyring_password="s3cret-pw")
    assert c.secure and "s3cret-pw" not in repr(c) and "s3cret-pw" not in str(c.model_dump())
    assert c.resolve_keyring_password() == "s3cret-pw"
    pw = tmp_path / "pw"
    pw.write_text("from-file\nignored\n")
    c = cfg(connection="routing", keyring="k.knxkeys", keyring_password_file=str(pw))
    assert c.resolve_keyring_password() == "from-file"
    c = cfg(connection="routing", keyring="k.knxkeys")
    assert c.resolve_keyring_password({"keyring_password": "from-secrets"}) == "from-secrets"
    assert c.resolve_keyring_password() is None
    # han-gateway check's messages do not echo inputs of keys named like secrets
    with pytest.raises(ConfigError) as err:
        parse_config({"adapter": {"knx": {"connection": "routing", "keyring": "k",
                                          "keyring_password": 12345678}}})
    assert "12345678" not in str(err.value)


def test_gateway_config_validates_the_section() -> None:
    ok = parse_config({"adapter": {"knx": {"connection": "routing", "exposure": [POWER]}}})
    assert isinstance(ok.adapter_configs()["knx"], KnxConfig)
    with pytest.raises(ConfigError) as err:
        parse_config({"adapter": {"knx": {"exposure": [{**POWER, "dpt": "1.001"}]}}})
    keys = [k for _, k, _ in err.value.problems]
    assert "adapter.knx" in keys or any(k.startswith("adapter.knx.exposure[0]") for k in keys)


# ------------------------------------------------------------------ warnings
def test_plaintext_warning() -> None:
    text = plaintext_warning(cfg())
    assert text is not None and "plaintext" in text and "IP Secure" in text and "VLAN" in text
    assert plugin.warnings(cfg()) == [text]
    secure = cfg(connection="tunnelling_tcp", keyring="k.knxkeys", keyring_password="p")
    assert plaintext_warning(secure) is None and plugin.warnings(secure) == []


# ------------------------------------------------------------------ actuator addresses
@pytest.mark.parametrize("address", ["1/2/3", "1/2/3?status=1/2/4", "31/7/255", "1/234",
                                     "1/2/3?status=1/999"])
def test_actuator_ok(address: str) -> None:
    assert plugin.actuator_problem(address) is None


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("", "group address"),
        ("boiler", "group address"),
        ("1/2/3?status=1/2/3", "must differ"),
        ("1/2/3?status=", "group address"),
        ("1/2/3?", "status="),
        ("1/2/3?state=1/2/4", "unknown option"),
        ("1/2/3?status=1/2/4&status=1/2/5", "twice"),
        ("0/0/0", "broadcast"),
        ("32/0/0", "group address"),
    ],
)
def test_actuator_problems(address: str, needle: str) -> None:
    message = plugin.actuator_problem(address)
    assert message is not None and needle in message


def test_actuator_parse() -> None:
    a = parse_actuator_address("1/2/3?status=1/2/4")
    assert (str(a.switch), str(a.status)) == ("1/2/3", "1/2/4")
    assert parse_actuator_address("1/2/3").status is None


# ------------------------------------------------------------------ plugin and refusals
def test_create() -> None:
    ctx = AdapterContext(gateway_id="g", config=cfg(), outbox=None, meters=("main",))  # type: ignore[arg-type]
    adapter = plugin.create(ctx)
    assert isinstance(adapter, KnxAdapter) and adapter.name == "knx"
    health = adapter.health()
    assert not health.ok and health.detail == "not started" and health.counters["sent"] == 0
    bad = AdapterContext(gateway_id="g", config={"exposure": [POWER]}, outbox=None,  # type: ignore[arg-type]
                         meters=())
    with pytest.raises(ConfigError) as err:
        plugin.create(bad)
    assert any(k.startswith("adapter.knx") for _, k, _ in err.value.problems)


def cmd(actuator: str, action: LoadAction = LoadAction.SHED, limit_w: float | None = None) -> LoadCommand:
    return LoadCommand(load="boiler", action=action, reason="test", actuator=actuator,
                       limit_w=limit_w)


@pytest.mark.parametrize(
    ("command", "needle", "retryable"),
    [
        (cmd("mqtt:x"), "not a knx: actuator", False),
        (cmd("knx:boiler"), "group address", False),
        (cmd("knx:1/1/1"), "exposed address", False),  # never write what we expose
        (cmd("knx:2/0/1?status=1/1/1"), "exposed address", False),
        (cmd("knx:2/0/1", LoadAction.LIMIT, 1000), "cannot limit", False),
        (cmd("knx:2/0/1"), "not connected", True),
        (cmd("knx:2/0/1", LoadAction.LIMIT, 0), "not connected", True),  # LIMIT 0 W is off
    ],
)
async def test_apply_refusals(command: LoadCommand, needle: str, retryable: bool) -> None:
    adapter = KnxAdapter(gateway_id="g", config=cfg())
    with pytest.raises(AdapterError) as err:
        await adapter.apply(command)
    assert needle in str(err.value) and err.value.retryable is retryable
    assert err.value.adapter == "knx"


# ------------------------------------------------------------------ han-gateway check
def _config(tmp_path: Path, knx: str, actuator: str) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "loads.toml").write_text(
        f'[[load]]\nname = "boiler"\nactuator = "{actuator}"\nrated_power = "2 kW"\n')
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "x"
data_dir = "{tmp_path / 'data'}"
[rules]
dir = "{rules}"
[adapter.knx]
{knx}
[[adapter.knx.exposure]]
value = "power_import"
group_address = "1/1/1"
dpt = "14.056"
""")
    return path


def test_check_warns_about_plaintext_and_checks_actuators(tmp_path: Path) -> None:
    from gateway.cli import check_config

    _, ruleset, warnings = check_config(_config(tmp_path, 'gateway_host = "192.0.2.1"', "knx:2/0/1"))
    assert ruleset is not None and len(ruleset.loads) == 1
    assert [w for w in warnings if w.startswith("adapter.knx: ") and "plaintext" in w]
    secure = 'connection = "routing"\nkeyring = "k.knxkeys"\nkeyring_password = "pw"'
    _, _, warnings = check_config(_config(tmp_path, secure, "knx:2/0/1"))
    assert not [w for w in warnings if "plaintext" in w]
    with pytest.raises(ConfigError) as err:
        check_config(_config(tmp_path, 'gateway_host = "192.0.2.1"', "knx:0/0/0"))
    assert any("broadcast" in m for _, _, m in err.value.problems)


def test_warns_about_readable_secrets(tmp_path: Path) -> None:
    keyring, pw = tmp_path / "k.knxkeys", tmp_path / "pw"
    keyring.write_text("x")
    pw.write_text("p\n")
    keyring.chmod(0o600)
    pw.chmod(0o644)
    c = cfg(connection="routing", keyring=str(keyring), keyring_password_file=str(pw))
    assert plugin.warnings(c) == [f"keyring_password_file {pw} is readable by other users; chmod 600 it"]
    pw.chmod(0o600)
    assert plugin.warnings(c) == []
