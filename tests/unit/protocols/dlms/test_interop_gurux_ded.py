"""An independent client with a dedicated key against our virtual meter: Gurux's
GXDLMSSecureClient (gurux-dlms, GPL-2, a test-only dependency like dlms-cosem, which in
21.3.2 cannot propose a dedicated key or send general-ded-ciphering) proposes the key in
its AARQ and then ciphers with it: general-ded-ciphering (DC) when general protection
is negotiated, ded- service-specific (D0/D4) when not.  Bytes go through our server's
wrapper connection in memory."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.protocols.dlms.apdu import GeneralDedCiphering, decode_apdu
from gateway.protocols.dlms.client import WrapperFraming
from gateway.protocols.dlms.security import decipher_apdu
from gateway.protocols.dlms.server import ServerConnection
from gateway.sim.dlms import DlmsMeter, MeterOptions

gurux = pytest.importorskip("gurux_dlms")

from gurux_dlms import GXByteBuffer, GXReplyData
from gurux_dlms.enums import Authentication, Conformance, InterfaceType, Security
from gurux_dlms.objects import GXDLMSRegister
from gurux_dlms.secure import GXDLMSSecureClient

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
DK = bytes(range(0x40, 0x50))


class GuruxSession:
    def __init__(self, meter: DlmsMeter, *, general: bool, authentication: Any) -> None:
        self.conn = ServerConnection(server=meter.server(),
                                     framing=WrapperFraming(local_wport=1, remote_wport=16))
        c = GXDLMSSecureClient(True, 16, 1, authentication, None, InterfaceType.WRAPPER)
        c.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        c.ciphering.systemTitle = b"GRX00001"
        c.ciphering.blockCipherKey = EK
        c.ciphering.authenticationKey = AK
        c.ciphering.dedicatedKey = DK
        if general:
            c.proposedConformance |= Conformance.GENERAL_PROTECTION
        else:
            c.proposedConformance &= ~Conformance.GENERAL_PROTECTION
        self.client = c
        self.apdus: list[tuple[bytes, bytes]] = []  # (request, reply) without wrapper headers

    def exchange(self, frames: list[Any]) -> Any:
        data = GXReplyData()
        for frame in frames:
            reply = self.conn.receive(bytes(frame))
            self.apdus.append((bytes(frame)[8:], reply[8:]))
            self.client.getData(GXByteBuffer(reply), data)
        return data

    def associate(self) -> None:
        self.client.parseAareResponse(self.exchange(self.client.aarqRequest()).data)
        if self.client.authentication == Authentication.HIGH_GMAC:
            reply = self.exchange(self.client.getApplicationAssociationRequest())
            self.client.parseApplicationAssociationResponse(reply.data)

    def read(self, obj: Any, attribute: int) -> Any:
        value = self.exchange(self.client.read(obj, attribute)).value
        self.client.updateValue(obj, attribute, value)
        return value


@pytest.mark.parametrize("authentication", ["none", "hls-gmac"])
def test_gurux_reads_with_general_ded_ciphering(authentication: str) -> None:
    meter = DlmsMeter(MeterOptions(authentication=authentication, key=EK, auth_key=AK))
    gx_auth = Authentication.HIGH_GMAC if authentication == "hls-gmac" else Authentication.NONE
    session = GuruxSession(meter, general=True, authentication=gx_auth)
    session.associate()
    register = GXDLMSRegister("1.0.1.8.0.255")
    session.read(register, 3)
    session.read(register, 2)
    assert register.value == meter.import_wh() and register.scaler == 1.0
    request, reply = session.apdus[-1]
    assert request[0] == reply[0] == 0xDC
    # made with Gurux's dedicated key, not the global one
    ded = decode_apdu(reply)
    assert isinstance(ded, GeneralDedCiphering)
    assert decipher_apdu(ded, key=DK, auth_key=AK)[0] == 0xC4


def test_gurux_reads_with_ded_service_specific_ciphering() -> None:
    meter = DlmsMeter(MeterOptions(key=EK, auth_key=AK))
    session = GuruxSession(meter, general=False, authentication=Authentication.NONE)
    session.associate()
    register = GXDLMSRegister("1.0.1.8.0.255")
    session.read(register, 2)
    assert register.value == meter.import_wh()
    request, reply = session.apdus[-1]
    assert (request[0], reply[0]) == (0xD0, 0xD4)  # ded-get-request / ded-get-response
