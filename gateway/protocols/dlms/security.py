"""DLMS/COSEM security suite 0 (Green Book ed. 9, 9.2.7: AES-GCM-128, GMAC).

* Security control octet (9.2.7.2.2 / GB9 table 40): b0-3 suite id, b4 authentication
  (A), b5 encryption (E), b6 key set (0 unicast, 1 broadcast), b7 compression.
* AES-GCM-128 with IV = system title (8) ‖ invocation counter (4) and a 12-octet tag
  (9.2.7.2.4): for A+E (0x30) AAD = SC ‖ AK and the output is ciphertext ‖ tag; for A
  only (0x10) AAD = SC ‖ AK ‖ plaintext, the plaintext travels in clear, then the tag;
  for E only (0x20, as Austrian meters push it) there is no tag and the output is the
  GCM ciphertext (AES-CTR from counter 2).  **Whenever SC says "authenticated", the
  tag is verified**; an encryption-only frame cannot be, so the caller checks that the
  plaintext is an APDU (a wrong key gives noise).
* Ciphered APDUs (the containers are in :mod:`.apdu`): general-glo-ciphering and
  general-ded-ciphering (system title inside), and the glo-/ded- service-specific
  APDUs (system title from the association): :func:`cipher_apdu`,
  :func:`decipher_apdu`.
* HLS-GMAC (mechanism 5, 9.2.7.4): ``f(challenge) = SC(0x10) ‖ IC ‖ GMAC`` with AAD =
  SC ‖ AK ‖ challenge: :func:`hls_gmac_response`, :func:`verify_hls_gmac_response`.
* :class:`ReplayGuard`: the invocation counter must increase per system title; a
  frame that does not is refused (``DecryptionError(reason="replay")``) and counted.

``DecryptionError.reason`` is ``"wrong_key"`` (the tag does not verify, or an
encryption-only plaintext is not an APDU), ``"not_encrypted"`` (a ciphered APDU whose SC
sets neither A nor E), ``"compressed"`` (SC b7: compression is not implemented),
``"truncated"`` (shorter than its tag), ``"no_key"`` (the key the SC asks for is not
configured), ``"replay"``.  Security suites 1 and 2 (ECDH, ECDSA, AES-256) raise
:class:`~gateway.errors.UnsupportedError`.  Key material never appears in messages.

Implementation note: ``cryptography``'s one-shot ``AESGCM`` costs ~0.6 µs per call
against ~3.6 µs for a ``Cipher(…, GCM)`` object, but it only takes 16-octet tags.  GCM
encryption is AES-CTR (from counter 2 for a 96-bit IV) plus a GHASH tag over AAD and
ciphertext, so ``AESGCM.encrypt`` of the ciphertext yields the plaintext (CTR is its
own inverse), and ``AESGCM.encrypt`` of that plaintext recomputes the full tag over
the same ciphertext, whose first 12 octets are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import DecryptionError, LocalProtocolError, UnsupportedError

if TYPE_CHECKING:
    from gateway.protocols.dlms.apdu import GeneralGloCiphering, ServiceCiphered

# The APDU containers are imported where they are used: encrypt/decrypt alone (all
# that dlms_gcm and the DSMR decoder need) do not load the APDU module.

__all__ = [
    "AUTHENTICATED",
    "BROADCAST",
    "COMPRESSED",
    "ENCRYPTED",
    "TAG_LEN",
    "CipherKind",
    "ReplayGuard",
    "SecurityControl",
    "check_key",
    "cipher_apdu",
    "cipher_tag",
    "decipher_apdu",
    "decrypt",
    "encrypt",
    "gmac",
    "hls_gmac_response",
    "verify_hls_gmac_response",
]

TAG_LEN: Final = 12
SYSTEM_TITLE_LEN: Final = 8
AUTHENTICATED: Final = 0x10
ENCRYPTED: Final = 0x20
BROADCAST: Final = 0x40
COMPRESSED: Final = 0x80


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityControl:
    """The security control octet, field by field (``to_int``/``from_int``)."""

    authenticated: bool = True
    encrypted: bool = True
    broadcast_key: bool = False
    compressed: bool = False
    suite: int = 0

    def to_int(self) -> int:
        """Raises:
        LocalProtocolError: the suite id is not 0..15.
        """
        if not 0 <= self.suite <= 15:
            raise LocalProtocolError(f"security suite id must be 0..15, got {self.suite}")
        return (self.suite | (AUTHENTICATED if self.authenticated else 0)
                | (ENCRYPTED if self.encrypted else 0)
                | (BROADCAST if self.broadcast_key else 0)
                | (COMPRESSED if self.compressed else 0))

    @classmethod
    def from_int(cls, value: int) -> SecurityControl:
        return cls(authenticated=bool(value & AUTHENTICATED), encrypted=bool(value & ENCRYPTED),
                   broadcast_key=bool(value & BROADCAST), compressed=bool(value & COMPRESSED),
                   suite=value & 0x0F)


def check_key(key: bytes, name: str) -> None:
    """Reject keys that cannot be AES-128 keys, without echoing them.

    Raises:
        LocalProtocolError: ``key`` is not 16 bytes.
    """
    if not isinstance(key, bytes | bytearray) or len(key) != 16:
        raise LocalProtocolError(f"{name} must be 16 bytes (AES-128)")


@lru_cache(maxsize=64)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(bytes(key))


def _iv(system_title: bytes, invocation_counter: int) -> bytes:
    if len(system_title) != SYSTEM_TITLE_LEN:
        raise LocalProtocolError("a system title is 8 octets")
    try:
        return system_title + invocation_counter.to_bytes(4, "big")
    except OverflowError:
        raise LocalProtocolError("an invocation counter is 32 bits (unsigned)") from None


def _check_control(security_control: int) -> None:
    if security_control & 0x0F:
        raise UnsupportedError(
            f"security suite {security_control & 0x0F} is not implemented (suite 0 only)"
        )
    if security_control & COMPRESSED:
        raise DecryptionError("the APDU is compressed (not implemented)", reason="compressed")
    if not security_control & (AUTHENTICATED | ENCRYPTED):
        raise DecryptionError("security control says neither authenticated nor encrypted",
                              reason="not_encrypted")


def _need(key: bytes | None, name: str) -> bytes:
    if key is None:
        raise DecryptionError(f"the frame needs the {name}, which is not configured",
                              reason="no_key")
    if len(key) != 16:
        raise LocalProtocolError(f"{name} must be 16 bytes (AES-128)")
    return key if type(key) is bytes else bytes(key)


def encrypt(
    plaintext: bytes,
    *,
    security_control: int,
    system_title: bytes,
    invocation_counter: int,
    key: bytes,
    auth_key: bytes | None = None,
) -> bytes:
    """Protect ``plaintext`` as the security control says; returns what follows SC ‖ IC.

    Raises:
        LocalProtocolError: a bad key, system title or invocation counter, or an SC
            with neither A nor E, or with compression.
        UnsupportedError: a suite other than 0.
    """
    try:
        _check_control(security_control)
    except DecryptionError as exc:
        raise LocalProtocolError(str(exc)) from None
    check_key(key, "encryption key")
    iv = _iv(system_title, invocation_counter)
    aead = _aead(bytes(key))
    sc = bytes((security_control,))
    if security_control & AUTHENTICATED:
        if auth_key is None:
            raise LocalProtocolError("an authenticated SC needs the authentication key")
        check_key(auth_key, "authentication key")
        if security_control & ENCRYPTED:
            out = aead.encrypt(iv, plaintext, sc + auth_key)
            return out[:-16] + out[-16 : -16 + TAG_LEN]
        tag = aead.encrypt(iv, b"", sc + auth_key + plaintext)
        return plaintext + tag[:TAG_LEN]
    return aead.encrypt(iv, plaintext, None)[:-16]


def decrypt(
    ciphered: bytes,
    *,
    security_control: int,
    system_title: bytes,
    invocation_counter: int,
    key: bytes | None,
    auth_key: bytes | None = None,
) -> bytes:
    """Undo :func:`encrypt`: verify the tag when SC says "authenticated", decrypt when
    it says "encrypted"; returns the plaintext.

    Raises:
        DecryptionError: see the module docstring for the reasons.
        UnsupportedError: a suite other than 0.
        LocalProtocolError: a key that is not 16 bytes, a bad system title.
    """
    if security_control & (0x0F | COMPRESSED) or not security_control & (AUTHENTICATED
                                                                        | ENCRYPTED):
        _check_control(security_control)  # raises the right error
    iv = _iv(system_title, invocation_counter)
    authenticated = security_control & AUTHENTICATED
    if authenticated and len(ciphered) < TAG_LEN:
        raise DecryptionError(f"{len(ciphered)} octets cannot hold the 12-octet tag",
                              reason="truncated")
    # The block cipher key is the encryption key even for authentication only (GMAC).
    aead = _aead(_need(key, "encryption key"))
    if not authenticated:
        # GCM without its tag: the CTR keystream XOR (encryption is its own inverse).
        return aead.encrypt(iv, ciphered, None)[:-16]
    ak = _need(auth_key, "authentication key")
    sc = bytes((security_control,))
    body, tag = ciphered[:-TAG_LEN], ciphered[-TAG_LEN:]
    if security_control & ENCRYPTED:
        plaintext = aead.encrypt(iv, body, None)[:-16]
        expected = aead.encrypt(iv, plaintext, sc + ak)[-16 : -16 + TAG_LEN]
    else:
        plaintext = body
        expected = aead.encrypt(iv, b"", sc + ak + plaintext)[:TAG_LEN]
    if not hmac.compare_digest(expected, tag):
        raise DecryptionError("the GCM tag does not verify (wrong key or corrupted frame)",
                              reason="wrong_key")
    return plaintext


def gmac(challenge: bytes, *, system_title: bytes, invocation_counter: int, key: bytes,
         auth_key: bytes, security_control: int = AUTHENTICATED) -> bytes:
    """The 12-octet GMAC over SC ‖ AK ‖ ``challenge`` (IV = system title ‖ IC).

    Raises:
        LocalProtocolError: a bad key, system title or invocation counter.
    """
    check_key(key, "encryption key")
    check_key(auth_key, "authentication key")
    iv = _iv(system_title, invocation_counter)
    aad = bytes((security_control,)) + auth_key + challenge
    return _aead(bytes(key)).encrypt(iv, b"", aad)[:TAG_LEN]


def hls_gmac_response(challenge: bytes, *, system_title: bytes, invocation_counter: int,
                      key: bytes, auth_key: bytes) -> bytes:
    """HLS-GMAC pass 3/4 value f(challenge) = ``10 ‖ IC ‖ GMAC`` (17 octets), computed by
    the side that owns ``system_title`` and ``invocation_counter``.

    Raises:
        LocalProtocolError: a bad key, system title or invocation counter.
    """
    tag = gmac(challenge, system_title=system_title, invocation_counter=invocation_counter,
               key=key, auth_key=auth_key)
    return bytes((AUTHENTICATED,)) + invocation_counter.to_bytes(4, "big") + tag


def verify_hls_gmac_response(response: bytes, challenge: bytes, *, system_title: bytes,
                             key: bytes, auth_key: bytes) -> int:
    """Check the peer's f(challenge) (made with the peer's ``system_title``); returns its IC.

    Raises:
        DecryptionError: ``"truncated"`` if not 17 octets, ``"wrong_key"`` if it does not
            verify, ``"malformed"`` if the SC octet is not 0x10.
    """
    if len(response) != 5 + TAG_LEN:
        raise DecryptionError(f"HLS-GMAC response of {len(response)} octets, expected 17",
                              reason="truncated")
    if response[0] != AUTHENTICATED:
        raise DecryptionError("HLS-GMAC response does not start with SC 0x10", reason="malformed")
    counter = int.from_bytes(response[1:5], "big")
    expected = gmac(challenge, system_title=system_title, invocation_counter=counter, key=key,
                    auth_key=auth_key)
    if not hmac.compare_digest(expected, response[5:]):
        raise DecryptionError("HLS-GMAC response does not verify (wrong key or challenge)",
                              reason="wrong_key")
    return counter


# ------------------------------------------------------------ ciphered APDUs
CipherKind = Literal["general-glo", "general-ded", "glo", "ded"]


def cipher_tag(plain_tag: int, *, dedicated: bool = False) -> int:
    """The glo- (or ded-) service-specific tag for a plain APDU tag (C0 -> C8 / D0 …).

    Raises:
        LocalProtocolError: the APDU has no service-specific ciphered form.
    """
    from gateway.protocols.dlms.apdu import DED_TAGS, GLO_TAGS

    table = {plain: tag for tag, plain in (DED_TAGS if dedicated else GLO_TAGS).items()}
    if plain_tag not in table:
        raise LocalProtocolError(f"APDU 0x{plain_tag:02X} has no service-specific ciphered form")
    return table[plain_tag]


def cipher_apdu(
    apdu: bytes,
    *,
    kind: CipherKind,
    security_control: int,
    system_title: bytes,
    invocation_counter: int,
    key: bytes,
    auth_key: bytes | None = None,
) -> bytes:
    """Protect a plain APDU and wrap it: ``general-glo`` (DB) / ``general-ded`` (DC) carry
    ``system_title``; ``glo``/``ded`` use the service-specific tag of the APDU (the
    receiver knows the system title from the association).

    Raises:
        LocalProtocolError: see :func:`encrypt`; or no service-specific form exists.
        UnsupportedError: a suite other than 0.
    """
    from gateway.protocols.dlms.apdu import (
        GeneralDedCiphering,
        GeneralGloCiphering,
        ServiceCiphered,
    )

    ciphered = encrypt(apdu, security_control=security_control, system_title=system_title,
                       invocation_counter=invocation_counter, key=key, auth_key=auth_key)
    if kind in ("general-glo", "general-ded"):
        cls = GeneralGloCiphering if kind == "general-glo" else GeneralDedCiphering
        return cls(system_title=system_title, security_control=security_control,
                   invocation_counter=invocation_counter, ciphered=ciphered).encode()
    if not apdu:
        raise LocalProtocolError("empty APDU")
    tag = cipher_tag(apdu[0], dedicated=kind == "ded")
    return ServiceCiphered(tag=tag, security_control=security_control,
                           invocation_counter=invocation_counter, ciphered=ciphered).encode()


def decipher_apdu(
    apdu: GeneralGloCiphering | ServiceCiphered,
    *,
    key: bytes | None,
    auth_key: bytes | None = None,
    system_title: bytes | None = None,
) -> bytes:
    """The plain APDU inside a ciphered one.

    ``system_title`` is needed for service-specific APDUs (the sender's AP title); a
    general-glo/ded-ciphering APDU carries its own.  ``key`` is the key the APDU was
    made with (global unicast, broadcast or dedicated: the caller picks it by
    ``security_control`` and the APDU kind).  The plaintext of an encryption-only APDU
    is checked to start like the expected APDU.

    Raises:
        DecryptionError: see :func:`decrypt`; ``"wrong_key"`` also when an
            encryption-only plaintext is not the APDU it should be.
        LocalProtocolError: no system title for a service-specific APDU.
        UnsupportedError: a suite other than 0.
    """
    from gateway.protocols.dlms.apdu import GeneralGloCiphering

    if isinstance(apdu, GeneralGloCiphering):  # DB and DC
        title = apdu.system_title
        if len(title) != SYSTEM_TITLE_LEN:
            raise DecryptionError(f"system title of {len(title)} octets, expected 8",
                                  reason="malformed")
        expected_tag: int | None = None
    else:
        if system_title is None:
            raise LocalProtocolError("a service-specific ciphered APDU needs the system title")
        title = system_title
        expected_tag = apdu.plain_tag
    plaintext = decrypt(apdu.ciphered, security_control=apdu.security_control,
                        system_title=title, invocation_counter=apdu.invocation_counter,
                        key=key, auth_key=auth_key)
    if not plaintext:
        raise DecryptionError("the ciphered APDU is empty", reason="truncated")
    if not apdu.security_control & AUTHENTICATED and (
        (expected_tag is not None and plaintext[0] != expected_tag)
        or plaintext[0] not in _PLAIN_TAGS
    ):
        raise DecryptionError("the decrypted bytes are not an APDU (wrong key?)",
                              reason="wrong_key")
    return plaintext


# First octets a deciphered APDU can start with (xDLMS plain APDUs, and the DSMR P1
# telegram "/" that Luxembourg meters put in general-glo-ciphering).
_PLAIN_TAGS: Final = frozenset(
    {0x01, 0x08, 0x0E, 0x0F, 0x2F, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC7, 0xD8, 0xE0}
)


class ReplayGuard:
    """Invocation counters per system title: each must exceed the last one accepted.

    Call :meth:`check` before decrypting (cheap refusal) and :meth:`accept` only once
    the frame proved authentic (tag verified, or the plaintext decoded), so a forged
    counter cannot lock the meter out.  ``refused`` counts the replays refused.
    """

    def __init__(self, last: Mapping[bytes, int] | None = None) -> None:
        """``last``: the counters accepted before (e.g. restored after a restart)."""
        self._last: dict[bytes, int] = {bytes(k): v for k, v in (last or {}).items()}
        self.refused = 0

    def last(self, system_title: bytes) -> int | None:
        return self._last.get(bytes(system_title))

    def counters(self) -> dict[bytes, int]:
        """The last accepted counter per system title (a copy, to persist)."""
        return dict(self._last)

    def check(self, system_title: bytes, invocation_counter: int) -> None:
        """Raises:
        DecryptionError: ``reason="replay"``: the counter is not above the last one.
        """
        last = self._last.get(system_title if type(system_title) is bytes else bytes(system_title))
        if last is not None and invocation_counter <= last:
            self.refused += 1
            raise DecryptionError(
                f"invocation counter {invocation_counter} is not above {last} (replay)",
                reason="replay",
            )

    def accept(self, system_title: bytes, invocation_counter: int) -> None:
        self._last[bytes(system_title)] = invocation_counter
