"""Configuration of the MQTT adapter (``[adapter.mqtt]`` in gateway.toml).

Validated once into a frozen pydantic model; the password is a ``SecretStr``
and never appears in ``repr``, logs or published payloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_TOPIC_FORBIDDEN = frozenset("+#\0")


class MqttConfig(BaseModel):
    """Keys of ``[adapter.mqtt]``.

    ``qos`` applies to every data message (state, history, per-quantity).  It is
    1 or 2: an outbox row is removed only after the broker confirmed the message
    carrying it, which QoS 0 cannot tell.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str  # mqtt://host[:1883] or mqtts://host[:8883]
    client_id: str = ""  # empty: "han-gateway-<gateway id>"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None  # first line is the password; overrides ``password``
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_insecure: bool = False  # skip the hostname check (the chain is still verified)
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    qos: Literal[1, 2] = 1
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    base_topic: str = "han"
    expire_after_s: int | None = Field(default=None, ge=1)
    stale_grace_s: float = Field(default=300.0, ge=0)
    min_interval_s: float = Field(default=0.0, ge=0)
    min_interval_by_quantity: dict[str, float] = Field(default_factory=dict)
    deadband: dict[str, float] = Field(default_factory=dict)
    heartbeat_s: float = Field(default=300.0, ge=0)
    backlog_rate_per_s: float = Field(default=20.0, gt=0)
    max_inflight: int = Field(default=100, ge=1, le=65535)
    poll_interval_s: float = Field(default=1.0, gt=0)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    # control topics (see adapters/mqtt/control.py)
    control: bool = True  # subscribe price/set, dr/set, load/+/set
    actuator_payload_on: str = "ON"
    actuator_payload_off: str = "OFF"
    actuator_json: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port]")
        if not parts.hostname:
            raise ValueError("the URL names no host")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError("the port is not a number in 1..65535") from exc
        if parts.password is not None:
            raise ValueError("put the password in `password` or `password_file`, not the URL")
        return v

    @field_validator("base_topic", "discovery_prefix")
    @classmethod
    def _topic_prefix(cls, v: str) -> str:
        if not v or v.startswith("/") or v.endswith("/") or _TOPIC_FORBIDDEN & set(v):
            raise ValueError("expected a topic prefix without wildcards or leading/trailing '/'")
        return v

    @field_validator("min_interval_by_quantity", "deadband")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, x in v.items() if x < 0)
        if bad:
            raise ValueError(f"negative values for {', '.join(bad)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be smaller than reconnect_min_s")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        return self

    # ----------------------------------------------------------- derived
    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    @property
    def broker(self) -> str:
        """``host:port`` for log lines (never credentials)."""
        return f"{self.host}:{self.port}"

    def min_interval_for(self, key: str) -> float:
        return self.min_interval_by_quantity.get(key, self.min_interval_s)

    def resolve_password(self, secrets: dict[str, str] | None = None) -> str | None:
        """The password from ``password_file``, ``password`` or the context's secrets.

        Raises:
            OSError: ``password_file`` cannot be read.
        """
        if self.password_file is not None:
            text = self.password_file.read_text(encoding="utf-8")
            return text.splitlines()[0] if text else ""
        if self.password is not None:
            return self.password.get_secret_value()
        if secrets and "password" in secrets:
            return secrets["password"]
        return None
