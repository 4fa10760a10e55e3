"""``han-gateway decode``: one JSON object per frame on stdout, errors on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"


def run_decode(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "gateway", "decode", *args],
                          input=stdin, capture_output=True, timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_decode_dsmr5_file_prints_the_documented_json(capsys: pytest.CaptureFixture[str]) -> None:
    path = VECTORS / "dsmr" / "dsmr_parser" / "TELEGRAM_V5.txt"
    assert main(["decode", "--protocol", "dsmr", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    frame = json.loads(out[0])
    assert frame["protocol"] == "dsmr"
    assert frame["checksum_ok"] is True
    assert frame["timestamp"] == "2017-01-02T19:20:02+01:00"
    readings = {r["id"]: r for r in frame["readings"]}
    assert readings["1-0:1.8.1"] == {"id": "1-0:1.8.1", "value": 4.426, "unit": "kWh"}
    gas = readings["0-1:24.2.1"]
    assert gas["unit"] == "m3" and isinstance(gas["value"], float) and gas["timestamp"].endswith("+01:00")


def test_decode_several_telegrams_from_stdin_and_a_bad_crc() -> None:
    good = (VECTORS / "dsmr" / "dsmr_parser" / "TELEGRAM_V5.txt").read_bytes()
    bad = (VECTORS / "dsmr" / "lvzon" / "p1-example-5.0.txt").read_bytes()  # CRC does not validate
    proc = run_decode("--protocol", "dsmr", "-", stdin=good + b"noise\r\n" + bad + good)
    assert proc.returncode == 1
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(frames) == 2 and all(f["checksum_ok"] for f in frames)
    errors = [json.loads(line) for line in proc.stderr.splitlines()]
    checksum = [e for e in errors if e["error"] == "ChecksumError"]
    assert len(checksum) == 1
    assert checksum[0]["offset"] == len(good) + len(b"noise\r\n") and checksum[0]["detail"]


def test_decode_encrypted_smarty_with_key_and_with_a_wrong_key() -> None:
    exp = json.loads((VECTORS / "dsmr" / "smarty_openhab" / "expected.json").read_text())
    frame = str(VECTORS / "dsmr" / "smarty_openhab" / "frame.bin")
    ok = run_decode("--protocol", "dsmr", "--key", exp["encryption_key_hex"],
                    "--auth-key", exp["authentication_key_hex"], frame)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["checksum_ok"] is False  # the known inner-CRC quirk; the GCM tag verified
    assert any(r["id"] == "1-0:1.8.0" for r in out["readings"])
    wrong = run_decode("--protocol", "dsmr", "--key", "00" * 16, frame)
    assert wrong.returncode == 1 and wrong.stdout == ""
    err = json.loads(wrong.stderr.splitlines()[0])
    assert err["error"] == "DecryptionError" and "00" * 16 not in wrong.stderr


def test_decode_iec_capture_with_sign_on_echo_and_parity_bits() -> None:
    from gateway.protocols._checks import bcc

    block = b"1.8.0(001234.5*kWh)\r\n0.0.0(12345678)\r\n!\r\n\x03"
    readout = b"/ABC5METER01\r\n\x02" + block + bytes([bcc(block)])
    with_parity = bytes(b | 0x80 if bin(b).count("1") % 2 else b for b in readout)  # 7E1 read as 8N1
    capture = b"/?!\r\n" + b"/?!\r\n" + readout + b"\x06050\r\n" + with_parity
    proc = run_decode("--protocol", "iec62056-21", "-", stdin=capture)
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(frames) == 2
    for f in frames:
        assert f["protocol"] == "iec62056-21" and f["meter_id"] == "12345678" and f["checksum_ok"] is True
        assert {"id": "1.8.0", "value": 1234.5, "unit": "kWh"} in f["readings"]


def test_decode_usage_errors() -> None:
    assert run_decode("--protocol", "dsmr", "/nonexistent/file").returncode == 2
    proc = run_decode("--protocol", "dsmr", "--key", "xyz", "-", stdin=b"")
    assert proc.returncode == 2 and "hexadecimal" in proc.stderr
