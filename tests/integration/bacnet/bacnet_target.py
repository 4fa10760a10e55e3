"""A BACnet device with commandable objects, the target of the actuator tests.

A separate bacpypes3 application in its own process (PEERS.md §3: on loopback it
must use another UDP port than the gateway).  Usage: ``python bacnet_target.py
IP/PREFIX:PORT``; prints ``ready`` once bound and runs until stdin closes.

Objects: device 4321, binary-output 3 (relinquish default active: the load runs
unless someone commands it), analog-value 7 (commandable, relinquish default 3000.0).
"""

from __future__ import annotations

import asyncio
import sys

from bacpypes3.app import Application
from bacpypes3.local.analog import AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryOutputObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject


async def main(address: str) -> None:
    device = DeviceObject(objectIdentifier=("device", 4321), objectName="target", vendorIdentifier=999)
    port = NetworkPortObject(address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1")
    app = Application.from_object_list([device, port])
    app.add_object(BinaryOutputObject(objectIdentifier=("binary-output", 3), objectName="relay",
                                      presentValue="active", relinquishDefault="active",
                                      outOfService=False, polarity="normal"))
    app.add_object(AnalogValueObjectCmd(objectIdentifier=("analog-value", 7), objectName="limit",
                                        presentValue=3000.0, relinquishDefault=3000.0,
                                        units="watts", covIncrement=1.0, outOfService=False))
    server = next(iter(app.link_layers.values())).server
    await server._local_transport_ready.wait()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    app.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
