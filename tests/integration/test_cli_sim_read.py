"""`han-gateway simulate-meter` in one process, `han-gateway read` in another, as a user
would try their setup: pty (IEC 62056-21 with the baud switch, DSMR) and TCP (ser2net style)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)
EXE = str(Path(sys.executable).with_name("han-gateway"))


def start_sim(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([EXE, "simulate-meter", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "virtual … meter on …" once it is ready
    assert "virtual" in line, proc.stderr.read() if proc.poll() is not None else line
    return proc


def read(tmp_path: Path, meter_toml: str) -> dict[str, object]:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n[[meter]]\n{meter_toml}\n')
    proc = subprocess.run([EXE, "read", "--config", str(cfg), "--timeout", "30"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_iec_virtual_meter_on_a_pty_read_by_the_gateway(tmp_path: Path) -> None:
    link = tmp_path / "optical"
    sim = start_sim("--protocol", "iec62056-21", "--pty", "--link", str(link), "--reaction-time", "0.05")
    try:
        snap = read(tmp_path, f'id = "opt"\nprotocol = "iec62056-21"\nport = "{link}"\nreaction_time_s = 0.05')
    finally:
        stop(sim)
    assert not link.exists()  # SIGTERM cleaned up the symlink
    assert snap["protocol"] == "iec62056-21" and snap["checksum_ok"] is True
    ids = {r["id"] for r in snap["readings"]}  # type: ignore[attr-defined, index]
    assert {"1.8.0", "32.7.0"} <= ids


def test_dsmr_virtual_meter_over_tcp_read_by_the_gateway(tmp_path: Path) -> None:
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = start_sim("--protocol", "dsmr", "--listen", f"tcp://127.0.0.1:{port}", "--interval", "0.5")
    try:
        snap = read(tmp_path, f'id = "p1"\nprotocol = "dsmr"\nport = "socket://127.0.0.1:{port}"')
    finally:
        stop(sim)
    assert snap["protocol"] == "dsmr" and snap["checksum_ok"] is True
    assert snap["device_id"] == "E0044007382246019"


def test_encrypted_smarty_virtual_meter_on_a_pty(tmp_path: Path) -> None:
    key = "000102030405060708090A0B0C0D0E0F"
    link = tmp_path / "smarty"
    sim = start_sim("--protocol", "dsmr", "--pty", "--link", str(link), "--variant", "smarty",
                    "--key", key, "--auth-key", key, "--interval", "0.5")
    try:
        snap = read(tmp_path, f'id = "lux"\nprotocol = "dsmr"\nport = "{link}"\nkey = "{key}"\nauth_key = "{key}"')
    finally:
        stop(sim)
    assert any(r["id"] == "1-0:1.8.0" or r["id"] == "1-0:1.8.1" for r in snap["readings"])  # type: ignore[attr-defined, index]


def test_read_reports_a_meter_that_sends_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n[[meter]]\nid = "x"\nprotocol = "dsmr"\n'
                   f'port = "{tmp_path / "missing-tty"}"\n')
    t0 = time.monotonic()
    proc = subprocess.run([EXE, "read", "--config", str(cfg), "--timeout", "2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "no frame from meter x" in proc.stderr and "cannot open" in proc.stderr
    assert time.monotonic() - t0 < 30


def test_mbus_scan_finds_every_meter_of_a_virtual_bus(tmp_path: Path) -> None:
    link = tmp_path / "mbus"
    sim = start_sim("--protocol", "mbus", "--pty", "--link", str(link),
                    "--option", "meters=3", "--option", "baud=38400")
    try:
        proc = subprocess.run([EXE, "mbus", "scan", "--port", str(link), "--baud", "38400",
                               "--mode", "secondary", "--timeout-margin", "0.02"],
                              capture_output=True, text=True, timeout=110)
    finally:
        stop(sim)
    assert proc.returncode == 0, proc.stderr
    found = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(found) == 3
    assert all(f["secondary"] and len(f["secondary"].split("-")[0]) == 8 for f in found)
    assert "100.0%" in proc.stderr and "secondary_addresses = [" in proc.stderr
