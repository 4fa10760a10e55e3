"""Simulated ZigBee devices with their own ZDO/ZCL codec, and a virtual radio for zigpy.

The devices encode and decode every frame with ``struct`` from the ZigBee
specification (ZDO: ZigBee 2015 §2.4; ZCL: ZCL 7 §2.4; Smart Energy payloads:
../shared/ZIGBEE_SE.md), never with zigpy's serializers, so a codec bug on the
gateway side is not mirrored here.  Only the packet envelope (``ZigbeePacket``)
comes from zigpy: that is what every radio library hands to zigpy.

``VirtualRadioApp`` is a zigpy ``ControllerApplication`` whose ``send_packet``
delivers to the simulated device with the destination NWK address, and whose
devices answer through ``packet_received``, exactly where a real radio library
(bellows, zigpy-znp) plugs in.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import zigpy.application
import zigpy.endpoint
import zigpy.exceptions
import zigpy.state
import zigpy.types as zt
import zigpy.zdo.types as zdo_t

UTC2000 = datetime(2000, 1, 1, tzinfo=UTC)
# zigpy housekeeping that would talk to a radio we do not have
RADIO_CONFIG = {"backup_enabled": False, "topology_scan_enabled": False, "watchdog_enabled": False}

IHD_IEEE = "00:0d:6f:00:00:00:aa:01"
PLUG_IEEE = "00:0d:6f:00:00:00:bb:02"
ZDO_NODE_DESC_REQ, ZDO_SIMPLE_DESC_REQ, ZDO_ACTIVE_EP_REQ = 0x0002, 0x0004, 0x0005

# ---------------------------------------------------------------- ZCL codec
# type id -> (struct format or size, signed) for the fixed-length types we meet
_INT_TYPES = {
    0x10: (1, False), 0x18: (1, False), 0x19: (2, False), 0x20: (1, False), 0x21: (2, False),
    0x22: (3, False), 0x23: (4, False), 0x25: (6, False), 0x28: (1, True), 0x29: (2, True),
    0x2A: (3, True), 0x2B: (4, True), 0x30: (1, False), 0x31: (2, False), 0xE2: (4, False),
}


def enc_value(type_id: int, value: Any) -> bytes:
    if type_id in (0x41, 0x42):
        raw = value if isinstance(value, bytes) else str(value).encode()
        return bytes([len(raw)]) + raw
    size, signed = _INT_TYPES[type_id]
    return int(value).to_bytes(size, "little", signed=signed)


def dec_value(type_id: int, data: bytes) -> tuple[Any, bytes]:
    if type_id in (0x41, 0x42):
        n = data[0]
        raw = data[1:1 + n]
        return (raw if type_id == 0x41 else raw.decode()), data[1 + n:]
    size, signed = _INT_TYPES[type_id]
    return int.from_bytes(data[:size], "little", signed=signed), data[size:]


@dataclass(frozen=True)
class Zcl:
    frame_control: int
    tsn: int
    command: int
    payload: bytes

    @property
    def cluster_specific(self) -> bool:
        return self.frame_control & 0x03 == 0x01

    @property
    def server_to_client(self) -> bool:
        return bool(self.frame_control & 0x08)

    @property
    def disable_default_response(self) -> bool:
        return bool(self.frame_control & 0x10)

    @classmethod
    def parse(cls, data: bytes) -> Zcl:
        fc = data[0]
        off = 3 if fc & 0x04 else 1  # manufacturer code
        return cls(fc, data[off], data[off + 1], data[off + 2:])

    @staticmethod
    def build(*, tsn: int, command: int, payload: bytes, cluster_specific: bool, server_to_client: bool,
              disable_default_response: bool = False) -> bytes:
        fc = (0x01 if cluster_specific else 0x00) | (0x08 if server_to_client else 0) \
            | (0x10 if disable_default_response else 0)
        return bytes([fc, tsn, command]) + payload


def parse_read_attributes_response(payload: bytes) -> dict[int, tuple[int, Any]]:
    """attr id -> (status, value); value is (type, value) on success."""
    out: dict[int, tuple[int, Any]] = {}
    while payload:
        attrid, status = struct.unpack_from("<HB", payload)
        payload = payload[3:]
        if status == 0:
            type_id = payload[0]
            value, payload = dec_value(type_id, payload[1:])
            out[attrid] = (0, (type_id, value))
        else:
            out[attrid] = (status, None)
    return out


def parse_report(payload: bytes) -> dict[int, tuple[int, Any]]:
    out: dict[int, tuple[int, Any]] = {}
    while payload:
        attrid, type_id = struct.unpack_from("<HB", payload)
        value, payload = dec_value(type_id, payload[3:])
        out[attrid] = (type_id, value)
    return out


# ------------------------------------------------- Smart Energy payloads (SE 1.4)
def parse_publish_price(p: bytes) -> dict[str, Any]:
    """PublishPrice per ZIGBEE_SE.md §1.3 (fields #1-#19, truncation allowed after #11)."""
    provider, = struct.unpack_from("<I", p)
    n = p[4]
    label = p[5:5 + n]
    rest = p[5 + n:]
    (issuer, now, uom, currency, td_tier, tiers_reg, start, duration, price) = struct.unpack_from("<IIBHBBIHI", rest)
    out: dict[str, Any] = {
        "provider_id": provider, "rate_label": label, "issuer_event_id": issuer, "current_time": now,
        "unit_of_measure": uom, "currency": currency, "trailing_digits": td_tier >> 4, "tier": td_tier & 0x0F,
        "num_tiers": tiers_reg >> 4, "register_tier": tiers_reg & 0x0F, "start_time": start,
        "duration_min": duration, "price": price, "size": len(p),
    }
    opt = rest[struct.calcsize("<IIBHBBIHI"):]
    names = [("price_ratio", "<B"), ("generation_price", "<I"), ("generation_price_ratio", "<B"),
             ("alternate_cost_delivered", "<I"), ("alternate_cost_unit", "<B"),
             ("alternate_cost_trailing_digit", "<B"), ("number_of_block_thresholds", "<B"),
             ("price_control", "<B")]
    for name, fmt in names:
        size = struct.calcsize(fmt)
        if len(opt) < size:
            break
        out[name], = struct.unpack_from(fmt, opt)
        opt = opt[size:]
    return out


LCE_FORMAT = "<IHBIHBBBhhbBB"  # ZIGBEE_SE.md §2: 23 bytes


def parse_load_control_event(p: bytes) -> dict[str, Any]:
    assert len(p) == struct.calcsize(LCE_FORMAT) == 23, len(p)
    keys = ("issuer_event_id", "device_class", "utility_enrollment_group", "start_time", "duration_min",
            "criticality", "cooling_offset", "heating_offset", "cooling_set_point", "heating_set_point",
            "avg_load_adjustment", "duty_cycle", "event_control")
    return dict(zip(keys, struct.unpack(LCE_FORMAT, p), strict=True))


def parse_cancel_load_control_event(p: bytes) -> dict[str, Any]:
    assert len(p) == 12, len(p)
    keys = ("issuer_event_id", "device_class", "utility_enrollment_group", "cancel_control", "effective_time")
    return dict(zip(keys, struct.unpack("<IHBBI", p), strict=True))


def report_event_status(issuer: int, status: int, when: datetime, criticality: int) -> bytes:
    """ReportEventStatus, 60 bytes, as the SiLabs DRLC client sends it (signature type 0 + 42 x 0xFF)."""
    t2000 = int((when - UTC2000).total_seconds())
    return struct.pack("<IBIBHHbBBB", issuer, status, t2000, criticality, 0x8000, 0x8000, -128, 0xFF, 0, 0) \
        + b"\xff" * 42


# ---------------------------------------------------------------- devices
@dataclass
class Received:
    cluster: int
    src_ep: int
    dst_ep: int
    profile: int
    zcl: Zcl
    raw: bytes


@dataclass
class SimDevice:
    """One simulated node: answers ZDO discovery and ZCL for its own server clusters."""

    ieee: str
    nwk: int
    profile: int
    device_type: int
    in_clusters: list[int]
    out_clusters: list[int]
    model: str
    manufacturer: str
    endpoint: int = 1
    network: VirtualNetwork | None = None
    received: list[Received] = field(default_factory=list)
    attributes: dict[tuple[int, int], tuple[int, Any]] = field(default_factory=dict)
    written: list[tuple[int, int, Any]] = field(default_factory=list)
    _tsn: int = 100
    _waiters: list[tuple[Any, asyncio.Future[Received]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.attributes[(0x0000, 0x0004)] = (0x42, self.manufacturer)
        self.attributes[(0x0000, 0x0005)] = (0x42, self.model)

    def next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) % 256
        return self._tsn

    # --- radio side
    def deliver(self, packet: zt.ZigbeePacket) -> None:
        data = packet.data.serialize()
        if packet.dst_ep == 0:
            self._zdo(packet.cluster_id, data)
            return
        zcl = Zcl.parse(data)
        rec = Received(int(packet.cluster_id), int(packet.src_ep), int(packet.dst_ep), int(packet.profile_id),
                       zcl, data)
        self.received.append(rec)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(rec):
                fut.set_result(rec)
                self._waiters.remove((pred, fut))
        self.on_zcl(rec)

    def _zdo(self, cluster: int, data: bytes) -> None:
        tsn = data[0]
        if cluster == ZDO_NODE_DESC_REQ:
            # logical type router (1); 2.4 GHz band (byte 1 bit 6); MAC capability: mains,
            # rx on when idle, full function device (0x8E); manufacturer 0x1234; buffer 82;
            # transfers 82 / 82; server mask 0; descriptor capability 0.
            desc = struct.pack("<BBBHBHHHB", 0x01, 0x40, 0x8E, 0x1234, 82, 82, 0, 82, 0)
            self.send_zdo(cluster | 0x8000, bytes([tsn, 0]) + struct.pack("<H", self.nwk) + desc)
        elif cluster == ZDO_ACTIVE_EP_REQ:
            self.send_zdo(cluster | 0x8000, bytes([tsn, 0]) + struct.pack("<HB", self.nwk, 1) + bytes([self.endpoint]))
        elif cluster == ZDO_SIMPLE_DESC_REQ:
            body = struct.pack("<BHHB", self.endpoint, self.profile, self.device_type, 0)
            body += bytes([len(self.in_clusters)]) + b"".join(struct.pack("<H", c) for c in self.in_clusters)
            body += bytes([len(self.out_clusters)]) + b"".join(struct.pack("<H", c) for c in self.out_clusters)
            self.send_zdo(cluster | 0x8000, bytes([tsn, 0]) + struct.pack("<HB", self.nwk, len(body)) + body)

    def on_zcl(self, rec: Received) -> None:
        zcl = rec.zcl
        if zcl.server_to_client and (zcl.cluster_specific or zcl.command not in (0x00, 0x02)):
            return  # answers and pushes from the gateway: subclasses look at them
        # Read/Write Attributes; direction server -> client addresses the *client's* attributes
        if not zcl.cluster_specific and zcl.command == 0x00:  # Read Attributes
            ids = struct.unpack(f"<{len(zcl.payload) // 2}H", zcl.payload)
            out = b""
            for a in ids:
                if (rec.cluster, a) in self.attributes:
                    type_id, value = self.attributes[(rec.cluster, a)]
                    out += struct.pack("<HBB", a, 0, type_id) + enc_value(type_id, value)
                else:
                    out += struct.pack("<HB", a, 0x86)
            self.reply(rec, 0x01, out, cluster_specific=False)
        elif not zcl.cluster_specific and zcl.command == 0x02:  # Write Attributes
            p = zcl.payload
            while p:
                attrid, type_id = struct.unpack_from("<HB", p)
                value, p = dec_value(type_id, p[3:])
                self.written.append((rec.cluster, attrid, value))
                self.attributes[(rec.cluster, attrid)] = (type_id, value)
            self.reply(rec, 0x04, b"\x00", cluster_specific=False)
        elif zcl.cluster_specific:
            self.on_cluster_command(rec)

    def on_cluster_command(self, rec: Received) -> None:
        self.default_response(rec, 0x81)

    def default_response(self, rec: Received, status: int) -> None:
        if not rec.zcl.disable_default_response:
            self.reply(rec, 0x0B, bytes([rec.zcl.command, status]), cluster_specific=False)

    def reply(self, rec: Received, command: int, payload: bytes, *, cluster_specific: bool) -> None:
        frame = Zcl.build(tsn=rec.zcl.tsn, command=command, payload=payload, cluster_specific=cluster_specific,
                          server_to_client=not rec.zcl.server_to_client, disable_default_response=True)
        self.send(rec.cluster, frame, dst_ep=rec.src_ep, profile=rec.profile)

    # --- sending
    def send_zdo(self, cluster: int, payload: bytes) -> None:
        self._emit(0, 0, 0x0000, cluster, payload)

    def send(self, cluster: int, frame: bytes, *, dst_ep: int, profile: int | None = None) -> None:
        self._emit(self.endpoint, dst_ep, self.profile if profile is None else profile, cluster, frame)

    def _emit(self, src_ep: int, dst_ep: int, profile: int, cluster: int, data: bytes) -> None:
        assert self.network is not None and self.network.app is not None
        app = self.network.app
        packet = zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=self.nwk), src_ep=src_ep,
            dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000), dst_ep=dst_ep,
            tsn=data[0] if dst_ep == 0 and src_ep == 0 else Zcl.parse(data).tsn,
            profile_id=profile, cluster_id=cluster, data=zt.SerializableBytes(data), lqi=200, rssi=-40,
        )
        asyncio.get_running_loop().call_soon(app.packet_received, packet)

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> Received:
        for rec in self.received:
            if pred(rec):
                return rec
        fut: asyncio.Future[Received] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        async with asyncio.timeout(timeout):
            return await fut

    async def request(self, cluster: int, command: int, payload: bytes, *, dst_ep: int, cluster_specific: bool,
                      disable_default_response: bool = False, timeout: float = 10.0) -> Received:
        """Send a client -> server command to the gateway and wait for the answer with the same TSN."""
        tsn = self.next_tsn()
        frame = Zcl.build(tsn=tsn, command=command, payload=payload, cluster_specific=cluster_specific,
                          server_to_client=False, disable_default_response=disable_default_response)
        start = len(self.received)
        self.send(cluster, frame, dst_ep=dst_ep)
        return await self.wait_for(
            lambda r: r.cluster == cluster and r.zcl.tsn == tsn and r.zcl.server_to_client
            and self.received.index(r) >= start, timeout)

    async def read_attributes(self, cluster: int, attrs: list[int], *, dst_ep: int) -> dict[int, tuple[int, Any]]:
        rec = await self.request(cluster, 0x00, struct.pack(f"<{len(attrs)}H", *attrs), dst_ep=dst_ep,
                                 cluster_specific=False)
        assert not rec.zcl.cluster_specific and rec.zcl.command == 0x01, rec
        return parse_read_attributes_response(rec.zcl.payload)


@dataclass
class SimDisplay(SimDevice):
    """An in-home display: Metering/Price/DRLC/Time client; acknowledges DR events like a SiLabs client."""

    auto_ack: bool = True
    device_class_value: int = 0x0FFF

    def on_zcl(self, rec: Received) -> None:
        super().on_zcl(rec)
        zcl = rec.zcl
        if rec.cluster == 0x0701 and zcl.cluster_specific and zcl.server_to_client and zcl.command == 0x00:
            lce = parse_load_control_event(zcl.payload)
            if self.auto_ack and lce["device_class"] & self.device_class_value:
                when = datetime.now(UTC).replace(microsecond=0)
                frame = Zcl.build(tsn=zcl.tsn, command=0x00, cluster_specific=True, server_to_client=False,
                                  disable_default_response=True,
                                  payload=report_event_status(lce["issuer_event_id"], 0x01, when, lce["criticality"]))
                self.send(0x0701, frame, dst_ep=rec.src_ep, profile=rec.profile)


@dataclass
class SimPlug(SimDevice):
    """A smart plug: On/Off and Level Control server; reports its state after every change."""

    on: bool = True
    level: int = 254
    commands: list[tuple[int, int, bytes]] = field(default_factory=list)  # (cluster, command, payload)
    report: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.attributes[(0x0006, 0x0000)] = (0x10, 1)
        self.attributes[(0x0008, 0x0000)] = (0x20, 254)

    def on_cluster_command(self, rec: Received) -> None:
        zcl = rec.zcl
        self.commands.append((rec.cluster, zcl.command, zcl.payload))
        if rec.cluster == 0x0006 and zcl.command in (0x00, 0x01, 0x02):
            self.on = {0x00: False, 0x01: True, 0x02: not self.on}[zcl.command]
        elif rec.cluster == 0x0008 and zcl.command == 0x04:  # move to level (with on/off)
            self.level = zcl.payload[0]
            self.on = self.level > 1
        else:
            self.default_response(rec, 0x81)
            return
        self.attributes[(0x0006, 0x0000)] = (0x10, int(self.on))
        self.attributes[(0x0008, 0x0000)] = (0x20, self.level)
        self.default_response(rec, 0x00)
        if self.report:
            payload = struct.pack("<HBB", 0x0000, 0x10, int(self.on))
            frame = Zcl.build(tsn=self.next_tsn(), command=0x0A, payload=payload, cluster_specific=False,
                              server_to_client=True, disable_default_response=True)
            self.send(0x0006, frame, dst_ep=1)


# ---------------------------------------------------------------- the radio
D = TypeVar("D", bound=SimDevice)


class VirtualNetwork:
    def __init__(self) -> None:
        self.devices: dict[int, SimDevice] = {}
        self.app: Any = None
        self.sent: list[zt.ZigbeePacket] = []
        self.link_keys: list[tuple[str, bytes, int]] = []
        self.initialized: set[Any] = set()

    def add(self, device: D) -> D:
        device.network = self
        self.devices[device.nwk] = device
        return device

    def join(self, device: SimDevice) -> None:
        """What a radio library reports when a device joins (zigpy then interviews it)."""
        self.app.handle_join(nwk=zt.NWK(device.nwk), ieee=zt.EUI64.convert(device.ieee), parent_nwk=zt.NWK(0))

    async def joined(self, device: SimDevice, timeout: float = 15.0) -> Any:
        """Wait until zigpy has interviewed ``device`` (its ``device_initialized`` event)."""
        ieee = zt.EUI64.convert(device.ieee)
        async with asyncio.timeout(timeout):
            while ieee not in self.initialized:
                await asyncio.sleep(0.01)
        return self.app.devices[ieee]

    def device_initialized(self, device: Any) -> None:  # zigpy listener event
        self.initialized.add(device.ieee)


class VirtualRadioApp(zigpy.application.ControllerApplication):
    """zigpy's radio API implemented over a :class:`VirtualNetwork` (subclass per test sets ``network``)."""

    network: VirtualNetwork
    coordinator_ieee = "00:12:4b:00:01:02:03:04"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._descriptors: list[zdo_t.SimpleDescriptor] = []
        self.network.app = self
        self.add_listener(self.network)

    async def connect(self) -> None:
        return None

    async def disconnect(self) -> None:
        return None

    async def start_network(self) -> None:
        await self.register_endpoints()
        ieee = self.state.node_info.ieee
        dev = self.add_device(ieee, zt.NWK(0))
        for desc in self._descriptors:
            ep = dev.add_endpoint(desc.endpoint)
            ep.profile_id = desc.profile
            ep.device_type = desc.device_type
            for c in desc.input_clusters:
                ep.add_input_cluster(c)
            for c in desc.output_clusters:
                ep.add_output_cluster(c)
            ep.status = zigpy.endpoint.Status.ZDO_INIT
        dev.node_desc = zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.Coordinator, complex_descriptor_available=0,
            user_descriptor_available=0, reserved=0, aps_flags=0, frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=zdo_t.NodeDescriptor.MACCapabilityFlags.AllocateAddress, manufacturer_code=0x1234,
            maximum_buffer_size=82, maximum_incoming_transfer_size=82, server_mask=0,
            maximum_outgoing_transfer_size=82, descriptor_capability_field=0)

    async def force_remove(self, dev: Any) -> None:
        return None

    async def add_endpoint(self, descriptor: zdo_t.SimpleDescriptor) -> None:
        self._descriptors.append(descriptor)

    async def permit_ncp(self, time_s: int = 60) -> None:
        return None

    async def permit_with_link_key(self, node: Any, link_key: Any, time_s: int = 60) -> None:
        self.network.link_keys.append((str(node), bytes(link_key), time_s))

    async def reset_network_info(self) -> None:
        return None

    async def write_network_info(self, *, network_info: Any, node_info: Any) -> None:
        return None

    async def load_network_info(self, *, load_devices: bool = False) -> None:
        self.state.network_info = zigpy.state.NetworkInfo(
            extended_pan_id=zt.ExtendedPanId.convert("aa:bb:cc:dd:ee:ff:00:11"), pan_id=zt.PanId(0x1A62),
            nwk_update_id=0, nwk_manager_id=zt.NWK(0), channel=self.config["network"]["channel"] or 15,
            channel_mask=zt.Channels.ALL_CHANNELS, security_level=5,
            network_key=zigpy.state.Key(key=zt.KeyData(bytes(range(16))), seq=0, tx_counter=0),
            tc_link_key=zigpy.state.Key(key=zt.KeyData(b"ZigBeeAlliance09"), seq=0, tx_counter=0),
            key_table=[], children=[], nwk_addresses={}, stack_specific={}, metadata={}, source="virtual",
        )
        self.state.node_info = zigpy.state.NodeInfo(
            nwk=zt.NWK(0), ieee=zt.EUI64.convert(self.coordinator_ieee), logical_type=zdo_t.LogicalType.Coordinator,
            model="Virtual", manufacturer="han-gateway tests", version="1")

    async def send_packet(self, packet: zt.ZigbeePacket) -> None:
        self.network.sent.append(packet)
        if packet.dst.addr_mode != zt.AddrMode.NWK:
            return  # broadcasts (permit joining, ...): nobody to answer
        device = self.network.devices.get(int(packet.dst.address))
        if device is None:
            raise zigpy.exceptions.DeliveryError(f"no device 0x{int(packet.dst.address):04x}")
        asyncio.get_running_loop().call_soon(device.deliver, packet)


def app_class_for(network: VirtualNetwork) -> type[VirtualRadioApp]:
    return type("TestRadioApp", (VirtualRadioApp,), {"network": network})


def utc2000(dt: datetime) -> int:
    return int((dt - UTC2000).total_seconds())


def from_utc2000(value: int) -> datetime:
    return UTC2000 + timedelta(seconds=value)


def make_display(network: VirtualNetwork, *, profile: int = 0x0109, nwk: int = 0x1001) -> SimDisplay:
    return network.add(SimDisplay(
        ieee=IHD_IEEE, nwk=nwk, profile=profile, device_type=0x0502,
        in_clusters=[0x0000], out_clusters=[0x000A, 0x0700, 0x0701, 0x0702],
        model="IHD-Sim", manufacturer="Sim Displays"))


def make_plug(network: VirtualNetwork, *, nwk: int = 0x2002, report: bool = True) -> SimPlug:
    return network.add(SimPlug(
        ieee=PLUG_IEEE, nwk=nwk, profile=0x0104, device_type=0x0051,
        in_clusters=[0x0000, 0x0006, 0x0008], out_clusters=[], model="Plug-Sim", manufacturer="Sim Plugs",
        report=report))
