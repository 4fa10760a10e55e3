// Decode and encode ZCL frames with zigbee-herdsman's codec (an independent implementation).
// stdin: JSON lines, either {"cluster": <id>, "hex": "<frame>"} (decode) or
// {"encode": {"cluster": "seMetering", "command": "read", "tsn": 5, "global": true, "payload": ...}};
// stdout: one JSON line per input: {"cluster": name, "command": name, "direction": n, "tsn": n,
// "disableDefaultResponse": b, "payload": ...}, {"hex": "<frame>"} or {"error": message}.
"use strict";
const {Zcl} = require("zigbee-herdsman");
const readline = require("readline");

const rl = readline.createInterface({input: process.stdin});
rl.on("line", (line) => {
    if (!line.trim()) return;
    let out;
    try {
        const req = JSON.parse(line);
        if (req.encode) {
            const e = req.encode;
            const frame = Zcl.Frame.create(
                e.global ? Zcl.FrameType.GLOBAL : Zcl.FrameType.SPECIFIC, Zcl.Direction.CLIENT_TO_SERVER,
                false, undefined, e.tsn, e.command, e.cluster, e.payload, {});
            process.stdout.write(JSON.stringify({hex: frame.toBuffer().toString("hex")}) + "\n");
            return;
        }
        const buf = Buffer.from(req.hex, "hex");
        const header = Zcl.Header.fromBuffer(buf);
        const frame = Zcl.Frame.fromBuffer(req.cluster, header, buf, {});
        out = {
            cluster: frame.cluster.name,
            command: frame.command.name,
            direction: frame.header.frameControl.direction,
            frameType: frame.header.frameControl.frameType,
            disableDefaultResponse: frame.header.frameControl.disableDefaultResponse,
            tsn: frame.header.transactionSequenceNumber,
            payload: frame.payload,
        };
    } catch (e) {
        out = {error: String(e && e.message ? e.message : e)};
    }
    process.stdout.write(JSON.stringify(out, (k, v) => (typeof v === "bigint" ? Number(v) : v)) + "\n");
});
