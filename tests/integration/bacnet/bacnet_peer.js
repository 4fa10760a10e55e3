// An independent BACnet/IP peer for the tests: @bacnet-js/client (npm), driven by
// JSON lines on stdin, answering with JSON lines on stdout.
//
//   node bacnet_peer.js <bind-ip> <port> <broadcast-ip>
//
// Requests: {"id": n, "op": "whois"|"read"|"write"|"writemultiple"|"subscribe"|"register"|"whoisbbmd"|"dcc"|"reinitialize", ...}; every request
// gets {"id": n, "ok": true, "dt_ns": ..., ...} or {"id": n, "ok": false, "error": "..."}
// (dt_ns: the time node took to serve it, e.g. one ReadProperty round trip).
// Events: {"event": "iam", ...}, {"event": "cov", "confirmed": bool, "object": {type, instance},
// "values": [...], "t_ns": <process.hrtime.bigint() as string>}.
// Confirmed COV notifications are acknowledged with a SimpleACK.
'use strict';
const readline = require('readline');
const Bacnet = require('@bacnet-js/client').default || require('@bacnet-js/client');

const [bindIp, port, broadcast] = process.argv.slice(2);
const client = new Bacnet({ port: Number(port), interface: bindIp, broadcastAddress: broadcast, apduTimeout: 3000 });
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

client.on('error', (err) => out({ event: 'error', error: String(err) }));
client.on('iAm', (msg) => out({ event: 'iam', address: msg.header.sender.address, deviceId: msg.payload.deviceId, vendorId: msg.payload.vendorId }));
const onCov = (confirmed) => (msg) => {
  const t = process.hrtime.bigint().toString();
  if (confirmed) {
    client.simpleAckResponse(msg.header.sender, msg.service, msg.invokeId);
  }
  const p = msg.payload;
  out({ event: 'cov', confirmed, t_ns: t, object: p.monitoredObjectId, subscriberProcessId: p.subscriberProcessId,
        values: p.values.map((v) => ({ property: v.property.id, value: v.value.map((x) => x.value) })) });
};
client.on('covNotify', onCov(true));
client.on('covNotifyUnconfirmed', onCov(false));

async function handle(req) {
  const addr = { address: req.address };
  switch (req.op) {
    case 'whois':
      client.whoIs({ address: req.address });
      return {};
    case 'read': {
      const opts = req.arrayIndex !== undefined ? { arrayIndex: req.arrayIndex } : {};
      const r = await client.readProperty(addr, { type: req.type, instance: req.instance }, req.property, opts);
      return { values: r.values.map((v) => ({ type: v.type, value: v.value })) };
    }
    case 'write': {
      const opts = req.priority ? { priority: req.priority } : {};
      await client.writeProperty(addr, { type: req.type, instance: req.instance }, req.property, req.values, opts);
      return {};
    }
    case 'writemultiple':
      // one object, one property: [{objectId, values: [{property: {id, index}, value: [...], priority}]}]
      await client.writePropertyMultiple(addr, [{ objectId: { type: req.type, instance: req.instance },
        values: [{ property: { id: req.property, index: 0xffffffff }, value: req.values, priority: req.priority || 0 }] }]);
      return {};
    case 'subscribe':
      await client.subscribeCov(addr, { type: req.type, instance: req.instance }, req.subscribeId,
        Boolean(req.cancel), Boolean(req.confirmed), req.lifetime || 0);
      return {};
    case 'register':
      await client.registerForeignDevice(addr, req.ttl || 60);
      return {};
    case 'whoisbbmd':
      client.whoIsThroughBBMD(addr);
      return {};
    case 'dcc':  // DeviceCommunicationControl: disable (1) for 10 minutes
      await client.deviceCommunicationControl(addr, 10, 1);
      return {};
    case 'reinitialize':  // ReinitializeDevice: warmstart (1)
      await client.reinitializeDevice(addr, 1);
      return {};
    case 'ping':
      return { t_ns: process.hrtime.bigint().toString() };
    default:
      throw new Error('unknown op ' + req.op);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let req;
  try { req = JSON.parse(line); } catch (e) { out({ event: 'error', error: 'bad json' }); return; }
  const t0 = process.hrtime.bigint();
  const dt = () => (process.hrtime.bigint() - t0).toString();
  handle(req).then((r) => out({ id: req.id, ok: true, dt_ns: dt(), ...r }),
    (e) => out({ id: req.id, ok: false, dt_ns: dt(), error: String(e && e.message || e) }));
});
rl.on('close', () => { client.close(); process.exit(0); });
client.on('listening', () => out({ event: 'listening' }));
