"""Rule files: TOML to a validated RuleSet, with every problem located at file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError, RuleSyntaxError
from gateway.rules import Action, load_rule_dir, parse_rule_texts
from gateway.rules.loads import parse_actuator

LOADS = '''
[[load]]
name = "boiler"
actuator = "mqtt:home/boiler/set"
rated_power = "2.4 kW"
priority = 1
classes = ["water_heater"]

[[load]]
name = "heat_pump"
actuator = "knx:1/2/3"
rated_power = "3 kW"
min_on = "10m"
min_off = "10m"
max_shed = "45m"
classes = ["hvac"]
comfort = { max_off = "1h", window = "6h" }
'''


def problems(*files: tuple[str, str]) -> list[tuple[str, str, str]]:
    with pytest.raises(RuleSyntaxError) as e:
        parse_rule_texts(list(files))
    return e.value.problems


def test_a_valid_file() -> None:
    text = LOADS + '''
[settings]
timezone = "Europe/Brussels"
stale_after = "1m"

[[rule]]
id = "peak"
when = "avg(import_power_kw, 1m) > 4 kW"
for = "30s"
until = "import_power_kw < 3"
until_for = "1m"
action = "peak_limit"
limit = "4 kW"
loads = ["class:water_heater", "heat_pump"]
'''
    rs = parse_rule_texts([("a.toml", text)])
    assert [ld.name for ld in rs.loads] == ["boiler", "heat_pump"]
    hp = rs.loads[1]
    assert (hp.rated_power_w, hp.min_on_s, hp.max_shed_s) == (3000.0, 600.0, 2700.0)
    assert hp.comfort is not None and hp.comfort.max_off_s == 3600.0
    rule = rs.rules[0]
    assert rule.action is Action.PEAK_LIMIT
    assert (rule.hold_s, rule.until_hold_s, rule.loads) == (30.0, 60.0, ("boiler", "heat_pump"))
    assert rs.settings.timezone == "Europe/Brussels" and rs.settings.stale_after_s == 60.0
    assert rs.windows() == {"import_power_kw": 60.0}


def test_toml_syntax_error_has_line_and_column() -> None:
    got = problems(("bad.toml", 'x = "unterminated\n'))
    assert len(got) == 1
    where, key, msg = got[0]
    assert where == "bad.toml:1:18" and key == "(syntax)" and msg.startswith("not valid TOML")


def test_every_problem_is_listed_in_file_order_with_its_position() -> None:
    got = problems(("a.toml", '''[[load]]
name = "Boiler"
actuator = "http://x"
rated_power = "2.4 kWh"
priorty = 3

[[rule]]
id = "r"
action = "shed"
when = "import_power_kw > 4 kW"
loads = ["boiler", "nope"]
limit = "3 kW"
'''))
    assert got == [
        ("a.toml:2:8", "load[0].name", ("expected a name of lower-case letters, digits and '_', "
         "starting with a letter, at most 32 characters (it is used as load.<name> in "
         "expressions)")),
        ("a.toml:3:12", "load[0].actuator",
         "expected <scheme>:<address> with scheme one of mqtt, knx, modbus, bacnet, zigbee"),
        ("a.toml:4:16", "load[0].rated_power",
         "expected a power for 'rated_power', found an energy"),
        ("a.toml:5:1", "load[0].priorty", ("unknown key; did you mean 'priority'? (expected one "
         "of name, actuator, rated_power, priority, classes, min_on, min_off, max_shed, "
         "recovery, safe_state, min_power, limit_step, comfort, description)")),
        # "Boiler" was declared, not "boiler"
        ("a.toml:11:10", "rule[0].loads[0]", ("unknown load 'boiler' (configured: none); a rule "
         "can only switch loads declared with [[load]]")),
        ("a.toml:11:20", "rule[0].loads[1]", ("unknown load 'nope' (configured: none); a rule "
         "can only switch loads declared with [[load]]")),
        ("a.toml:12:1", "rule[0].limit", 'limit is only for action = "peak_limit"'),
    ]


def test_missing_required_keys_point_at_the_table() -> None:
    got = problems(("a.toml", '\n[[rule]]\nid = "r"\n'))
    assert ("a.toml:2:1", "rule[0]", "required key 'action' is missing") in got
    assert ("a.toml:2:1", "rule[0]", "required key 'when' is missing") in got
    got = problems(("a.toml", '[[rule]]\nid = "r"\naction = "peak_limit"\nwhen = "true"\n'))
    assert ("a.toml:1:1", "rule[0]", "required key 'limit' is missing") in got


def test_quantities_need_units() -> None:
    got = problems(("a.toml", LOADS.replace('min_on = "10m"', 'min_on = 600').replace(
        'rated_power = "2.4 kW"', 'rated_power = "2400"')))
    msgs = {k: m for _, k, m in got}
    assert msgs["load[0].rated_power"] == 'expected a power with a unit, e.g. "2.4 kW" or "500 W"'
    assert msgs["load[1].min_on"] == ('expected a duration as a string with a unit, e.g. "30s" '
                                      'or "1h30m"')


def test_load_consistency_checks() -> None:
    got = problems(("a.toml", LOADS.replace('max_shed = "45m"', 'max_shed = "5m"').replace(
        'max_off = "1h"', 'max_off = "5m"')))
    keys = {k: m for _, k, m in got}
    assert "must not be shorter than min_off" in keys["load[1].max_shed"]
    assert "comfort.max_off must be at least min_off" in keys["load[1].comfort"]
    got = problems(("a.toml", LOADS.replace('max_off = "1h"', 'max_off = "7h"')))
    assert got[0][1:] == ("load[1].comfort.max_off", "expected max_off shorter than window")


@pytest.mark.parametrize(("text", "ok"), [
    ("mqtt:home/boiler/set", True),
    ("mqtt:home/+/set", False),
    ("mqtt:", False),
    ("knx:1/2/3", True),
    ("knx:31/7/255", True),
    ("knx:32/0/0", False),
    ("knx:1/2047", True),
    ("knx:1/2/3?status=1/2/4", True),  # the options are the KNX adapter's to check
    ("knx:32/0/0?status=1/2/4", False),
    ("knx:boiler", False),
    ("modbus:10.0.0.5:502/1/coil/3", True),
    ("zigbee:00:0d:6f:00:0a:bc:de:f0/1", True),
    ("bacnet:1234/binary-output/1", True),
    ("http://x", False),
    ("boiler", False),
])
def test_actuators(text: str, ok: bool) -> None:
    assert isinstance(parse_actuator(text), tuple) is ok


def test_names_and_ids_are_unique_across_files() -> None:
    rule = '[[rule]]\nid = "r1"\naction = "shed"\nwhen = "true"\nloads = ["boiler"]\n'
    got = problems(("a.toml", LOADS + rule), ("b.toml", LOADS + rule))
    assert ("b.toml:3:8", "load[0].name",
            "load 'boiler' is already declared at a.toml:3:8") in got
    line = (LOADS + rule).splitlines().index('id = "r1"') + 1
    assert (f"b.toml:{line}:6", "rule[0].id",
            f"rule id 'r1' is already used at a.toml:{line}:6") in got


def test_rules_may_use_loads_of_another_file() -> None:
    rs = parse_rule_texts([
        ("a.toml", LOADS),
        ("b.toml", ('[[rule]]\nid = "r"\naction = "shed"\nwhen = "load.heat_pump.on"\n'
                   'loads = ["class:hvac"]\n')),
    ])
    assert rs.rules[0].loads == ("heat_pump",)
    assert rs.files == ("a.toml", "b.toml")


def test_settings_are_set_once() -> None:
    got = problems(("a.toml", '[settings]\ntimezone = "Europe/Brussels"\n'),
                   ("b.toml", '[settings]\ntimezone = "Europe/Paris"\n'))
    assert got == [("b.toml:2:12", "settings.timezone",
                    "timezone is already set differently in a.toml")]
    got = problems(("a.toml", '[settings]\ntimezone = "Mars/Olympus"\nsettle = "1h"\n'))
    assert [k for _, k, _ in got] == ["settings.timezone", "settings.settle"]


def test_unknown_top_level_keys_and_classes() -> None:
    got = problems(("a.toml", LOADS + '[[rules]]\nid = "x"\n'))
    line = LOADS.count("\n") + 1
    assert got == [(f"a.toml:{line}:1", "rules",
                    "unknown key (expected [settings], [[load]] or [[rule]])")]
    got = problems(("a.toml", LOADS + '[[rule]]\nid = "r"\naction = "shed"\nwhen = "true"\n'
                                      'loads = ["class:ev"]\n'))
    assert got == [(f"a.toml:{line + 4}:10", "rule[0].loads[0]", "no load has class 'ev'")]


def test_an_invalid_load_does_not_make_rules_report_it_unknown() -> None:
    got = problems(("a.toml", LOADS.replace("knx:1/2/3", "knx:99/9/9") +
                    '[[rule]]\nid = "r"\naction = "shed"\nwhen = "load.heat_pump.on"\n'
                    'loads = ["heat_pump"]\n'))
    assert [k for _, k, _ in got] == ["load[1].actuator"]


def test_load_rule_dir(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(LOADS)
    (tmp_path / "b.toml").write_text('[[rule]]\nid = "r"\naction = "shed"\nwhen = "true"\n')
    (tmp_path / "notes.txt").write_text("not a rule file")
    rs = load_rule_dir(tmp_path)
    assert rs.files == (str(tmp_path / "a.toml"), str(tmp_path / "b.toml"))
    assert rs.rules[0].loads == ("boiler", "heat_pump")  # default: every load
    with pytest.raises(ConfigError) as e:
        load_rule_dir(tmp_path / "missing")
    assert e.value.problems[0][1] == "(dir)"
    (tmp_path / "c.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError) as e:
        load_rule_dir(tmp_path)
    assert e.value.problems[0][0] == str(tmp_path / "c.toml")


def test_example_folder_is_one_valid_set() -> None:
    rs = load_rule_dir(Path(__file__).resolve().parents[3] / "rules")
    assert len(rs.files) == 4
    assert {r.id for r in rs.rules} >= {"capacity-peak", "price-high", "dr-emergency",
                                         "ev-solar-surplus"}
