"""The ``[web]`` section: where the household page listens, its password and TLS.

The password is stored only as a scrypt hash (RFC 7914 via ``hashlib.scrypt``)
in the form ``scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>``, made by
``han-gateway web hash-password``.  Read-only pages need no password; anything
that changes state (an override, a rule reload) does, and without a
``password_hash`` those actions are refused altogether.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from pathlib import Path

import pydantic
from pydantic import Field, field_validator, model_validator

from gateway.config import iana_timezone

__all__ = ["WebConfig", "check_warnings", "hash_password", "split_listen", "verify_password"]

# scrypt cost: N = 2**15, r = 8, p = 1 takes about 32 MiB and 50-100 ms on a
# small ARM box, OWASP's minimum for scrypt; stored in the hash, so it can rise later.
_LOG2_N = 15
_R = 8
_P = 1
_DKLEN = 32
_MAXMEM = 128 * 1024 * 1024


def split_listen(listen: str) -> tuple[str, int]:
    """``"0.0.0.0:8080"`` -> ``("0.0.0.0", 8080)``; ``"[::1]:8080"`` -> ``("::1", 8080)``.

    Raises:
        ValueError: not ``host:port`` with a port in 0-65535.
    """
    host, sep, port_s = listen.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError("expected HOST:PORT, e.g. 0.0.0.0:8080 or [::1]:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_s)
    if port > 65535:
        raise ValueError("port must be 0-65535")
    return host, port


def hash_password(password: str, *, log2_n: int = _LOG2_N) -> str:
    """Return the scrypt hash string for ``password`` (a fresh random salt each time)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log2_n, r=_R, p=_P,
                            maxmem=_MAXMEM, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"scrypt${log2_n}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def _parse_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$N$r$p$salt$hash as printed by `han-gateway web hash-password`")
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("malformed scrypt hash (bad number or base64)") from None
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16 and len(salt) >= 8 and len(digest) >= 16):
        raise ValueError("scrypt parameters out of range")
    return log2_n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time compare)."""
    try:
        log2_n, r, p, salt, digest = _parse_hash(stored)
    except ValueError:
        return False
    got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log2_n, r=r, p=p,
                         maxmem=_MAXMEM, dklen=len(digest))
    return hmac.compare_digest(got, digest)


class WebConfig(pydantic.BaseModel, extra="forbid", frozen=True):
    listen: str = Field(default="0.0.0.0:8080", description="HOST:PORT the page is served on")
    password_hash: str | None = Field(
        default=None, description="scrypt hash from `han-gateway web hash-password`; none = no changes allowed")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_lifetime_s: float = Field(default=12 * 3600.0, gt=0, le=30 * 86400.0)
    timezone: str | None = Field(
        default=None, description="IANA zone for days/weeks/months in the history (default: the system's)")
    meter: str | None = Field(default=None, description="meter shown on the page (default: the first)")
    price_per_kwh: float | None = Field(
        default=None, ge=0, description="fixed tariff used for costs while no price signal is known")
    currency: str = Field(default="EUR", min_length=1, max_length=8)
    override_timeout_s: float = Field(default=5.0, gt=0, le=60)
    update_interval_s: float = Field(default=1.0, gt=0.05, le=60)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        split_listen(v)
        return v

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v: str | None) -> str | None:
        if v is not None:
            _parse_hash(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return iana_timezone(v)

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: could resolve to anything


def check_warnings(config: WebConfig) -> list[str]:
    """Warnings for ``han-gateway check`` (empty when the setup looks safe)."""
    out: list[str] = []
    host = config.host
    if not _loopback(host):
        if config.password_hash is None:
            out.append(f"web.listen = {config.listen!r} exposes the page beyond this machine with no "
                       "password: anyone on the network can read it (overrides stay refused until "
                       "web.password_hash is set; make one with `han-gateway web hash-password`)")
        elif config.tls_cert is None:
            out.append(f"web.listen = {config.listen!r} without tls_cert/tls_key: the password and "
                       "session cookie cross the network in clear text")
    return out
