"""Ed25519 signatures on price and DR messages.

A signed message is the message's own JSON object plus four keys::

    {"price": 0.31, ..., "key_id": "dso", "seq": 1042,
     "expires": "2026-11-22T18:00:00Z", "signature": "<base64>"}

The signature is Ed25519 over the *canonical JSON* of the object without
``signature``: keys sorted, no insignificant white space
(``separators=(",", ":")``), non-ASCII characters as UTF-8, no NaN or
infinity.  So ``seq`` and ``expires`` are signed too.  A message is accepted
when ``key_id`` names a trusted key, the signature verifies, ``expires`` is in
the future but no further than the configured validity window, and ``seq`` is
greater than the last accepted ``seq`` of that key (the gate persists it, so a
replay is refused across restarts as well).

A message that carries any of these keys is always checked; one without them
is accepted only while ``[signals] require_signature`` is false.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from gateway.errors import SignalError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography is imported where a key is used: a gateway that takes no signed
# messages does not load OpenSSL for them (about 8 MB of RSS).

__all__ = ["Signed", "Verifier", "canonical", "load_private_key", "load_public_key",
           "public_key_text", "sign"]


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: the object without ``signature``, canonical JSON."""
    return json.dumps({k: v for k, v in obj.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def sign(obj: Mapping[str, Any], key: Ed25519PrivateKey, *, key_id: str, seq: int,
         expires: datetime) -> dict[str, Any]:
    """Return ``obj`` with ``key_id``, ``seq``, ``expires`` and its ``signature``."""
    out = dict(obj)
    out.update(key_id=key_id, seq=seq,
               expires=expires.astimezone(UTC).isoformat().replace("+00:00", "Z"))
    out.pop("signature", None)
    out["signature"] = base64.b64encode(key.sign(canonical(out))).decode("ascii")
    return out


def public_key_text(key: Ed25519PublicKey) -> str:
    """The base64 of the raw 32-byte public key (what ``trusted_keys`` takes)."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(text: str, *, base_dir: Path | None = None) -> Ed25519PublicKey:
    """A trusted key from base64 of its 32 raw bytes, or the path of a PEM file.

    Raises:
        ValueError: not a readable Ed25519 public key (the message says why).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32:
        return Ed25519PublicKey.from_public_bytes(raw)
    path = Path(text)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError("expected the base64 of a 32-byte Ed25519 public key or a PEM file "
                         f"({exc.strerror or exc})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an unencrypted PEM (PKCS#8) file.

    Raises:
        ValueError: unreadable or not Ed25519 (the message names the file, never the key).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


@dataclass(frozen=True, slots=True)
class Signed:
    key_id: str
    seq: int


class Verifier:
    """Checks the signature fields of one message (pure: ``now`` and ``last_seq`` passed in)."""

    def __init__(self, trusted: Mapping[str, Ed25519PublicKey], *, require: bool,
                 max_validity: timedelta = timedelta(days=1)) -> None:
        self.trusted = dict(trusted)
        self.require = require
        self.max_validity = max_validity

    def check(self, obj: Mapping[str, Any], *, now: datetime,
              last_seq: Mapping[str, int]) -> Signed | None:
        """Return who signed it (None: unsigned and allowed).

        Raises:
            SignalError: unsigned (when required), unknown_key, bad_signature,
                expired or replayed; malformed signature fields are bad_signature.
        """
        if not any(k in obj for k in ("key_id", "seq", "expires", "signature")):
            if self.require:
                raise SignalError("unsigned", "unsigned message refused: [signals] "
                                              "require_signature is true")
            return None
        key_id, seq, expires, sig = (obj.get(k) for k in ("key_id", "seq", "expires",
                                                           "signature"))
        if not isinstance(key_id, str) or not isinstance(sig, str) or not isinstance(seq, int) \
                or isinstance(seq, bool) or seq < 0 or not isinstance(expires, str):
            raise SignalError("bad_signature", "a signed message needs key_id (string), seq "
                                               "(integer >= 0), expires (time) and signature")
        key = self.trusted.get(key_id)
        if key is None:
            raise SignalError("unknown_key", f"signed with key {key_id[:64]!r}, which is not "
                                             "in [signals] trusted_keys")
        from cryptography.exceptions import InvalidSignature

        try:
            raw = base64.b64decode(sig, validate=True)
            key.verify(raw, canonical(obj))
        except (binascii.Error, ValueError, InvalidSignature):
            raise SignalError("bad_signature", f"the signature of key {key_id!r} does not "
                                               "verify") from None
        try:
            until = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            raise SignalError("bad_signature", "expires: expected an ISO 8601 time") from None
        if until.tzinfo is None:
            raise SignalError("bad_signature", "expires: the time needs a UTC offset")
        if until <= now:
            raise SignalError("expired", f"the message expired at {expires}")
        if until - now > self.max_validity:
            raise SignalError("expired", "expires is further ahead than the validity window "
                                         f"({self.max_validity.total_seconds():.0f} s)")
        last = last_seq.get(key_id)
        if last is not None and seq <= last:
            raise SignalError("replayed", f"seq {seq} of key {key_id!r} is not after the last "
                                          f"accepted {last} (a replay)")
        return Signed(key_id, seq)
