"""Fixtures for end-to-end tests: the real ``han-gateway`` daemon as a child process,
a virtual DSMR meter on a pty, and read-only looks into the gateway's database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest

from gateway.sim.dsmr import DsmrSimulator
from gateway.sim.runner import PtyMeter

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


@dataclass
class GatewayProcess:
    config: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> GatewayProcess:
        self._log = self.log_path.open("ab")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--log-level", "info", "run", "--config", str(self.config)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._close_log()
        return rc

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Meter:
    """A virtual DSMR 5 meter on a pty; meter time advances one second per telegram."""

    def __init__(self, link: Path, variant: str = "dsmr5", **kw: object) -> None:
        self.sim = DsmrSimulator(variant, **kw)  # type: ignore[arg-type]
        self.pty = PtyMeter(link=str(link))
        self.sent: list[datetime] = []

    def push(self) -> datetime:
        now = T0 + timedelta(seconds=len(self.sent))
        self.pty.write(self.sim.telegram(now))
        self.sent.append(now)
        return now

    def close(self) -> None:
        self.pty.close()


@pytest.fixture
def gateway_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``factory(config, env=None) -> GatewayProcess`` (started); all are stopped at the end."""
    procs: list[GatewayProcess] = []

    def factory(config: Path, env: dict[str, str] | None = None) -> GatewayProcess:
        gp = GatewayProcess(config, tmp_path / f"gateway-{len(procs)}.log", env or {}).start()
        procs.append(gp)
        return gp

    yield factory
    for gp in procs:
        if gp.alive:
            gp.kill9()


@pytest.fixture
def meter_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    meters: list[Meter] = []

    def factory(name: str = "p1", **kw: object) -> Meter:
        m = Meter(tmp_path / name, **kw)
        meters.append(m)
        return m

    yield factory
    for m in meters:
        m.close()
