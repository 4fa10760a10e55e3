"""``han-gateway simulate-meter``: run a virtual meter on a pty or a TCP port."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.sim.registry import SIMULATORS


def _listen_addr(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        raise ConfigError([("(command line)", "--listen", "expected tcp://HOST:PORT")])
    return parts.hostname, parts.port


async def simulate_meter(args: argparse.Namespace) -> int:
    # SIGTERM cancels like Ctrl-C, so the pty and its --link symlink are cleaned up.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    module, _, name = SIMULATORS[args.protocol].partition(":")
    run: Callable[[argparse.Namespace], Awaitable[int]] = getattr(importlib.import_module(module), name)
    try:
        return await run(args)
    except asyncio.CancelledError:
        return 0


def options(args: argparse.Namespace) -> dict[str, str]:
    """``--option KEY=VALUE`` pairs as a dict.

    Raises:
        ConfigError: an option is not ``KEY=VALUE``.
    """
    out = {}
    for item in getattr(args, "option", []) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError([("(command line)", "--option", f"expected KEY=VALUE, got {item!r}")])
        out[key.strip()] = value.strip()
    return out


async def run_dsmr(args: argparse.Namespace) -> int:
    from gateway.sim.dsmr import DsmrSimulator
    from gateway.sim.runner import PtyMeter, push_to_pty, push_to_tcp

    if args.variant == "smarty" and not args.key:
        raise ConfigError([("(command line)", "--key", "required for --variant smarty")])
    sim = DsmrSimulator(args.variant, key=args.key, auth_key=args.auth_key)
    interval = args.interval or sim.interval_s
    if args.pty:
        meter = PtyMeter(args.link)
        print(f"virtual {args.variant} meter on {meter.path} (one telegram every {interval:g} s)", flush=True)
        try:
            await push_to_pty(meter, sim.telegram, interval)
        finally:
            meter.close()
    else:
        host, port = _listen_addr(args.listen)
        print(f"virtual {args.variant} meter on socket://{host}:{port}", flush=True)
        await push_to_tcp(host, port, sim.telegram, interval)
    return 0


async def run_iec62056_21(args: argparse.Namespace) -> int:
    from gateway.sim import iec62056_21 as iec

    model = iec.LoadModel(clock=datetime.now)  # one meter: registers persist across sessions

    def factory() -> iec.MeterSession:
        return iec.MeterSession(reaction_time_s=args.reaction_time, readings=model)
    if args.pty:
        def ready(path: str) -> None:
            print(f"virtual IEC 62056-21 mode C meter on {path} (300 Bd sign-on, 9600 Bd readout)", flush=True)

        await iec.serve_pty(factory, link=args.link, on_ready=ready)
    else:
        host, port = _listen_addr(args.listen)
        print(f"virtual IEC 62056-21 meter on socket://{host}:{port}", file=sys.stdout, flush=True)
        await iec.serve_tcp(factory, host, port)
    return 0
