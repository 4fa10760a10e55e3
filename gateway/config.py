"""Configuration: one TOML file validated once into frozen pydantic models.

Code downstream never sees a dict.  Every problem is reported as
``(file, key_path, what was expected)``, e.g.
``gateway.toml: meter[0].port: field required``; ``han-gateway check`` prints
one line per problem and exits with status 2.

Secrets (decryption keys, MQTT password) may live in separate files named by
``*_file`` keys; the gateway warns when such a file is readable by others and
never logs their content.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from gateway.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/han-gateway/gateway.toml")
ADAPTER_GROUP = "han_gateway.adapters"

_ID = r"^[A-Za-z0-9_-]{1,32}$"
_HEX = re.compile(r"^[0-9A-Fa-f]{32}$")


def iana_timezone(v: str | None) -> str | None:
    """A pydantic validator body: ``v`` must name an IANA time zone (or be None)."""
    if v is not None:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone name such as Europe/Amsterdam") from None
    return v


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GatewaySection(_Frozen):
    id: str = Field(default="home", pattern=_ID)
    data_dir: Path = Path("/var/lib/han-gateway")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout_s: float = Field(default=10.0, gt=0)


class StoreSection(_Frozen):
    raw_retention_days: float = Field(default=7.0, gt=0)
    outbox_max_rows: int = Field(default=1_000_000, ge=1000)


class MeterConfig(_Frozen):
    id: str = Field(pattern=_ID)
    protocol: str = Field(description="dsmr, iec62056-21, … (see gateway/meters/registry.py)")
    port: str = Field(min_length=1)
    baudrate: int | None = Field(default=None, description="default: 115200 for DSMR 4/5, 300 start for IEC 62056-21")
    bytesize: Literal[7, 8] | None = None
    parity: Literal["N", "E", "O"] | None = None
    key: str | None = Field(default=None, description="32 hex digits (prefer key_file)")
    key_file: Path | None = None
    auth_key: str | None = None
    auth_key_file: Path | None = None
    stale_after_s: float = Field(default=30.0, gt=0)
    timezone: str | None = Field(default=None, description="meter clock zone when the protocol sends local time without offset (IEC 62056-21), e.g. Europe/Amsterdam")
    # IEC 62056-21 only
    mode: Literal["A", "B", "C", "D"] = "C"
    reaction_time_s: float = Field(default=0.2, ge=0.02, le=1.5)
    address: str = ""
    poll_interval_s: float = Field(default=60.0, gt=0)
    max_baudrate: int = 9600
    # protocol-specific settings, validated by the reader's own Options model
    options: dict[str, Any] = Field(default_factory=dict)
    _options: Any = PrivateAttr(default=None)

    @property
    def protocol_options(self) -> Any:
        """The validated ``options`` table (the reader's Options model), or None."""
        return self._options

    @field_validator("key", "auth_key")
    @classmethod
    def _hex_key(cls, v: str | None) -> str | None:
        if v is not None and not _HEX.match(v):
            raise ValueError("expected 32 hexadecimal digits (an AES-128 key)")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return iana_timezone(v)

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str) -> str:
        from gateway.meters.registry import READERS

        if v not in READERS:
            raise ValueError(f"expected one of {', '.join(sorted(READERS))}")
        return v

    @field_validator("port")
    @classmethod
    def _port(cls, v: str) -> str:
        if "://" in v and not v.startswith(("socket://", "rfc2217://")):
            raise ValueError("expected a device path, socket://HOST:PORT or rfc2217://HOST:PORT")
        return v

    def line_settings(self) -> tuple[int, int, str]:
        """Baud rate, data bits and parity for the port (the reader's defaults where unset)."""
        from gateway.meters.registry import reader_class

        baud, bits, parity = reader_class(self.protocol).line_defaults
        return (self.baudrate or baud, self.bytesize or bits, self.parity or parity)


class RulesSection(_Frozen):
    dir: Path | None = None
    tick_s: float = Field(default=5.0, gt=0, le=60, description="evaluate at least this often")
    override_default_s: float = Field(default=3600.0, gt=0, le=7 * 86400,
                                      description="expiry of an override that names none")
    audit_retention_days: float = Field(default=365.0, gt=0)
    seed: int | None = Field(default=None, description="restore randomisation seed; "
                                                       "default: a new one every start")


class SignalsSection(_Frozen):
    """``[signals]``: who may send price and DR messages (see gateway/signals/signing.py)."""

    require_signature: bool = False
    # key id -> base64 of a raw Ed25519 public key, or the path of a PEM file
    trusted_keys: dict[str, str] = Field(default_factory=dict)
    max_validity_s: float = Field(default=86400.0, gt=0, le=7 * 86400)
    openadr: dict[str, Any] | None = None  # validated by gateway.signals.openadr

    @field_validator("trusted_keys")
    @classmethod
    def _key_ids(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not re.match(_ID, k)]
        if bad:
            raise ValueError(f"key ids must be 1-32 letters, digits, _ or -: {bad[0]!r}")
        return v


class Config(_Frozen):
    gateway: GatewaySection = GatewaySection()
    store: StoreSection = StoreSection()
    meter: tuple[MeterConfig, ...] = ()
    adapter: dict[str, dict[str, Any]] = Field(default_factory=dict)
    rules: RulesSection = RulesSection()
    signals: SignalsSection = SignalsSection()
    web: dict[str, Any] | None = None  # validated by gateway.web.config.WebConfig

    # validated adapter sections, filled by parse_config (name -> plugin config model)
    _adapter_models: dict[str, Any] = PrivateAttr(default_factory=dict)
    _base_dir: Path | None = PrivateAttr(default=None)
    _openadr: Any = PrivateAttr(default=None)
    _web: Any = PrivateAttr(default=None)

    @property
    def web_config(self) -> Any:
        """The validated ``[web]`` section (gateway.web.config.WebConfig), or None."""
        return self._web
    _trusted_keys: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def openadr(self) -> Any:
        """The validated ``[signals.openadr]`` section (OpenAdrConfig), or None."""
        return self._openadr

    @property
    def trusted_keys(self) -> dict[str, Any]:
        """``[signals] trusted_keys`` loaded as Ed25519 public keys."""
        return dict(self._trusted_keys)

    def adapter_configs(self) -> dict[str, Any]:
        return dict(self._adapter_models)

    @property
    def base_dir(self) -> Path | None:
        return self._base_dir


def key_path(loc: tuple[int | str, ...]) -> str:
    """('meter', 0, 'port') -> 'meter[0].port'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _problems(file: str, exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[tuple[str, str, str]]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        if "input" in err and err["type"] not in ("missing", "extra_forbidden") and not _secret_loc(loc):
            msg += f" (got {err['input']!r})"
        out.append((file, key_path(loc), msg))
    return out


def _secret_loc(loc: tuple[int | str, ...]) -> bool:
    return any(isinstance(p, str) and ("key" in p or "password" in p) for p in loc)


def adapter_plugins() -> dict[str, Any]:
    """The installed adapter plugins by name (entry point group han_gateway.adapters)."""
    return {ep.name: ep for ep in entry_points(group=ADAPTER_GROUP)}


def load_config(path: Path) -> Config:
    """Read, parse and validate a config file.

    Raises:
        ConfigError: with one problem per bad key, naming file and key path.
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([(file, "(file)", f"cannot read: {exc.strerror or exc}")]) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(file, "(syntax)", f"not valid TOML: {exc}")]) from exc
    return parse_config(raw, file=file, base_dir=path.parent)


def parse_config(raw: dict[str, Any], *, file: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document; every problem is collected before raising.

    Raises:
        ConfigError: one entry per problem.
    """
    problems: list[tuple[str, str, str]] = []
    cfg: Config | None = None
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems(file, exc))
    meters = raw.get("meter", [])
    if isinstance(meters, list):
        ids = [m.get("id") for m in meters if isinstance(m, dict)]
        for i, mid in enumerate(ids):
            if mid is not None and ids.index(mid) != i:
                problems.append((file, f"meter[{i}].id", f"duplicate meter id {mid!r}"))
    plugins = adapter_plugins()
    models: dict[str, Any] = {}
    sections = raw.get("adapter", {})
    for name, section in sections.items() if isinstance(sections, dict) else ():
        ep = plugins.get(name)
        if ep is None:
            problems.append((file, f"adapter.{name}", f"unknown adapter (installed: {', '.join(sorted(plugins)) or 'none'})"))
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin install is a config problem
            problems.append((file, f"adapter.{name}", f"adapter cannot be loaded: {exc!r}"))
            continue
        try:
            models[name] = plugin.config_model.model_validate(section)
        except ValidationError as exc:
            problems.extend(_problems(file, exc, ("adapter", name)))
    for i, m in enumerate(cfg.meter if cfg is not None else ()):
        from gateway.meters.registry import reader_class

        options_model = reader_class(m.protocol).Options
        if options_model is not None:
            try:
                m._options = options_model.model_validate(m.options)
            except ValidationError as exc:
                problems.extend(_problems(file, exc, ("meter", i, "options")))
        elif m.options:
            problems.append((file, f"meter[{i}].options", f"protocol {m.protocol} takes no options"))
        for attr in ("key_file", "auth_key_file"):
            p = getattr(m, attr)
            if p is None:
                continue
            full = p if p.is_absolute() or base_dir is None else base_dir / p
            try:
                read_key_file(full)
            except ConfigError as exc:
                problems.append((file, f"meter[{i}].{attr}", exc.problems[0][2]))
    trusted: dict[str, Any] = {}
    openadr: Any = None
    if cfg is not None:
        from gateway.signals.signing import load_public_key

        for key_id, text in cfg.signals.trusted_keys.items():
            try:
                trusted[key_id] = load_public_key(text, base_dir=base_dir)
            except ValueError as exc:
                problems.append((file, f"signals.trusted_keys.{key_id}", str(exc)))
        if cfg.signals.require_signature and not cfg.signals.trusted_keys:
            problems.append((file, "signals.require_signature",
                             "signatures are required but no trusted_keys are configured"))
        if cfg.signals.openadr is not None:
            import importlib.util

            from gateway.signals.openadr import OpenAdrConfig

            if importlib.util.find_spec("openleadr") is None:
                problems.append((file, "signals.openadr", "OpenADR is not installed "
                                 "(pip install 'han-gateway[openadr]')"))
            try:
                openadr = OpenAdrConfig.model_validate(cfg.signals.openadr,
                                                       context={"base_dir": base_dir})
            except ValidationError as exc:
                problems.extend(_problems(file, exc, ("signals", "openadr")))
            else:
                meter_ids = {m.id for m in cfg.meter}
                if openadr.meter is not None and openadr.meter not in meter_ids:
                    problems.append((file, "signals.openadr.meter",
                                     f"no [[meter]] has id {openadr.meter!r}"))
    web: Any = None
    if cfg is not None and cfg.web is not None:
        from gateway.web.config import WebConfig

        try:
            web = WebConfig.model_validate(cfg.web)
        except ValidationError as exc:
            problems.extend(_problems(file, exc, ("web",)))
    if problems or cfg is None:
        raise ConfigError(problems)
    cfg._web = web
    cfg._trusted_keys = trusted
    cfg._openadr = openadr
    cfg._adapter_models = models
    cfg._base_dir = base_dir
    return cfg


def read_key_file(path: Path) -> bytes:
    """Read a 32-hex-digit AES key from a file; warn if others can read it.

    Raises:
        ConfigError: the file is missing or does not hold a key.
    """
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([(str(path), "(file)", f"cannot read key file: {getattr(exc, 'strerror', None) or exc}")]) from exc
    if st.st_mode & (stat.S_IRWXO):
        log.warning("key file %s is readable by other users; chmod 600 it", path)
    if not _HEX.match(text):
        raise ConfigError([(str(path), "(file)", "expected 32 hexadecimal digits (an AES-128 key)")])
    return bytes.fromhex(text)


def meter_keys(m: MeterConfig, base_dir: Path | None = None) -> tuple[bytes | None, bytes | None]:
    """The meter's decryption and authentication keys, from inline values or files."""

    def _get(inline: str | None, file: Path | None) -> bytes | None:
        if inline:
            return bytes.fromhex(inline)
        if file is not None:
            full = file if file.is_absolute() or base_dir is None else base_dir / file
            return read_key_file(full)
        return None

    return _get(m.key, m.key_file), _get(m.auth_key, m.auth_key_file)


def world_readable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False
