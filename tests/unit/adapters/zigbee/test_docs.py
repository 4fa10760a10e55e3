"""The README's [adapter.zigbee] example and the commented one in examples/gateway.toml validate."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from adapters.zigbee.config import ZigbeeConfig

ROOT = Path(__file__).resolve().parents[4]


def test_readme_example_validates() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## ZigBee Smart Energy"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    cfg = ZigbeeConfig.model_validate(tomllib.loads(block.group(1))["adapter"]["zigbee"])
    assert (cfg.channel, cfg.currency, cfg.timezone) == (15, 978, "Europe/Brussels")


def test_commented_example_validates() -> None:
    lines = (ROOT / "examples" / "gateway.toml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# [adapter.zigbee]")
    body = []
    for line in lines[start:]:
        if not line.startswith("# ") or line.startswith("# actuators"):
            break
        body.append(line[2:])
    cfg = ZigbeeConfig.model_validate(tomllib.loads("\n".join(body))["adapter"]["zigbee"])
    assert cfg.radio == "ezsp" and cfg.meter == "main"
