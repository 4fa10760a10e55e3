"""The expression language: tokens, grammar, checking, errors with positions, evaluation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import ConfigError, RuleSyntaxError
from gateway.model import DemandResponseEvent, PriceSignal, Reading, Snapshot
from gateway.rules import parse_rule_texts
from gateway.rules.ast import BinOp, BoolOp, Compare, Dim, In, Name, Not, Number
from gateway.rules.compile import compile_expr
from gateway.rules.lexer import ExprError, tokenize
from gateway.rules.parser import parse
from gateway.rules.state import Frame, Inputs, Missing

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # a Monday


def frame(*, import_kw: float | None = 2.0, export_kw: float = 0.0, price: float | None = None,
          now: datetime = T0, inputs: Inputs | None = None) -> Frame:
    inp = inputs or Inputs()
    if import_kw is not None:
        inp.observe(Snapshot(meter="m", protocol="dsmr", device_id=None, timestamp=now,
                             received=now, readings=(
                                 Reading(id="1-0:1.7.0", value=import_kw, unit="kW"),
                                 Reading(id="1-0:2.7.0", value=export_kw, unit="kW"))))
    if price is not None:
        inp.set_price(PriceSignal(start=now - timedelta(hours=1), end=now + timedelta(hours=1),
                                  price_per_kwh=price))
    return Frame(inp, now, UTC, {})


def value(text: str, f: Frame | None = None, dim: Dim = Dim.BOOL) -> object:
    return compile_expr(text, expect=dim).fn(f or frame())


# ------------------------------------------------------------------ tokens
def test_tokens_numbers_durations_times_units() -> None:
    toks = tokenize("avg(import_power_kw, 5m) > 4.5 kW and time >= 06:30 or x < 1h30m")
    kinds = [(t.kind, t.text) for t in toks]
    assert ("dur", "5m") in kinds
    assert ("num", "4.5") in kinds
    assert ("name", "kW") in kinds
    assert ("time", "06:30") in kinds
    assert next(t for t in toks if t.text == "1h30m").value == 5400.0
    assert next(t for t in toks if t.text == "06:30").value == 6.5 * 3600
    assert toks[-1].kind == "eof"


@pytest.mark.parametrize(("text", "message", "pos"), [
    ("price = 3", "expected '==' to compare", 6),
    ("a && b", "expected 'and'", 2),
    ("a || b", "expected 'or'", 2),
    ("!a", "expected 'not' or '!='", 0),
    ("x > 'open", "expected a closing ' for this string", 4),
    ("x > 25:00", "25:00 is not a time of day", 4),
    ("x $ 3", "unexpected character '$'", 2),
])
def test_lexer_errors(text: str, message: str, pos: int) -> None:
    with pytest.raises(ExprError) as e:
        parse(text)
    assert message in e.value.message
    assert e.value.pos == pos


# ----------------------------------------------------------------- grammar
def test_precedence_and_chaining() -> None:
    tree = parse("not a or b and c")
    assert isinstance(tree, BoolOp) and tree.op == "or"
    assert isinstance(tree.operands[0], Not)
    assert isinstance(tree.operands[1], BoolOp) and tree.operands[1].op == "and"
    arith = parse("1 + 2 * 3 - 4")
    assert isinstance(arith, BinOp) and arith.op == "-"
    assert isinstance(arith.left, BinOp) and arith.left.op == "+"
    assert isinstance(arith.left.right, BinOp) and arith.left.right.op == "*"
    chain = parse("06:00 <= time < 09:00")
    assert isinstance(chain, Compare) and chain.ops == ("<=", "<")
    member = parse("weekday not in [sat, sun,]")
    assert isinstance(member, In) and member.negated and len(member.options) == 2


def test_units_attach_to_numbers() -> None:
    n = parse("2400 W")
    assert isinstance(n, Number) and n.dim is Dim.POWER and n.value == pytest.approx(2.4)
    e = parse("12 kWh")
    assert isinstance(e, Number) and e.dim is Dim.ENERGY and e.value == 12.0
    d = parse("90 s")
    assert isinstance(d, Number) and d.dim is Dim.DURATION and d.value == 90.0
    p = parse("50 %")
    assert isinstance(p, Number) and p.dim is Dim.NUMBER and p.value == 50.0
    name = parse("load.boiler.on")
    assert isinstance(name, Name) and name.name == "load.boiler.on"


@pytest.mark.parametrize(("text", "message", "pos"), [
    ("", "expected an expression, found nothing", 0),
    ("import_power_kw >", "expected a value (number, name, '(' ...), found the end", 17),
    ("(import_power_kw > 3", "expected ')' to close the '('", 20),
    ("import_power_kw > 3 price", "expected an operator such as 'and' or '>', found 'price'", 20),
    ("import_power_kw > 4 kw", "unknown unit 'kw'", 20),
    ("avg(import_power_kw 5m)", "expected ',' or ')' in the arguments of avg()", 20),
    ("x in sat", "expected '[' to start the list after 'in'", 5),
    ("and x", "expected a value before 'and'", 0),
])
def test_parse_errors(text: str, message: str, pos: int) -> None:
    with pytest.raises(ExprError) as e:
        parse(text)
    assert message in e.value.message
    assert e.value.pos == pos


def test_unknown_unit_suggests_the_right_case() -> None:
    with pytest.raises(ExprError) as e:
        parse("import_power_kw > 4 kw")
    assert "did you mean 'kW'?" in e.value.message


# ---------------------------------------------------------------- checking
@pytest.mark.parametrize(("text", "message", "pos"), [
    ("import_power_kw > 5 kWh", "cannot compare a power and an energy", 18),
    ("import_pwr_kw > 5", "unknown name 'import_pwr_kw'; did you mean 'import_power_kw'?", 0),
    ("import_power_kw + time > 3", "cannot add or subtract a power and a time of day", 0),
    ("price and true", "expected a condition (true/false) on each side of 'and', found a number", 0),
    ("import_power_kw", "expected a condition (true/false) here, found a power", 0),
    ("avg(price, 5m) > 1", "price is not a series", 4),
    ("avg(import_power_kw, 2d) > 1", "expected a window longer than 0 s and at most 1 d", 21),
    ("avg(import_power_kw) > 1", "expected avg(series, window)", 0),
    ("__import__('os')", "unknown function __import__()", 0),
    ("evil(1) > 2", "unknown function evil()", 0),
    ("load.boiler.on", "unknown load 'boiler' (configured: none)", 0),
    ("meter.no_such_thing > 1", "unknown meter quantity 'no_such_thing'", 0),
    ("dr.event > 'x'", "a string can only be compared with == or !=", 0),
    ("time_between(17:00) ", "time_between() takes 2 arguments, found 1", 0),
    ("time_between(17:00, 5 kW)", "expected a time of day in time_between(), found a power", 20),
    ("import_power_kw * export_power_kw > 1", "cannot multiply a power by a power", 0),
    ("-time > 1", "cannot negate a time of day", 0),
    ("weekday in [sat, 'x']", "cannot compare a number with a string", 17),
])
def test_check_errors(text: str, message: str, pos: int) -> None:
    with pytest.raises(ExprError) as e:
        compile_expr(text, expect=Dim.BOOL)
    assert message in e.value.message
    assert e.value.pos == pos


def test_dimensions_of_arithmetic() -> None:
    assert compile_expr("import_power_kw * 15m", expect=Dim.ENERGY).dim is Dim.ENERGY
    assert compile_expr("import_energy_kwh / 1h", expect=Dim.POWER).dim is Dim.POWER
    assert compile_expr("import_energy_kwh / 2 kW", expect=Dim.DURATION).dim is Dim.DURATION
    assert compile_expr("time - 17:00", expect=Dim.DURATION).dim is Dim.DURATION
    assert compile_expr("time + 30m", expect=Dim.TIME).dim is Dim.TIME
    assert compile_expr("import_power_kw / export_power_kw", expect=Dim.NUMBER).dim is Dim.NUMBER


def test_windows_and_loads_are_collected() -> None:
    c = compile_expr("avg(import_power_kw, 5m) > max(net_power_kw, 1m) and load.ev.on",
                     expect=Dim.BOOL, load_names=["ev"])
    assert c.windows == (("import_power_kw", 300.0), ("net_power_kw", 60.0))
    assert c.loads == frozenset({"ev"})


# --------------------------------------------------------------- evaluation
def test_bare_numbers_are_in_the_names_unit() -> None:
    f = frame(import_kw=4.2)
    assert value("import_power_kw > 4", f) is True
    assert value("import_power_kw > 4100 W", f) is True
    assert value("import_power_kw < 4.3 kW", f) is True
    assert value("import_power_kw == 4200 W", f) is True
    assert value("import_power_kw * 2 - 1 kW", f, Dim.POWER) == pytest.approx(7.4)


def test_time_and_weekday() -> None:
    monday_noon = frame(now=T0)
    assert value("time_between(11:00, 13:00)", monday_noon) is True
    assert value("time_between(22:00, 06:00)", monday_noon) is False
    night = frame(now=T0.replace(hour=23, minute=30))
    assert value("time_between(22:00, 06:00)", night) is True
    assert value("weekday == mon and not weekend", monday_noon) is True
    sunday = frame(now=T0 + timedelta(days=6))
    assert value("weekday in [sat, sun] and weekend", sunday) is True
    assert value("11:59 < time <= 12:00", monday_noon) is True
    assert value("hour == 12 and minute == 0 and month == 1 and day == 5", monday_noon) is True


def test_unknown_values_and_three_valued_logic() -> None:
    f = frame(price=None)
    c = compile_expr("price > 0.3", expect=Dim.BOOL)
    with pytest.raises(Missing):
        c.fn(f)
    assert c.test(f) is None
    assert value("true or price > 0.3", f) is True
    assert value("price > 0.3 or true", f) is True
    assert value("false and price > 0.3", f) is False
    assert compile_expr("not (price > 0.3)", expect=Dim.BOOL).test(f) is None
    assert value("not known(price) and known(import_power_kw)", f) is True
    assert compile_expr("import_power_kw / export_power_kw > 1", expect=Dim.BOOL).test(
        frame(import_kw=1.0, export_kw=0.0)) is None  # division by zero is unknown


def test_functions() -> None:
    f = frame(import_kw=3.0, export_kw=1.0)
    assert value("min(import_power_kw, export_power_kw, 2 kW)", f, Dim.POWER) == 1.0
    assert value("max(import_power_kw, 5 kW)", f, Dim.POWER) == 5.0
    assert value("abs(export_power_kw - import_power_kw)", f, Dim.POWER) == 2.0
    assert value("clamp(import_power_kw, 0, 2.5 kW)", f, Dim.POWER) == 2.5
    assert value("net_power_kw", f, Dim.POWER) == 2.0


def test_dr_names_default_when_no_event() -> None:
    inp = Inputs()
    f = frame(inputs=inp)
    assert value("not dr.active and dr.criticality == 0 and dr.duty_cycle_pct == 100", f) is True
    inp.set_dr_event(DemandResponseEvent(event_id="e1", start=T0 - timedelta(minutes=5),
                                         end=T0 + timedelta(minutes=25), criticality=4,
                                         issuer="dso", duty_cycle_pct=50.0), T0)
    f = Frame(inp, T0, UTC, {})
    assert value("dr.active and dr.criticality >= 4 and dr.issuer == 'dso'", f) is True
    assert value("dr.remaining", f, Dim.DURATION) == 25 * 60
    assert value("dr.elapsed", f, Dim.DURATION) == 5 * 60


# ------------------------------------------------------ positions in files
def located(text: str) -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as e:
        parse_rule_texts([("r.toml", text)])
    return e.value


RULE_HEAD = '[[load]]\nname = "boiler"\nactuator = "mqtt:b"\nrated_power = "2 kW"\n\n[[rule]]\nid = "x"\naction = "shed"\n'


def test_error_in_a_one_line_expression_points_at_the_column() -> None:
    err = located(RULE_HEAD + 'when = "import_power_kw > 5 kWh"\n')
    assert (err.file, err.line, err.col) == ("r.toml", 9, 27)
    assert err.problems == [("r.toml:9:27", "rule[0].when", "cannot compare a power and an energy")]
    assert str(err) == "r.toml:9:27: rule[0].when: cannot compare a power and an energy"
    assert isinstance(err, ConfigError)


def test_error_in_a_multi_line_expression() -> None:
    err = located(RULE_HEAD + 'when = """\n  import_power_kw > 5 kW and\n  price >> 2"""\n')
    assert (err.line, err.col) == (11, 10)
    assert "found '>'" in err.problems[0][2]


def test_error_position_counts_escapes_in_the_toml_string() -> None:
    err = located(RULE_HEAD + 'when = "dr.event == \\"e1\\" and bogus"\n')
    # Decoded: dr.event == "e1" and bogus -> 'bogus' at offset 21; in the file the
    # two escapes add two characters before it.
    assert (err.line, err.col) == (9, 9 + 21 + 2)
    assert "unknown name 'bogus'" in err.problems[0][2]


def test_error_in_a_literal_string() -> None:
    err = located(RULE_HEAD + "when = 'dr.event == \"e1\" and bogus'\n")
    assert (err.line, err.col) == (9, 9 + 21)
