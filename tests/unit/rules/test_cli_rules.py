"""``han-gateway check`` validates rule files; ``han-gateway rules simulate`` replays a CSV."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[3]


def config(tmp_path: Path, rules_dir: Path) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n[rules]\ndir = "{rules_dir}"\n')
    return cfg


def test_check_counts_the_shipped_example_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(config(tmp_path, ROOT / "rules"))]) == 0
    out = capsys.readouterr().out
    assert "rule(s) for" in out and "load(s)" in out


def test_check_reports_a_rule_error_with_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.toml").write_text(
        '[[load]]\nname = "boiler"\nactuator = "mqtt:home/boiler/set"\nrated_power = "2 kW"\n'
        'priority = 1\n\n[[rule]]\nid = "r1"\nwhen = "import_power_kw > > 4 kW"\naction = "shed"\n'
        'loads = ["boiler"]\n'
    )
    assert main(["check", "--config", str(config(tmp_path, rules))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[0].startswith(f"{rules / 'bad.toml'}:9:")
    assert "rule[0].when" in err[0]


def test_rules_simulate_prints_a_timeline_with_the_peak_before_and_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(ROOT / "rules" / "capacity_peak.toml", rules)
    rows = ["time,import_power_w"]
    for minute in range(0, 180):
        power = 6500 if 60 <= minute < 90 else 1500
        rows.append(f"2026-01-05T{16 + minute // 60:02d}:{minute % 60:02d}:00+01:00,{power}")
    csv = tmp_path / "history.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert main(["rules", "simulate", "--rules", str(rules), "--history", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "capacity-peak" in out  # the decisions name their rule
    line = next(x for x in out.splitlines() if "peak 15-minute mean" in x)
    before, after = (float(v) for v in line.replace("kW", "").split()[-2:])
    assert before == 6.5 and after < 4.5  # the capacity rule lowered the billed peak
