"""Cross-checks against dlms-cosem (an independent implementation, a test-only peer): what
we encode it decodes to the same fields, and what it encodes we decode."""

from __future__ import annotations

import pytest

from gateway.protocols.dlms import axdr, security
from gateway.protocols.dlms.apdu import (
    AARE,
    AARQ,
    CosemAttributeDescriptor,
    DataNotification,
    GetRequestNext,
    GetRequestNormal,
    GetResponseNormal,
    InitiateRequest,
    InitiateResponse,
)
from gateway.protocols.dlms.hdlc import (
    LLC_RESPONSE,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    HdlcParameters,
    control_i,
    control_u,
)
from gateway.protocols.obis import ObisCode

dlms_cosem = pytest.importorskip("dlms_cosem")

from dlms_cosem import enumerations
from dlms_cosem.connection import XDlmsApduFactory
from dlms_cosem.hdlc import frames as their_frames
from dlms_cosem.protocol import xdlms
from dlms_cosem.security import SecurityControlField
from dlms_cosem.security import decrypt as their_decrypt

CLOCK = ObisCode(0, 0, 1, 0, 0, 255)


def test_our_get_request_is_theirs() -> None:
    ours = GetRequestNormal(attribute=CosemAttributeDescriptor(class_id=8, instance=CLOCK,
                                                               attribute=2)).encode()
    theirs = XDlmsApduFactory.apdu_from_bytes(ours)
    assert isinstance(theirs, xdlms.GetRequestNormal)
    assert theirs.cosem_attribute.interface == enumerations.CosemInterface.CLOCK
    assert theirs.cosem_attribute.instance.to_bytes() == CLOCK.to_bytes()
    assert theirs.to_bytes() == ours
    nxt = GetRequestNext(block_number=5).encode()
    assert XDlmsApduFactory.apdu_from_bytes(nxt).to_bytes() == nxt


def test_our_get_response_is_theirs() -> None:
    ours = GetResponseNormal(result=axdr.double_long_unsigned(5009)).encode()
    theirs = xdlms.GetResponseNormal.from_bytes(ours)
    assert theirs.data == axdr.double_long_unsigned(5009).encode()
    assert theirs.invoke_id_and_priority.invoke_id == 1


def test_association_apdus_agree() -> None:
    initiate = InitiateRequest(proposed_conformance=0x001E1D, client_max_receive_pdu_size=0xFFFF)
    ours = AARQ(user_information=initiate.encode()).encode()
    theirs = XDlmsApduFactory.apdu_from_bytes(ours)
    assert theirs.to_bytes() == ours
    assert theirs.user_information.content.client_max_receive_pdu_size == 0xFFFF
    response = InitiateResponse(negotiated_conformance=0x00501F, server_max_receive_pdu_size=500)
    aare = AARE(user_information=response.encode(), acse_requirements=True, mechanism=5,
                authentication_value=b"P6wRJ21F", diagnostic=14).encode()
    parsed = XDlmsApduFactory.apdu_from_bytes(aare)
    assert parsed.authentication == enumerations.AuthenticationMechanism.HLS_GMAC
    assert parsed.authentication_value == b"P6wRJ21F"
    assert parsed.user_information.content.server_max_receive_pdu_size == 500


def test_ciphering_agrees() -> None:
    key = bytes(range(16))
    title = b"ABCDEFGH"
    plain = DataNotification(long_invoke_id_and_priority=1, body=axdr.unsigned(3)).encode()
    ciphered = security.encrypt(plain, security_control=0x30, system_title=title,
                                invocation_counter=99, key=key, auth_key=key)
    assert their_decrypt(
        security_control=SecurityControlField(security_suite=0, authenticated=True,
                                              encrypted=True),
        system_title=title, invocation_counter=99, key=key, cipher_text=ciphered,
        auth_key=key) == plain


def test_hdlc_frames_agree() -> None:
    server = HdlcAddress(upper=1, lower=17)
    client = HdlcAddress(upper=16)
    snrm = HdlcFrame(destination=server, source=client, control=control_u(FrameKind.SNRM))
    assert snrm.encode() == bytes.fromhex("7EA00802232193BD647E")  # dlms-cosem TestSnrmFrame
    # dlms-cosem 21.3 parses I frames in the server-to-client direction only
    info = LLC_RESPONSE + AARE(user_information=InitiateResponse(
        negotiated_conformance=0x001E1D, server_max_receive_pdu_size=1224).encode()).encode()
    ours = HdlcFrame(destination=client, source=server, control=control_i(0, 1),
                     information=info).encode()
    theirs = their_frames.InformationFrame.from_bytes(ours)
    assert theirs.payload == info and theirs.to_bytes() == ours
    ua = their_frames.UnNumberedAcknowledgmentFrame.from_bytes(bytes.fromhex(
        "7EA01F21022373E6C781801205019A06019A070400000001080400000001CCA27E"))
    mine = HdlcFrame.decode(ua.to_bytes())
    assert HdlcParameters.decode(mine.information).max_info_rx == 0x9A
