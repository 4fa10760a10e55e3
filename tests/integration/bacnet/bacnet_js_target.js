// A tiny BACnet device on @bacnet-js/client (npm): the independent target of the
// actuator test.  It decodes our WriteProperty requests with its own codec, keeps a
// priority array for binary-output 3 and prints every write it accepted:
//
//   node bacnet_js_target.js <bind-ip> <port>
//   stdout: {"event": "listening"} then {"event": "write", "object": {...}, "property": 85,
//           "priority": 9, "values": [{"type": 9, "value": 0}]} per write.
// Runs until stdin closes.
'use strict';
const readline = require('readline');
const Bacnet = require('@bacnet-js/client').default || require('@bacnet-js/client');

const [bindIp, port] = process.argv.slice(2);
const client = new Bacnet({ port: Number(port), interface: bindIp, broadcastAddress: '127.255.255.255' });
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const BO = 4, PV = 85, PRIORITY_ARRAY = 87, T_NULL = 0, T_ENUMERATED = 9;
const slots = new Array(16).fill(null);  // binary-output 3; relinquish default: active (1)
const presentValue = () => { const v = slots.find((x) => x !== null); return v === undefined ? 1 : v; };

client.on('writeProperty', (msg) => {
  const p = msg.payload;
  const ok = p.objectId.type === BO && p.objectId.instance === 3 && p.value.property.id === PV;
  out({ event: 'write', object: p.objectId, property: p.value.property.id, priority: p.value.priority,
        values: p.value.value.map((v) => ({ type: v.type, value: v.value === undefined ? null : v.value })) });
  if (!ok) {
    client.errorResponse(msg.header.sender, msg.service, msg.invokeId, 1, 31);  // object / unknown-object
    return;
  }
  const v = p.value.value[0];
  slots[p.value.priority - 1] = v.type === T_NULL ? null : v.value;
  client.simpleAckResponse(msg.header.sender, msg.service, msg.invokeId);
});
client.on('readProperty', (msg) => {
  const p = msg.payload;
  if (p.objectId.type !== BO || p.objectId.instance !== 3) {
    client.errorResponse(msg.header.sender, msg.service, msg.invokeId, 1, 31);
    return;
  }
  if (p.property.id === PV) {
    client.readPropertyResponse(msg.header.sender, msg.invokeId, p.objectId, p.property,
      [{ type: T_ENUMERATED, value: presentValue() }]);
  } else if (p.property.id === PRIORITY_ARRAY) {
    client.readPropertyResponse(msg.header.sender, msg.invokeId, p.objectId, p.property,
      slots.map((s) => (s === null ? { type: T_NULL, value: null } : { type: T_ENUMERATED, value: s })));
  } else {
    client.errorResponse(msg.header.sender, msg.service, msg.invokeId, 2, 32);  // property / unknown-property
  }
});
client.on('listening', () => out({ event: 'listening' }));
const rl = readline.createInterface({ input: process.stdin });
rl.on('close', () => { client.close(); process.exit(0); });
