"""Our DLMS client against our DLMS server in memory (h11's ConnectionPair style): every
authentication mode, plain and ciphered, on the wrapper and on HDLC; GET (normal, list,
blocks, selective access), SET, ACTION, release; wrong password and wrong keys give
typed errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.errors import DecryptionError, LocalProtocolError, ReadTimeout, RemoteProtocolError
from gateway.protocols.dlms import axdr, hdlc
from gateway.protocols.dlms.apdu import (
    AttributeWithSelection,
    CaptureObjectDefinition,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    DataAccessResult,
    EntryDescriptor,
)
from gateway.protocols.dlms.axdr import CosemDateTime, Data
from gateway.protocols.dlms.client import (
    ActionDone,
    Associated,
    BlockReceived,
    ClientEvent,
    ClientSettings,
    ClientState,
    DlmsClient,
    GetDone,
    GetListDone,
    HdlcFraming,
    Released,
    Send,
    SetDone,
    WrapperFraming,
    range_access,
)
from gateway.protocols.dlms.cosem import CLOCK, ClassId, ScalerUnit, clock_time
from gateway.protocols.dlms.server import (
    ClockObject,
    DataObject,
    DlmsServer,
    ProfileGenericObject,
    RegisterObject,
    ServerConnection,
    ServerSettings,
)
from gateway.protocols.obis import ObisCode

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
DK = bytes(range(0x40, 0x50))  # a dedicated key
ENERGY = ObisCode(1, 0, 1, 8, 0, 255)
PROFILE = ObisCode(1, 0, 99, 1, 0, 255)
LDN = ObisCode(0, 0, 42, 0, 0, 255)
START = datetime(2024, 3, 1, tzinfo=UTC)
NOW = START + timedelta(days=3)


def make_objects() -> list[Any]:
    energy = RegisterObject(ENERGY, axdr.double_long_unsigned(123456), ScalerUnit(scaler=0, unit=30))
    rows = [
        (axdr.octet_string(CosemDateTime.from_datetime(START + timedelta(minutes=15 * i)).encode()),
         axdr.double_long_unsigned(1000 + 25 * i))
        for i in range(3 * 96)
    ]
    profile = ProfileGenericObject(
        PROFILE,
        (CaptureObjectDefinition(class_id=8, instance=CLOCK, attribute=2),
         CaptureObjectDefinition(class_id=3, instance=ENERGY, attribute=2)),
        lambda: rows,
    )
    return [energy, profile, ClockObject(CLOCK, lambda: NOW),
            DataObject(LDN, axdr.octet_string(b"HGW0001"), writable=True)]


class Pair:
    """A client and a server connection passing bytes directly."""

    def __init__(self, *, carrier: str = "wrapper", client: ClientSettings | None = None,
                 server: ServerSettings | None = None, max_info: int = 128) -> None:
        dlms_server = DlmsServer({(o.class_id, o.logical_name): o for o in make_objects()},
                                 server or ServerSettings())
        self.dlms_server = dlms_server
        if carrier == "wrapper":
            cf: Any = WrapperFraming(local_wport=16, remote_wport=1)
            sf: Any = WrapperFraming(local_wport=1, remote_wport=16)
        else:
            c_addr, s_addr = hdlc.HdlcAddress(upper=16), hdlc.HdlcAddress(upper=1, lower=17, size=2)
            params = hdlc.HdlcParameters(max_info_tx=max_info, max_info_rx=max_info)
            cf = HdlcFraming(hdlc.HdlcLink(role="client", client=c_addr, server=s_addr,
                                           parameters=params))
            sf = HdlcFraming(hdlc.HdlcLink(role="server", client=c_addr, server=s_addr,
                                           parameters=params))
        self.client = DlmsClient(framing=cf, settings=client or ClientSettings())
        self.conn = ServerConnection(server=dlms_server, framing=sf)
        self.wire = 0
        self.exchanges: list[tuple[bytes, bytes]] = []  # (sent, answered) bytes

    def run(self, events: list[ClientEvent]) -> list[ClientEvent]:
        """Deliver sends until the client stops sending; return the non-Send events."""
        out: list[ClientEvent] = []
        pending = list(events)
        while pending:
            ev = pending.pop(0)
            if isinstance(ev, Send):
                self.wire += len(ev.data)
                reply = self.conn.receive(ev.data)
                self.exchanges.append((ev.data, reply))
                if reply:
                    pending += self.client.feed(reply, now=0.0)
            else:
                out.append(ev)
        return out

    def associate(self) -> Associated:
        evs = self.run(self.client.associate(now=0.0))
        assert len(evs) == 1 and isinstance(evs[0], Associated), evs
        assert self.client.state is ClientState.READY
        return evs[0]

    def get(self, class_id: int, obis: ObisCode, attribute: int, **kw: Any) -> list[ClientEvent]:
        return self.run(self.client.get(CosemAttributeDescriptor(
            class_id=class_id, instance=obis, attribute=attribute), now=0.0, **kw))


def value_of(events: list[ClientEvent]) -> Data | DataAccessResult:
    done = [e for e in events if isinstance(e, GetDone)]
    assert len(done) == 1, events
    return done[0].result


SECURITY = [
    pytest.param(ClientSettings(), ServerSettings(), id="none"),
    pytest.param(ClientSettings(authentication="lls", password=b"12345678"),
                 ServerSettings(authentication="lls", password=b"12345678"), id="lls"),
    pytest.param(ClientSettings(key=EK, auth_key=AK), ServerSettings(key=EK, auth_key=AK),
                 id="none-ciphered"),
    pytest.param(ClientSettings(authentication="lls", password=b"pw", key=EK, auth_key=AK,
                                ciphering="general-glo"),
                 ServerSettings(authentication="lls", password=b"pw", key=EK, auth_key=AK),
                 id="lls-general-glo"),
    pytest.param(ClientSettings(authentication="hls-gmac", key=EK, auth_key=AK),
                 ServerSettings(authentication="hls-gmac", key=EK, auth_key=AK), id="hls-gmac"),
    pytest.param(ClientSettings(authentication="hls-gmac", key=EK, auth_key=AK,
                                ciphering="general-glo"),
                 ServerSettings(authentication="hls-gmac", key=EK, auth_key=AK),
                 id="hls-gmac-general-glo"),
    pytest.param(ClientSettings(key=EK, auth_key=AK, ciphering="general-ded", dedicated_key=DK),
                 ServerSettings(key=EK, auth_key=AK), id="none-general-ded"),
    pytest.param(ClientSettings(authentication="lls", password=b"pw", key=EK, auth_key=AK,
                                ciphering="ded", dedicated_key=DK),
                 ServerSettings(authentication="lls", password=b"pw", key=EK, auth_key=AK),
                 id="lls-ded"),
    pytest.param(ClientSettings(authentication="hls-gmac", key=EK, auth_key=AK,
                                ciphering="general-ded", dedicated_key=DK),
                 ServerSettings(authentication="hls-gmac", key=EK, auth_key=AK),
                 id="hls-gmac-general-ded"),
]


@pytest.mark.parametrize("carrier", ["wrapper", "hdlc"])
@pytest.mark.parametrize(("client", "server"), SECURITY)
def test_session_in_every_security_mode(carrier: str, client: ClientSettings,
                                        server: ServerSettings) -> None:
    pair = Pair(carrier=carrier, client=client, server=server)
    assoc = pair.associate()
    assert assoc.server_max_receive_pdu_size == 1024
    if client.key is not None:
        assert assoc.server_system_title == server.system_title
    # register: scaler_unit then value
    su = ScalerUnit.from_data(value_of(pair.get(3, ENERGY, 3)))  # type: ignore[arg-type]
    assert (su.scaler, su.unit_text) == (0, "Wh")
    assert value_of(pair.get(3, ENERGY, 2)) == axdr.double_long_unsigned(123456)
    # clock
    clock = value_of(pair.get(8, CLOCK, 2))
    assert isinstance(clock, Data)
    assert clock_time(clock).to_datetime() == NOW
    # an object the meter does not have
    assert value_of(pair.get(3, ObisCode(1, 0, 99, 99, 0, 255), 2)) is DataAccessResult.OBJECT_UNDEFINED
    # SET then GET
    evs = pair.run(pair.client.set(CosemAttributeDescriptor(class_id=1, instance=LDN, attribute=2),
                                   axdr.octet_string(b"RENAMED"), now=0.0))
    assert evs == [SetDone(result=DataAccessResult.SUCCESS)]
    assert value_of(pair.get(1, LDN, 2)) == axdr.octet_string(b"RENAMED")
    # ACTION reset on the register
    evs = pair.run(pair.client.action(CosemMethodDescriptor(class_id=3, instance=ENERGY, method=1),
                                      axdr.integer(0), now=0.0))
    assert isinstance(evs[0], ActionDone) and evs[0].result == 0
    assert value_of(pair.get(3, ENERGY, 2)) == axdr.double_long_unsigned(0)
    # release
    assert pair.run(pair.client.release(now=0.0)) == [Released()]
    assert pair.client.state is ClientState.IDLE
    assert not pair.dlms_server.associated


@pytest.mark.parametrize("carrier", ["wrapper", "hdlc"])
@pytest.mark.parametrize("key", [None, EK])
def test_block_transfer_of_a_load_profile(carrier: str, key: bytes | None) -> None:
    pair = Pair(carrier=carrier, client=ClientSettings(key=key, auth_key=key and AK),
                server=ServerSettings(key=key, auth_key=key and AK, max_pdu_size=256),
                max_info=64)
    pair.associate()
    evs = pair.get(7, PROFILE, 2)
    progress = [e for e in evs if isinstance(e, BlockReceived)]
    assert len(progress) > 10
    assert [p.block_number for p in progress] == list(range(1, len(progress) + 1))
    buffer = value_of(evs)
    assert isinstance(buffer, Data) and len(buffer.items) == 3 * 96
    assert buffer.items[5].items[1] == axdr.double_long_unsigned(1125)


def test_selective_access_by_range_and_entry() -> None:
    pair = Pair(server=ServerSettings(max_pdu_size=512))
    pair.associate()
    access = range_access(START + timedelta(hours=1), START + timedelta(hours=2))
    rows = value_of(pair.get(7, PROFILE, 2, access=access))
    assert isinstance(rows, Data)
    times = [clock_time(r.items[0]).to_datetime() for r in rows.items]
    assert times == [START + timedelta(hours=1, minutes=15 * i) for i in range(5)]
    # only the energy column
    energy_only = range_access(START, START + timedelta(minutes=30), columns=(
        CaptureObjectDefinition(class_id=3, instance=ENERGY, attribute=2),))
    rows = value_of(pair.get(7, PROFILE, 2, access=energy_only))
    assert rows == axdr.array(*(axdr.structure(axdr.double_long_unsigned(v)) for v in (1000, 1025, 1050)))
    entries = value_of(pair.get(7, PROFILE, 2, access=EntryDescriptor(from_entry=2, to_entry=3).to_access()))
    assert isinstance(entries, Data) and [r.items[1].value for r in entries.items] == [1025, 1050]
    # capture objects and period
    objs = value_of(pair.get(7, PROFILE, 3))
    assert isinstance(objs, Data) and len(objs.items) == 2
    assert value_of(pair.get(7, PROFILE, 4)) == axdr.double_long_unsigned(900)


def test_get_with_list() -> None:
    pair = Pair()
    pair.associate()
    attrs = tuple(AttributeWithSelection(attribute=CosemAttributeDescriptor(
        class_id=c, instance=o, attribute=a)) for c, o, a in ((3, ENERGY, 2), (3, ENERGY, 3),
                                                              (1, ObisCode(0, 0, 96, 1, 0, 255), 2)))
    evs = pair.run(pair.client.get_with_list(attrs, now=0.0))
    assert evs == [GetListDone(results=(axdr.double_long_unsigned(123456),
                                        ScalerUnit(scaler=0, unit=30).to_data(),
                                        DataAccessResult.OBJECT_UNDEFINED))]


def test_wrong_password_is_a_clear_error() -> None:
    pair = Pair(client=ClientSettings(authentication="lls", password=b"wrong"),
                server=ServerSettings(authentication="lls", password=b"right"))
    with pytest.raises(RemoteProtocolError, match="authentication failure.*wrong password"):
        pair.run(pair.client.associate(now=0.0))
    assert pair.client.state is ClientState.ERROR
    assert pair.dlms_server.stats.rejected == 1


def test_missing_authentication_is_refused() -> None:
    pair = Pair(server=ServerSettings(authentication="lls", password=b"right"))
    with pytest.raises(RemoteProtocolError, match="mechanism name required"):
        pair.run(pair.client.associate(now=0.0))


@pytest.mark.parametrize("carrier", ["wrapper", "hdlc"])
def test_wrong_encryption_key_is_a_decryption_error(carrier: str) -> None:
    pair = Pair(carrier=carrier, client=ClientSettings(key=bytes(16), auth_key=AK),
                server=ServerSettings(key=EK, auth_key=AK))
    with pytest.raises(DecryptionError) as info:
        pair.run(pair.client.associate(now=0.0))
    assert info.value.reason == "wrong_key"


def test_hls_gmac_with_a_wrong_authentication_key() -> None:
    # The ciphered InitiateRequest already fails to verify at the meter.
    pair = Pair(client=ClientSettings(authentication="hls-gmac", key=EK, auth_key=bytes(16)),
                server=ServerSettings(authentication="hls-gmac", key=EK, auth_key=AK))
    with pytest.raises(DecryptionError, match="key differs"):
        pair.run(pair.client.associate(now=0.0))


def test_hls_gmac_server_that_cannot_prove_itself() -> None:
    # The client checks f(CtoS): a server that answers for another challenge (as one
    # with other keys would) is refused.
    pair = Pair(client=ClientSettings(authentication="hls-gmac", key=EK, auth_key=AK),
                server=ServerSettings(authentication="hls-gmac", key=EK, auth_key=AK))
    pending = pair.client.associate(now=0.0)
    with pytest.raises(DecryptionError) as info:
        while pending:
            ev = pending.pop(0)
            if isinstance(ev, Send):
                reply = pair.conn.receive(ev.data)
                pending += pair.client.feed(reply, now=0.0)
                if pair.client.state is ClientState.AUTHENTICATING:
                    pair.client._challenge = b"another challenge"
    assert info.value.reason == "wrong_key"


def test_replayed_request_is_refused_by_the_server() -> None:
    pair = Pair(client=ClientSettings(key=EK, auth_key=AK), server=ServerSettings(key=EK, auth_key=AK))
    pair.associate()
    sends = pair.client.get(CosemAttributeDescriptor(class_id=3, instance=ENERGY, attribute=2), now=0.0)
    assert isinstance(sends[0], Send)
    first = pair.conn.receive(sends[0].data)
    pair.client.feed(first, now=0.0)
    again = pair.conn.receive(sends[0].data)  # the same bytes, same invocation counter
    assert pair.dlms_server.stats.replays == 1
    with pytest.raises(RemoteProtocolError, match="exception"):
        pair.client.get(CosemAttributeDescriptor(class_id=3, instance=ENERGY, attribute=2), now=0.0)
        pair.client.feed(again, now=0.0)


def test_plain_request_in_a_ciphered_association_is_refused() -> None:
    pair = Pair(client=ClientSettings(key=EK, auth_key=AK), server=ServerSettings(key=EK, auth_key=AK))
    pair.associate()
    pair.client._ciphered = False
    with pytest.raises(RemoteProtocolError, match="exception"):
        pair.get(3, ENERGY, 2)


def test_timeout_and_state_errors() -> None:
    pair = Pair()
    with pytest.raises(LocalProtocolError):
        pair.client.get(CosemAttributeDescriptor(class_id=3, instance=ENERGY, attribute=2), now=0.0)
    pair.client.associate(now=100.0)
    assert pair.client.deadline() == 110.0
    assert pair.client.on_timeout(now=105.0) == []
    with pytest.raises(ReadTimeout):
        pair.client.on_timeout(now=110.0)
    assert pair.client.state is ClientState.ERROR
    with pytest.raises(LocalProtocolError):
        pair.client.feed(b"", now=111.0)


def test_invoke_ids_cycle_and_a_wrong_one_is_refused() -> None:
    pair = Pair()
    pair.associate()
    for _ in range(20):
        pair.get(3, ENERGY, 2)
    sends = pair.client.get(CosemAttributeDescriptor(class_id=3, instance=ENERGY, attribute=2), now=0.0)
    assert isinstance(sends[0], Send)
    reply = bytearray(pair.conn.receive(sends[0].data))
    reply[8 + 2] ^= 0x01  # the invoke id of the GetResponseNormal after the wrapper header
    with pytest.raises(RemoteProtocolError, match="invoke id"):
        pair.client.feed(bytes(reply), now=0.0)


def test_services_before_association_get_an_exception_response() -> None:
    server = DlmsServer({})
    from gateway.protocols.dlms.apdu import ExceptionResponse, GetRequestNormal, decode_apdu

    out = server.handle(GetRequestNormal(attribute=CosemAttributeDescriptor(
        class_id=8, instance=CLOCK, attribute=2)).encode())
    assert isinstance(decode_apdu(out[0]), ExceptionResponse)
    assert isinstance(decode_apdu(server.handle(b"\xff\x00")[0]), ExceptionResponse)


def test_clock_set_shifts_the_meter_time() -> None:
    pair = Pair()
    pair.associate()
    wanted = NOW + timedelta(minutes=7)
    evs = pair.run(pair.client.set(CosemAttributeDescriptor(class_id=8, instance=CLOCK, attribute=2),
                                   axdr.octet_string(CosemDateTime.from_datetime(wanted).encode()),
                                   now=0.0))
    assert evs == [SetDone(result=DataAccessResult.SUCCESS)]
    clock = value_of(pair.get(8, CLOCK, 2))
    assert isinstance(clock, Data) and clock_time(clock).to_datetime() == wanted
    assert ClassId.CLOCK == 8


def test_settings_are_checked() -> None:
    with pytest.raises(LocalProtocolError):
        ClientSettings(authentication="lls")
    with pytest.raises(LocalProtocolError):
        ClientSettings(authentication="hls-gmac", key=EK)
    with pytest.raises(LocalProtocolError):
        ServerSettings(system_title=b"short")


# ------------------------------------------------------------- dedicated key
def apdus(pair: Pair) -> list[tuple[bytes, bytes]]:
    """Each (request, reply) APDU pair that crossed the wrapper (its 8-octet header cut)."""
    return [(sent[8:], answer[8:]) for sent, answer in pair.exchanges]


def test_general_ded_ciphering_uses_the_proposed_dedicated_key() -> None:
    from gateway.protocols.dlms.apdu import (
        AARQ,
        GeneralDedCiphering,
        InitiateRequest,
        ServiceCiphered,
        decode_apdu,
    )
    from gateway.protocols.dlms.security import decipher_apdu

    client = ClientSettings(key=EK, auth_key=AK, ciphering="general-ded", dedicated_key=DK)
    pair = Pair(client=client, server=ServerSettings(key=EK, auth_key=AK))
    pair.associate()
    wire = apdus(pair)
    # the AARQ carries the dedicated key in its (glo-ciphered, global key) InitiateRequest
    aarq = decode_apdu(wire[0][0])
    assert isinstance(aarq, AARQ) and aarq.user_information is not None
    wrapped = decode_apdu(aarq.user_information)
    assert isinstance(wrapped, ServiceCiphered) and not wrapped.dedicated
    initiate = InitiateRequest.decode(decipher_apdu(wrapped, key=EK, auth_key=AK,
                                                    system_title=client.system_title))
    assert initiate.dedicated_key == DK
    assert value_of(pair.get(3, ENERGY, 2)) == axdr.double_long_unsigned(123456)
    request, reply = apdus(pair)[-1]
    assert request[0] == reply[0] == 0xDC  # general-ded-ciphering both ways
    for apdu, title in ((request, client.system_title), (reply, ServerSettings().system_title)):
        ded = decode_apdu(apdu)
        assert isinstance(ded, GeneralDedCiphering) and ded.system_title == title
        assert decipher_apdu(ded, key=DK, auth_key=AK)[0] in (0xC0, 0xC4)
        with pytest.raises(DecryptionError) as info:  # not made with the global key
            decipher_apdu(ded, key=EK, auth_key=AK)
        assert info.value.reason == "wrong_key"


def test_a_dedicated_key_lasts_one_association() -> None:
    from gateway.protocols.dlms.apdu import ExceptionResponse, decode_apdu

    pair = Pair(client=ClientSettings(key=EK, auth_key=AK, ciphering="general-ded",
                                      dedicated_key=DK), server=ServerSettings(key=EK, auth_key=AK))
    pair.associate()
    pair.get(3, ENERGY, 2)
    old_request = pair.exchanges[-1][0]
    assert pair.run(pair.client.release(now=0.0)) == [Released()]
    # a new association (same server) with another dedicated key and counters far ahead:
    # the old general-ded request is refused, its key went with its association
    pair.client = DlmsClient(framing=WrapperFraming(local_wport=16, remote_wport=1),
                             settings=ClientSettings(key=EK, auth_key=AK, ciphering="general-ded",
                                                     dedicated_key=bytes(16),
                                                     invocation_counter=1000))
    pair.associate()
    assert isinstance(decode_apdu(pair.conn.receive(old_request)[8:]), ExceptionResponse)
    assert value_of(pair.get(3, ENERGY, 2)) == axdr.double_long_unsigned(123456)


def test_ded_ciphering_without_a_dedicated_key_is_refused() -> None:
    from gateway.protocols.dlms.apdu import ExceptionResponse, decode_apdu
    from gateway.protocols.dlms.security import cipher_apdu

    # the server: a general-ded request in an association that set up no dedicated key
    pair = Pair(client=ClientSettings(key=EK, auth_key=AK), server=ServerSettings(key=EK, auth_key=AK))
    pair.associate()
    ded = cipher_apdu(bytes.fromhex("C001C100080000010000FF0200"), kind="general-ded",
                      security_control=0x30, system_title=pair.client.settings.system_title,
                      invocation_counter=500, key=DK, auth_key=AK)
    reply = pair.dlms_server.handle(ded)
    assert isinstance(decode_apdu(reply[0]), ExceptionResponse)
    # the client: a general-ded reply when it proposed no dedicated key
    sends = pair.client.get(CosemAttributeDescriptor(class_id=3, instance=ENERGY, attribute=2),
                            now=0.0)
    assert isinstance(sends[0], Send)
    answer = cipher_apdu(bytes.fromhex("C401C1000600000001"), kind="general-ded",
                         security_control=0x30, system_title=ServerSettings().system_title,
                         invocation_counter=900, key=DK, auth_key=AK)
    with pytest.raises(DecryptionError) as info:
        pair.client.feed(bytes.fromhex("000100010010") + len(answer).to_bytes(2, "big") + answer,
                         now=0.0)
    assert info.value.reason == "no_key"


def test_dedicated_key_settings_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="needs a dedicated key"):
        ClientSettings(key=EK, auth_key=AK, ciphering="general-ded")
    with pytest.raises(LocalProtocolError, match="global encryption key"):
        ClientSettings(dedicated_key=DK)
    with pytest.raises(LocalProtocolError):
        ClientSettings(key=EK, auth_key=AK, dedicated_key=b"short")
    assert "4041" not in repr(ClientSettings(key=EK, auth_key=AK, dedicated_key=DK))
