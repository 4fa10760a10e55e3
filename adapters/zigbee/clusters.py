"""ZigBee Smart Energy Price (0x0700) and DRLC (0x0701) cluster definitions.

Why these live here: zigpy 2.4 defines Metering (0x0702) and Time (0x000A)
fully, but ``zigpy.zcl.clusters.smartenergy.Price`` and ``Drlc`` are stubs
with no attributes and no commands (so zigpy could neither parse a
GetCurrentPrice nor build a PublishPrice), and zigbee-herdsman only has them
commented out.  The definitions below follow the SE 1.4 layouts as compiled in
``../shared/ZIGBEE_SE.md`` §1-2 (Wireshark, Silicon Labs ``ami.xml``,
zsmartsystems, Exegin agree on the field order):

* Price: the server attributes an in-home display reads (tier labels,
  commodity type, standing charge), GetCurrentPrice / GetScheduledPrices /
  PriceAcknowledgement (client -> server) and PublishPrice (server -> client)
  with the optional fields #12-#19 as trailing ``?`` fields.  Block periods,
  conversion factors, tariffs (1.1a-1.2a commands 0x01-0x0E) are not defined.
* DRLC: LoadControlEvent, CancelLoadControlEvent, CancelAllLoadControlEvents
  (server -> client), ReportEventStatus and GetScheduledEvents (client ->
  server).  The DRLC *server* has no attributes; the client attributes
  (utility enrolment group, randomisation minutes, device class) are defined
  so that the gateway can write them on a device's client cluster.

Subclassing the zigpy stubs re-registers cluster ids 0x0700/0x0701 in zigpy's
registry when this module is imported, so every device zigpy creates after that
parses these commands too.  Source disagreements are settled as in §6 of the
facts file: PriceAck IssuerEventId is uint32, GenerationPriceRatio uint8,
ReportEventStatus's signature a fixed 42 bytes without a length prefix.
"""

from __future__ import annotations

from typing import Any, Final

import zigpy.types as t
from zigpy.zcl.clusters import smartenergy
from zigpy.zcl.foundation import BaseAttributeDefs, BaseCommandDefs, ZCLAttributeDef, ZCLCommandDef

__all__ = ["DEVICE_CLASS_BITS", "EVENT_STATUS", "Drlc", "Price", "Signature"]


def _cmd(id_: int, schema: dict[str, Any]) -> ZCLCommandDef:
    # zigpy's dataclass annotations are narrower than what it accepts (a dict schema
    # is compiled by the cluster class); one place to tell mypy so.
    return ZCLCommandDef(id=t.uint8_t(id_), schema=schema)  # type: ignore[arg-type]


def _attr(id_: int, type_: type, access: str) -> ZCLAttributeDef:
    return ZCLAttributeDef(id=t.uint16_t(id_), type=type_, access=access)  # type: ignore[arg-type]



class Signature(t.FixedList, item_type=t.uint8_t, length=42):  # type: ignore[type-arg]
    """ReportEventStatus's signature: 42 bytes, no length prefix (signing was dropped in SE 1.1)."""


class Price(smartenergy.Price):
    """Price cluster (SE 1.4 D.4), the subset an ESI serving in-home displays needs."""

    class AttributeDefs(BaseAttributeDefs):
        tier1_price_label: Final = _attr(0x0000, t.LVBytes, access="r")
        tier2_price_label: Final = _attr(0x0001, t.LVBytes, access="r")
        tier3_price_label: Final = _attr(0x0002, t.LVBytes, access="r")
        tier4_price_label: Final = _attr(0x0003, t.LVBytes, access="r")
        tier5_price_label: Final = _attr(0x0004, t.LVBytes, access="r")
        tier6_price_label: Final = _attr(0x0005, t.LVBytes, access="r")
        commodity_type: Final = _attr(0x0300, t.enum8, access="r")
        standing_charge: Final = _attr(0x0301, t.uint32_t, access="r")

    class ServerCommandDefs(BaseCommandDefs):
        get_current_price: Final = _cmd(0x00, {"command_options": t.bitmap8}
)
        get_scheduled_prices: Final = _cmd(0x01, {"start_time": t.UTCTime, "number_of_events": t.uint8_t}
        )
        price_acknowledgement: Final = _cmd(0x02, {
                "provider_id": t.uint32_t,
                "issuer_event_id": t.uint32_t,
                "price_ack_time": t.UTCTime,
                "control": t.bitmap8,
            }
        )

    class ClientCommandDefs(BaseCommandDefs):
        publish_price: Final = _cmd(0x00, {
                "provider_id": t.uint32_t,
                "rate_label": t.LVBytes,
                "issuer_event_id": t.uint32_t,
                "current_time": t.UTCTime,
                "unit_of_measure": t.uint8_t,
                "currency": t.uint16_t,
                "price_trailing_digit_and_price_tier": t.uint8_t,
                "number_of_price_tiers_and_register_tier": t.uint8_t,
                "start_time": t.UTCTime,
                "duration_in_minutes": t.uint16_t,
                "price": t.uint32_t,
                "price_ratio?": t.uint8_t,
                "generation_price?": t.uint32_t,
                "generation_price_ratio?": t.uint8_t,
                "alternate_cost_delivered?": t.uint32_t,
                "alternate_cost_unit?": t.uint8_t,
                "alternate_cost_trailing_digit?": t.uint8_t,
                "number_of_block_thresholds?": t.uint8_t,
                "price_control?": t.bitmap8,
            }
        )


class Drlc(smartenergy.Drlc):
    """Demand Response and Load Control cluster (SE 1.4 D.2)."""

    class AttributeDefs(BaseAttributeDefs):
        # client-side attributes (the server has none)
        utility_enrollment_group: Final = _attr(0x0000, t.uint8_t, access="rw")
        start_randomization_minutes: Final = _attr(0x0001, t.uint8_t, access="rw")
        duration_randomization_minutes: Final = _attr(0x0002, t.uint8_t, access="rw"
        )
        device_class_value: Final = _attr(0x0003, t.uint16_t, access="rw")

    class ServerCommandDefs(BaseCommandDefs):
        report_event_status: Final = _cmd(0x00, {
                "issuer_event_id": t.uint32_t,
                "event_status": t.uint8_t,
                "event_status_time": t.UTCTime,
                "criticality_level_applied": t.uint8_t,
                "cooling_temperature_set_point_applied": t.uint16_t,
                "heating_temperature_set_point_applied": t.uint16_t,
                "average_load_adjustment_percentage_applied": t.int8s,
                "duty_cycle_applied": t.uint8_t,
                "event_control": t.bitmap8,
                "signature_type?": t.uint8_t,
                "signature?": Signature,
            }
        )
        get_scheduled_events: Final = _cmd(0x01, {
                "start_time": t.UTCTime,
                "number_of_events": t.uint8_t,
                "issuer_event_id?": t.uint32_t,
            }
        )

    class ClientCommandDefs(BaseCommandDefs):
        load_control_event: Final = _cmd(0x00, {
                "issuer_event_id": t.uint32_t,
                "device_class": t.bitmap16,
                "utility_enrollment_group": t.uint8_t,
                "start_time": t.UTCTime,
                "duration_in_minutes": t.uint16_t,
                "criticality_level": t.uint8_t,
                "cooling_temperature_offset": t.uint8_t,
                "heating_temperature_offset": t.uint8_t,
                "cooling_temperature_set_point": t.int16s,
                "heating_temperature_set_point": t.int16s,
                "average_load_adjustment_percentage": t.int8s,
                "duty_cycle": t.uint8_t,
                "event_control": t.bitmap8,
            }
        )
        cancel_load_control_event: Final = _cmd(0x01, {
                "issuer_event_id": t.uint32_t,
                "device_class": t.bitmap16,
                "utility_enrollment_group": t.uint8_t,
                "cancel_control": t.bitmap8,
                "effective_time": t.UTCTime,
            }
        )
        cancel_all_load_control_events: Final = _cmd(0x02, {"cancel_control": t.bitmap8}
)


# SE 1.4 D.2.2.3.1.1.1 device class bits, named for rule files' load classes.
DEVICE_CLASS_BITS: Final[dict[str, int]] = {
    "hvac": 0x0001,
    "strip_heater": 0x0002,
    "baseboard_heater": 0x0002,
    "water_heater": 0x0004,
    "pool_pump": 0x0008,
    "smart_appliance": 0x0010,
    "irrigation_pump": 0x0020,
    "managed_commercial": 0x0040,
    "simple_misc": 0x0080,
    "exterior_lighting": 0x0100,
    "interior_lighting": 0x0200,
    "ev": 0x0400,
    "generation": 0x0800,
}

# ReportEventStatus EventStatus values (ZIGBEE_SE.md §2).
EVENT_STATUS: Final[dict[int, str]] = {
    0x01: "received",
    0x02: "started",
    0x03: "completed",
    0x04: "opted_out",
    0x05: "opted_in",
    0x06: "cancelled",
    0x07: "superseded",
    0x08: "partially_completed_opt_out",
    0x09: "partially_completed_opt_in",
    0x0A: "completed_no_participation",
    0xF6: "invalid_opt_out",
    0xF7: "event_not_found",
    0xF8: "rejected_invalid_cancel",
    0xF9: "rejected_invalid_cancel_effective_time",
    0xFB: "rejected_expired",
    0xFD: "rejected_undefined_event",
    0xFE: "rejected",
}
