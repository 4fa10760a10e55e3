"""DLMS general-glo-ciphering as used on encrypted P1 ports (Luxembourg Smarty).

Implements the one APDU shape that encrypted P1 meters push (DLMS Green Book
ed. 8, 9.2.7.2.4 "general-glo-ciphering", security suite 0):

    0xDB  0x08 system-title(8)  length  security-control(1)  frame-counter(4)  ciphertext  tag(12)

``length`` is a BER length (short form, ``0x81 nn`` or ``0x82 nnnn``) counting
the bytes after it.  The cipher is AES-128-GCM with IV = system-title ||
frame-counter and, for security control ``0x30`` (authenticated and
encrypted), AAD = security-control || authentication key; the tag is the
first 12 bytes of the GCM tag.

Not supported here (the full DLMS stack lives in ``gateway.protocols.dlms``):
other security suites, authentication-only or encryption-only security
control values, dedicated keys, key agreement, compression and
general-ded-ciphering.  The cipher itself is
:mod:`gateway.protocols.dlms.security` (the one suite-0 implementation); this
module keeps the P1 framing and the one security control Smarty meters use.
Nothing in this module ever puts key material into an exception message.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import DecryptionError, LocalProtocolError, UnsupportedError
from gateway.protocols.dlms import security

__all__ = [
    "GENERAL_GLO_CIPHERING",
    "SECURITY_AUTH_ENC",
    "SMARTY_AUTH_KEY",
    "TAG_LEN",
    "GloFrame",
    "check_key",
    "decrypt",
    "encrypt",
    "frame_length",
    "parse_frame",
]

GENERAL_GLO_CIPHERING = 0xDB
SYSTEM_TITLE_LEN = 8
SECURITY_AUTH_ENC = 0x30  # security suite 0, authenticated and encrypted
TAG_LEN = 12
# The authentication key every Luxembourg Smarty meter uses on its P1 port
# (published by the grid operators; only the encryption key is per meter).
SMARTY_AUTH_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")

_HEADER_MIN = 2 + SYSTEM_TITLE_LEN + 1  # tag, title length, title, first length byte
_PAYLOAD_MIN = 1 + 4 + TAG_LEN  # security control, frame counter, tag


@dataclass(frozen=True, slots=True, kw_only=True)
class GloFrame:
    """A general-glo-ciphering APDU split into its fields (still encrypted)."""

    system_title: bytes
    security_control: int
    frame_counter: int
    ciphertext: bytes  # without the tag
    tag: bytes


def check_key(key: bytes, name: str) -> None:
    """Reject keys that cannot be AES-128 keys, without echoing them.

    Raises:
        LocalProtocolError: ``key`` is not 16 bytes.
    """
    if not isinstance(key, bytes | bytearray) or len(key) != 16:
        raise LocalProtocolError(f"{name} must be 16 bytes (AES-128)")


def frame_length(data: bytes | bytearray, start: int = 0) -> int | None:
    """Total length of the APDU that starts at ``data[start]`` (the 0xDB byte).

    Returns ``None`` while the header is incomplete.

    Raises:
        DecryptionError: ``reason="malformed"``, the header is not a
            general-glo-ciphering header with an 8-byte system title.
    """
    n = len(data) - start
    if n < 2:
        return None
    if data[start] != GENERAL_GLO_CIPHERING or data[start + 1] != SYSTEM_TITLE_LEN:
        raise DecryptionError(
            "not a general-glo-ciphering header with an 8-byte system title",
            reason="malformed",
            offset=start,
        )
    if n < _HEADER_MIN:
        return None
    first = data[start + _HEADER_MIN - 1]
    if first < 0x80:
        # BER short form: the byte is the length itself.
        length, header = first, _HEADER_MIN
    elif first in (0x81, 0x82):
        width = first - 0x80
        if n < _HEADER_MIN + width:
            return None
        at = start + _HEADER_MIN
        length = int.from_bytes(data[at : at + width], "big")
        header = _HEADER_MIN + width
    else:
        raise DecryptionError(
            f"unsupported BER length byte 0x{first:02X}", reason="malformed", offset=start
        )
    if length < _PAYLOAD_MIN:
        raise DecryptionError(
            f"ciphered payload of {length} bytes is shorter than its fixed fields",
            reason="malformed",
            offset=start,
        )
    return header + length


def parse_frame(data: bytes) -> GloFrame:
    """Split one complete APDU (exactly ``frame_length(data)`` bytes) into fields.

    Raises:
        DecryptionError: ``reason="malformed"`` for a bad header or a length
            that does not match ``len(data)``; ``reason="truncated"`` when
            ``data`` ends inside the APDU.
    """
    total = frame_length(data)
    if total is None or total > len(data):
        raise DecryptionError("frame ends inside the ciphered APDU", reason="truncated")
    if total != len(data):
        raise DecryptionError(
            f"APDU length says {total} bytes, got {len(data)}", reason="malformed"
        )
    first = data[_HEADER_MIN - 1]
    header = _HEADER_MIN + (first - 0x80 if first >= 0x80 else 0)  # skip the BER length bytes
    payload = data[header:]
    return GloFrame(
        system_title=bytes(data[2 : 2 + SYSTEM_TITLE_LEN]),
        security_control=payload[0],
        frame_counter=int.from_bytes(payload[1:5], "big"),
        ciphertext=bytes(payload[5:-TAG_LEN]),
        tag=bytes(payload[-TAG_LEN:]),
    )


def decrypt(frame: GloFrame, *, key: bytes, auth_key: bytes) -> bytes:
    """Verify the tag and return the plaintext.

    Raises:
        UnsupportedError: a security control other than 0x30.
        DecryptionError: ``reason="wrong_key"`` when the tag does not verify
            (wrong encryption or authentication key, or corrupted bytes: GCM
            cannot tell these apart).
    """
    if frame.security_control != SECURITY_AUTH_ENC:
        raise UnsupportedError(
            f"security control 0x{frame.security_control:02X} (only 0x30 is supported)"
        )
    if len(auth_key) != 16:
        # A mistyped authentication key can never verify a tag: say so the way a
        # wrong key is said, rather than as a local error from inside a decoder.
        raise DecryptionError("the authentication key is not 16 bytes", reason="wrong_key")
    return security.decrypt(
        frame.ciphertext + frame.tag,
        security_control=frame.security_control,
        system_title=frame.system_title,
        invocation_counter=frame.frame_counter,
        key=key,
        auth_key=auth_key,
    )


def encrypt(
    plaintext: bytes,
    *,
    key: bytes,
    auth_key: bytes,
    system_title: bytes,
    frame_counter: int,
) -> bytes:
    """Build a general-glo-ciphering APDU (security control 0x30) around ``plaintext``.

    Raises:
        LocalProtocolError: a key that is not 16 bytes, a system title that
            is not 8 bytes, a frame counter outside 0..2**32-1, or a payload
            too long for a two-byte BER length.
    """
    check_key(key, "key")
    if len(system_title) != SYSTEM_TITLE_LEN:
        raise LocalProtocolError("system title must be 8 bytes")
    if not 0 <= frame_counter <= 0xFFFFFFFF:
        raise LocalProtocolError("frame counter must fit in 4 bytes")
    length = _PAYLOAD_MIN + len(plaintext)
    if length > 0xFFFF:
        raise LocalProtocolError("plaintext too long for one APDU")
    ciphered = security.encrypt(
        plaintext,
        security_control=SECURITY_AUTH_ENC,
        system_title=system_title,
        invocation_counter=frame_counter,
        key=key,
        auth_key=auth_key,
    )
    return b"".join(
        (
            bytes((GENERAL_GLO_CIPHERING, SYSTEM_TITLE_LEN)),
            system_title,
            b"\x82",
            length.to_bytes(2, "big"),
            bytes((SECURITY_AUTH_ENC,)),
            frame_counter.to_bytes(4, "big"),
            ciphered,
        )
    )
