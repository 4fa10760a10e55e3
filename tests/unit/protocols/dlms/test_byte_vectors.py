"""All 121 byte vectors lifted from dlms-cosem's tests, each through the codec it belongs to.

Well-formed APDUs, HDLC frames and A-XDR data must round-trip (decode, then encode
gives the same bytes).  The vectors dlms-cosem uses to check that a *wrong* tag or
subtype is refused must raise a ``gateway.errors`` error here too: through a dict
registry a wrong tag often names another APDU, so the error is then that APDU's
framing error (truncated, trailing bytes) or, for a subtype we do not implement,
``UnsupportedError``.  Keys, passwords, system titles, counters and challenges are used
in the security round trips they came with.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import FramingError, ProtocolError, UnsupportedError
from gateway.protocols.dlms import security
from gateway.protocols.dlms.apdu import (
    AARQ,
    DataNotification,
    RangeDescriptor,
    SelectiveAccess,
    ServiceCiphered,
    decode_apdu,
)
from gateway.protocols.dlms.axdr import decode_data, decode_data_at
from gateway.protocols.dlms.hdlc import (
    LLC_COMMAND,
    LLC_RESPONSE,
    FrameKind,
    HdlcFrame,
    HdlcParameters,
    split_llc,
)
from gateway.protocols.obis import ObisCode

VECTORS = Path(__file__).resolve().parents[4].parent / "shared" / "vectors" / "dlms"
DATA = json.loads((VECTORS / "dlms_cosem" / "test_byte_vectors.json").read_text())
ALL = DATA["vectors"]

# index -> what it is (the file's order; each test also checks the originating test name)
APDU = {7, 8, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 24, 25, 26, 27, 30, 32, 44, 53, 54,
        59, 62, 63, 64, 67, 70, 75, 78, 81, 84, 85, 86, 88, 91, 92, 94, 97, 99, 100, 101, 102,
        103, 104, 105, 107, 109, 115}
APDU_ERRORS: dict[int, type[ProtocolError]] = {
    55: FramingError, 56: UnsupportedError, 57: FramingError, 58: UnsupportedError,
    60: FramingError, 61: UnsupportedError, 65: FramingError, 66: UnsupportedError,
    68: FramingError, 69: FramingError, 71: UnsupportedError, 72: FramingError,
    73: FramingError, 74: FramingError, 76: FramingError, 77: FramingError, 79: FramingError,
    80: FramingError, 82: UnsupportedError, 83: FramingError, 87: FramingError,
    89: UnsupportedError, 90: FramingError, 93: FramingError, 95: UnsupportedError,
    96: FramingError, 98: FramingError, 110: FramingError, 111: UnsupportedError,
    112: UnsupportedError, 113: UnsupportedError, 114: UnsupportedError, 116: FramingError,
    117: UnsupportedError, 118: UnsupportedError, 119: UnsupportedError, 120: UnsupportedError,
}
HDLC = {34, 35, 36, 38, 40}
HDLC_ERRORS = {33}
LLC_INFO = {37, 39}
AXDR = {10, 11, 41}
GET_DATA_RESULT = {9}
OBIS = {28}
KEYS = {1, 2, 3, 4, 5, 6}
PASSWORD = {0}
SYSTEM_TITLES = {23, 29, 31}
SECURITY = {42, 43, 45, 46, 47, 48, 49, 50, 51, 52}  # and 44, an APDU
ACCESS = {106, 108}

GB_EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
GB_AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")


def raw(index: int) -> bytes:
    return bytes.fromhex(ALL[index]["hex"])


def test_every_vector_has_exactly_one_place() -> None:
    groups = [APDU, set(APDU_ERRORS), HDLC, HDLC_ERRORS, LLC_INFO, AXDR, GET_DATA_RESULT, OBIS,
              KEYS, PASSWORD, SYSTEM_TITLES, SECURITY, ACCESS]
    assert DATA["count"] == len(ALL) == 121
    assert sorted(i for g in groups for i in g) == list(range(121))


@pytest.mark.parametrize("index", sorted(APDU))
def test_apdus_round_trip(index: int) -> None:
    data = raw(index)
    apdu = decode_apdu(data)
    assert apdu.encode() == data
    assert type(apdu).decode(data) == apdu  # type: ignore[attr-defined]


@pytest.mark.parametrize("index", sorted(APDU_ERRORS))
def test_wrong_tags_and_subtypes_are_refused(index: int) -> None:
    assert ALL[index]["source_path"].startswith("tests/test_xdlms/")
    with pytest.raises(APDU_ERRORS[index]):
        decode_apdu(raw(index))


@pytest.mark.parametrize("index", sorted(HDLC))
def test_hdlc_frames_round_trip(index: int) -> None:
    data = raw(index)
    frame = HdlcFrame.decode(data)
    assert frame.encode() == data
    if frame.kind is FrameKind.UA:
        params = HdlcParameters.decode(frame.information)
        assert params.encode() == frame.information
    elif frame.information:
        llc, apdu = split_llc(frame.information)
        assert llc in (LLC_COMMAND, LLC_RESPONSE)
        assert decode_apdu(apdu).encode() == apdu
    if index == 40:  # an Aidon UI push of 27 OBIS elements
        notification = decode_apdu(split_llc(frame.information)[1])
        assert isinstance(notification, DataNotification)
        assert len(notification.body.items) == 27


def test_hdlc_validation_vector_is_not_a_frame() -> None:
    with pytest.raises(FramingError):
        HdlcFrame.decode(raw(33))


@pytest.mark.parametrize(("index", "frame_index"), [(37, 36), (39, 38)])
def test_information_fields(index: int, frame_index: int) -> None:
    info = raw(index)
    assert HdlcFrame.decode(raw(frame_index)).information == info
    llc, apdu = split_llc(info)
    assert llc + decode_apdu(apdu).encode() == info


@pytest.mark.parametrize("index", sorted(AXDR))
def test_axdr_data_round_trips(index: int) -> None:
    data = raw(index)
    assert decode_data(data).encode() == data


def test_get_data_result_vector() -> None:
    data = raw(9)
    value, end = decode_data_at(data, 1)
    assert data[0] == 0 and end == len(data) and value.encode() == data[1:]


def test_obis_vector() -> None:
    assert str(ObisCode.from_bytes(raw(28))) == "0-0:43.1.0"  # the invocation counter object
    assert ObisCode.from_bytes(raw(28)).to_bytes() == raw(28)


@pytest.mark.parametrize("index", sorted(KEYS))
def test_keys_encrypt_and_decrypt(index: int) -> None:
    key = raw(index)
    assert len(key) == 16
    plain = raw(44)
    title = raw(23)
    for sc in (0x30, 0x20, 0x10):
        ciphered = security.encrypt(plain, security_control=sc, system_title=title,
                                    invocation_counter=7, key=key, auth_key=key)
        assert security.decrypt(ciphered, security_control=sc, system_title=title,
                                invocation_counter=7, key=key, auth_key=key) == plain


def test_lls_password_in_an_aarq() -> None:
    password = raw(0)
    aarq = AARQ(acse_requirements=True, mechanism=1, authentication_value=password,
                user_information=raw(99))
    assert AARQ.decode(aarq.encode()) == aarq


def test_system_titles() -> None:
    aarq = AARQ.decode(raw(21))
    assert aarq.calling_ap_title == raw(23)
    glo = decode_apdu(raw(30))
    assert glo.system_title == raw(31)  # type: ignore[union-attr]
    meter = raw(29)
    ciphered = security.cipher_apdu(raw(67), kind="glo", security_control=0x30,
                                    system_title=meter, invocation_counter=1, key=GB_EK,
                                    auth_key=GB_AK)
    inner = decode_apdu(ciphered)
    assert isinstance(inner, ServiceCiphered)
    assert security.decipher_apdu(inner, key=GB_EK, auth_key=GB_AK, system_title=meter) == raw(67)


def test_dlms_cosems_encrypt_vector() -> None:
    key, text = raw(42), raw(43)
    assert (key, text) == (b"SUCHINSECUREKIND", b"SUPER_SECRET_TEXT")
    ciphered = security.encrypt(text, security_control=0x30, system_title=b"12345678",
                                invocation_counter=1, key=key, auth_key=key)
    assert security.decrypt(ciphered, security_control=0x30, system_title=b"12345678",
                            invocation_counter=1, key=key, auth_key=key) == text


def test_green_book_encryption_vector() -> None:
    counter = int.from_bytes(raw(46), "big")
    assert security.encrypt(raw(44), security_control=0x30,
                            system_title=bytes.fromhex("4D4D4D0000BC614E"),
                            invocation_counter=counter, key=GB_EK, auth_key=GB_AK) == raw(45)


def test_green_book_gmac_vectors() -> None:
    client_title, challenge, counter, tag = raw(47), raw(48), raw(49), raw(50)
    assert raw(51) == client_title + counter  # the IV
    assert raw(52) == b"\x10" + GB_AK + challenge  # the AAD
    assert security.gmac(challenge, system_title=client_title,
                         invocation_counter=int.from_bytes(counter, "big"), key=GB_EK,
                         auth_key=GB_AK) == tag


def test_selective_access_vectors() -> None:
    access = SelectiveAccess.decode(raw(106))
    assert access.encode() == raw(106)
    rd = RangeDescriptor.from_access(access)
    assert str(rd.restricting_object.instance) == "0-0:1.0.0"
    assert rd.to_access() == access
    with_flag = raw(108)
    assert with_flag[0] == 1
    assert b"\x01" + SelectiveAccess.decode(with_flag[1:]).encode() == with_flag
