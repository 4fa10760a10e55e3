"""``han-gateway zigbee permit|devices``: join devices with an install code, list the network.

``permit`` opens the radio itself, so the daemon must not be running (the
serial port is exclusive); it forms the network if the radio has none, like
the daemon would, then admits one device with the link key derived from its
install code (zigpy's AES-MMO hash, CRC checked) for ``--duration`` seconds.
``devices`` only reads zigpy's database and works while the daemon runs.

The install code is a secret: it is never printed or logged.

Wiring (gateway/cli.py, which loads the config file): ``add_cli(sub)`` in
``build_parser`` and ``run_cli(args, section, config_file=..., data_dir=...)`` in ``main``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from adapters.zigbee.address import parse_actuator
from adapters.zigbee.config import DATABASE_NAME, ZigbeeConfig, radio_class, zigpy_config
from gateway.errors import ConfigError

__all__ = ["add_cli", "install_code_key", "list_devices", "permit", "run_cli", "zigbee_section"]

DEFAULT_CONFIG = Path("/etc/han-gateway/gateway.toml")  # as gateway.config.DEFAULT_CONFIG


def _install_code(text: str) -> bytes:
    code = text.replace("-", "").replace(":", "").replace(" ", "")
    try:
        raw = bytes.fromhex(code)
    except ValueError:
        raise argparse.ArgumentTypeError("expected hexadecimal digits") from None
    if len(raw) not in (8, 10, 14, 18):
        raise argparse.ArgumentTypeError("an install code is 6, 8, 12 or 16 bytes plus its 2-byte CRC")
    return raw


def _ieee(text: str) -> str:
    try:
        return parse_actuator(f"{text}/1").ieee
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``zigbee permit`` and ``zigbee devices`` to the top-level subparsers."""
    zb = subparsers.add_parser("zigbee", help="ZigBee network tools (join with install code, list devices)")
    zsub = zb.add_subparsers(dest="zigbee_command", required=True)
    pm = zsub.add_parser("permit", help="let one device join with its install code (stop the daemon first)")
    pm.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    pm.add_argument("--install-code", type=_install_code, required=True,
                    help="the code printed on the device, hex (dashes allowed), CRC included")
    pm.add_argument("--ieee", type=_ieee, required=True, help="the device's IEEE address (printed with the code)")
    pm.add_argument("--duration", type=int, default=None, help="seconds to permit joining (default: permit_join_s)")
    dv = zsub.add_parser("devices", help="list the devices in the ZigBee database (JSON lines)")
    dv.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    return zb  # type: ignore[no-any-return]


def run_cli(args: argparse.Namespace, section: Any, *, config_file: Path, data_dir: Path | None) -> int:
    """Run ``han-gateway zigbee ...`` with the config's validated ``[adapter.zigbee]`` (or None).

    Exit status 0 ok, 1 failure, 2 bad config or usage.

    Raises:
        ConfigError: the config has no ``[adapter.zigbee]`` section.
    """
    cfg = zigbee_section(section, config_file=config_file, data_dir=data_dir)
    if args.zigbee_command == "devices":
        return asyncio.run(list_devices(cfg, out=sys.stdout))
    duration = args.duration if args.duration is not None else cfg.permit_join_s
    if not 1 <= duration <= 254:
        print("han-gateway: --duration must be 1..254 s", file=sys.stderr)
        return 2
    return asyncio.run(permit(cfg, ieee=args.ieee, install_code=args.install_code, duration_s=duration,
                              out=sys.stdout))


def zigbee_section(section: Any, *, config_file: Path, data_dir: Path | None) -> ZigbeeConfig:
    """The validated section, with the database defaulting to ``<data_dir>/zigbee.db`` like the daemon's.

    Raises:
        ConfigError: no ``[adapter.zigbee]`` section.
    """
    if section is None:
        raise ConfigError([(str(config_file), "adapter.zigbee", "no [adapter.zigbee] section")])
    model = section if isinstance(section, ZigbeeConfig) else ZigbeeConfig.model_validate(dict(section))
    if model.database is None and data_dir is not None:
        model = model.model_copy(update={"database": Path(data_dir) / DATABASE_NAME})
    return model


def install_code_key(code: bytes) -> Any:
    """The link key for an install code (zigpy: CRC-16/X-25 check, then AES-MMO hash).

    Raises:
        ValueError: wrong length or CRC.
    """
    import zigpy.util

    return zigpy.util.convert_install_code(code)


async def permit(
    cfg: ZigbeeConfig, *, ieee: str, install_code: bytes, duration_s: int, out: TextIO,
    app_class: type[Any] | None = None, sleep: Callable[[float], Any] = asyncio.sleep,
) -> int:
    """Open the network, admit ``ieee`` with its install-code link key, report who joined."""
    import zigpy.types as t

    try:
        key = install_code_key(install_code)
    except ValueError:
        print("han-gateway: the install code's CRC does not match (check for typos)", file=sys.stderr)
        return 2
    cls = app_class or radio_class(cfg.radio)
    try:
        app = await cls.new(config=zigpy_config(cfg), auto_form=True, start_radio=True)
    except Exception as exc:  # noqa: BLE001 - any radio library failure ends the command
        print(f"han-gateway: cannot start the ZigBee radio on {cfg.device}: {exc!r}"
              " (is the daemon running? it holds the port)", file=sys.stderr)
        return 1
    joined: list[Any] = []

    class _Listener:
        def device_initialized(self, device: Any) -> None:
            joined.append(device)

    app.add_listener(_Listener())
    try:
        node = t.EUI64.convert(ieee)
        await app.permit_with_link_key(node=node, link_key=key, time_s=duration_s)
        print(json.dumps({"permit": ieee, "duration_s": duration_s}), file=out, flush=True)
        await sleep(duration_s)
        await app.permit(0)
    finally:
        await app.shutdown()
    for device in joined:
        print(json.dumps(_describe(device)), file=out)
    return 0 if any(str(d.ieee) == ieee for d in joined) else 1


async def list_devices(cfg: ZigbeeConfig, *, out: TextIO) -> int:
    """Print one JSON line per device in zigpy's database (no radio needed)."""
    if cfg.database is None or not cfg.database.exists():
        print("han-gateway: no ZigBee database yet (set [adapter.zigbee] database or gateway data_dir)",
              file=sys.stderr)
        return 1
    app = await _offline_app_class().new(
        config={"device": {"path": "/dev/null"}, "database_path": str(cfg.database), "ota": {"enabled": False}},
        start_radio=False,
    )
    try:
        for device in sorted(app.devices.values(), key=lambda d: str(d.ieee)):
            if device.nwk == 0x0000:  # the coordinator (the gateway's own radio)
                continue
            print(json.dumps(_describe(device)), file=out)
    finally:
        await app.shutdown()
    return 0


def _describe(device: Any) -> dict[str, Any]:
    endpoints = []
    for ep_id, ep in sorted(getattr(device, "endpoints", {}).items()):
        if ep_id == 0:
            continue
        endpoints.append({
            "endpoint": ep_id,
            "profile": f"0x{ep.profile_id:04x}" if ep.profile_id is not None else None,
            "in": [f"0x{c:04x}" for c in sorted(ep.in_clusters)],
            "out": [f"0x{c:04x}" for c in sorted(ep.out_clusters)],
        })
    last_seen = getattr(device, "last_seen", None)
    return {
        "ieee": str(device.ieee),
        "nwk": f"0x{int(device.nwk):04x}",
        "manufacturer": device.manufacturer,
        "model": device.model,
        "initialized": bool(device.is_initialized),
        "last_seen": last_seen,
        "endpoints": endpoints,
    }


def _offline_app_class() -> type[Any]:
    """A ControllerApplication without a radio: enough for zigpy to load its database."""
    import zigpy.application

    class OfflineApplication(zigpy.application.ControllerApplication):
        async def connect(self) -> None:
            raise RuntimeError("offline: no radio")

        async def disconnect(self) -> None:
            return None

        async def start_network(self) -> None:
            raise RuntimeError("offline: no radio")

        async def force_remove(self, dev: Any) -> None:
            raise RuntimeError("offline: no radio")

        async def add_endpoint(self, descriptor: Any) -> None:
            return None

        async def permit_ncp(self, time_s: int = 60) -> None:
            raise RuntimeError("offline: no radio")

        async def permit_with_link_key(self, node: Any, link_key: Any, time_s: int = 60) -> None:
            raise RuntimeError("offline: no radio")

        async def reset_network_info(self) -> None:
            raise RuntimeError("offline: no radio")

        async def write_network_info(self, *, network_info: Any, node_info: Any) -> None:
            raise RuntimeError("offline: no radio")

        async def load_network_info(self, *, load_devices: bool = False) -> None:
            raise RuntimeError("offline: no radio")

        async def send_packet(self, packet: Any) -> None:
            raise RuntimeError("offline: no radio")

    return OfflineApplication
