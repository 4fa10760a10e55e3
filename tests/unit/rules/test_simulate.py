"""rules simulate: history from CSV or the store, the house model, the report, the plot."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import ConfigError, RuleSyntaxError
from gateway.model import Reading, Snapshot
from gateway.rules import load_rule_files
from gateway.rules.simulate import (
    Record,
    matplotlib_available,
    read_history_csv,
    read_history_store,
    render_report,
    run_simulate,
    simulate,
)
from gateway.store import Store

RULES = Path(__file__).resolve().parents[3] / "rules"
T0 = datetime(2026, 1, 5, 16, 0, tzinfo=UTC)


def evening(path: Path, *, step_s: int = 10, hours: float = 2.0, extra: str = "") -> Path:
    """An evening at home: 0.8 kW, cooking (+3 kW) from 17:00 to 17:40.

    The water heater (2.4 kW) and heat pump (3 kW) run throughout, so they are
    in the recorded import.
    """
    lines = ["time,import_power_w,export_power_w" + (",load_water_heater_w" if extra else "")]
    for i in range(int(hours * 3600 / step_s)):
        t = T0 + timedelta(seconds=i * step_s)
        base = 800 + 2400 + 3000 + (3000 if 3600 <= i * step_s < 6000 else 0)
        row = f"{t.isoformat()},{base},0"
        if extra:
            row += ",2400"
        lines.append(row)
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------- CSV
def test_read_csv_all_columns(tmp_path: Path) -> None:
    p = tmp_path / "h.csv"
    p.write_text(
        "time,import_power_kw,export_power_w,import_energy_kwh,tariff,price,dr_criticality,"
        "dr_event,dr_classes,dr_duty_cycle_pct,load_ev_charger_w\n"
        "2026-01-05T17:00:00+01:00,1.5,0,1000.0,0002,0.31,0,,,,\n"
        "1767628860,2,100,1000.1,,,3,e1,hvac ev,50,7000\n"
    )
    a, b = read_history_csv(p)
    assert a.time == datetime(2026, 1, 5, 16, 0, tzinfo=UTC)
    assert (a.import_power_w, a.export_power_w, a.tariff, a.price) == (1500.0, 0.0, "0002", 0.31)
    assert b.time == datetime.fromtimestamp(1767628860, UTC)
    assert (b.dr_criticality, b.dr_event, b.dr_classes, b.dr_duty_cycle_pct) == (
        3, "e1", ("hvac", "ev"), 50.0)
    assert b.load_power_w == (("ev_charger", 7000.0),) and a.load_power_w == ()


@pytest.mark.parametrize(("text", "where", "column", "message"), [
    ("", "1", "(header)", "the file is empty"),
    ("time,import_power_w,bogus\n", "1", "bogus", "unknown column"),
    ("import_power_w\n1\n", "1", "time", "required column is missing"),
    ("time,export_power_w\n", "1", "import_power_w", "required column is missing"),
    ("time,import_power_w\n2026-01-05T16:00:00Z,x\n", "2", "import_power_w", "expected a number"),
    ("time,import_power_w\nyesterday,1\n", "2", "time", "expected ISO 8601"),
    ("time,import_power_w\n2026-01-05T16:00:00Z,1\n2026-01-05T15:00:00Z,1\n", "3", "time",
     "increasing time order"),
    ("time,import_power_w\n2026-01-05T16:00:00Z\n", "2", "(row)", "expected 2 cells"),
    ("time,import_power_w,dr_criticality\n2026-01-05T16:00:00Z,1,12\n", "2", "dr_criticality",
     "0 to 9"),
    ("time,import_power_w\n2026-01-05T16:00:00Z,nan\n", "2", "import_power_w", "finite"),
    ("time,import_power_w\n", "2", "(rows)", "at least one data row"),
])
def test_read_csv_errors_name_line_and_column(tmp_path: Path, text: str, where: str,
                                               column: str, message: str) -> None:
    p = tmp_path / "h.csv"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        read_history_csv(p)
    (f, col, msg), = e.value.problems
    assert (f, col) == (f"{p}:{where}", column) and message in msg


def test_read_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        read_history_csv(tmp_path / "nope.csv")
    assert e.value.problems[0][1] == "(file)"


# ---------------------------------------------------------------- simulate
def test_capacity_peak_history(tmp_path: Path) -> None:
    rules = load_rule_files([RULES / "capacity_peak.toml"])
    result = simulate(rules, read_history_csv(evening(tmp_path / "h.csv")), seed=1)
    assert result.peak_before_kw == pytest.approx(9.2)
    assert result.peak15_before_kw == pytest.approx(9.2)
    # The 20 s hold lets a few seconds through; the quarter-hour means stay at 4 kW.
    assert result.peak_after_kw <= 6.2
    assert result.peak15_after_kw <= 4.0 + 0.15
    assert result.shifted_kwh > 1.0
    assert result.energy_after_kwh == pytest.approx(result.energy_before_kwh
                                                    - result.shifted_kwh, rel=1e-6)
    assert result.paid_back_kwh == 0.0 and result.modelled_loads == ()
    loads = {c.load for c in result.commands}
    assert loads == {"water_heater", "heat_pump"}
    assert all(c.rule in ("capacity-peak", "safe-state", "fail-safe") for c in result.commands)
    out = io.StringIO()
    render_report(result, out)
    text = out.getvalue()
    assert "capacity-peak" in text and "peak 15-minute mean" in text
    assert "rebound not modelled" in text
    assert simulate(rules, read_history_csv(evening(tmp_path / "h.csv")), seed=1) == result


def test_load_columns_model_payback(tmp_path: Path) -> None:
    rules = load_rule_files([RULES / "capacity_peak.toml"])
    records = read_history_csv(evening(tmp_path / "h.csv", extra="yes"))
    result = simulate(rules, records, seed=1)
    assert result.modelled_loads == ("water_heater",)
    # The water heater's element is at rated power already: it cannot catch up.
    assert result.paid_back_kwh == 0.0
    # One that draws 1 kW of its 2.4 kW (and no heat pump) can, once cooking ends.
    records = [Record(time=r.time, import_power_w=r.import_power_w - 2400 - 3000 + 1000 + 500,
                      load_power_w=(("water_heater", 1000.0),)) for r in records]
    result = simulate(rules, records, seed=1)
    assert result.shifted_kwh > 0.5
    assert 0.0 < result.paid_back_kwh <= result.shifted_kwh + 1e-9
    out = io.StringIO()
    render_report(result, out)
    assert "paid back afterwards" in out.getvalue()


def test_price_and_dr_columns_reach_the_rules(tmp_path: Path) -> None:
    p = tmp_path / "h.csv"
    rows = ["time,import_power_w,price,dr_criticality,dr_classes"]
    for i in range(720):
        t = T0 + timedelta(seconds=10 * i)
        price = "0.50" if 1800 <= 10 * i < 3600 else ("0.20" if i % 60 == 0 else "")
        crit = "7" if 5400 <= 10 * i < 6000 else "0"
        rows.append(f"{t.isoformat()},3000,{price},{crit},smart_appliance")
    p.write_text("\n".join(rows) + "\n")
    rules = load_rule_files([RULES / "price_shedding.toml", RULES / "dr_events.toml"])
    result = simulate(rules, read_history_csv(p))
    by_rule = {(c.load, c.rule) for c in result.commands}
    assert ("pool_pump", "price-high") in by_rule
    assert ("dryer", "dr-emergency") in by_rule or ("dryer", "dr-moderate") in by_rule
    assert ("freezer", "dr-emergency") not in by_rule


# ------------------------------------------------------------------- store
async def test_history_from_the_store(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "gw.db") as store:
        for i in range(100):
            t = T0 + timedelta(seconds=10 * i)
            await store.append(Snapshot(
                meter="main", protocol="dsmr", device_id=None, timestamp=t, received=t,
                readings=(Reading(id="1-0:1.7.0", value=6.0 if 30 <= i < 60 else 1.0, unit="kW"),
                          Reading(id="1-0:2.7.0", value=0.0, unit="kW"))), destinations=[])
        records = await read_history_store(store, meter="main", start=T0,
                                           end=T0 + timedelta(hours=1))
        assert len(records) == 100
        assert records[30].import_power_w == 6000.0 and records[0].import_power_w == 1000.0
        with pytest.raises(ConfigError):
            await read_history_store(store, meter="other", start=T0, end=T0 + timedelta(hours=1))
        with pytest.raises(ConfigError):
            await read_history_store(store, meter="main", start=T0 - timedelta(days=3),
                                     end=T0 - timedelta(days=2))
        out = io.StringIO()
        status = await run_simulate(rules_dir=RULES, store=store, meter="main", start=T0,
                                    end=T0 + timedelta(hours=1), out=out)
        assert status == 0 and "summary" in out.getvalue()


# --------------------------------------------------------------- the command
async def test_run_simulate_with_csv(tmp_path: Path) -> None:
    out = io.StringIO()
    status = await run_simulate(rules_dir=RULES, history=evening(tmp_path / "h.csv"), out=out)
    assert status == 0
    text = out.getvalue()
    assert text.startswith("rules: 9 load(s), 10 rule(s) from ")
    assert "capacity-peak" in text


async def test_run_simulate_refuses_bad_rules_and_arguments(tmp_path: Path) -> None:
    bad = tmp_path / "rules"
    bad.mkdir()
    (bad / "x.toml").write_text('[[rule]]\nid = "r"\naction = "shed"\nwhen = "pricey > 1"\n')
    with pytest.raises(RuleSyntaxError) as e:
        await run_simulate(rules_dir=bad, history=evening(tmp_path / "h.csv"), out=io.StringIO())
    assert (e.value.line, e.value.col) == (4, 9)
    with pytest.raises(ConfigError):
        await run_simulate(rules_dir=RULES, out=io.StringIO())


@pytest.mark.skipif(not matplotlib_available(), reason="matplotlib is optional")
async def test_plot(tmp_path: Path) -> None:
    out = io.StringIO()
    png = tmp_path / "out.png"
    await run_simulate(rules_dir=RULES, history=evening(tmp_path / "h.csv"), plot=png, out=out)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert f"plot written to {png}" in out.getvalue()


@pytest.mark.skipif(matplotlib_available(), reason="only without matplotlib")
async def test_plot_without_matplotlib(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        await run_simulate(rules_dir=RULES, history=evening(tmp_path / "h.csv"),
                           plot=tmp_path / "out.png", out=io.StringIO())
    assert "matplotlib is not installed" in str(e.value)
