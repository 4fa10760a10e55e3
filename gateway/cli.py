"""The command line: ``han-gateway run|check|decode|simulate-meter|read|demo``.

Exit status: 0 success, 1 runtime failure (or frames that failed to decode),
2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from gateway import __version__
from gateway.config import DEFAULT_CONFIG, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.logs import register_secret, setup_logging
from gateway.protocols.registry import DECODERS
from gateway.sim.registry import SIMULATORS

log = logging.getLogger("gateway.cli")

PROTOCOLS = tuple(DECODERS)


def _hex_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected hexadecimal digits") from None
    if len(key) != 16:
        raise argparse.ArgumentTypeError(f"expected 16 bytes (32 hex digits), got {len(key)}")
    register_secret(key)
    return key


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="han-gateway", description="Smart meter port to MQTT / Home Assistant gateway.")
    p.add_argument("--version", action="version", version=f"han-gateway {__version__}")
    p.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the gateway daemon")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)

    c = sub.add_parser("check", help="validate a config file (exit 2 and one line per problem)")
    c.add_argument("--config", type=Path, default=DEFAULT_CONFIG)

    d = sub.add_parser("decode", help="decode captured meter bytes to JSON lines")
    d.add_argument("--protocol", required=True, choices=PROTOCOLS)
    d.add_argument("--key", type=_hex_key, help="decryption key (DSMR Smarty, DLMS), 32 hex digits")
    d.add_argument("--auth-key", type=_hex_key, help="authentication key, 32 hex digits")
    d.add_argument("file", help="capture file, or - for standard input")

    s = sub.add_parser("simulate-meter", help="run a virtual meter on a pty or TCP port")
    s.add_argument("--protocol", required=True, choices=tuple(SIMULATORS))
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="create a pty and print its path")
    where.add_argument("--listen", metavar="tcp://HOST:PORT")
    s.add_argument("--link", help="also make a symlink to the pty at this path")
    s.add_argument("--variant", default="dsmr5", choices=("dsmr5", "dsmr4", "belgian", "smarty"),
                   help="DSMR flavour (default dsmr5)")
    s.add_argument("--key", type=_hex_key, help="encryption key for --variant smarty")
    s.add_argument("--auth-key", type=_hex_key, help="authentication key for --variant smarty")
    s.add_argument("--interval", type=float, help="seconds between telegrams (default: the variant's)")
    s.add_argument("--reaction-time", type=float, default=0.2, help="IEC 62056-21 reaction time in s")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="protocol-specific setting, repeatable (see README)")

    rd = sub.add_parser("read", help="read one frame from a configured meter and print it as JSON")
    rd.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    rd.add_argument("--meter", help="meter id (default: the first)")
    rd.add_argument("--timeout", type=float, default=30.0)

    ru = sub.add_parser("rules", help="rule file tools")
    rusub = ru.add_subparsers(dest="rules_command", required=True)
    rs = rusub.add_parser("simulate", help="replay recorded history through rule files (dry run)")
    rs.add_argument("--rules", type=Path, required=True, help="folder of rule files (*.toml)")
    src = rs.add_mutually_exclusive_group(required=True)
    src.add_argument("--history", type=Path, help="CSV file of readings (columns: see gateway/rules/simulate.py)")
    src.add_argument("--from-store", action="store_true", help="the gateway's own database (needs --config)")
    rs.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    rs.add_argument("--meter", help="meter id in the store (default: the first configured)")
    rs.add_argument("--since", type=_iso, help="ISO time (default: 7 days before --until)")
    rs.add_argument("--until", type=_iso, help="ISO time (default: now)")
    rs.add_argument("--plot", type=Path, help="write a PNG of import power with and without the rules")
    rs.add_argument("--seed", type=int, default=0)

    mb = sub.add_parser("mbus", help="wired M-Bus tools")
    mbsub = mb.add_subparsers(dest="mbus_command", required=True)
    sc = mbsub.add_parser("scan", help="find the meters on a wired M-Bus (progress on stderr, JSON on stdout)")
    sc.add_argument("--port", required=True, help="device path, socket://HOST:PORT or rfc2217://HOST:PORT")
    sc.add_argument("--baud", type=int, default=2400)
    sc.add_argument("--mode", choices=("primary", "secondary"), default="secondary")
    sc.add_argument("--mask", help="secondary scan only below this id mask, e.g. 12FFFFFF")
    sc.add_argument("--hex-digits", action="store_true", help="also try A-E in id digits (non-BCD ids)")
    sc.add_argument("--timeout-margin", type=float, default=0.1, help="seconds added to each reply window")
    sc.add_argument("--retries", type=int, default=0, help="repeats of an unanswered probe")

    sg = sub.add_parser("signals", help="Ed25519 keys and signatures for price / DR messages")
    sgsub = sg.add_subparsers(dest="signals_command", required=True)
    kg = sgsub.add_parser("keygen", help="write a new private key (PEM) and print the public key "
                                         "for [signals] trusted_keys")
    kg.add_argument("--out", type=Path, required=True, help="private key file to create (mode 600)")
    sn = sgsub.add_parser("sign", help="sign a JSON message (file or -) and print it")
    sn.add_argument("--key", type=Path, required=True, help="private key (PEM) from keygen")
    sn.add_argument("--key-id", required=True, help="the name the gateway knows the key by")
    sn.add_argument("--seq", type=int, required=True, help="sequence number, increasing per key")
    sn.add_argument("--valid", type=float, default=3600.0, help="seconds until it expires")
    sn.add_argument("file", help="JSON message, or - for standard input")

    wb = sub.add_parser("web", help="household web page tools")
    wbsub = wb.add_subparsers(dest="web_command", required=True)
    wbsub.add_parser("hash-password", help="read a password and print its scrypt hash for [web] password_hash")

    dm = sub.add_parser("demo", help="virtual meter + embedded broker + gateway, no hardware needed")
    dm.add_argument("--broker", help="use this broker (mqtt://host:port) instead of an embedded one")
    dm.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    dm.add_argument("--duration", type=float, help="stop after this many seconds")
    dm.add_argument("--variant", default="dsmr5", choices=("dsmr5", "dsmr4", "belgian", "smarty"))

    # The ZigBee adapter brings its own subcommand; its module (a few MB) is imported only
    # when that command is asked for, so the daemon does not carry it.
    args = list(sys.argv[1:] if argv is None else argv)
    if "zigbee" in args:
        try:
            from adapters.zigbee.cli import add_cli as add_zigbee_cli
        except ImportError:  # an install without the adapters package
            pass
        else:
            add_zigbee_cli(sub)
            return p
    sub.add_parser("zigbee", help="ZigBee network tools (join with install code, list devices)",
                   add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    setup_logging(args.log_level or ("warning" if args.command in ("decode", "check", "read") else "info"),
                  args.log_format)
    try:
        if args.command == "check":
            return cmd_check(args.config)
        if args.command == "run":
            return cmd_run(args.config, args.log_level)
        if args.command == "decode":
            return cmd_decode(args.protocol, args.file, key=args.key, auth_key=args.auth_key)
        if args.command == "simulate-meter":
            from gateway.sim.cli import simulate_meter

            return asyncio.run(simulate_meter(args))
        if args.command == "read":
            return asyncio.run(cmd_read(args.config, args.meter, args.timeout))
        if args.command == "rules":
            return asyncio.run(cmd_rules_simulate(args))
        if args.command == "signals":
            return cmd_signals(args)
        if args.command == "mbus":
            return asyncio.run(cmd_mbus_scan(args))
        if args.command == "web":
            from gateway.web.cli import hash_password_command

            return hash_password_command()
        if args.command == "demo":
            from gateway.demo import run_demo

            return asyncio.run(run_demo(args))
        if args.command == "zigbee":
            from adapters.zigbee.cli import run_cli

            cfg = load_config(args.config)
            return run_cli(args, cfg.adapter_configs().get("zigbee"), config_file=args.config,
                           data_dir=cfg.gateway.data_dir)
    except ConfigError as exc:
        for file, key, msg in exc.problems:
            print(f"{file}: {key}: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except GatewayError as exc:
        print(f"han-gateway: {exc}", file=sys.stderr)
        return 1
    return 2


def check_config(path: Path) -> tuple[Any, Any, list[str]]:
    """Validate the config and its rule files together, as ``check`` and ``run`` do.

    Returns ``(config, rule set or None, warnings)``.

    Raises:
        ConfigError: every problem found (rule syntax errors as RuleSyntaxError).
    """
    from gateway.config import adapter_plugins

    cfg = load_config(path)
    warnings: list[str] = []
    plugins = {name: ep.load() for name, ep in adapter_plugins().items()
               if name in cfg.adapter_configs()}
    for name, model in cfg.adapter_configs().items():
        warn = getattr(plugins[name], "warnings", None)
        if warn is not None:
            warnings.extend(f"adapter.{name}: {w}" for w in warn(model))
    if cfg.web_config is not None:
        from gateway.web.config import check_warnings

        warnings.extend(check_warnings(cfg.web_config))
    ruleset = None
    if cfg.rules.dir is not None:
        from gateway.rules import load_rule_dir

        rules_dir = cfg.rules.dir if cfg.rules.dir.is_absolute() or cfg.base_dir is None else cfg.base_dir / cfg.rules.dir
        ruleset = load_rule_dir(rules_dir)
        problems: list[tuple[str, str, str]] = []
        for ld in ruleset.loads:
            scheme, _, address = ld.actuator.partition(":")
            plugin = plugins.get(scheme)
            if plugin is None:
                warnings.append(f"{ld.file or rules_dir}: load {ld.name}: actuator {ld.actuator} "
                                f"needs [adapter.{scheme}], which is not configured: the load "
                                "cannot be switched")
                continue
            check_address = getattr(plugin, "actuator_problem", None)
            why = check_address(address) if check_address is not None else None
            if why:
                problems.append((ld.file or str(rules_dir), f"load.{ld.name}.actuator", why))
        if problems:
            raise ConfigError(problems)
    return cfg, ruleset, warnings


def cmd_check(path: Path) -> int:
    cfg, ruleset, warnings = check_config(path)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    rules = "" if ruleset is None else f", {len(ruleset.rules)} rule(s) for {len(ruleset.loads)} load(s)"
    print(f"{path}: ok ({len(cfg.meter)} meter(s), adapters: {', '.join(cfg.adapter_configs()) or 'none'}{rules})")
    return 0


def cmd_signals(args: argparse.Namespace) -> int:
    import json
    import os
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.signals.signing import load_private_key, public_key_text, sign

    if args.signals_command == "keygen":
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        print(public_key_text(key.public_key()))
        return 0
    try:
        priv = load_private_key(args.key)
    except ValueError as exc:
        print(f"han-gateway: {exc}", file=sys.stderr)
        return 2
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        print(f"han-gateway: not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(obj, dict):
        print("han-gateway: expected a JSON object", file=sys.stderr)
        return 2
    expires = datetime.now(UTC) + timedelta(seconds=args.valid)
    print(json.dumps(sign(obj, priv, key_id=args.key_id, seq=args.seq, expires=expires),
                     ensure_ascii=False))
    return 0


def _iso(text: str) -> Any:
    from datetime import datetime, timezone

    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO 8601 time such as 2026-01-05T17:00+01:00") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


async def cmd_rules_simulate(args: argparse.Namespace) -> int:
    from gateway.rules.simulate import run_simulate

    if args.history is not None:
        return await run_simulate(rules_dir=args.rules, history=args.history, plot=args.plot,
                                  seed=args.seed, out=sys.stdout)
    from gateway.store import Store

    cfg = load_config(args.config)
    meter = args.meter or (cfg.meter[0].id if cfg.meter else None)
    if meter is None:
        raise ConfigError([(str(args.config), "meter", "no meter configured; give --meter")])
    store = await Store.open(cfg.gateway.data_dir / "gateway.sqlite3")
    try:
        return await run_simulate(rules_dir=args.rules, store=store, meter=meter, start=args.since,
                                  end=args.until, plot=args.plot, seed=args.seed, out=sys.stdout)
    finally:
        await store.close()


def cmd_run(path: Path, level: str | None) -> int:
    from gateway.supervisor import Gateway, run_until_signalled

    cfg, _rules, warnings = check_config(path)  # a bad rule file stops the start, like a bad config
    for w in warnings:
        logging.getLogger("gateway").warning("%s", w)
    if level is None:
        logging.getLogger().setLevel(cfg.gateway.log_level.upper())
    for model in cfg.adapter_configs().values():
        pw = getattr(model, "password", None)
        if pw is not None and hasattr(pw, "get_secret_value"):
            register_secret(pw.get_secret_value())
    asyncio.run(run_until_signalled(Gateway(cfg)))
    return 0


def make_decoder(protocol: str, *, key: bytes | None = None, auth_key: bytes | None = None) -> Any:
    from gateway.protocols.registry import make_decoder as _make

    return _make(protocol, key=key, auth_key=auth_key)


def cmd_decode(protocol: str, file: str, *, key: bytes | None, auth_key: bytes | None,
               out: Any = None, err: Any = None) -> int:
    from gateway.model import MeterFrame

    out = out or sys.stdout
    err = err or sys.stderr
    stream: BinaryIO
    try:
        stream = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"han-gateway: cannot read {file}: {exc.strerror}", file=err)
        return 2
    decoder = make_decoder(protocol, key=key, auth_key=auth_key)
    failed = 0
    with stream:
        while True:
            chunk = stream.read(65536)
            events = decoder.feed(chunk) if chunk else decoder.feed_eof()
            for ev in events:
                if isinstance(ev, MeterFrame):
                    out.write(json.dumps(ev.to_json(), ensure_ascii=False) + "\n")
                else:
                    failed += 1
                    err.write(json.dumps({"error": type(ev.error).__name__, "offset": ev.offset,
                                          "detail": str(ev.error)}) + "\n")
            if not chunk:
                break
    out.flush()
    return 1 if failed else 0


async def cmd_read(path: Path, meter_id: str | None, timeout: float) -> int:
    from gateway.bus import Bus
    from gateway.model import Snapshot
    from gateway.supervisor import build_reader

    cfg = load_config(path)
    meters = [m for m in cfg.meter if meter_id in (None, m.id)]
    if not meters:
        raise ConfigError([(str(path), "meter", f"no meter with id {meter_id!r}")])
    bus = Bus()
    sub = bus.subscribe(Snapshot)
    reader = build_reader(meters[0], clock=_real_clock())
    reader.base_dir = cfg.base_dir
    task = asyncio.create_task(reader.run(bus))
    try:
        async with asyncio.timeout(timeout):
            snap = await sub.get()
    except TimeoutError:
        print(f"han-gateway: no frame from meter {meters[0].id} within {timeout:.0f} s "
              f"({reader.status_detail})", file=sys.stderr)
        return 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    print(json.dumps(snap.to_json(), ensure_ascii=False))
    return 0


async def cmd_mbus_scan(args: argparse.Namespace) -> int:
    """Scan a bus: a progress line on stderr, one JSON object per meter on stdout,
    then the ``[meter.options]`` line to paste into the config."""
    from gateway.meters.mbus_scan import Collision, DeviceFound, ScanProgress, scan
    from gateway.protocols.mbus.app import SecondaryAddress
    from gateway.transport import open_transport

    tty = sys.stderr.isatty()
    last = 0.0

    def progress(ev: object) -> None:
        nonlocal last
        loop_time = asyncio.get_running_loop().time()
        if isinstance(ev, ScanProgress) and (loop_time - last > 0.5 or ev.fraction >= 1.0):
            last = loop_time
            line = f"{ev.fraction * 100:5.1f}%  {ev.current}  {ev.probes} probes  {ev.found} found"
            print(("\r\033[K" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)
        elif isinstance(ev, Collision):
            what = f"primary {ev.primary}" if ev.primary is not None else f"ids {ev.mask.id if ev.mask else '?'}"
            print(f"\ncollision: {what} (several meters answer and cannot be told apart)", file=sys.stderr)
        elif isinstance(ev, DeviceFound):
            print(json.dumps({
                "primary": ev.primary,
                "secondary": ev.secondary.label if ev.secondary else None,
                "hex": ev.secondary.hex if ev.secondary else None,
                "header": ev.header,
            }), flush=True)

    mask = SecondaryAddress.parse(args.mask) if args.mask else None
    transport = await open_transport(args.port, baudrate=args.baud, bytesize=8, parity="E")
    try:
        found = await scan(transport, mode=args.mode, progress=progress, baud=args.baud, mask=mask,
                           timeout_margin_s=args.timeout_margin, retries=args.retries,
                           digits="0123456789ABCDE" if args.hex_digits else "0123456789")
    finally:
        await transport.close()
    print(file=sys.stderr)
    if args.mode == "secondary":
        ids = [f.secondary.label for f in found if f.secondary]
        print(f"# {len(found)} meter(s); for the config:\n# secondary_addresses = {json.dumps(ids)}", file=sys.stderr)
    else:
        prim = [f.primary for f in found if f.primary is not None]
        print(f"# {len(found)} meter(s); for the config:\n# primary_addresses = {json.dumps(prim)}", file=sys.stderr)
    return 0


def _real_clock() -> Any:
    from gateway.clock import RealClock

    return RealClock()


if __name__ == "__main__":
    raise SystemExit(main())
