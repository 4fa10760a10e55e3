"""A sans-IO DLMS/COSEM client: association and xDLMS services (IEC 62056-5-3 / Green Book
ed. 9, clauses 9.3-9.4; IEC 62056-46 HDLC and -47 TCP wrapper as carriers).

:class:`DlmsClient` keeps the state of one client/server association and turns
requests into bytes to write and received bytes into results.  It performs no I/O and
reads no clock: the driver passes ``now`` (monotonic seconds), writes every
:class:`Send`, feeds what the port returns to :meth:`DlmsClient.feed` and calls
:meth:`DlmsClient.on_timeout` when :meth:`DlmsClient.deadline` passes.  One request is
outstanding at a time (DLMS confirmed services, HDLC window 1).

Implemented:

* Carriers (:class:`WrapperFraming`, :class:`HdlcFraming`, shared with the server
  side): the TCP wrapper, and HDLC with SNRM/UA before the AARQ and DISC after the
  RLRQ (segmentation and RR polling are :class:`~.hdlc.HdlcLink`'s).
* ACSE: AARQ/AARE with no security (lowest level), LLS (mechanism 1, password) and
  HLS-GMAC (mechanism 5, GB9 9.2.7.4: the AARE brings StoC, the client answers with the
  ACTION ``reply_to_HLS_authentication`` (class 15, 0-0:40.0.0.255, method 1) carrying
  f(StoC), and checks the f(CtoS) in the reply); RLRQ/RLRE.
* Security suite 0 when a key is configured: the ciphered LN context, the
  InitiateRequest/-Response ciphered in the AARQ/AARE, and every xDLMS APDU ciphered as
  glo- service-specific or general-glo-ciphering (``ciphering``) with the configured
  security control; the server's invocation counter must increase.
* Dedicated key (GB9 9.2.7.2.3.2, 9.2.2.2.3): with ``dedicated_key`` set the client
  proposes it in the (glo-ciphered) InitiateRequest of the AARQ, and once the meter
  accepted the association ciphers every xDLMS request with it, as ded- service-specific
  or general-ded-ciphering (``ciphering = "ded"`` / ``"general-ded"``); replies in
  either ded- form are deciphered with it, glo- replies with the global key.  The key
  lives as long as the association: the driver makes a new random one for each.  The
  HLS-GMAC pass 3 (still part of the association's establishment) goes glo-ciphered.
* GET normal (and the block transfer, ``GetRequestNext`` until the last block, with
  a :class:`BlockReceived` progress event per block), GET with-list, SET normal,
  ACTION normal; selective access (:func:`range_access` builds the by-range
  descriptor of a profile generic buffer on its clock column).
* IEC 62056-21 mode E (:class:`ModeESignOn`): the optical sign-on at 300 Bd that
  switches the line to HDLC.
* Invoke ids 1..15, round robin; a reply with another invoke id is a
  :class:`~gateway.errors.RemoteProtocolError`.

Errors (all from :mod:`gateway.errors`; the client then goes to ``ERROR``):
``RemoteProtocolError`` for an association the server rejects (the message names the
diagnostic, e.g. "authentication failure" for a wrong LLS password; ``raw`` is the
AARE), an ExceptionResponse, an out-of-order block or a reply that does not fit the
request; ``DecryptionError(reason="wrong_key")`` when the server's f(CtoS) or a GCM tag
does not verify, or when the server refuses our HLS-GMAC response or cannot decipher
our ciphered InitiateRequest (both mean that the keys differ);
``ReadTimeout`` from :meth:`DlmsClient.on_timeout`; ``LocalProtocolError`` for a
request made in the wrong state.  A GET that the server answers with a data access
error is not an exception: the result is the :class:`~.apdu.DataAccessResult`.

Not implemented: SN referencing, general-ciphering (DD),
HLS mechanisms other than GMAC, SET/ACTION with data blocks, general block transfer,
retransmissions after a timeout (the driver re-associates).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from gateway.errors import (
    DecryptionError,
    FramingError,
    LocalProtocolError,
    ProtocolError,
    ReadTimeout,
    RemoteProtocolError,
)
from gateway.protocols._events import Discarded
from gateway.protocols.dlms import axdr, hdlc
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
    SelectiveAccess,
    ServiceCiphered,
    SetRequestNormal,
    SetResponseNormal,
    decode_apdu,
    invoke_id_and_priority,
)
from gateway.protocols.dlms.axdr import CosemDateTime, Data
from gateway.protocols.dlms.cosem import ASSOCIATION_LN, CLOCK, ClassId
from gateway.protocols.dlms.security import (
    CipherKind,
    ReplayGuard,
    check_key,
    cipher_apdu,
    decipher_apdu,
    hls_gmac_response,
    verify_hls_gmac_response,
)
from gateway.protocols.dlms.wrapper import WrapperDecoder, WrapperFrame, WrapperReceived

__all__ = [
    "DEFAULT_CONFORMANCE",
    "ActionDone",
    "Associated",
    "Authentication",
    "BlockReceived",
    "ClientEvent",
    "ClientSettings",
    "ClientState",
    "DlmsClient",
    "Framing",
    "GetDone",
    "GetListDone",
    "HdlcFraming",
    "ModeESignOn",
    "NotificationReceived",
    "Released",
    "Send",
    "SetBaudrate",
    "SetDone",
    "WrapperFraming",
    "range_access",
]

Authentication = Literal["none", "lls", "hls-gmac"]

#: What the client proposes: the GET/SET/ACTION services with block transfer, lists,
#: selective access and data notifications (GB9 table 16).
DEFAULT_CONFORMANCE: Final = int(
    Conformance.GET | Conformance.SET | Conformance.ACTION | Conformance.SELECTIVE_ACCESS
    | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ | Conformance.MULTIPLE_REFERENCES
    | Conformance.DATA_NOTIFICATION | Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET
    | Conformance.PRIORITY_MGMT_SUPPORTED
)

# AARE result-source-diagnostic values of the ACSE service user (GB9 9.4.2.2.4)
_DIAGNOSTICS: Final = {
    1: "no reason given", 2: "application context name not supported",
    11: "authentication mechanism name not recognised",
    12: "authentication mechanism name required", 13: "authentication failure",
    14: "authentication required",
}


# ----------------------------------------------------------------- carriers
CarrierEvent = hdlc.Connected | hdlc.Disconnected | Discarded


class WrapperFraming:
    """APDUs over the TCP wrapper: no connection phase, one header per APDU.

    ``remote_wport=None`` (a server) takes PDUs from any client wPort and answers the
    one that sent the last PDU."""

    def __init__(self, *, local_wport: int, remote_wport: int | None,
                 max_apdu: int = 65535) -> None:
        self.local_wport = local_wport
        self.remote_wport = remote_wport
        self._any_remote = remote_wport is None
        self._decoder = WrapperDecoder(max_apdu=max_apdu)

    @property
    def needs_connect(self) -> bool:
        return False

    def connect(self) -> bytes:
        return b""

    def disconnect(self) -> bytes:
        return b""

    def send(self, apdu: bytes) -> bytes:
        """Raises:
        LocalProtocolError: no remote wPort is known yet.
        """
        if self.remote_wport is None:
            raise LocalProtocolError("no client wPort known yet")
        return WrapperFrame(source_wport=self.local_wport, destination_wport=self.remote_wport,
                            apdu=apdu).encode()

    def receive(self, data: bytes) -> tuple[list[bytes], list[bytes], list[CarrierEvent]]:
        """The APDUs found, the bytes to write back (never any) and other events."""
        apdus: list[bytes] = []
        events: list[CarrierEvent] = []
        for ev in self._decoder.feed(data):
            if isinstance(ev, WrapperReceived):
                # A PDU for another wPort pair is not ours (several clients on one link).
                frame = ev.frame
                if frame.destination_wport != self.local_wport:
                    continue
                if self._any_remote:
                    self.remote_wport = frame.source_wport
                elif frame.source_wport != self.remote_wport:
                    continue
                apdus.append(frame.apdu)
            else:
                events.append(ev)
        return apdus, [], events


class HdlcFraming:
    """APDUs over an :class:`~.hdlc.HdlcLink` (client or server role)."""

    def __init__(self, link: hdlc.HdlcLink) -> None:
        self.link = link

    @property
    def needs_connect(self) -> bool:
        return self.link.state is not hdlc.LinkState.CONNECTED

    def connect(self) -> bytes:
        return self.link.connect()

    def disconnect(self) -> bytes:
        return self.link.disconnect()

    def send(self, apdu: bytes) -> bytes:
        return self.link.send(apdu)

    def receive(self, data: bytes) -> tuple[list[bytes], list[bytes], list[CarrierEvent]]:
        apdus: list[bytes] = []
        events: list[CarrierEvent] = []
        link_events, replies = self.link.receive(data)
        for ev in link_events:
            if isinstance(ev, hdlc.ApduReceived):
                apdus.append(ev.apdu)
            else:
                events.append(ev)
        return apdus, replies, events


Framing = WrapperFraming | HdlcFraming


# ------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Write these bytes to the meter port."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Associated:
    """The association is established (after HLS-GMAC: both sides authenticated)."""

    conformance: int
    server_max_receive_pdu_size: int
    server_system_title: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetDone:
    """A GET finished: the value, or the server's data access error."""

    attribute: CosemAttributeDescriptor
    result: Data | DataAccessResult


@dataclass(frozen=True, slots=True, kw_only=True)
class GetListDone:
    results: tuple[Data | DataAccessResult, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SetDone:
    result: DataAccessResult


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionDone:
    result: ActionResult
    return_parameters: Data | DataAccessResult | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockReceived:
    """Progress of a long GET: block ``block_number`` came, ``octets`` so far."""

    block_number: int
    octets: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Released:
    """The association is released (and, on HDLC, the link disconnected)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationReceived:
    """A data notification the server sent unasked during the association."""

    notification: DataNotification


ClientEvent = (Send | Associated | GetDone | GetListDone | SetDone | ActionDone | BlockReceived
               | Released | NotificationReceived | Discarded)


class ClientState(enum.Enum):
    IDLE = "idle"  # no association
    CONNECTING = "connecting"  # HDLC: SNRM sent
    ASSOCIATING = "associating"  # AARQ sent
    AUTHENTICATING = "authenticating"  # HLS: reply_to_HLS_authentication sent
    READY = "ready"  # associated, no request outstanding
    BUSY = "busy"  # a request is outstanding
    RELEASING = "releasing"  # RLRQ sent (or HDLC DISC)
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """How the client associates.

    ``key``/``auth_key``: the global unicast encryption and authentication keys; with
    ``key`` set the association uses the ciphered LN context and every APDU is
    protected with ``security_control`` (0x30: authenticated and encrypted).
    ``system_title``: the client's (8 octets).  ``invocation_counter``: the first one
    the client uses (it must exceed what the meter saw last).  ``challenge``: CtoS
    for HLS-GMAC (random, 16 octets, when None).  ``dedicated_key``: proposed in the
    AARQ and used for the xDLMS APDUs of ``ciphering`` ``"ded"``/``"general-ded"``
    (which need it).  ``replay_guard``: the meters' last accepted invocation counters
    (pass one that outlives the client, e.g. restored from disk; a fresh one when None).
    """

    authentication: Authentication = "none"
    password: bytes | None = None
    key: bytes | None = None
    auth_key: bytes | None = None
    system_title: bytes = b"HGW\x00\x00\x00\x00\x01"
    invocation_counter: int = 1
    security_control: int = 0x30
    ciphering: CipherKind = "glo"
    dedicated_key: bytes | None = field(default=None, repr=False)
    conformance: int = DEFAULT_CONFORMANCE
    max_receive_pdu_size: int = 0xFFFF
    timeout_s: float = 10.0
    challenge: bytes | None = None
    replay_guard: ReplayGuard | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.authentication not in ("none", "lls", "hls-gmac"):
            raise LocalProtocolError(f"unknown authentication {self.authentication!r}")
        if self.authentication == "lls" and not self.password:
            raise LocalProtocolError("LLS authentication needs a password")
        if self.authentication == "hls-gmac" and (self.key is None or self.auth_key is None):
            raise LocalProtocolError("HLS-GMAC needs the encryption and authentication keys")
        if self.key is not None:
            check_key(self.key, "encryption key")
            if self.security_control & 0x10 and self.auth_key is None:
                raise LocalProtocolError("an authenticated security control needs the auth key")
        if self.auth_key is not None:
            check_key(self.auth_key, "authentication key")
        if self.ciphering not in ("glo", "general-glo", "ded", "general-ded"):
            raise LocalProtocolError(f"unknown ciphering {self.ciphering!r}")
        if self.dedicated_key is not None:
            check_key(self.dedicated_key, "dedicated key")
            if self.key is None:
                raise LocalProtocolError("a dedicated key needs the global encryption key "
                                         "(the AARQ that carries it is ciphered)")
        if self.ciphering in ("ded", "general-ded") and self.dedicated_key is None:
            raise LocalProtocolError(f"ciphering {self.ciphering!r} needs a dedicated key")
        if len(self.system_title) != 8:
            raise LocalProtocolError("a system title is 8 octets")
        if not 0 <= self.invocation_counter <= 0xFFFFFFFF:
            raise LocalProtocolError("an invocation counter is 32 bits")


def range_access(start: datetime, end: datetime, *,
                 columns: tuple[CaptureObjectDefinition, ...] = ()) -> SelectiveAccess:
    """Selective access by range on the clock column of a profile generic buffer (the
    usual restricting object: class 8, 0-0:1.0.0.255, attribute 2), ``start`` and
    ``end`` inclusive, as 12-octet date-times in octet strings (Blue Book 4.3.6)."""
    clock = CaptureObjectDefinition(class_id=ClassId.CLOCK, instance=CLOCK, attribute=2)
    return RangeDescriptor(
        restricting_object=clock,
        from_value=axdr.octet_string(CosemDateTime.from_datetime(start).encode()),
        to_value=axdr.octet_string(CosemDateTime.from_datetime(end).encode()),
        columns=columns,
    ).to_access()


# ------------------------------------------------------------------- client
@dataclass(slots=True)
class _Pending:
    kind: Literal["get", "get-list", "set", "action", "hls"]
    invoke_id: int
    attribute: CosemAttributeDescriptor | None = None
    blocks: list[bytes] = field(default_factory=list)
    next_block: int = 1


class DlmsClient:
    """One client association over one carrier (see the module docstring).

    Typical use: ``associate(now)`` → write the sends → ``feed`` until
    :class:`Associated`; ``get(...)`` → … → :class:`GetDone`; ``release(now)`` → … →
    :class:`Released`.
    """

    def __init__(self, *, framing: Framing, settings: ClientSettings | None = None) -> None:
        self.framing = framing
        self.settings = settings or ClientSettings()
        self.state = ClientState.IDLE
        self.conformance = 0
        self.server_max_receive_pdu_size = 0
        self.server_system_title: bytes | None = None
        self._ic = self.settings.invocation_counter
        # Global-key counters outlive the association (and, through the settings, the
        # process); the dedicated key is new for each association, so are its counters.
        self._guard = self.settings.replay_guard or ReplayGuard()
        self._ded_guard = ReplayGuard()
        self._invoke = 0
        self._pending: _Pending | None = None
        self._deadline: float | None = None
        self._challenge = b""
        self._ciphered = self.settings.key is not None

    # -------------------------------------------------------------- helpers
    @property
    def invocation_counter(self) -> int:
        """The next invocation counter the client will use (persist it across runs)."""
        return self._ic

    def deadline(self) -> float | None:
        """When :meth:`on_timeout` is due (None: nothing is awaited)."""
        return self._deadline

    def _wait(self, now: float) -> None:
        self._deadline = now + self.settings.timeout_s

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        self.state = ClientState.ERROR
        self._pending = None
        self._deadline = None
        return exc

    def _need(self, *states: ClientState) -> None:
        if self.state not in states:
            raise LocalProtocolError(f"not allowed in state {self.state.name}")

    def _next_invoke_id(self) -> int:
        self._invoke = self._invoke % 15 + 1
        return self._invoke

    def _protect(self, apdu: bytes, *, kind: CipherKind | None = None) -> bytes:
        if not self._ciphered:
            return apdu
        s = self.settings
        assert s.key is not None
        kind = kind or s.ciphering
        key = s.dedicated_key if kind in ("ded", "general-ded") else s.key
        assert key is not None
        out = cipher_apdu(apdu, kind=kind, security_control=s.security_control,
                          system_title=s.system_title, invocation_counter=self._ic,
                          key=key, auth_key=s.auth_key)
        self._ic += 1
        return out

    def _send_apdu(self, apdu: bytes) -> list[ClientEvent]:
        return [Send(data=self.framing.send(self._protect(apdu)))]

    # ---------------------------------------------------------- association
    def associate(self, *, now: float) -> list[ClientEvent]:
        """Start the association (HDLC: the SNRM first, the AARQ follows the UA).

        Raises:
            LocalProtocolError: an association exists or is being set up.
        """
        self._need(ClientState.IDLE)
        self._wait(now)
        if self.framing.needs_connect:
            self.state = ClientState.CONNECTING
            return [Send(data=self.framing.connect())]
        return self._send_aarq()

    def _send_aarq(self) -> list[ClientEvent]:
        s = self.settings
        conformance = s.conformance
        if self._ciphered and s.ciphering.startswith("general-"):
            # general-glo/-ded-ciphering is the "general protection" service (GB9 table 16)
            conformance |= Conformance.GENERAL_PROTECTION
        initiate = InitiateRequest(proposed_conformance=conformance,
                                   client_max_receive_pdu_size=s.max_receive_pdu_size,
                                   dedicated_key=s.dedicated_key).encode()
        mechanism: int | None = None
        value: bytes | None = None
        if s.authentication == "lls":
            mechanism, value = AuthenticationMechanism.LLS, s.password
        elif s.authentication == "hls-gmac":
            self._challenge = s.challenge or secrets.token_bytes(16)
            mechanism, value = AuthenticationMechanism.HLS_GMAC, self._challenge
        aarq = AARQ(
            application_context=(ApplicationContext.LOGICAL_NAME_CIPHERED if self._ciphered
                                 else ApplicationContext.LOGICAL_NAME),
            calling_ap_title=s.system_title if self._ciphered or mechanism == 5 else None,
            acse_requirements=mechanism is not None,
            mechanism=mechanism,
            authentication_value=value,
            # The InitiateRequest in the AARQ is always glo-ciphered (GB9 9.2.7.2.3.2).
            user_information=self._protect(initiate, kind="glo"),
        )
        self.state = ClientState.ASSOCIATING
        return [Send(data=self.framing.send(aarq.encode()))]

    def release(self, *, now: float) -> list[ClientEvent]:
        """Release the association (RLRQ; on HDLC then DISC).

        Raises:
            LocalProtocolError: a request is outstanding.
        """
        if self.state is ClientState.IDLE:
            # No association (e.g. it was refused): only an open HDLC link to close.
            if isinstance(self.framing, HdlcFraming) and not self.framing.needs_connect:
                self.state = ClientState.RELEASING
                self._wait(now)
                return [Send(data=self.framing.disconnect())]
            return [Released()]
        self._need(ClientState.READY)
        self.state = ClientState.RELEASING
        self._wait(now)
        return [Send(data=self.framing.send(RLRQ(reason=0).encode()))]

    # ------------------------------------------------------------- services
    def get(self, attribute: CosemAttributeDescriptor, *, access: SelectiveAccess | None = None,
            now: float) -> list[ClientEvent]:
        """GET one attribute (block transfer handled): ends with :class:`GetDone`.

        Raises:
            LocalProtocolError: not associated, or a request is outstanding.
        """
        self._need(ClientState.READY)
        iid = self._next_invoke_id()
        self._pending = _Pending(kind="get", invoke_id=iid, attribute=attribute)
        return self._request(GetRequestNormal(attribute=attribute, access=access,
                                              invoke_id_and_priority=invoke_id_and_priority(iid)
                                              ).encode(), now)

    def get_with_list(self, attributes: tuple[AttributeWithSelection, ...], *,
                      now: float) -> list[ClientEvent]:
        """GET several attributes in one request: ends with :class:`GetListDone`.

        Raises:
            LocalProtocolError: not associated, or a request is outstanding.
        """
        self._need(ClientState.READY)
        iid = self._next_invoke_id()
        self._pending = _Pending(kind="get-list", invoke_id=iid)
        return self._request(GetRequestWithList(
            attributes=attributes, invoke_id_and_priority=invoke_id_and_priority(iid)).encode(), now)

    def set(self, attribute: CosemAttributeDescriptor, value: Data, *,
            now: float) -> list[ClientEvent]:
        """SET one attribute: ends with :class:`SetDone`.

        Raises:
            LocalProtocolError: not associated, or a request is outstanding.
        """
        self._need(ClientState.READY)
        iid = self._next_invoke_id()
        self._pending = _Pending(kind="set", invoke_id=iid)
        return self._request(SetRequestNormal(attribute=attribute, value=value,
                                              invoke_id_and_priority=invoke_id_and_priority(iid)
                                              ).encode(), now)

    def action(self, method: CosemMethodDescriptor, parameters: Data | None = None, *,
               now: float) -> list[ClientEvent]:
        """Invoke a method: ends with :class:`ActionDone`.

        Raises:
            LocalProtocolError: not associated, or a request is outstanding.
        """
        self._need(ClientState.READY)
        iid = self._next_invoke_id()
        self._pending = _Pending(kind="action", invoke_id=iid)
        return self._request(ActionRequestNormal(method=method, parameters=parameters,
                                                 invoke_id_and_priority=invoke_id_and_priority(iid)
                                                 ).encode(), now)

    def _request(self, apdu: bytes, now: float) -> list[ClientEvent]:
        self.state = ClientState.BUSY
        self._wait(now)
        return self._send_apdu(apdu)

    # -------------------------------------------------------------- input
    def on_timeout(self, *, now: float) -> list[ClientEvent]:
        """The deadline passed without an answer.

        Raises:
            ReadTimeout: always when something was awaited (the client is then in ERROR).
        """
        if self._deadline is None or now < self._deadline:
            return []
        what = self.state.name.lower()
        self.state = ClientState.ERROR
        self._pending = None
        self._deadline = None
        raise ReadTimeout(f"no answer from the meter within {self.settings.timeout_s:g} s "
                          f"({what})")

    def feed(self, data: bytes, *, now: float) -> list[ClientEvent]:
        """Bytes from the port in; results and bytes to write out.

        Raises:
            RemoteProtocolError, DecryptionError: see the module docstring.
            LocalProtocolError: the client is in ERROR.
        """
        if self.state is ClientState.ERROR:
            raise LocalProtocolError("the client failed earlier; start a new one")
        apdus, replies, carrier = self.framing.receive(data)
        out: list[ClientEvent] = [Send(data=r) for r in replies]
        for ev in carrier:
            if isinstance(ev, Discarded):
                out.append(ev)
            elif isinstance(ev, hdlc.Connected):
                if self.state is ClientState.CONNECTING:
                    self._wait(now)
                    out += self._send_aarq()
            elif self.state is ClientState.RELEASING:
                self.state = ClientState.IDLE
                self._deadline = None
                out.append(Released())
            else:
                self._fail(RemoteProtocolError("the meter closed the HDLC link"))
                raise RemoteProtocolError("the meter closed the HDLC link")
        for apdu in apdus:
            out += self._on_apdu(apdu, now)
        return out

    def _open(self, apdu: bytes) -> bytes:
        """The plain APDU (deciphered if it came ciphered)."""
        if not apdu or apdu[0] not in _CIPHERED_FIRST:
            return apdu
        try:
            ciphered = decode_apdu(apdu)
        except ProtocolError as exc:
            raise self._fail(FramingError(f"bad ciphered APDU: {exc}", raw=apdu)) from exc
        assert isinstance(ciphered, GeneralGloCiphering | ServiceCiphered)
        title = (ciphered.system_title if isinstance(ciphered, GeneralGloCiphering)
                 else self.server_system_title)
        if title is None:
            raise self._fail(RemoteProtocolError("a ciphered APDU before the server's system title",
                                                 raw=apdu))
        dedicated = (isinstance(ciphered, GeneralDedCiphering)
                     or (isinstance(ciphered, ServiceCiphered) and ciphered.dedicated))
        guard = self._ded_guard if dedicated else self._guard
        try:
            if dedicated and self.settings.dedicated_key is None:
                raise DecryptionError("a ded-ciphered APDU, but no dedicated key was proposed",
                                      reason="no_key", raw=apdu)
            guard.check(title, ciphered.invocation_counter)
            plain = decipher_apdu(
                ciphered, key=self.settings.dedicated_key if dedicated else self.settings.key,
                auth_key=self.settings.auth_key, system_title=title)
        except ProtocolError as exc:
            raise self._fail(exc) from exc
        guard.accept(title, ciphered.invocation_counter)
        return plain

    def _on_apdu(self, raw: bytes, now: float) -> list[ClientEvent]:
        plain = self._open(raw)
        try:
            apdu = decode_apdu(plain)
        except ProtocolError as exc:
            raise self._fail(exc) from exc
        if isinstance(apdu, DataNotification):
            return [NotificationReceived(notification=apdu)]
        if isinstance(apdu, ExceptionResponse):
            raise self._fail(RemoteProtocolError(
                f"the meter answered with an exception (state error {apdu.state_error}, "
                f"service error {apdu.service_error})", raw=plain))
        if isinstance(apdu, AARE):
            return self._on_aare(apdu, plain, now)
        if isinstance(apdu, RLRE):
            if self.state is not ClientState.RELEASING:
                raise self._fail(RemoteProtocolError("an unexpected RLRE", raw=plain))
            self._wait(now)
            disc = self.framing.disconnect()
            if disc:
                return [Send(data=disc)]
            self.state = ClientState.IDLE
            self._deadline = None
            return [Released()]
        pending = self._pending
        if pending is None or self.state not in (ClientState.BUSY, ClientState.AUTHENTICATING):
            raise self._fail(RemoteProtocolError(f"an unexpected {type(apdu).__name__}", raw=plain))
        if not isinstance(apdu, _RESPONSES[pending.kind]):
            raise self._fail(RemoteProtocolError(
                f"a {type(apdu).__name__} in reply to a {pending.kind} request", raw=plain))
        assert isinstance(apdu, GetResponseNormal | GetResponseWithDataBlock | GetResponseWithList
                          | SetResponseNormal | ActionResponseNormal)
        if apdu.invoke_id != pending.invoke_id:
            raise self._fail(RemoteProtocolError(
                f"reply with invoke id {apdu.invoke_id}, expected {pending.invoke_id}", raw=plain))
        if isinstance(apdu, GetResponseWithDataBlock):
            return self._on_block(apdu, pending, now)
        done: ClientEvent
        if isinstance(apdu, GetResponseNormal):
            assert pending.attribute is not None
            done = GetDone(attribute=pending.attribute, result=apdu.result)
        elif isinstance(apdu, GetResponseWithList):
            done = GetListDone(results=apdu.results)
        elif isinstance(apdu, SetResponseNormal):
            done = SetDone(result=apdu.result)
        else:
            if pending.kind == "hls":
                return self._on_hls_reply(apdu, plain)
            done = ActionDone(result=apdu.result, return_parameters=apdu.return_parameters)
        self._finish()
        return [done]

    def _finish(self) -> None:
        self._pending = None
        self._deadline = None
        self.state = ClientState.READY

    def _on_block(self, apdu: GetResponseWithDataBlock, pending: _Pending,
                  now: float) -> list[ClientEvent]:
        assert pending.attribute is not None
        if isinstance(apdu.result, DataAccessResult):
            self._finish()
            return [GetDone(attribute=pending.attribute, result=apdu.result)]
        if apdu.block_number != pending.next_block:
            raise self._fail(RemoteProtocolError(
                f"block {apdu.block_number} received, expected {pending.next_block}"))
        pending.blocks.append(apdu.result)
        pending.next_block += 1
        progress = BlockReceived(block_number=apdu.block_number,
                                 octets=sum(len(b) for b in pending.blocks))
        if not apdu.last_block:
            self._wait(now)
            nxt = GetRequestNext(block_number=apdu.block_number,
                                 invoke_id_and_priority=apdu.invoke_id_and_priority).encode()
            return [progress, *self._send_apdu(nxt)]
        try:
            value = axdr.decode_data(b"".join(pending.blocks))
        except ProtocolError as exc:
            raise self._fail(exc) from exc
        self._finish()
        return [progress, GetDone(attribute=pending.attribute, result=value)]

    def _on_aare(self, aare: AARE, raw: bytes, now: float) -> list[ClientEvent]:
        if self.state is not ClientState.ASSOCIATING:
            raise self._fail(RemoteProtocolError("an unexpected AARE", raw=raw))
        self.server_system_title = aare.responding_ap_title
        user: InitiateResponse | ConfirmedServiceError | None = None
        if aare.user_information is not None:
            plain_user = self._open(aare.user_information)
            try:
                inner = decode_apdu(plain_user)
            except ProtocolError as exc:
                raise self._fail(exc) from exc
            if isinstance(inner, InitiateResponse | ConfirmedServiceError):
                user = inner
        if aare.result != AssociationResult.ACCEPTED:
            reason = _DIAGNOSTICS.get(aare.diagnostic, f"diagnostic {aare.diagnostic}")
            if self._ciphered and isinstance(user, ConfirmedServiceError) and user.service == 1:
                raise self._fail(DecryptionError(
                    "the meter could not decipher the association request "
                    f"({reason}): the encryption or authentication key differs (or the "
                    f"meter saw invocation counter {self.settings.invocation_counter} "
                    "before: is the counter file of the data dir lost?)",
                    reason="wrong_key", raw=raw))
            hint = " (wrong password?)" if aare.diagnostic == 13 else ""
            raise self._fail(RemoteProtocolError(
                f"the meter rejected the association: {reason}{hint}", raw=raw))
        if not isinstance(user, InitiateResponse):
            raise self._fail(RemoteProtocolError("the AARE carries no InitiateResponse", raw=raw))
        self.conformance = user.negotiated_conformance
        self.server_max_receive_pdu_size = user.server_max_receive_pdu_size
        if self.settings.authentication != "hls-gmac":
            self._finish()
            return [self._associated()]
        stoc = aare.authentication_value
        if not stoc or aare.responding_ap_title is None or len(aare.responding_ap_title) != 8:
            raise self._fail(RemoteProtocolError(
                "HLS-GMAC: the AARE lacks the server's challenge or system title", raw=raw))
        s = self.settings
        assert s.key is not None and s.auth_key is not None
        # f(StoC) is made with the client's system title and its next invocation counter.
        reply = hls_gmac_response(stoc, system_title=s.system_title, invocation_counter=self._ic,
                                  key=s.key, auth_key=s.auth_key)
        self._ic += 1
        iid = self._next_invoke_id()
        self._pending = _Pending(kind="hls", invoke_id=iid)
        self.state = ClientState.AUTHENTICATING
        self._wait(now)
        method = CosemMethodDescriptor(class_id=ClassId.ASSOCIATION_LN, instance=ASSOCIATION_LN,
                                       method=1)
        action = ActionRequestNormal(method=method, parameters=axdr.octet_string(reply),
                                     invoke_id_and_priority=invoke_id_and_priority(iid)).encode()
        # Pass 3 belongs to the association's establishment: global key, not the dedicated.
        kind: CipherKind = _GLOBAL_FORM[s.ciphering]
        return [Send(data=self.framing.send(self._protect(action, kind=kind)))]

    def _on_hls_reply(self, apdu: ActionResponseNormal, raw: bytes) -> list[ClientEvent]:
        s = self.settings
        assert s.key is not None and s.auth_key is not None and self.server_system_title
        if apdu.result != ActionResult.SUCCESS:
            raise self._fail(DecryptionError(
                f"the meter refused our HLS-GMAC response ({apdu.result.name}): "
                "the authentication or encryption key differs", reason="wrong_key", raw=raw))
        params = apdu.return_parameters
        if not isinstance(params, Data) or not isinstance(params.value, bytes):
            raise self._fail(RemoteProtocolError("HLS-GMAC: no f(CtoS) in the reply", raw=raw))
        try:
            verify_hls_gmac_response(params.value, self._challenge,
                                     system_title=self.server_system_title, key=s.key,
                                     auth_key=s.auth_key)
        except DecryptionError as exc:
            raise self._fail(exc) from exc
        self._finish()
        return [self._associated()]

    def _associated(self) -> Associated:
        return Associated(conformance=self.conformance,
                          server_max_receive_pdu_size=self.server_max_receive_pdu_size,
                          server_system_title=self.server_system_title)


# First octets of ciphered APDUs: glo-/ded- service-specific and general-glo/-ded.
_CIPHERED_FIRST: Final = frozenset(
    {0x21, 0x28, 0x2E, 0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCD, 0xCF,
     0x41, 0x48, 0x4E, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD7, 0xDB, 0xDC}
)

# The global-key form of each ciphering (for the HLS-GMAC pass 3).
_GLOBAL_FORM: Final[dict[CipherKind, CipherKind]] = {
    "glo": "glo", "general-glo": "general-glo", "ded": "glo", "general-ded": "general-glo",
}

_RESPONSES: Final[dict[str, tuple[type, ...]]] = {
    "get": (GetResponseNormal, GetResponseWithDataBlock),
    "get-list": (GetResponseWithList,),
    "set": (SetResponseNormal,),
    "action": (ActionResponseNormal,),
    "hls": (ActionResponseNormal,),
}


# ------------------------------------------------------------- mode E sign-on
@dataclass(frozen=True, slots=True, kw_only=True)
class SetBaudrate:
    """Switch the port to this speed (after the bytes before it have left)."""

    baud: int


def _with_parity(data: bytes) -> bytes:
    # A 7E1 character is, on the wire, an 8N1 character whose bit 7 is the even parity
    # bit (both 10 bits), so the sign-on can be sent on a port that stays 8N1 for HDLC.
    return bytes(b | 0x80 if b.bit_count() % 2 else b for b in data)


class ModeESignOn:
    """IEC 62056-21 mode E (clause 6.4.4 with the enhanced identification ``\\2``): at
    300 Bd ``/?address!`` → identification ``/XXXZ\\2…`` → ``ACK 2 Z 2`` (HDLC protocol,
    binary mode) → both sides at the baud rate of Z; then HDLC starts (the driver
    hands over to a :class:`DlmsClient` on :class:`HdlcFraming`).

    ``start`` returns the request; ``feed`` returns, once the identification came, the
    option select to write and the :class:`SetBaudrate` to do after it; :attr:`done`
    is then True.  The 7E1 characters are sent with their parity bit in bit 7 and
    received with bit 7 cleared, so the port can stay 8N1.
    """

    def __init__(self, *, address: str = "", max_baud: int = 9600,
                 timeout_s: float = 2.0) -> None:
        from gateway.protocols.iec62056_21 import RequestMessage

        self._request = RequestMessage(address=address)
        self.max_baud = max_baud
        self.timeout_s = timeout_s
        self.done = False
        self.identification = ""
        self._buf = bytearray()
        self._deadline: float | None = None

    def deadline(self) -> float | None:
        return self._deadline

    def start(self, *, now: float) -> list[Send | SetBaudrate]:
        self._deadline = now + self.timeout_s
        return [SetBaudrate(baud=300), Send(data=_with_parity(self._request.encode()))]

    def on_timeout(self, *, now: float) -> list[Send | SetBaudrate]:
        """Raises:
        ReadTimeout: no identification came in time.
        """
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        raise ReadTimeout(f"no IEC 62056-21 identification within {self.timeout_s:g} s")

    def feed(self, data: bytes, *, now: float) -> list[Send | SetBaudrate]:
        """Raises:
        UnsupportedError: the meter does not offer mode E (HDLC).
        FramingError: the identification is malformed.
        """
        from gateway.errors import UnsupportedError
        from gateway.protocols.iec62056_21 import (
            BAUD_MODE_C,
            AckOptionSelect,
            IdentificationMessage,
        )

        if self.done:
            return []
        self._buf += bytes(b & 0x7F for b in data)
        start = self._buf.find(b"/")
        end = self._buf.find(b"\r\n", max(start, 0))
        if len(self._buf) > 256:
            raise FramingError("no identification message in 256 octets")
        if start < 0 or end < 0:
            return []
        ident = IdentificationMessage.decode(bytes(self._buf[start : end + 2]))
        if ident.mode != "E":
            raise UnsupportedError(f"the meter does not offer mode E (HDLC): {ident.encode()!r}")
        offered = ident.baud or 300
        baud = max(b for b in BAUD_MODE_C.values() if b <= min(offered, self.max_baud))
        char = next(c for c, b in BAUD_MODE_C.items() if b == baud)
        self.identification = ident.encode().decode("ascii").strip()
        self.done = True
        self._deadline = None
        ack = AckOptionSelect(protocol_char="2", baud_char=char, mode_char="2").encode()
        return [Send(data=_with_parity(ack)), SetBaudrate(baud=baud)]
