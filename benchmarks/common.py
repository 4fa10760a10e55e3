"""Shared helpers for the benchmark scenarios."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT.parent / "shared" / "vectors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextmanager
def mosquitto(*, sys_interval: int = 0, nodelay: bool = False) -> Iterator[int]:
    """A plain Debian mosquitto on a free loopback port (the same peer as the tests).

    ``sys_interval`` > 0 makes it publish its ``$SYS`` counters that often (seconds).
    ``nodelay`` sets ``set_tcp_nodelay true`` (mosquitto's default leaves Nagle on, so
    a small message right after another to the same subscriber waits for its
    delayed ACK, up to 40 ms on Linux).
    """
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory() as d:
        for _attempt in range(5):
            # free_port() only says the port was free a moment ago: if mosquitto
            # cannot bind it after all, it exits, and we try another one.
            port = free_port()
            conf = Path(d) / "m.conf"
            conf.write_text(
                f"user root\nper_listener_settings false\nallow_anonymous true\npersistence false\n"
                f"max_queued_messages 100000\nsys_interval {sys_interval}\n"
                f"set_tcp_nodelay {'true' if nodelay else 'false'}\n"
                f"listener {port} 127.0.0.1\n"
            )
            proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 5
            up = False
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    up = proc.poll() is None
                    break
                except OSError:
                    time.sleep(0.02)
            if up:
                break
            proc.kill()
            proc.wait(5)
        else:
            raise RuntimeError("mosquitto did not start")
        try:
            yield port
        finally:
            proc.terminate()
            proc.wait(5)


def proc_cpu_seconds(pid: int) -> float:
    user, system = proc_cpu_split(pid)
    return user + system


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class MeterFeeder:
    """A virtual DSMR 5 meter on a pty, written once a second by a thread (``start``/``stop``),
    so that a daemon under test always has fresh meter data."""

    def __init__(self) -> None:
        import threading

        from gateway.sim.dsmr import DsmrSimulator
        from gateway.sim.runner import PtyMeter

        self.sim = DsmrSimulator("dsmr5")
        self.meter = PtyMeter()
        self.path = self.meter.path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)

    def _feed(self) -> None:
        from datetime import UTC, datetime, timedelta

        t = datetime(2026, 1, 1, tzinfo=UTC)
        while not self._stop.is_set():
            t += timedelta(seconds=1)
            self.meter.write(self.sim.telegram(t))
            self._stop.wait(1.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.meter.close()
