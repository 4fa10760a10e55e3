"""Security suite 0: the Green Book vectors exactly, the dlms-cosem UDP pushes with
MYDUMMYGLOBALKEY, HLS-GMAC both ways, every security control combination, the error
reasons, replay protection, and the Austrian encryption-only push."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import DecryptionError, LocalProtocolError, UnsupportedError
from gateway.protocols.dlms import security
from gateway.protocols.dlms.apdu import (
    AARQ,
    RLRE,
    DataNotification,
    GeneralGloCiphering,
    InitiateRequest,
    InitiateResponse,
    ServiceCiphered,
    decode_apdu,
)
from gateway.protocols.dlms.security import (
    ReplayGuard,
    SecurityControl,
    cipher_apdu,
    cipher_tag,
    decipher_apdu,
    decrypt,
    encrypt,
    hls_gmac_response,
    verify_hls_gmac_response,
)

VECTORS = Path(__file__).resolve().parents[4].parent / "shared" / "vectors" / "dlms"
SUITE0 = json.loads((VECTORS / "dlms_cosem" / "security_suite0_vectors.json").read_text())
PUSHES = json.loads((VECTORS / "dlms_cosem" / "udp_wrapper_general_glo_ciphering.json")
                    .read_text())

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
SERVER_TITLE = bytes.fromhex("4D4D4D0000BC614E")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000000001")
GET = bytes.fromhex("C0010000080000010000FF0200")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# --------------------------------------------------------- Green Book vectors
def _case(name: str) -> dict[str, str]:
    return next(c for c in SUITE0["cases"] if c["name"] == name)


def test_suite0_file_encrypt_authenticated() -> None:
    case = _case("encrypt_authenticated")
    args = {"security_control": int(case["security_control"], 16),
            "system_title": h(case["system_title_hex"]),
            "invocation_counter": int(case["invocation_counter_hex"], 16),
            "key": h(case["encryption_key_hex"]), "auth_key": h(case["authentication_key_hex"])}
    ciphered = encrypt(h(case["plaintext_hex"]), **args)  # type: ignore[arg-type]
    assert ciphered == h(case["expected_ciphertext_plus_tag_hex"])
    assert decrypt(ciphered, **args) == h(case["plaintext_hex"])  # type: ignore[arg-type]


def test_suite0_file_gmac() -> None:
    case = _case("gmac_authentication_only")
    tag = security.gmac(h(case["challenge_hex"]), system_title=h(case["system_title_hex"]),
                        invocation_counter=int(case["invocation_counter_hex"], 16),
                        key=h(case["encryption_key_hex"]), auth_key=h(case["authentication_key_hex"]))
    assert tag == h(case["expected_tag_hex"])
    assert h(case["aad_hex"]) == b"\x10" + h(case["authentication_key_hex"]) + h(
        case["challenge_hex"])
    assert {c["name"] for c in SUITE0["cases"]} == {"encrypt_authenticated",
                                                   "gmac_authentication_only"}


def test_green_book_ciphered_initiate_request_in_the_aarq() -> None:
    # GB8 table 43 as quoted in DLMS_FACTS §5: the InitiateRequest with a dedicated key
    plain = h("01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0")
    expected = h("801302FF8A7874133D414CED25B42534D28DB0047720606B175BD52211BE6841DB204D39EE6F"
                 "DB8E356855")
    assert encrypt(plain, security_control=0x30, system_title=SERVER_TITLE,
                   invocation_counter=0x01234567, key=EK, auth_key=AK) == expected
    aarq = AARQ.decode(h("6066A109060760857405080103A60A04084D4D4D0000BC614E8A0207808B076085"
                         "7405080201AC0A80083132333435363738BE34043221303001234567801302FF8A78"
                         "74133D414CED25B42534D28DB0047720606B175BD52211BE6841DB204D39EE6FDB8E"
                         "356855"))
    assert aarq.user_information is not None and aarq.calling_ap_title is not None
    glo = decode_apdu(aarq.user_information)
    assert isinstance(glo, ServiceCiphered)
    inner = decipher_apdu(glo, key=EK, auth_key=AK, system_title=aarq.calling_ap_title)
    assert InitiateRequest.decode(inner).dedicated_key == h("00112233445566778899AABBCCDDEEFF")


def test_green_book_glo_get_request() -> None:
    raw = cipher_apdu(GET, kind="glo", security_control=0x30, system_title=SERVER_TITLE,
                      invocation_counter=0x01234567, key=EK, auth_key=AK)
    assert raw == h("C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B")
    glo = decode_apdu(raw)
    assert isinstance(glo, ServiceCiphered)
    assert decipher_apdu(glo, key=EK, auth_key=AK, system_title=SERVER_TITLE) == GET


def test_ciphered_initiate_response_in_an_rlre() -> None:
    rlre = RLRE.decode(h("6328800100BE230421281F3001234567891214A0845E475714383F65BC19745CA2359"
                         "06525E4F3E1C893"))
    assert rlre.user_information is not None
    glo = decode_apdu(rlre.user_information)
    assert isinstance(glo, ServiceCiphered) and glo.plain_tag == 0x08
    inner = decipher_apdu(glo, key=EK, auth_key=AK, system_title=SERVER_TITLE)
    assert InitiateResponse.decode(inner).server_max_receive_pdu_size == 1024


def test_green_book_hls_gmac_both_ways() -> None:
    # DLMS_FACTS §5: f(StoC) by the client, f(CtoS) by the server
    stoc, ctos = h("503677524A323146"), h("4B35366956616759")
    f_stoc = hls_gmac_response(stoc, system_title=CLIENT_TITLE, invocation_counter=1, key=EK,
                               auth_key=AK)
    assert f_stoc == h("10 00000001 1A52FE7DD3E72748973C1E28")
    f_ctos = hls_gmac_response(ctos, system_title=SERVER_TITLE, invocation_counter=0x01234567,
                               key=EK, auth_key=AK)
    assert f_ctos == h("10 01234567 FE1466AFB3DBCD4F9389E2B7")
    assert verify_hls_gmac_response(f_stoc, stoc, system_title=CLIENT_TITLE, key=EK,
                                    auth_key=AK) == 1
    assert verify_hls_gmac_response(f_ctos, ctos, system_title=SERVER_TITLE, key=EK,
                                    auth_key=AK) == 0x01234567


@pytest.mark.parametrize(("response", "reason"), [
    ("10000000011A52FE7DD3E72748973C1E29", "wrong_key"),
    ("100000000111", "truncated"),
    ("30000000011A52FE7DD3E72748973C1E28", "malformed"),
])
def test_hls_gmac_failures(response: str, reason: str) -> None:
    with pytest.raises(DecryptionError) as info:
        verify_hls_gmac_response(h(response), h("503677524A323146"), system_title=CLIENT_TITLE,
                                 key=EK, auth_key=AK)
    assert info.value.reason == reason


# --------------------------------------------------- dlms-cosem UDP pushes
@pytest.mark.parametrize("case", range(len(PUSHES["cases"])))
def test_udp_pushes_decrypt_with_mydummyglobalkey(case: int) -> None:
    key = PUSHES["encryption_key_ascii"].encode()
    assert key == h(PUSHES["encryption_key_hex"]) == h(PUSHES["authentication_key_hex"])
    entry = PUSHES["cases"][case]
    glo = decode_apdu(h(entry["wrapper_frame_hex"])[8:])
    assert isinstance(glo, GeneralGloCiphering)
    assert glo.system_title == h(entry["system_title_hex"])
    assert (glo.security_control, glo.invocation_counter) == (
        int(entry["security_control"], 16), entry["invocation_counter"])
    assert glo.ciphered[-12:] == h(entry["gcm_tag_hex"])
    plain = decipher_apdu(glo, key=key, auth_key=key)
    assert plain == h(entry["expected_plaintext_apdu_hex"])
    notification = decode_apdu(plain)
    assert isinstance(notification, DataNotification)
    assert notification.encode() == plain


# ---------------------------------------------------------------- modes
@pytest.mark.parametrize("sc", [0x10, 0x20, 0x30, 0x50, 0x60, 0x70])
def test_every_protection_round_trips(sc: int) -> None:
    ciphered = encrypt(GET, security_control=sc, system_title=SERVER_TITLE,
                       invocation_counter=5, key=EK, auth_key=AK)
    tag = 12 if sc & 0x10 else 0
    assert len(ciphered) == len(GET) + tag
    assert (ciphered[: len(GET)] == GET) == (not sc & 0x20)  # authentication only: in clear
    assert decrypt(ciphered, security_control=sc, system_title=SERVER_TITLE,
                   invocation_counter=5, key=EK, auth_key=AK) == GET


def test_encryption_only_is_gcm_without_the_tag() -> None:
    # the same ciphertext as A+E, without the tag (GCM's CTR part, counter from 2)
    full = encrypt(GET, security_control=0x30, system_title=SERVER_TITLE,
                   invocation_counter=9, key=EK, auth_key=AK)
    bare = encrypt(GET, security_control=0x20, system_title=SERVER_TITLE,
                   invocation_counter=9, key=EK)
    assert bare == full[:-12]


def test_austrian_encryption_only_push_decrypts() -> None:
    # DLMS_FACTS §3, NOE Kaifa MA309: the APDU joined from two M-Bus frames
    apdu = h(
        "DB084B464D675000000981F8200000002388D5AB4F97515AAFC6B88D2F85DAA7A0E3C0C40D004535C397C9D0"
        "37AB7DBDA329107615444894A1A0DD7E85F02D496CECD3FF46AF5FB3C9229CFE8F3EE4606AB2E1F409F36AAD2"
        "E50900A4396FC6C2E083F373233A69616950758BFC7D63A9E9B6E99E21B2CBC2B934772CA51FD4D69830711CA"
        "B1F8CFF25F0A329337CBA51904F0CAED88D61968743C8454BA922EB00038182C22FE316D16F2A9F544D6F75D5"
        "1A4E92A1C4EF8AB19A2B7FEAA32D0726C0ED80229AE6C0F7621A4209251ACE2B2BC66FF0327A653BB686C756B"
        "E033C7A281F1D2A7E1FA31C3983E15F8FD16CC5787E6F5" "419A3CFDA44BE438C96F0E38BF83D9")
    glo = decode_apdu(apdu)
    assert isinstance(glo, GeneralGloCiphering) and glo.security_control == 0x20
    plain = decipher_apdu(glo, key=h("36C66639E48A8CA4D6BC8B282A793BBB"))
    assert plain.startswith(h("0F8006870E0C07E5091B01092F0F00FF8880022309"))
    assert isinstance(decode_apdu(plain), DataNotification)
    with pytest.raises(DecryptionError) as info:
        decipher_apdu(glo, key=bytes(16))  # no tag: the noise is caught by the APDU check
    assert info.value.reason == "wrong_key"


# -------------------------------------------------------------- reasons
def _reason(ciphered: bytes, sc: int, **keys: bytes | None) -> str:
    with pytest.raises(DecryptionError) as info:
        decrypt(ciphered, security_control=sc, system_title=SERVER_TITLE, invocation_counter=5,
                **keys)  # type: ignore[arg-type]
    assert "000102" not in str(info.value)  # no key material in messages
    return info.value.reason


def test_the_reasons_tell_the_failures_apart() -> None:
    good = encrypt(GET, security_control=0x30, system_title=SERVER_TITLE, invocation_counter=5,
                   key=EK, auth_key=AK)
    assert _reason(good, 0x30, key=bytes(16), auth_key=AK) == "wrong_key"
    assert _reason(good, 0x30, key=EK, auth_key=bytes(16)) == "wrong_key"
    damaged = good[:3] + bytes((good[3] ^ 1,)) + good[4:]
    assert _reason(damaged, 0x30, key=EK, auth_key=AK) == "wrong_key"
    assert _reason(good, 0x00, key=EK, auth_key=AK) == "not_encrypted"
    assert _reason(good, 0xB0, key=EK, auth_key=AK) == "compressed"
    assert _reason(good[:11], 0x30, key=EK, auth_key=AK) == "truncated"
    assert _reason(good, 0x30, key=None, auth_key=AK) == "no_key"
    assert _reason(good, 0x30, key=EK, auth_key=None) == "no_key"
    with pytest.raises(UnsupportedError):
        decrypt(good, security_control=0x31, system_title=SERVER_TITLE, invocation_counter=5,
                key=EK, auth_key=AK)


def test_local_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        encrypt(GET, security_control=0x30, system_title=b"short", invocation_counter=1,
                key=EK, auth_key=AK)
    with pytest.raises(LocalProtocolError):
        encrypt(GET, security_control=0x30, system_title=SERVER_TITLE, invocation_counter=-1,
                key=EK, auth_key=AK)
    with pytest.raises(LocalProtocolError):
        encrypt(GET, security_control=0x30, system_title=SERVER_TITLE, invocation_counter=1,
                key=b"short", auth_key=AK)
    with pytest.raises(LocalProtocolError):
        encrypt(GET, security_control=0x30, system_title=SERVER_TITLE, invocation_counter=1,
                key=EK)  # no authentication key
    with pytest.raises(LocalProtocolError):
        encrypt(GET, security_control=0x00, system_title=SERVER_TITLE, invocation_counter=1,
                key=EK)
    with pytest.raises(LocalProtocolError):
        cipher_tag(0x0F)  # a data notification has no service-specific form
    glo = decode_apdu(cipher_apdu(GET, kind="glo", security_control=0x30,
                                  system_title=SERVER_TITLE, invocation_counter=1, key=EK,
                                  auth_key=AK))
    assert isinstance(glo, ServiceCiphered)
    with pytest.raises(LocalProtocolError):
        decipher_apdu(glo, key=EK, auth_key=AK)  # no system title


@pytest.mark.parametrize("kind", ["general-glo", "general-ded", "glo", "ded"])
def test_cipher_apdu_round_trips(kind: str) -> None:
    raw = cipher_apdu(GET, kind=kind, security_control=0x30,  # type: ignore[arg-type]
                      system_title=SERVER_TITLE, invocation_counter=77, key=EK, auth_key=AK)
    apdu = decode_apdu(raw)
    assert isinstance(apdu, GeneralGloCiphering | ServiceCiphered)
    assert raw[0] == {"general-glo": 0xDB, "general-ded": 0xDC, "glo": 0xC8, "ded": 0xD0}[kind]
    assert decipher_apdu(apdu, key=EK, auth_key=AK, system_title=SERVER_TITLE) == GET


def test_wrong_plain_tag_inside_an_encryption_only_service_apdu() -> None:
    # an encryption-only glo-get-request whose plaintext is not a GET request
    ciphered = encrypt(h("C401C1000600001391"), security_control=0x20, system_title=SERVER_TITLE,
                       invocation_counter=3, key=EK)
    apdu = ServiceCiphered(tag=0xC8, security_control=0x20, invocation_counter=3,
                           ciphered=ciphered)
    with pytest.raises(DecryptionError) as info:
        decipher_apdu(apdu, key=EK, system_title=SERVER_TITLE)
    assert info.value.reason == "wrong_key"


def test_security_control_fields() -> None:
    assert SecurityControl().to_int() == 0x30
    assert SecurityControl(authenticated=False, broadcast_key=True, compressed=True).to_int() == 0xE0
    assert SecurityControl.from_int(0x21) == SecurityControl(authenticated=False, suite=1)
    with pytest.raises(LocalProtocolError):
        SecurityControl(suite=16).to_int()


def test_replay_guard() -> None:
    guard = ReplayGuard()
    guard.check(SERVER_TITLE, 5)
    guard.accept(SERVER_TITLE, 5)
    for counter in (5, 4):
        with pytest.raises(DecryptionError) as info:
            guard.check(SERVER_TITLE, counter)
        assert info.value.reason == "replay"
    guard.check(SERVER_TITLE, 6)
    guard.check(CLIENT_TITLE, 1)  # counters are per system title
    assert guard.refused == 2 and guard.last(SERVER_TITLE) == 5 and guard.last(CLIENT_TITLE) is None
