"""The Energy Service Interface: the gateway's Metering, Price, DRLC and Time servers.

Bytes in, frames out: :class:`EsiServer` answers ZCL requests that devices
send to the coordinator's ESI endpoints and builds the frames the gateway
pushes (PublishPrice, LoadControlEvent, CancelLoadControlEvent, attribute
reports).  It does no I/O; :mod:`adapters.zigbee.adapter` sends what it
returns.  ZCL headers, attribute records and command payloads are encoded with
zigpy's own serializers (``zigpy.zcl.foundation``, the Metering/Time cluster
definitions and, for Price and DRLC, :mod:`adapters.zigbee.clusters`).

Implemented (SE 1.4 / ZCL 7; wire facts in ``../shared/ZIGBEE_SE.md``):

* Metering 0x0702 server: Read Attributes of CurrentSummationDelivered/Received,
  Status, UnitOfMeasure (kWh), Multiplier/Divisor (1/1000: Wh and W on the
  wire), Summation/Demand Formatting, MeteringDeviceType (electric),
  InstantaneousDemand; Configure Reporting accepted, reports sent on each new
  snapshot to the devices that asked (no more often than their minimum interval).
* Price 0x0700 server: GetCurrentPrice and GetScheduledPrices answered with
  PublishPrice (request's TSN) or Default Response NOT_FOUND;
  PriceAcknowledgement recorded; the attributes CommodityType and tier labels.
* DRLC 0x0701 server: LoadControlEvent / CancelLoadControlEvent built from the
  rule engine's DemandResponseEvents; GetScheduledEvents answered;
  ReportEventStatus decoded into :class:`DrlcEventStatus`.
* Basic 0x0000 server: ZCLVersion, ManufacturerName, ModelIdentifier, PowerSource.
  Writes to any served attribute are refused (READ_ONLY) and logged.
* Time 0x000A server: Time, TimeStatus (Master, Synchronized, MasterZoneDst
  when a zone is configured, optionally Superseding), TimeZone, DstStart/End/
  Shift, StandardTime, LocalTime, computed by zigpy's ``TimeSnapshot``.

Not implemented: block pricing, tariffs and conversion factors (Price 1.1a+),
Messaging, Prepayment, mirroring, Metering profiles/snapshots, and anything
needing CBKE (KeyEstablishment 0x0800).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import zigpy.types as t
from zigpy.time import TimeSnapshot
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Basic, Time
from zigpy.zcl.clusters.smartenergy import Metering

from adapters.zigbee.clusters import DEVICE_CLASS_BITS, EVENT_STATUS, Drlc, Price
from adapters.zigbee.config import CURRENCY_NUMERIC, ZigbeeConfig
from adapters.zigbee.events import DrlcEventStatus, PriceAck
from gateway.model import DemandResponseEvent, PriceSignal, Snapshot
from gateway.quantities import normalised_value, quantities_for

__all__ = [
    "DrlcEventStatus",
    "EsiServer",
    "Frame",
    "PriceAck",
    "SERVED_CLUSTERS",
    "build_frame",
    "dr_issuer_id",
]

log = logging.getLogger(__name__)

BASIC: Final = Basic.cluster_id
METERING: Final = Metering.cluster_id
PRICE: Final = Price.cluster_id
DRLC: Final = Drlc.cluster_id
TIME: Final = Time.cluster_id
SERVED_CLUSTERS: Final = frozenset({BASIC, METERING, PRICE, DRLC, TIME})

NOT_FOUND: Final = 0x8B  # ZCL status, answer to a Get* that matches nothing (ZSS, EX)
_UTC2000: Final = datetime(2000, 1, 1, tzinfo=UTC)
_ALL_DEVICE_CLASSES: Final = 0x0FFF
_MAX_LCE_MINUTES: Final = 1440  # SLP rejects longer events with 0xFE

# Metering encoding: UnitOfMeasure kWh with divisor 1000 puts Wh (summations)
# and W (demand) on the wire; formatting 6.3 digits (bits 3-6 integer digits,
# bits 0-2 decimals).
_DIVISOR: Final = 1000
_SUMMATION_FORMATTING: Final = (6 << 3) | 3
_DEMAND_FORMATTING: Final = (5 << 3) | 3
_STATUS_CHECK_METER: Final = 0x01


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One ZCL frame to send: ``data`` is header + payload."""

    cluster: int
    data: bytes
    tsn: int
    command_id: int


@dataclass(slots=True)
class _Reporting:
    attributes: set[int] = field(default_factory=set)
    min_interval_s: int = 0
    last_sent: datetime | None = None


def utc_time(dt: datetime) -> int:
    """Seconds since 2000-01-01 UTC (ZCL UTCTime)."""
    return max(0, int((dt - _UTC2000).total_seconds()))


def from_utc_time(value: int) -> datetime:
    return _UTC2000 + timedelta(seconds=int(value))


def dr_issuer_id(event_id: str) -> int:
    """A stable uint32 IssuerEventId for a gateway event id (decimal ids are kept)."""
    if event_id.isdigit() and int(event_id) <= 0xFFFFFFFF:
        return int(event_id)
    return zlib.crc32(event_id.encode("utf-8"))


def device_class_bits(classes: tuple[str, ...]) -> int:
    """SE DeviceClass bits for rule-file load classes; () targets every class.

    Numbers ("0x0004", "4") are taken as bit masks; unknown names add nothing.
    """
    if not classes:
        return _ALL_DEVICE_CLASSES
    bits = 0
    for name in classes:
        key = name.strip().lower().replace("-", "_").replace(" ", "_")
        if key in DEVICE_CLASS_BITS:
            bits |= DEVICE_CLASS_BITS[key]
            continue
        try:
            bits |= int(key, 0) & 0x0FFF
        except ValueError:
            log.warning("DR load class %r has no ZigBee SE device class; ignored", name)
    return bits


def build_frame(
    cluster: int,
    cmd: int,
    schema: type[Any],
    *,
    tsn: int,
    general: bool,
    server_to_client: bool = True,
    disable_default_response: bool = True,
    **fields: Any,
) -> Frame:
    """Header + payload of one ZCL command, serialized by zigpy."""
    frame_control = foundation.FrameControl(
        frame_type=foundation.FrameType.GLOBAL_COMMAND if general else foundation.FrameType.CLUSTER_COMMAND,
        is_manufacturer_specific=False,
        direction=(
            foundation.Direction.Server_to_Client if server_to_client else foundation.Direction.Client_to_Server
        ),
        disable_default_response=disable_default_response,
        reserved=0b000,
    )
    hdr = foundation.ZCLHeader(frame_control=frame_control, manufacturer=None, tsn=tsn, command_id=cmd)
    payload = schema(**fields)
    return Frame(cluster=cluster, data=hdr.serialize() + payload.serialize(), tsn=tsn, command_id=cmd)


def _general(command: foundation.GeneralCommand) -> type[Any]:
    schema: type[Any] = foundation.GENERAL_COMMANDS[command].schema
    return schema


def _default_response(cluster: int, tsn: int, command_id: int, status: int) -> Frame:
    return build_frame(
        cluster, foundation.GeneralCommand.Default_Response, _general(foundation.GeneralCommand.Default_Response),
        tsn=tsn, general=True, command_id=command_id, status=foundation.Status(status),
    )


class EsiServer:
    """State and frame logic of the ESI; the adapter feeds it and sends what it returns."""

    def __init__(self, config: ZigbeeConfig, *, meter: str | None) -> None:
        self.config = config
        self.meter = meter
        self.snapshot: Snapshot | None = None
        self.meter_online = True
        self.price: PriceSignal | None = None
        self.price_issuer_id = 0
        self.dr_events: dict[int, DemandResponseEvent] = {}  # issuer id -> active event
        self.dr_names: dict[int, str] = {}  # issuer id -> gateway event id, also after cancel
        self.reporting: dict[tuple[str, int, int], _Reporting] = {}  # (ieee, ep, profile)
        self._tsn = 0

    # ----------------------------------------------------------- inputs
    def next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) % 256
        return self._tsn

    def set_snapshot(self, snapshot: Snapshot) -> None:
        if self.meter is None or snapshot.meter == self.meter:
            self.snapshot = snapshot

    def set_price(self, price: PriceSignal, now: datetime) -> None:
        """A new price: a new, larger IssuerEventId (SE: newer events have larger ids)."""
        self.price = price
        self.price_issuer_id = max(self.price_issuer_id + 1, utc_time(now))

    def set_dr_event(self, event: DemandResponseEvent) -> int:
        issuer = dr_issuer_id(event.event_id)
        self.dr_names[issuer] = event.event_id
        for old in event.supersedes:
            self.dr_events.pop(dr_issuer_id(old), None)
        if event.cancelled:
            self.dr_events.pop(issuer, None)
        else:
            self.dr_events[issuer] = event
        return issuer

    # ------------------------------------------------------- metering
    def metering_values(self) -> dict[int, tuple[Any, Any]]:
        """Attribute id -> (zigpy type, value) of every Metering attribute we can serve now."""
        attrs = Metering.AttributeDefs
        out: dict[int, tuple[Any, Any]] = {
            attrs.status.id: (t.bitmap8, 0 if self.meter_online and self.snapshot else _STATUS_CHECK_METER),
            attrs.unit_of_measure.id: (t.enum8, 0x00),  # kWh / kW, binary
            attrs.multiplier.id: (t.uint24_t, 1),
            attrs.divisor.id: (t.uint24_t, _DIVISOR),
            attrs.summation_formatting.id: (t.bitmap8, _SUMMATION_FORMATTING),
            attrs.demand_formatting.id: (t.bitmap8, _DEMAND_FORMATTING),
            attrs.metering_device_type.id: (t.bitmap8, 0),  # electric
        }
        if self.snapshot is None:
            return out
        values: dict[str, float] = {}
        for reading, quantity in quantities_for(self.snapshot):
            value = normalised_value(reading, quantity)
            if isinstance(value, int | float) and math.isfinite(value):
                values.setdefault(quantity.key, float(value))
        if "energy_import" in values:
            out[attrs.current_summ_delivered.id] = (t.uint48_t, _clamp(round(values["energy_import"] * 1000), 0, 2**48 - 2))
        if "energy_export" in values:
            out[attrs.current_summ_received.id] = (t.uint48_t, _clamp(round(values["energy_export"] * 1000), 0, 2**48 - 2))
        demand: float | None = None
        if "power_net" in values:
            demand = values["power_net"]
        elif "power_import" in values:
            demand = values["power_import"] - values.get("power_export", 0.0)
        elif "power_export" in values:
            demand = -values["power_export"]
        if demand is not None:
            out[attrs.instantaneous_demand.id] = (t.int24s, _clamp(round(demand), -(2**23) + 1, 2**23 - 1))
        return out

    def time_values(self, now: datetime) -> dict[int, tuple[Any, Any]]:
        zone = self.config.zone()
        snap = TimeSnapshot.compute(zone, now)
        status = 0x01 | 0x02  # Master, Synchronized (the host clock is NTP-disciplined)
        if zone is not None:
            status |= 0x04  # MasterZoneDst
        if self.config.time_superseding:
            status |= 0x08
        attrs = Time.AttributeDefs
        return {
            attrs.time.id: (t.UTCTime, snap.time),
            attrs.time_status.id: (t.bitmap8, status),
            attrs.time_zone.id: (t.int32s, snap.time_zone),
            attrs.dst_start.id: (t.uint32_t, snap.dst_start),
            attrs.dst_end.id: (t.uint32_t, snap.dst_end),
            attrs.dst_shift.id: (t.int32s, snap.dst_shift),
            attrs.standard_time.id: (t.uint32_t, snap.standard_time),
            attrs.local_time.id: (t.uint32_t, snap.local_time),
        }

    def price_attribute_values(self) -> dict[int, tuple[Any, Any]]:
        out: dict[int, tuple[Any, Any]] = {Price.AttributeDefs.commodity_type.id: (t.enum8, 0)}
        if self.price is not None and self.price.tier and 1 <= self.price.tier <= 6 and self.config.rate_label:
            out[self.price.tier - 1] = (t.LVBytes, self.config.rate_label.encode("utf-8"))
        return out

    def basic_values(self) -> dict[int, tuple[Any, Any]]:
        """Basic 0x0000 of the ESI endpoints (SE requires Basic on every device)."""
        attrs = Basic.AttributeDefs
        return {
            attrs.zcl_version.id: (t.uint8_t, 8),  # ZCL revision 8 (ZCL 7)
            attrs.manufacturer.id: (t.CharacterString, "han-gateway"),
            attrs.model.id: (t.CharacterString, "ESI"),
            attrs.power_source.id: (t.enum8, 0x01),  # mains, single phase
        }

    def _attribute_values(self, cluster: int, now: datetime) -> Mapping[int, tuple[Any, Any]]:
        if cluster == BASIC:
            return self.basic_values()
        if cluster == METERING:
            return self.metering_values()
        if cluster == TIME:
            return self.time_values(now)
        if cluster == PRICE:
            return self.price_attribute_values()
        return {}

    def read_attributes_response(self, cluster: int, attribute_ids: list[int], tsn: int, now: datetime) -> Frame:
        values = self._attribute_values(cluster, now)
        records = []
        for attrid in attribute_ids:
            if attrid in values:
                ztype, value = values[attrid]
                records.append(foundation.ReadAttributeRecord(
                    attrid=t.uint16_t(attrid), status=foundation.Status.SUCCESS,
                    value=foundation.TypeValue(type=_type_id(ztype), value=ztype(value))))
            else:
                records.append(foundation.ReadAttributeRecord(
                    attrid=t.uint16_t(attrid), status=foundation.Status.UNSUPPORTED_ATTRIBUTE))
        return build_frame(cluster, foundation.GeneralCommand.Read_Attributes_rsp,
                           _general(foundation.GeneralCommand.Read_Attributes_rsp),
                           tsn=tsn, general=True, status_records=records)

    def report_frame(self, cluster: int, attribute_ids: list[int], now: datetime) -> Frame | None:
        """Report Attributes (server -> client) of the attributes that have a value now."""
        values = self._attribute_values(cluster, now)
        reports = [
            foundation.Attribute(attrid=t.uint16_t(a), value=foundation.TypeValue(
                type=_type_id(values[a][0]), value=values[a][0](values[a][1])))
            for a in attribute_ids if a in values
        ]
        if not reports:
            return None
        return build_frame(cluster, foundation.GeneralCommand.Report_Attributes,
                           _general(foundation.GeneralCommand.Report_Attributes),
                           tsn=self.next_tsn(), general=True, attribute_reports=reports)

    def due_reports(self, now: datetime) -> list[tuple[tuple[str, int, int], Frame]]:
        """Metering reports for every device that configured reporting and whose minimum interval passed."""
        out = []
        for key, rep in self.reporting.items():
            if rep.last_sent is not None and (now - rep.last_sent).total_seconds() < rep.min_interval_s:
                continue
            frame = self.report_frame(METERING, sorted(rep.attributes), now)
            if frame is not None:
                rep.last_sent = now
                out.append((key, frame))
        return out

    # ---------------------------------------------------------- price
    def publish_price(self, tsn: int, now: datetime) -> Frame | None:
        """PublishPrice for the current price signal (SE fields #1-#19), or None without one."""
        price = self.price
        if price is None:
            return None
        cfg = self.config
        currency = cfg.currency if cfg.currency is not None else CURRENCY_NUMERIC.get(price.currency.upper(), 978)
        raw_price = _clamp(round(price.price_per_kwh * 10**cfg.trailing_digits), 0, 0xFFFFFFFE)
        if raw_price != round(price.price_per_kwh * 10**cfg.trailing_digits):
            log.warning("price %s does not fit PublishPrice with %d trailing digits; clamped",
                        price.price_per_kwh, cfg.trailing_digits)
        tier = price.tier if price.tier is not None and 1 <= price.tier <= 15 else 0
        tiers = max(cfg.price_tiers, tier)
        start = 0 if price.start <= now else utc_time(price.start)
        remaining_from = max(price.start, now)
        minutes = math.ceil((price.end - remaining_from).total_seconds() / 60)
        duration = 0xFFFF if minutes >= 0xFFFF else max(minutes, 0)
        label = (cfg.rate_label or (f"Tier {tier}" if tier else "Price")).encode("utf-8")[:12]
        return build_frame(
            PRICE, Price.ClientCommandDefs.publish_price.id, Price.ClientCommandDefs.publish_price.schema,
            tsn=tsn, general=False,
            provider_id=cfg.provider_id,
            rate_label=t.LVBytes(label),
            issuer_event_id=self.price_issuer_id,
            current_time=t.UTCTime(utc_time(now)),
            unit_of_measure=0x00,  # kWh
            currency=currency,
            price_trailing_digit_and_price_tier=(cfg.trailing_digits << 4) | tier,
            number_of_price_tiers_and_register_tier=(tiers << 4) | tier,
            start_time=t.UTCTime(start),
            duration_in_minutes=duration,
            price=raw_price,
            price_ratio=0xFF,
            generation_price=0xFFFFFFFF,
            generation_price_ratio=0xFF,
            alternate_cost_delivered=0xFFFFFFFF,
            alternate_cost_unit=0xFF,
            alternate_cost_trailing_digit=0x00,
            number_of_block_thresholds=0,
            price_control=t.bitmap8(0),
        )

    def price_is_current(self, now: datetime) -> bool:
        return self.price is not None and self.price.end > now

    # ----------------------------------------------------------- DRLC
    def load_control_event(self, event: DemandResponseEvent, tsn: int, now: datetime) -> Frame | None:
        """LoadControlEvent for ``event``; None when it already ended or targets no SE class."""
        if event.end <= now:
            return None
        bits = device_class_bits(event.load_classes)
        if bits == 0:
            return None
        start = 0 if event.start <= now else utc_time(event.start)
        minutes = math.ceil((event.end - max(event.start, now)).total_seconds() / 60)
        if minutes > _MAX_LCE_MINUTES:
            log.warning("DR event %s lasts %d min; ZigBee SE allows at most %d, sent as %d",
                        event.event_id, minutes, _MAX_LCE_MINUTES, _MAX_LCE_MINUTES)
            minutes = _MAX_LCE_MINUTES
        adj = 0x80 - 0x100  # int8 "unused"
        if event.load_adjustment_pct is not None:
            adj = _clamp(round(event.load_adjustment_pct), -100, 100)
        duty = 0xFF if event.duty_cycle_pct is None else _clamp(round(event.duty_cycle_pct), 0, 100)
        control = (0x01 if event.randomize_start_s > 0 else 0) | (0x02 if event.randomize_end_s > 0 else 0)
        cmd = Drlc.ClientCommandDefs.load_control_event
        return build_frame(
            DRLC, cmd.id, cmd.schema, tsn=tsn, general=False,
            issuer_event_id=dr_issuer_id(event.event_id),
            device_class=t.bitmap16(bits),
            utility_enrollment_group=self.config.utility_enrollment_group,
            start_time=t.UTCTime(start),
            duration_in_minutes=max(minutes, 1),
            criticality_level=_clamp(event.criticality, 1, 15),
            cooling_temperature_offset=0xFF,
            heating_temperature_offset=0xFF,
            cooling_temperature_set_point=-0x8000,
            heating_temperature_set_point=-0x8000,
            average_load_adjustment_percentage=adj,
            duty_cycle=duty,
            event_control=t.bitmap8(control),
        )

    def cancel_load_control_event(self, event: DemandResponseEvent, tsn: int) -> Frame:
        """CancelLoadControlEvent: immediate (EffectiveTime 0), with end randomisation if the event had it."""
        cmd = Drlc.ClientCommandDefs.cancel_load_control_event
        return build_frame(
            DRLC, cmd.id, cmd.schema, tsn=tsn, general=False,
            issuer_event_id=dr_issuer_id(event.event_id),
            device_class=t.bitmap16(device_class_bits(event.load_classes) or _ALL_DEVICE_CLASSES),
            utility_enrollment_group=self.config.utility_enrollment_group,
            cancel_control=t.bitmap8(0x01 if event.randomize_end_s > 0 else 0x00),
            effective_time=t.UTCTime(0),
        )

    # -------------------------------------------------------- requests
    def handle_request(
        self, *, device: str, endpoint: int, profile: int, cluster: int, data: bytes, now: datetime
    ) -> tuple[list[Frame], list[DrlcEventStatus | PriceAck]]:
        """Answer one client -> server ZCL frame to a served cluster.

        Returns the frames to send back to the requester and what it reported.
        Malformed frames are answered with MALFORMED_COMMAND where a header
        could be read, otherwise dropped.
        """
        try:
            hdr, rest = foundation.ZCLHeader.deserialize(data)
        except (ValueError, KeyError) as exc:
            log.info("dropped malformed ZCL frame from %s on cluster 0x%04x: %s", device, cluster, exc)
            return [], []
        tsn = int(hdr.tsn)
        cmd_id = int(hdr.command_id)
        ask_default = not hdr.frame_control.disable_default_response
        if hdr.frame_control.is_manufacturer_specific:
            return [_default_response(cluster, tsn, cmd_id, foundation.Status.UNSUP_MANUF_CLUSTER_COMMAND)], []
        try:
            if not hdr.frame_control.is_cluster:
                return self._general_request(device, endpoint, profile, cluster, hdr, rest, now), []
            return self._cluster_request(device, endpoint, cluster, tsn, cmd_id, ask_default, rest, now)
        except (ValueError, KeyError, IndexError) as exc:
            log.info("malformed command 0x%02x on cluster 0x%04x from %s: %s", cmd_id, cluster, device, exc)
            return [_default_response(cluster, tsn, cmd_id, foundation.Status.MALFORMED_COMMAND)], []

    def _general_request(
        self, device: str, endpoint: int, profile: int, cluster: int,
        hdr: foundation.ZCLHeader, rest: bytes, now: datetime,
    ) -> list[Frame]:
        tsn = int(hdr.tsn)
        cmd_id = int(hdr.command_id)
        if cmd_id == foundation.GeneralCommand.Read_Attributes:
            req = _decode(_general(foundation.GeneralCommand.Read_Attributes), rest)
            return [self.read_attributes_response(cluster, [int(a) for a in req.attribute_ids], tsn, now)]
        if cmd_id == foundation.GeneralCommand.Configure_Reporting and cluster == METERING:
            req = _decode(_general(foundation.GeneralCommand.Configure_Reporting), rest)
            rep = self.reporting.setdefault((device, endpoint, profile), _Reporting())
            served = self.metering_values()
            statuses = []
            for rec in req.config_records:
                if int(rec.direction) != 0:
                    continue
                attrid = int(rec.attrid)
                if attrid in served or attrid in (Metering.AttributeDefs.current_summ_delivered.id,
                                                  Metering.AttributeDefs.current_summ_received.id,
                                                  Metering.AttributeDefs.instantaneous_demand.id):
                    rep.attributes.add(attrid)
                    rep.min_interval_s = int(rec.min_interval)
                else:
                    statuses.append(foundation.ConfigureReportingResponseRecord(
                        status=foundation.Status.UNSUPPORTED_ATTRIBUTE,
                        direction=foundation.ReportingDirection.SendReports, attrid=attrid))
            if not statuses:
                statuses = [foundation.ConfigureReportingResponseRecord(status=foundation.Status.SUCCESS)]
            return [build_frame(cluster, foundation.GeneralCommand.Configure_Reporting_rsp,
                                _general(foundation.GeneralCommand.Configure_Reporting_rsp),
                                tsn=tsn, general=True, status_records=statuses)]
        if cmd_id in (foundation.GeneralCommand.Write_Attributes, foundation.GeneralCommand.Write_Attributes_Undivided,
                      foundation.GeneralCommand.Write_Attributes_No_Response):
            # Nothing the ESI serves is writable by a device: refuse, and say who tried.
            req = _decode(_general(foundation.GeneralCommand.Write_Attributes), rest)
            ids = [int(a.attrid) for a in req.attributes]
            log.warning("refused a write of attribute(s) %s on cluster 0x%04x from %s", ids, cluster, device)
            if cmd_id == foundation.GeneralCommand.Write_Attributes_No_Response:
                return []
            records = [foundation.WriteAttributesStatusRecord(status=foundation.Status.READ_ONLY, attrid=a)
                       for a in ids]
            return [build_frame(cluster, foundation.GeneralCommand.Write_Attributes_rsp,
                                _general(foundation.GeneralCommand.Write_Attributes_rsp),
                                tsn=tsn, general=True, status_records=records)]
        if cmd_id == foundation.GeneralCommand.Default_Response:
            return []
        return [_default_response(cluster, tsn, cmd_id, foundation.Status.UNSUP_GENERAL_COMMAND)]

    def _cluster_request(
        self, device: str, endpoint: int, cluster: int, tsn: int, cmd_id: int,
        ask_default: bool, rest: bytes, now: datetime,
    ) -> tuple[list[Frame], list[DrlcEventStatus | PriceAck]]:
        done = [_default_response(cluster, tsn, cmd_id, foundation.Status.SUCCESS)] if ask_default else []
        if cluster == PRICE:
            cmds = Price.ServerCommandDefs
            if cmd_id in (cmds.get_current_price.id, cmds.get_scheduled_prices.id):
                schema = cmds.get_current_price.schema if cmd_id == cmds.get_current_price.id \
                    else cmds.get_scheduled_prices.schema
                _decode(schema, rest)
                frame = self.publish_price(tsn, now) if self.price_is_current(now) else None
                if frame is None:
                    return [_default_response(cluster, tsn, cmd_id, NOT_FOUND)], []
                return [frame], []
            if cmd_id == cmds.price_acknowledgement.id:
                ack = _decode(cmds.price_acknowledgement.schema, rest)
                return done, [PriceAck(device=device, endpoint=endpoint, provider_id=int(ack.provider_id),
                                       issuer_event_id=int(ack.issuer_event_id),
                                       ack_time=from_utc_time(int(ack.price_ack_time)))]
        elif cluster == DRLC:
            cmds_d = Drlc.ServerCommandDefs
            if cmd_id == cmds_d.report_event_status.id:
                rep = _decode(cmds_d.report_event_status.schema, rest)
                issuer = int(rep.issuer_event_id)
                status = int(rep.event_status)
                adj = int(rep.average_load_adjustment_percentage_applied)
                duty = int(rep.duty_cycle_applied)
                return done, [DrlcEventStatus(
                    device=device, endpoint=endpoint, issuer_event_id=issuer,
                    event_id=self.dr_names.get(issuer), status=status,
                    status_name=EVENT_STATUS.get(status, f"0x{status:02x}"),
                    status_time=from_utc_time(int(rep.event_status_time)),
                    criticality_applied=int(rep.criticality_level_applied),
                    load_adjustment_applied_pct=None if adj == -128 else adj,
                    duty_cycle_applied_pct=None if duty == 0xFF else duty,
                    received=now,
                )]
            if cmd_id == cmds_d.get_scheduled_events.id:
                req = _decode(cmds_d.get_scheduled_events.schema, rest)
                start = now if int(req.start_time) == 0 else max(now, from_utc_time(int(req.start_time)))
                events = sorted((e for e in self.dr_events.values() if e.end > start), key=lambda e: e.start)
                if int(req.number_of_events):
                    events = events[: int(req.number_of_events)]
                frames = [f for e in events if (f := self.load_control_event(e, tsn, now)) is not None]
                return (frames or [_default_response(cluster, tsn, cmd_id, NOT_FOUND)]), []
        return [_default_response(cluster, tsn, cmd_id, foundation.Status.UNSUP_CLUSTER_COMMAND)], []


def _type_id(ztype: type[Any]) -> t.uint8_t:
    return t.uint8_t(foundation.DataType.from_python_type(ztype).type_id)


def _decode(schema: type[Any], data: bytes) -> Any:
    """A command payload decoded by zigpy (trailing bytes of later SE versions ignored)."""
    value, _ = schema.deserialize(data)
    return value


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
