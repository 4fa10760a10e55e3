"""The one exception tree of han-gateway.

Everything the gateway raises on purpose derives from :class:`GatewayError`.
Codecs raise only :class:`ProtocolError` subclasses; an exception of any other
type escaping a codec is a bug (a property test enforces this).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


# --------------------------------------------------------------------- config
class ConfigError(GatewayError):
    """A configuration value is missing or wrong.

    ``problems`` holds one ``(file, key_path, message)`` triple per problem so
    that ``han-gateway check`` can print one line each.
    """

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {k}: {m}" for f, k, m in problems))


class RuleSyntaxError(ConfigError):
    """A rule file is wrong at a known place.

    ``file``, ``line`` and ``col`` (1-based) locate the first problem;
    ``problems`` holds every problem found, each as ``("file:line:col", key
    path, message)``, so that ``han-gateway check`` prints
    ``rules/peak.toml:12:18: rule[0].when: expected ...``.
    """

    def __init__(
        self, problems: list[tuple[str, str, str]], *, file: str, line: int, col: int
    ) -> None:
        self.file = file
        self.line = line
        self.col = col
        super().__init__(problems)


# ------------------------------------------------------------------- protocol
class ProtocolError(GatewayError):
    """A codec could not make sense of bytes (abstract: use a subclass).

    ``offset`` is the position of the offending bytes in the stream fed to the
    decoder so far (0-based), or -1 where no position applies.
    """

    def __init__(self, message: str, *, offset: int = -1, raw: bytes = b"") -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise a subclass")
        self.offset = offset
        self.raw = raw
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """The caller misused a codec or session (our bug, not the meter's)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol."""


class FramingError(RemoteProtocolError):
    """Bytes do not form a frame: missing delimiters, bad length, overflow."""


class ChecksumError(RemoteProtocolError):
    """A frame's CRC/BCC does not match its content."""

    def __init__(
        self, message: str, *, expected: int, got: int, offset: int = -1, raw: bytes = b""
    ) -> None:
        self.expected = expected
        self.got = got
        super().__init__(message, offset=offset, raw=raw)


class DecryptionError(RemoteProtocolError):
    """An encrypted frame could not be decrypted or authenticated.

    ``reason`` is one of ``"wrong_key"``, ``"not_encrypted"``, ``"compressed"``,
    ``"truncated"``, ``"replay"``, ``"no_key"``, ``"malformed"``.  Never carries key material.
    """

    def __init__(self, message: str, *, reason: str, offset: int = -1, raw: bytes = b"") -> None:
        self.reason = reason
        super().__init__(message, offset=offset, raw=raw)


class UnsupportedError(RemoteProtocolError):
    """Well-formed input using a feature we do not implement (e.g. IEC mode E)."""


# ------------------------------------------------------------------ transport
class TransportError(GatewayError):
    """Bytes could not be moved to or from a meter port."""


class ConnectError(TransportError):
    """The port could not be opened (missing device, permission, refused)."""


class ConnectionLost(TransportError):
    """An open port went away (EOF, device unplugged, peer closed)."""


class ReadTimeout(TransportError, TimeoutError):
    """No bytes arrived within the allowed time."""


# -------------------------------------------------------------------- adapter
class AdapterError(GatewayError):
    """A network adapter failed; ``retryable`` says whether backoff may help."""

    def __init__(self, message: str, *, adapter: str, retryable: bool = True) -> None:
        self.adapter = adapter
        self.retryable = retryable
        super().__init__(message)


class AuthError(AdapterError):
    """Credentials were refused; retrying at once will not help."""

    def __init__(self, message: str, *, adapter: str) -> None:
        super().__init__(message, adapter=adapter, retryable=False)


# -------------------------------------------------------------------- signals
class SignalError(GatewayError):
    """A price or DR message was refused; ``reason`` says why in one line (no secrets).

    ``code`` is one of: malformed, schema, unsigned, unknown_key, bad_signature,
    replayed, expired.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# ---------------------------------------------------------------------- store
class StoreError(GatewayError):
    """The SQLite store failed."""


class StoreCorrupt(StoreError):
    """The database failed its integrity check (the file was moved aside)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer gateway than this one."""
