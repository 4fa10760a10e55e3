"""ACSE and xDLMS APDUs: the Green Book examples field by field, what dlms-cosem's tests
assert about their vectors, block transfer, selective access and the registry's errors."""

from __future__ import annotations

import pytest

from gateway.errors import FramingError, LocalProtocolError, UnsupportedError
from gateway.protocols.dlms import axdr
from gateway.protocols.dlms.apdu import (
    AARE,
    AARQ,
    RLRE,
    RLRQ,
    ActionRequestNormal,
    ActionResponseNormal,
    ActionResult,
    ApplicationContext,
    AssociationResult,
    AttributeWithSelection,
    AuthenticationMechanism,
    CaptureObjectDefinition,
    ConfirmedServiceError,
    Conformance,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    DataAccessResult,
    DataNotification,
    EntryDescriptor,
    EventNotification,
    ExceptionResponse,
    GeneralDedCiphering,
    GeneralGloCiphering,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
    InitiateRequest,
    InitiateResponse,
    RangeDescriptor,
    ServiceCiphered,
    SetRequestNormal,
    SetResponseNormal,
    decode_apdu,
    invoke_id_and_priority,
)
from gateway.protocols.dlms.axdr import CosemDateTime, DataType, decode_data
from gateway.protocols.obis import ObisCode

CLOCK = ObisCode(0, 0, 1, 0, 0, 255)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# ----------------------------------------------------------------- ACSE
def test_green_book_aarq_no_security() -> None:
    raw = h("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
    aarq = AARQ.decode(raw)
    assert aarq.application_context == ApplicationContext.LOGICAL_NAME
    assert aarq.mechanism is None and aarq.authentication_value is None
    assert aarq.calling_ap_title is None and not aarq.acse_requirements
    assert aarq.user_information is not None
    initiate = InitiateRequest.decode(aarq.user_information)
    assert initiate.proposed_conformance == 0x007E1F
    assert initiate.client_max_receive_pdu_size == 1200
    assert (initiate.dedicated_key, initiate.response_allowed) == (None, True)
    assert initiate.proposed_quality_of_service is None
    assert aarq.encode() == raw


def test_green_book_aare_accepted() -> None:
    raw = h("6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F4"
            "0007")
    aare = AARE.decode(raw)
    assert (aare.result, aare.diagnostic, aare.diagnostic_source) == (
        AssociationResult.ACCEPTED, 0, "user")
    assert aare.user_information is not None
    response = InitiateResponse.decode(aare.user_information)
    assert response.negotiated_conformance == 0x00501F
    assert Conformance(response.negotiated_conformance) == (
        Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ | Conformance.PRIORITY_MGMT_SUPPORTED
        | Conformance.GET | Conformance.SET | Conformance.SELECTIVE_ACCESS
        | Conformance.EVENT_NOTIFICATION | Conformance.ACTION)
    assert (response.server_max_receive_pdu_size, response.vaa_name) == (500, 0x0007)
    assert aare.encode() == raw


def test_aarq_lls_and_hls() -> None:
    lls = AARQ.decode(h("6036A1090607608574050801018A0207808B0760857405080201AC0A800831323334"
                        "35363738BE10040E01000000065F1F0400007E1F04B0"))
    assert (lls.mechanism, lls.authentication_value, lls.acse_requirements) == (
        AuthenticationMechanism.LLS, b"12345678", True)
    hls = AARQ.decode(h("6036A1090607608574050801018A0207808B0760857405080205AC0A80084B353669"
                        "56616759BE10040E01000000065F1F0400007E1F04B0"))
    assert (hls.mechanism, hls.authentication_value) == (AuthenticationMechanism.HLS_GMAC,
                                                         b"K56iVagY")


def test_aarq_ciphered_with_calling_ap_title() -> None:
    raw = h("6066A109060760857405080103A60A04084D4D4D0000BC614E8A0207808B0760857405080201AC0A8008"
            "3132333435363738BE34043221303001234567801302FF8A7874133D414CED25B42534D28DB004772060"
            "6B175BD52211BE6841DB204D39EE6FDB8E356855")
    aarq = AARQ.decode(raw)
    assert aarq.application_context == ApplicationContext.LOGICAL_NAME_CIPHERED
    assert aarq.calling_ap_title == h("4D4D4D0000BC614E")
    assert aarq.user_information is not None
    glo = decode_apdu(aarq.user_information)
    assert isinstance(glo, ServiceCiphered) and glo.plain_tag == 0x01 and not glo.dedicated
    assert (glo.security_control, glo.invocation_counter) == (0x30, 0x01234567)


def test_aare_rejections_and_hls() -> None:
    wrong_context = AARE.decode(h("6129A109060760857405080101A203020101A305A103020102BE10040E08"
                                  "00065F1F040000501F01F40007"))
    assert (wrong_context.result, wrong_context.diagnostic) == (
        AssociationResult.REJECTED_PERMANENT, 2)
    too_low = AARE.decode(h("611FA109060760857405080101A203020101A305A103020101BE0604040E010601"))
    assert too_low.user_information is not None
    error = decode_apdu(too_low.user_information)
    assert error == ConfirmedServiceError(service=1, error_type=6, error_value=1)
    hls = AARE.decode(h("6142A109060760857405080101A203020100A305A10302010E880207808907608574"
                        "05080205AA0A8008503677524A323146BE10040E0800065F1F040000501F01F40007"))
    assert (hls.result, hls.diagnostic, hls.mechanism) == (AssociationResult.ACCEPTED, 14,
                                                           AuthenticationMechanism.HLS_GMAC)
    assert hls.authentication_value == b"P6wRJ21F" and hls.acse_requirements


def test_aare_provider_diagnostic_and_extra_fields() -> None:
    aare = AARE(result=AssociationResult.REJECTED_PERMANENT, diagnostic=2,
                diagnostic_source="provider", responding_ap_title=b"ABCDEFGH",
                extra=((0xBD, h("0401AA")),))
    assert AARE.decode(aare.encode()) == aare


def test_release_request_and_response() -> None:
    assert RLRQ.decode(h("6203800100")) == RLRQ(reason=0)
    assert RLRE.decode(h("6303800100")) == RLRE(reason=0)
    rlre = RLRE.decode(h("6316800100BE11040F080100065F1F0400001E1D04C80007"))
    assert rlre.user_information is not None
    response = InitiateResponse.decode(rlre.user_information)
    assert response.negotiated_quality_of_service == 0  # "01 00": present, zero
    assert RLRQ(reason=None).encode() == h("6200")


@pytest.mark.parametrize("raw", [
    "6000",  # no application context
    "6103A10100",  # not an OID
    "610BA109060760857405090101",  # not a DLMS context
    "601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B000",  # trailing
    "6003A1",  # cut off
    "62038101",  # unexpected element in RLRQ
])
def test_malformed_acse(raw: str) -> None:
    with pytest.raises((FramingError, UnsupportedError)):
        decode_apdu(h(raw))


def test_initiate_with_dedicated_key_and_qos() -> None:
    raw = h("01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0")
    request = InitiateRequest.decode(raw)
    assert request.dedicated_key == h("00112233445566778899AABBCCDDEEFF")
    assert request.encode() == raw
    custom = InitiateRequest(proposed_conformance=Conformance.GET, response_allowed=False,
                             proposed_quality_of_service=-1)
    assert InitiateRequest.decode(custom.encode()) == custom
    # a lone 5F for the conformance tag is tolerated (DLMS_FACTS §4)
    with pytest.raises(FramingError):
        InitiateRequest.decode(h("010000000660040000501F04B0"))  # 60 is no conformance tag
    tolerated = h("0100000006" "5F" "04" "00" "00501F" "04B0")
    assert InitiateRequest.decode(tolerated).proposed_conformance == 0x00501F


# ----------------------------------------------------------------- GET
def test_get_request_normal_and_invoke_id() -> None:
    request = GetRequestNormal(
        attribute=CosemAttributeDescriptor(class_id=8, instance=CLOCK, attribute=2),
        invoke_id_and_priority=invoke_id_and_priority(1),
    )
    assert request.encode() == h("C001C100080000010000FF0200")
    assert request.invoke_id == 1
    assert invoke_id_and_priority(0, confirmed=True, high_priority=False) == 0x40
    with pytest.raises(LocalProtocolError):
        invoke_id_and_priority(16)


def test_get_with_list_and_responses() -> None:
    request = GetRequestWithList(attributes=(
        AttributeWithSelection(attribute=CosemAttributeDescriptor(
            class_id=1, instance=ObisCode(0, 0, 42, 0, 0), attribute=2)),
        AttributeWithSelection(attribute=CosemAttributeDescriptor(
            class_id=8, instance=CLOCK, attribute=2)),
    ))
    raw = request.encode()
    assert raw == h("C003C102" "00010000 2A0000FF 02 00" "0008 0000010000FF 02 00")
    assert decode_apdu(raw) == request
    response = GetResponseWithList(results=(axdr.octet_string(b"LDN"),
                                            DataAccessResult.OBJECT_UNDEFINED))
    assert decode_apdu(response.encode()) == response
    normal = GetResponseNormal(result=axdr.double_long_unsigned(5009))
    assert normal.encode() == h("C401C1000600001391")
    assert decode_apdu(h("C401C10101")) == GetResponseNormal(
        result=DataAccessResult.HARDWARE_FAULT)
    with pytest.raises(FramingError):
        decode_apdu(h("C401C10105"))  # 5 is not a data-access-result


def test_get_next_and_block_transfer_reassembly() -> None:
    buffer = axdr.array(*(axdr.structure(axdr.octet_string(bytes(12)), axdr.unsigned(i),
                                         axdr.double_long_unsigned(i * 1000))
                          for i in range(100)))
    whole = buffer.encode()
    blocks = [whole[i : i + 200] for i in range(0, len(whole), 200)]
    responses = [GetResponseWithDataBlock(last_block=n == len(blocks), block_number=n,
                                          result=part)
                 for n, part in enumerate(blocks, start=1)]
    received = b""
    for response in responses:
        decoded = decode_apdu(response.encode())
        assert isinstance(decoded, GetResponseWithDataBlock) and isinstance(decoded.result, bytes)
        received += decoded.result
        if not decoded.last_block:
            assert decode_apdu(GetRequestNext(block_number=decoded.block_number).encode()) == \
                GetRequestNext(block_number=decoded.block_number)
    assert decode_data(received) == buffer
    failed = GetResponseWithDataBlock(last_block=True, block_number=3,
                                      result=DataAccessResult.LONG_GET_ABORTED)
    assert decode_apdu(failed.encode()) == failed


def test_selective_access_by_range_on_a_profile() -> None:
    raw = h("C001C100070100630100FF0201010204020412000809060000010000FF0F02120000090C07E10A0107"
            "00000000FFC480090C07E10A010701000000FFC4800100")
    request = decode_apdu(raw)
    assert isinstance(request, GetRequestNormal) and request.access is not None
    assert request.attribute == CosemAttributeDescriptor(class_id=7,
                                                         instance=ObisCode(1, 0, 99, 1, 0),
                                                         attribute=2)
    rd = RangeDescriptor.from_access(request.access)
    assert rd.restricting_object == CaptureObjectDefinition(class_id=8, instance=CLOCK,
                                                            attribute=2)
    start = CosemDateTime.decode(rd.from_value.value)  # type: ignore[arg-type]
    assert start.to_datetime() is not None
    assert start.to_datetime().isoformat() == "2017-10-01T00:00:00+01:00"  # type: ignore[union-attr]
    assert rd.columns == ()
    rebuilt = GetRequestNormal(attribute=request.attribute, access=rd.to_access())
    assert rebuilt.encode() == raw
    entries = EntryDescriptor(from_entry=1, to_entry=10)
    assert EntryDescriptor.from_access(entries.to_access()) == entries
    with pytest.raises(FramingError):
        RangeDescriptor.from_access(entries.to_access())
    with pytest.raises(FramingError):
        EntryDescriptor.from_access(rd.to_access())


def test_capture_object_definitions() -> None:
    obj = CaptureObjectDefinition(class_id=3, instance=ObisCode(1, 0, 1, 8, 0), attribute=2)
    assert obj.to_data().encode() == h("0204 120003 0906 0100010800FF 0F02 120000")
    assert CaptureObjectDefinition.from_data(obj.to_data()) == obj
    with pytest.raises(FramingError):
        CaptureObjectDefinition.from_data(axdr.structure(axdr.unsigned(1)))


# ------------------------------------------------------------ SET, ACTION
def test_set_and_action() -> None:
    value = axdr.octet_string(CosemDateTime.decode(h("07E50118FF0E303950FFC400")).encode())
    request = SetRequestNormal(attribute=CosemAttributeDescriptor(class_id=8, instance=CLOCK,
                                                                  attribute=2), value=value)
    assert request.encode() == h("C101C100080000010000FF0200090C07E50118FF0E303950FFC400")
    assert decode_apdu(h("C501C100")) == SetResponseNormal(result=DataAccessResult.SUCCESS)
    reply = ActionRequestNormal(
        method=CosemMethodDescriptor(class_id=15, instance=ObisCode(0, 0, 40, 0, 0), method=1),
        parameters=axdr.octet_string(h("1000001A90E6D2221FA2FD85EED61ACC22")),
        invoke_id_and_priority=0xC0)
    assert reply.encode() == h("C301C0000F0000280000FF010109111000001A90E6D2221FA2FD85EED61ACC22")
    ok = decode_apdu(h("C701C000010009111000001AFDE8857B728A3499106AA665D1"))
    assert isinstance(ok, ActionResponseNormal) and ok.result is ActionResult.SUCCESS
    assert isinstance(ok.return_parameters, axdr.Data)
    assert decode_apdu(h("C701C0000101FA")) == ActionResponseNormal(
        result=ActionResult.SUCCESS, return_parameters=DataAccessResult.OTHER_REASON,
        invoke_id_and_priority=0xC0)
    with pytest.raises(FramingError):
        decode_apdu(h("C701C00002"))  # the return-parameters flag is 0 or 1


# --------------------------------------------------- notifications, errors
def test_data_notification_date_time_forms() -> None:
    body = axdr.structure(axdr.double_long_unsigned(5852))
    stamp = h("07E3020401173416FF800000")
    for form, prefix in (("octet-string", "0C"), ("data-octet-string", "090C"),
                         ("data-date-time", "19")):
        dn = DataNotification(long_invoke_id_and_priority=0x40000000, body=body,
                              date_time=stamp, date_time_form=form)  # type: ignore[arg-type]
        raw = dn.encode()
        assert raw[5 : 5 + len(prefix) // 2] == h(prefix)
        assert decode_apdu(raw) == dn
        assert dn.timestamp is not None and dn.timestamp.to_naive() is not None
    absent = DataNotification(long_invoke_id_and_priority=1, body=body)
    assert absent.encode()[5] == 0 and absent.timestamp is None
    with pytest.raises(LocalProtocolError):
        DataNotification(long_invoke_id_and_priority=1, body=body, date_time=b"x",
                         date_time_form="data-date-time").encode()


def test_event_notification_exception_and_service_error() -> None:
    event = EventNotification(
        attribute=CosemAttributeDescriptor(class_id=1, instance=ObisCode(0, 0, 96, 11, 0),
                                           attribute=2),
        value=axdr.unsigned(7), time=h("07E5091B01092F0F00FF8880"))
    assert decode_apdu(event.encode()) == event
    assert decode_apdu(EventNotification(attribute=event.attribute, value=event.value).encode()
                       ).time is None  # type: ignore[union-attr]
    counter = ExceptionResponse(state_error=1, service_error=6, invocation_counter=42)
    assert counter.encode() == h("D80106 0000002A")
    assert decode_apdu(counter.encode()) == counter
    assert decode_apdu(h("D80102")) == ExceptionResponse(state_error=1, service_error=2)
    assert decode_apdu(h("0E010601")) == ConfirmedServiceError(service=1, error_type=6,
                                                               error_value=1)


def test_ciphered_containers() -> None:
    glo = GeneralGloCiphering(system_title=h("4B464D6750000009"), security_control=0x20,
                              invocation_counter=35, ciphered=bytes(200))
    raw = glo.encode()
    assert raw[:13] == h("DB084B464D675000000981CD20")
    assert decode_apdu(raw) == glo
    ded = GeneralDedCiphering(system_title=bytes(8), security_control=0x30,
                              invocation_counter=1, ciphered=bytes(20))
    assert decode_apdu(ded.encode()) == ded
    service = ServiceCiphered(tag=0xD0, security_control=0x30, invocation_counter=2,
                              ciphered=bytes(13))
    assert decode_apdu(service.encode()) == service and service.dedicated
    with pytest.raises(FramingError):
        decode_apdu(h("DB08" "0000000000000000" "03" "300000"))  # shorter than SC + IC
    with pytest.raises(LocalProtocolError):
        ServiceCiphered(tag=0xC0, security_control=0, invocation_counter=0,
                        ciphered=b"").encode()


@pytest.mark.parametrize(("raw", "error"), [
    ("", FramingError),
    ("99", FramingError),
    ("C0", FramingError),
    ("C009", FramingError),
    ("C105", UnsupportedError),  # set-request-with-list-and-first-datablock
    ("E0", UnsupportedError),  # general-block-transfer
    ("DD", UnsupportedError),  # general-ciphering
    ("C0016", FramingError),
])
def test_registry_errors(raw: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_apdu(bytes.fromhex(raw) if len(raw) % 2 == 0 else bytes.fromhex(raw + "0"))


def test_decode_checks_its_own_tag_and_subtype() -> None:
    with pytest.raises(FramingError):
        GetRequestNormal.decode(h("C002C100000001"))
    with pytest.raises(FramingError):
        GetRequestNext.decode(h("C102C100000001"))
    with pytest.raises(FramingError):
        DataNotification.decode(b"")
    assert DataNotification.decode(h("0F0000000100" "1101")).body == axdr.unsigned(1)
    assert decode_data(h("1101")).type is DataType.UNSIGNED


def test_encoding_checks_ranges() -> None:
    with pytest.raises(LocalProtocolError):
        GetRequestNext(block_number=2**32).encode()
    with pytest.raises(LocalProtocolError):
        CosemAttributeDescriptor(class_id=70000, instance=CLOCK, attribute=2).encode()
    with pytest.raises(LocalProtocolError):
        CosemAttributeDescriptor(class_id=8, instance=CLOCK, attribute=200).encode()
    with pytest.raises(LocalProtocolError):
        InitiateRequest(proposed_conformance=2**24).encode()
    with pytest.raises(LocalProtocolError):
        AARQ(calling_ap_title=bytes(70000)).encode()
