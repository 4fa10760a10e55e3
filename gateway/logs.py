"""Structured logging: one line per event, secrets never printed.

Text format: ``2026-11-22T10:00:00.123Z INFO gateway.meters.base meter main: port open``.
JSON format (``--log-format json``): one object per line with ts, level,
logger, msg (and exc when there is a traceback), for journald or a log shipper.

Code never logs keys or passwords; as a second line of defence every secret
loaded from the config is registered here and masked in any record.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_SECRETS: set[str] = set()


def register_secret(value: str | bytes | None) -> None:
    if not value:
        return
    if isinstance(value, bytes):
        _SECRETS.add(value.hex())
        _SECRETS.add(value.hex().upper())
    elif len(value) >= 4:
        _SECRETS.add(value)


def _mask(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, "***")
    return text


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        msg = _mask(record.getMessage())
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        exc = _mask(self.formatException(record.exc_info)) if record.exc_info else ""
        if self.json:
            out: dict[str, Any] = {"ts": ts, "level": record.levelname, "logger": record.name, "msg": msg}
            if exc:
                out["exc"] = exc
            return json.dumps(out, ensure_ascii=False)
        line = f"{ts} {record.levelname} {record.name} {msg}"
        if exc:
            # keep one event on one line: tracebacks are folded with ' | '
            line += " | " + exc.replace("\n", " | ")
        return line


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho and amqtt are chatty at INFO/DEBUG; our adapters log what matters.
    for noisy in ("amqtt", "transitions", "passlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
