"""`make demo` (``han-gateway demo``) opens with the household page up and prints its address."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


@pytest.mark.timeout(120)
def test_demo_prints_the_page_address_and_serves_it(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("han-gateway")
    proc = subprocess.Popen([str(exe), "demo", "--duration", "40", "--data-dir", str(tmp_path / "demo")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            m = re.search(r"household page\s+: (http://127\.0\.0\.1:\d+/)\s+\(password for switching loads: (\S+)\)",
                          line)
            if m:
                url = m.group(1)
                break
        assert url, "the demo printed no page address"
        deadline = time.monotonic() + 30
        live: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "api/live", timeout=5) as r:  # noqa: S310 - loopback
                    live = json.load(r)
            except OSError:
                live = {}
            if live.get("power_import_w") is not None:
                break
            time.sleep(0.3)
        assert live.get("gateway") == "demo" and live.get("meter") == "main", live
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            assert b"Energy at home" in r.read()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
