"""A sans-IO DLMS/COSEM server (the meter side) for the virtual meter (IEC 62056-5-3 /
Green Book ed. 9 clauses 9.3-9.4; Blue Book ed. 13 for the interface classes).

* :class:`DlmsServer` answers APDUs with APDUs: AARQ with no security, LLS (password)
  or HLS-GMAC (AARE with StoC and diagnostic 14, then the ACTION
  ``reply_to_HLS_authentication`` on 0-0:40.0.0.255 whose f(StoC) is checked and
  answered with f(CtoS)), plain or ciphered (security suite 0: the ciphered LN
  context, glo- or general-glo-ciphered requests answered in the same form, the
  client's invocation counter must increase; a dedicated key proposed in the
  InitiateRequest is kept for the association, and ded- or general-ded-ciphered
  requests are deciphered and answered with it); GET normal / next (block transfer when
  the reply exceeds the negotiated PDU size) / with-list, SET normal, ACTION normal on
  a small object model; RLRQ.  A request it cannot serve gets the data access error
  the standard names (object undefined, read-write denied, …), never an exception.
* :class:`ServerConnection` puts it on a carrier (TCP wrapper or an HDLC server link):
  bytes in, bytes out.
* Object model: :class:`DataObject` (class 1), :class:`RegisterObject` (classes 3 and
  4), :class:`ClockObject` (class 8), :class:`ProfileGenericObject` (class 7, buffer
  with selective access by range on its first column and by entry).  Values are given
  as callables so a simulator can make them change with time.

Not implemented: SN referencing, object list (class 15 attribute 2), general-ciphering,
SET/ACTION with blocks, GET with-list replies larger than the PDU size, access rights
per association (every associated client may read and write everything).
"""

from __future__ import annotations

import enum
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Final, Protocol

from gateway.errors import DecryptionError, LocalProtocolError, ProtocolError
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
    AuthenticationMechanism,
    CaptureObjectDefinition,
    ConfirmedServiceError,
    Conformance,
    CosemAttributeDescriptor,
    DataAccessResult,
    DataNotification,
    EntryDescriptor,
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
)
from gateway.protocols.dlms.axdr import CosemDateTime, Data
from gateway.protocols.dlms.client import DEFAULT_CONFORMANCE, Authentication, Framing
from gateway.protocols.dlms.cosem import ASSOCIATION_LN, ClassId, ScalerUnit, clock_time
from gateway.protocols.dlms.security import (
    CipherKind,
    ReplayGuard,
    check_key,
    cipher_apdu,
    decipher_apdu,
    hls_gmac_response,
    verify_hls_gmac_response,
)
from gateway.protocols.obis import ObisCode

__all__ = [
    "ClockObject",
    "CosemObject",
    "DataObject",
    "DlmsServer",
    "ProfileGenericObject",
    "RegisterObject",
    "SecurityCounters",
    "ServerConnection",
    "ServerSettings",
]

ValueSource = Data | Callable[[], Data]


def _value(source: ValueSource) -> Data:
    return source if isinstance(source, Data) else source()


# ------------------------------------------------------------- object model
class CosemObject(Protocol):
    """What the server needs of an interface class instance."""

    @property
    def class_id(self) -> int: ...

    @property
    def logical_name(self) -> ObisCode: ...

    def get(self, attribute: int, access: SelectiveAccess | None) -> Data | DataAccessResult: ...

    def set(self, attribute: int, value: Data) -> DataAccessResult: ...

    def action(self, method: int, parameters: Data | None) -> tuple[ActionResult, Data | None]: ...


class _Base:
    class_id: int = 0

    def __init__(self, logical_name: ObisCode) -> None:
        self.logical_name = logical_name

    def _attribute(self, attribute: int) -> Data | DataAccessResult:
        if attribute == 1:
            return axdr.octet_string(self.logical_name.to_bytes())
        return DataAccessResult.OBJECT_UNDEFINED

    def get(self, attribute: int, access: SelectiveAccess | None) -> Data | DataAccessResult:
        if access is not None:
            return DataAccessResult.OBJECT_UNAVAILABLE  # selective access only on buffers
        return self._attribute(attribute)

    def set(self, attribute: int, value: Data) -> DataAccessResult:
        return DataAccessResult.READ_WRITE_DENIED

    def action(self, method: int, parameters: Data | None) -> tuple[ActionResult, Data | None]:
        return ActionResult.OBJECT_UNDEFINED, None


class DataObject(_Base):
    """Data (class 1): attribute 2 ``value`` (writable when ``writable``)."""

    class_id = ClassId.DATA

    def __init__(self, logical_name: ObisCode, value: ValueSource, *, writable: bool = False) -> None:
        super().__init__(logical_name)
        self.value = value
        self.writable = writable

    def _attribute(self, attribute: int) -> Data | DataAccessResult:
        return _value(self.value) if attribute == 2 else _Base._attribute(self, attribute)

    def set(self, attribute: int, value: Data) -> DataAccessResult:
        if attribute != 2 or not self.writable:
            return DataAccessResult.READ_WRITE_DENIED
        self.value = value
        return DataAccessResult.SUCCESS


class RegisterObject(_Base):
    """Register (class 3) or Extended register (class 4, with status and capture time):
    attribute 2 ``value``, 3 ``scaler_unit``; method 1 ``reset`` sets the value to 0 (a
    ``reset`` callable is called instead when given)."""

    def __init__(self, logical_name: ObisCode, value: ValueSource, scaler_unit: ScalerUnit, *,
                 class_id: int = ClassId.REGISTER, status: ValueSource | None = None,
                 capture_time: ValueSource | None = None,
                 reset: Callable[[], None] | None = None) -> None:
        super().__init__(logical_name)
        self.class_id = class_id
        self.value = value
        self.scaler_unit = scaler_unit
        self.status = status
        self.capture_time = capture_time
        self._reset = reset

    def _attribute(self, attribute: int) -> Data | DataAccessResult:
        if attribute == 2:
            return _value(self.value)
        if attribute == 3:
            return self.scaler_unit.to_data()
        if self.class_id == ClassId.EXTENDED_REGISTER:
            if attribute == 4 and self.status is not None:
                return _value(self.status)
            if attribute == 5 and self.capture_time is not None:
                return _value(self.capture_time)
        return _Base._attribute(self, attribute)

    def action(self, method: int, parameters: Data | None) -> tuple[ActionResult, Data | None]:
        if method != 1:
            return ActionResult.OBJECT_UNDEFINED, None
        if self._reset is not None:
            self._reset()
        else:
            current = _value(self.value)
            self.value = Data(type=current.type, value=0)
        return ActionResult.SUCCESS, None


class ClockObject(_Base):
    """Clock (class 8): attribute 2 ``time`` (settable: shifts the clock), 3
    ``time_zone`` (minutes, as the Blue Book's deviation), 4 ``status``, 9 ``clock_base``.

    ``now`` gives the meter's local time as an aware datetime; the date-time is sent
    as a 12-octet octet-string with the deviation of ``now``'s offset."""

    class_id = ClassId.CLOCK

    def __init__(self, logical_name: ObisCode, now: Callable[[], datetime]) -> None:
        super().__init__(logical_name)
        self._now = now
        self.shift_s = 0.0

    def time(self) -> datetime:
        return self._now() + timedelta(seconds=self.shift_s)

    def _attribute(self, attribute: int) -> Data | DataAccessResult:
        if attribute == 2:
            return axdr.octet_string(CosemDateTime.from_datetime(self.time()).encode())
        if attribute == 3:
            offset = self.time().utcoffset()
            return axdr.long(-int(offset.total_seconds() // 60) if offset else 0)
        if attribute == 4:
            return axdr.unsigned(0)
        if attribute == 9:
            return axdr.enum(1)  # internal crystal
        return _Base._attribute(self, attribute)

    def set(self, attribute: int, value: Data) -> DataAccessResult:
        if attribute != 2:
            return DataAccessResult.READ_WRITE_DENIED
        try:
            wanted = clock_time(value).to_datetime()
        except ProtocolError:
            return DataAccessResult.TYPE_UNMATCHED
        if wanted is None:
            return DataAccessResult.TYPE_UNMATCHED
        self.shift_s += (wanted - self.time()).total_seconds()
        return DataAccessResult.SUCCESS


class ProfileGenericObject(_Base):
    """Profile generic (class 7): 2 ``buffer`` (whole, by range on the first column,
    which must be the clock, or by entry), 3 ``capture_objects``, 4 ``capture_period``,
    5 ``sort_method`` (FIFO), 7 ``entries_in_use``, 8 ``profile_entries``.

    ``rows`` returns the buffer rows, oldest first, each a tuple of values in
    capture-object order (the clock as a 12-octet octet-string)."""

    class_id = ClassId.PROFILE_GENERIC

    def __init__(self, logical_name: ObisCode, capture_objects: tuple[CaptureObjectDefinition, ...],
                 rows: Callable[[], Sequence[tuple[Data, ...]]], *, capture_period_s: int = 900,
                 profile_entries: int = 10000, meter_tz: tzinfo | None = None) -> None:
        super().__init__(logical_name)
        self.capture_objects = capture_objects
        self.rows = rows
        self.capture_period_s = capture_period_s
        self.profile_entries = profile_entries
        self.meter_tz = meter_tz

    def get(self, attribute: int, access: SelectiveAccess | None) -> Data | DataAccessResult:
        if attribute != 2:
            return _Base.get(self, attribute, access)
        rows = list(self.rows())
        columns: Sequence[int] = range(len(self.capture_objects))
        try:
            if access is not None and access.selector == RangeDescriptor.SELECTOR:
                rows, columns = self._by_range(rows, RangeDescriptor.from_access(access))
            elif access is not None and access.selector == EntryDescriptor.SELECTOR:
                rows, columns = self._by_entry(rows, EntryDescriptor.from_access(access))
            elif access is not None:
                return DataAccessResult.OBJECT_UNAVAILABLE
        except ProtocolError:
            return DataAccessResult.TYPE_UNMATCHED
        return axdr.array(*(axdr.structure(*(row[i] for i in columns)) for row in rows))

    def _when(self, value: Data) -> datetime | None:
        try:
            return clock_time(value).to_datetime(self.meter_tz)
        except ProtocolError:
            return None

    def _by_range(self, rows: list[tuple[Data, ...]], rng: RangeDescriptor
                  ) -> tuple[list[tuple[Data, ...]], Sequence[int]]:
        start, end = self._when(rng.from_value), self._when(rng.to_value)
        if start is None or end is None or rng.restricting_object.class_id != ClassId.CLOCK:
            raise LocalProtocolError("range on something other than the clock")
        picked = []
        for row in rows:
            when = self._when(row[0])
            if when is not None and start <= when <= end:
                picked.append(row)
        columns: Sequence[int] = range(len(self.capture_objects))
        if rng.columns:
            wanted = [(c.class_id, c.instance, c.attribute) for c in rng.columns]
            have = [(c.class_id, c.instance, c.attribute) for c in self.capture_objects]
            if any(w not in have for w in wanted):
                raise LocalProtocolError("a column that is not captured")
            columns = [have.index(w) for w in wanted]
        return picked, columns

    def _by_entry(self, rows: list[tuple[Data, ...]], entry: EntryDescriptor
                  ) -> tuple[list[tuple[Data, ...]], Sequence[int]]:
        last = entry.to_entry or len(rows)
        last_col = entry.to_column or len(self.capture_objects)
        return rows[entry.from_entry - 1 : last], range(entry.from_column - 1, last_col)

    def _attribute(self, attribute: int) -> Data | DataAccessResult:
        if attribute == 3:
            return axdr.array(*(c.to_data() for c in self.capture_objects))
        if attribute == 4:
            return axdr.double_long_unsigned(self.capture_period_s)
        if attribute == 5:
            return axdr.enum(1)  # FIFO
        if attribute == 7:
            return axdr.double_long_unsigned(len(self.rows()))
        if attribute == 8:
            return axdr.double_long_unsigned(self.profile_entries)
        return _Base._attribute(self, attribute)


# ------------------------------------------------------------------ server
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """The meter's security and limits.

    ``key`` set: only the ciphered LN context is accepted and every xDLMS APDU must be
    ciphered.  ``max_pdu_size`` is the largest APDU the meter receives and, bounded by
    the client's max receive PDU size, sends (longer GET replies go in blocks).
    """

    authentication: Authentication = "none"
    password: bytes | None = None
    key: bytes | None = None
    auth_key: bytes | None = None
    system_title: bytes = b"HGWSIM\x00\x01"
    invocation_counter: int = 1
    security_control: int = 0x30
    # what the client proposes, and general protection (general-glo/-ded-ciphering)
    conformance: int = DEFAULT_CONFORMANCE | Conformance.GENERAL_PROTECTION
    max_pdu_size: int = 1024
    challenge: bytes | None = None

    def __post_init__(self) -> None:
        if self.authentication == "lls" and not self.password:
            raise LocalProtocolError("LLS needs a password")
        if self.authentication == "hls-gmac" and (self.key is None or self.auth_key is None):
            raise LocalProtocolError("HLS-GMAC needs the encryption and authentication keys")
        for name, key in (("key", self.key), ("auth_key", self.auth_key)):
            if key is not None:
                check_key(key, name)
        if len(self.system_title) != 8:
            raise LocalProtocolError("a system title is 8 octets")
        if self.max_pdu_size < 64:
            raise LocalProtocolError("max_pdu_size must be at least 64")


class _Phase(enum.Enum):
    IDLE = "idle"
    AWAIT_HLS = "await-hls"
    ASSOCIATED = "associated"


# diagnostics (GB9 9.4.2.2.4, acse-service-user)
_APP_CONTEXT_NOT_SUPPORTED: Final = 2
_MECHANISM_NOT_RECOGNISED: Final = 11
_MECHANISM_REQUIRED: Final = 12
_AUTHENTICATION_FAILURE: Final = 13
_AUTHENTICATION_REQUIRED: Final = 14
# Room for the GET-response-with-datablock header and a ciphering envelope.
_BLOCK_OVERHEAD: Final = 48


@dataclass(slots=True)
class _Blocks:
    invoke_id_and_priority: int
    data: bytes
    size: int
    sent: int = 0  # blocks sent so far


@dataclass(slots=True)
class _Stats:
    associations: int = 0
    rejected: int = 0
    requests: int = 0
    blocks: int = 0
    replays: int = 0


@dataclass(slots=True)
class SecurityCounters:
    """What a meter remembers across associations and connections: its own next
    invocation counter and the clients' last accepted ones (share one between the
    :class:`DlmsServer` instances of one meter, as a real meter keeps them)."""

    invocation_counter: int = 1
    guard: ReplayGuard = field(default_factory=ReplayGuard)


class DlmsServer:
    """One logical device's association state (one client at a time)."""

    def __init__(self, objects: Mapping[tuple[int, ObisCode], CosemObject],
                 settings: ServerSettings | None = None, *,
                 counters: SecurityCounters | None = None) -> None:
        self.objects = dict(objects)
        self.settings = settings or ServerSettings()
        self.stats = _Stats()
        self.counters = counters or SecurityCounters(
            invocation_counter=self.settings.invocation_counter)
        self._guard = self.counters.guard
        self._reset()

    def _next_ic(self) -> int:
        ic = self.counters.invocation_counter
        self.counters.invocation_counter += 1
        return ic

    def _reset(self) -> None:
        self._phase = _Phase.IDLE
        self._ciphered = False
        self._client_title: bytes | None = None
        self._ctos = b""
        self._stoc = b""
        self._send_limit = self.settings.max_pdu_size
        self._conformance = 0
        self._blocks: _Blocks | None = None
        self._reply_kind: CipherKind = "glo"
        # The dedicated key of this association (from the InitiateRequest), and the
        # counters seen with it: both end with the association.
        self._dedicated_key: bytes | None = None
        self._ded_guard = ReplayGuard()

    @property
    def associated(self) -> bool:
        return self._phase is _Phase.ASSOCIATED

    def add(self, obj: CosemObject) -> None:
        self.objects[(obj.class_id, obj.logical_name)] = obj

    # ---------------------------------------------------------- ciphering
    def _protect(self, apdu: bytes, kind: CipherKind) -> bytes:
        if not self._ciphered:
            return apdu
        s = self.settings
        key = self._dedicated_key if kind in ("ded", "general-ded") else s.key
        assert key is not None
        out = cipher_apdu(apdu, kind=kind, security_control=s.security_control,
                          system_title=s.system_title, invocation_counter=self._next_ic(),
                          key=key, auth_key=s.auth_key)
        return out

    def notification(self, body: Data, *, when: datetime | None = None,
                     long_invoke_id: int = 1) -> bytes:
        """A DataNotification APDU (general-glo-ciphered when a key is configured): what
        a push setup sends."""
        stamp = CosemDateTime.from_datetime(when).encode() if when is not None else b""
        plain = DataNotification(long_invoke_id_and_priority=long_invoke_id, body=body,
                                 date_time=stamp).encode()
        s = self.settings
        if s.key is None:
            return plain
        out = cipher_apdu(plain, kind="general-glo", security_control=s.security_control,
                          system_title=s.system_title, invocation_counter=self._next_ic(),
                          key=s.key, auth_key=s.auth_key)
        return out

    # ------------------------------------------------------------- input
    def handle(self, apdu: bytes) -> list[bytes]:
        """One APDU from the client in; the APDUs to send back (0 or 1).  Never raises
        for anything the client sends."""
        try:
            decoded = decode_apdu(apdu)
        except ProtocolError:
            return [ExceptionResponse(state_error=2, service_error=2).encode()]
        if isinstance(decoded, AARQ):
            return [self._on_aarq(decoded)]
        if isinstance(decoded, RLRQ) and not isinstance(decoded, RLRE):
            self._reset()
            return [RLRE(reason=0).encode()]
        if self._phase is _Phase.IDLE:
            # xDLMS services need an association (GB9 9.3.2): service-not-allowed.
            return [ExceptionResponse(state_error=1, service_error=1).encode()]
        kind: CipherKind = "glo"
        if isinstance(decoded, GeneralGloCiphering | ServiceCiphered):
            kind = _kind(decoded)
            plain = self._decipher(decoded)
            if plain is None:
                return [ExceptionResponse(state_error=2, service_error=5).encode()]
            try:
                decoded = decode_apdu(plain)
            except ProtocolError:
                return [ExceptionResponse(state_error=2, service_error=2).encode()]
        elif self._ciphered:
            # A plain request in a ciphered association is refused (GB9 9.2.7.2.3).
            return [ExceptionResponse(state_error=2, service_error=1).encode()]
        self._reply_kind = kind
        self.stats.requests += 1
        reply = self._service(decoded)
        return [self._protect(reply, kind)] if reply else []

    def _decipher(self, apdu: GeneralGloCiphering | ServiceCiphered) -> bytes | None:
        if not self._ciphered or self._client_title is None:
            return None
        title = apdu.system_title if isinstance(apdu, GeneralGloCiphering) else self._client_title
        dedicated = _kind(apdu) in ("ded", "general-ded")
        if dedicated and self._dedicated_key is None:
            return None  # no dedicated key in this association: a deciphering error
        guard = self._ded_guard if dedicated else self._guard
        try:
            guard.check(title, apdu.invocation_counter)
            plain = decipher_apdu(apdu, key=self._dedicated_key if dedicated else self.settings.key,
                                  auth_key=self.settings.auth_key, system_title=title)
        except DecryptionError as exc:
            if exc.reason == "replay":
                self.stats.replays += 1
            return None
        except ProtocolError:
            return None
        guard.accept(title, apdu.invocation_counter)
        return plain

    # ------------------------------------------------------- association
    def _reject(self, diagnostic: int, context: int, user: bytes | None = None) -> bytes:
        self.stats.rejected += 1
        self._reset()
        return AARE(result=AssociationResult.REJECTED_PERMANENT, diagnostic=diagnostic,
                    application_context=context, user_information=user).encode()

    def _on_aarq(self, aarq: AARQ) -> bytes:
        s = self.settings
        self._reset()
        context = aarq.application_context
        want = (ApplicationContext.LOGICAL_NAME_CIPHERED if s.key is not None
                else ApplicationContext.LOGICAL_NAME)
        if context != want:
            return self._reject(_APP_CONTEXT_NOT_SUPPORTED, want)
        mechanism = aarq.mechanism or AuthenticationMechanism.LOWEST
        expected = {"none": AuthenticationMechanism.LOWEST, "lls": AuthenticationMechanism.LLS,
                    "hls-gmac": AuthenticationMechanism.HLS_GMAC}[s.authentication]
        if mechanism != expected:
            diag = (_MECHANISM_REQUIRED if mechanism == AuthenticationMechanism.LOWEST
                    else _MECHANISM_NOT_RECOGNISED)
            return self._reject(diag, context)
        if s.authentication == "lls":
            assert s.password is not None
            if not hmac.compare_digest(aarq.authentication_value or b"", s.password):
                return self._reject(_AUTHENTICATION_FAILURE, context)
        self._ciphered = s.key is not None
        self._client_title = aarq.calling_ap_title
        if (self._ciphered or s.authentication == "hls-gmac") and (
                self._client_title is None or len(self._client_title) != 8):
            return self._reject(_AUTHENTICATION_FAILURE, context)
        if s.authentication == "hls-gmac":
            ctos = aarq.authentication_value or b""
            if not 8 <= len(ctos) <= 64:
                return self._reject(_AUTHENTICATION_FAILURE, context)
            self._ctos = ctos
        # the InitiateRequest (glo-ciphered in a ciphered context)
        user = aarq.user_information or b""
        plain: bytes | None = user
        if self._ciphered:
            try:
                wrapped = decode_apdu(user)
                plain = (self._decipher(wrapped)
                         if isinstance(wrapped, GeneralGloCiphering | ServiceCiphered) else None)
            except ProtocolError:
                plain = None
        initiate = None
        if plain:
            try:
                decoded = decode_apdu(plain)
                initiate = decoded if isinstance(decoded, InitiateRequest) else None
            except ProtocolError:
                initiate = None
        if initiate is not None and initiate.dedicated_key is not None and (
                not self._ciphered or len(initiate.dedicated_key) != 16):
            initiate = None  # a dedicated key outside a ciphered context, or not AES-128
        if initiate is None:
            # initiate error "other": the request could not be read (or deciphered)
            error = ConfirmedServiceError(service=1, error_type=6, error_value=0).encode()
            return self._reject(1, context, error)
        self._dedicated_key = initiate.dedicated_key
        self._conformance = initiate.proposed_conformance & s.conformance
        self._send_limit = min(s.max_pdu_size, initiate.client_max_receive_pdu_size or 0xFFFF)
        response = InitiateResponse(negotiated_conformance=self._conformance,
                                    server_max_receive_pdu_size=s.max_pdu_size).encode()
        self.stats.associations += 1
        title = s.system_title if self._ciphered or s.authentication == "hls-gmac" else None
        if s.authentication == "hls-gmac":
            self._stoc = s.challenge or secrets.token_bytes(16)
            self._phase = _Phase.AWAIT_HLS
            return AARE(application_context=context, diagnostic=_AUTHENTICATION_REQUIRED,
                        responding_ap_title=title, acse_requirements=True,
                        mechanism=AuthenticationMechanism.HLS_GMAC,
                        authentication_value=self._stoc,
                        user_information=self._protect(response, "glo")).encode()
        self._phase = _Phase.ASSOCIATED
        return AARE(application_context=context, responding_ap_title=title,
                    acse_requirements=s.authentication == "lls",
                    mechanism=AuthenticationMechanism.LLS if s.authentication == "lls" else None,
                    user_information=self._protect(response, "glo")).encode()

    def _on_hls(self, req: ActionRequestNormal) -> bytes:
        s = self.settings
        assert s.key is not None and s.auth_key is not None and self._client_title is not None
        params = req.parameters
        try:
            if params is None or not isinstance(params.value, bytes):
                raise DecryptionError("no f(StoC)", reason="malformed")
            verify_hls_gmac_response(params.value, self._stoc, system_title=self._client_title,
                                     key=s.key, auth_key=s.auth_key)
        except DecryptionError:
            self.stats.rejected += 1
            self._phase = _Phase.IDLE
            return ActionResponseNormal(result=ActionResult.READ_WRITE_DENIED,
                                        invoke_id_and_priority=req.invoke_id_and_priority).encode()
        reply = hls_gmac_response(self._ctos, system_title=s.system_title,
                                  invocation_counter=self._next_ic(), key=s.key,
                                  auth_key=s.auth_key)
        self._phase = _Phase.ASSOCIATED
        return ActionResponseNormal(result=ActionResult.SUCCESS,
                                    return_parameters=axdr.octet_string(reply),
                                    invoke_id_and_priority=req.invoke_id_and_priority).encode()

    # ----------------------------------------------------------- services
    def _service(self, apdu: object) -> bytes:
        if self._phase is _Phase.AWAIT_HLS:
            if (isinstance(apdu, ActionRequestNormal) and apdu.method.class_id == ClassId.ASSOCIATION_LN
                    and apdu.method.instance == ASSOCIATION_LN and apdu.method.method == 1):
                return self._on_hls(apdu)
            return ExceptionResponse(state_error=1, service_error=1).encode()
        if isinstance(apdu, GetRequestNormal):
            self._blocks = None
            return self._get_reply(apdu)
        if isinstance(apdu, GetRequestNext):
            return self._next_block(apdu)
        if isinstance(apdu, GetRequestWithList):
            results = tuple(self._get(a.attribute, a.access) for a in apdu.attributes)
            return GetResponseWithList(results=results,
                                       invoke_id_and_priority=apdu.invoke_id_and_priority).encode()
        if isinstance(apdu, SetRequestNormal):
            obj = self.objects.get((apdu.attribute.class_id, apdu.attribute.instance))
            result = (DataAccessResult.OBJECT_UNDEFINED if obj is None
                      else obj.set(apdu.attribute.attribute, apdu.value))
            return SetResponseNormal(result=result,
                                     invoke_id_and_priority=apdu.invoke_id_and_priority).encode()
        if isinstance(apdu, ActionRequestNormal):
            m = apdu.method
            if m.class_id == ClassId.ASSOCIATION_LN and m.instance == ASSOCIATION_LN:
                action_result, ret = ActionResult.READ_WRITE_DENIED, None
            else:
                target = self.objects.get((m.class_id, m.instance))
                action_result, ret = ((ActionResult.OBJECT_UNDEFINED, None) if target is None
                                      else target.action(m.method, apdu.parameters))
            return ActionResponseNormal(result=action_result, return_parameters=ret,
                                        invoke_id_and_priority=apdu.invoke_id_and_priority).encode()
        return ExceptionResponse(state_error=2, service_error=2).encode()

    def _get(self, attribute: CosemAttributeDescriptor,
             access: SelectiveAccess | None) -> Data | DataAccessResult:
        obj = self.objects.get((attribute.class_id, attribute.instance))
        if obj is None:
            if attribute.class_id == ClassId.ASSOCIATION_LN and attribute.instance == ASSOCIATION_LN:
                return axdr.octet_string(ASSOCIATION_LN.to_bytes()) if attribute.attribute == 1 \
                    else DataAccessResult.READ_WRITE_DENIED
            return DataAccessResult.OBJECT_UNDEFINED
        return obj.get(attribute.attribute, access)

    def _get_reply(self, req: GetRequestNormal) -> bytes:
        result = self._get(req.attribute, req.access)
        whole = GetResponseNormal(result=result,
                                  invoke_id_and_priority=req.invoke_id_and_priority).encode()
        if isinstance(result, DataAccessResult) or len(whole) + _BLOCK_OVERHEAD <= self._send_limit:
            return whole
        size = max(16, self._send_limit - _BLOCK_OVERHEAD)
        self._blocks = _Blocks(invoke_id_and_priority=req.invoke_id_and_priority,
                               data=result.encode(), size=size)
        return self._block()

    def _block(self) -> bytes:
        b = self._blocks
        assert b is not None
        start = b.sent * b.size
        chunk = b.data[start : start + b.size]
        b.sent += 1
        last = start + b.size >= len(b.data)
        self.stats.blocks += 1
        if last:
            self._blocks = None
        return GetResponseWithDataBlock(last_block=last, block_number=b.sent, result=chunk,
                                        invoke_id_and_priority=b.invoke_id_and_priority).encode()

    def _next_block(self, req: GetRequestNext) -> bytes:
        b = self._blocks
        if b is None:
            return GetResponseWithDataBlock(
                last_block=True, block_number=req.block_number,
                result=DataAccessResult.NO_LONG_GET_IN_PROGRESS,
                invoke_id_and_priority=req.invoke_id_and_priority).encode()
        if req.block_number != b.sent:
            self._blocks = None
            return GetResponseWithDataBlock(
                last_block=True, block_number=req.block_number,
                result=DataAccessResult.DATA_BLOCK_NUMBER_INVALID,
                invoke_id_and_priority=req.invoke_id_and_priority).encode()
        return self._block()


def _kind(apdu: GeneralGloCiphering | ServiceCiphered) -> CipherKind:
    """Which ciphering (and so which key) a ciphered request used."""
    if isinstance(apdu, GeneralDedCiphering):
        return "general-ded"
    if isinstance(apdu, GeneralGloCiphering):
        return "general-glo"
    return "ded" if apdu.dedicated else "glo"


# ---------------------------------------------------------------- carrier
@dataclass(slots=True)
class ServerConnection:
    """A :class:`DlmsServer` on a carrier: ``receive(bytes) -> bytes to write``.

    On HDLC, a DISC (or a new SNRM) ends the association as well."""

    server: DlmsServer
    framing: Framing
    closed: bool = field(default=False)

    def receive(self, data: bytes) -> bytes:
        apdus, replies, events = self.framing.receive(data)
        out = list(replies)
        for ev in events:
            if isinstance(ev, hdlc.Connected | hdlc.Disconnected):
                self.server._reset()
                self.closed = isinstance(ev, hdlc.Disconnected)
        for apdu in apdus:
            for reply in self.server.handle(apdu):
                out.append(self.framing.send(reply))
        return b"".join(out)
