"""`make demo`'s command runs end to end; the systemd unit is well-formed and hardened."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_demo_runs_meter_broker_and_gateway(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("han-gateway")
    proc = subprocess.run(
        [str(exe), "demo", "--duration", "8", "--data-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "mosquitto_sub -h 127.0.0.1" in out and "han/demo/meter/main/state" in out
    lines = [line for line in out.splitlines() if "power import" in line]
    assert lines, out[-2000:]  # the live summary shows readings
    assert "mqtt up" in lines[-1]  # …and they went through the embedded broker
    published = int(lines[-1].split("published ")[1].split()[0])
    assert published >= 1
    assert (tmp_path / "demo" / "gateway.sqlite3").exists()
    assert "Traceback" not in proc.stderr


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment, method-assign]
    cp.read(ROOT / "systemd" / "han-gateway.service")
    return cp


def test_unit_is_notify_with_watchdog_and_hardened() -> None:
    svc = _unit()["Service"]
    assert svc["Type"] == "notify"
    assert int(svc["WatchdogSec"]) > 0
    assert svc["User"] == "han-gateway" and "dialout" in svc["SupplementaryGroups"]
    assert svc["StateDirectory"] == "han-gateway"
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes"
    assert svc["RestartPreventExitStatus"] == "2"  # bad config is not restarted in a loop
    assert "run --config" in svc["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_exposure_score_is_ok(tmp_path: Path) -> None:
    unit = tmp_path / "han-gateway.service"
    unit.write_text((ROOT / "systemd" / "han-gateway.service").read_text())
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, timeout=60)
    line = [x for x in proc.stdout.splitlines() if "Overall exposure level" in x][0]
    score = float(line.split(":")[1].split()[0])
    assert score <= 2.0, line  # systemd rates ≤ 2.0 as well hardened ("OK")
