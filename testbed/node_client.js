// A Node https client (Node's own TLS: OpenSSL linked into the node binary) for the recorder tests.
// Usage: node node_client.js PORT CA_FILE COUNT INTERVAL_MS
// Sends COUNT POST requests to https://localhost:PORT/node/<i>, one every INTERVAL_MS, each on a new
// connection, and prints {"pid", "sent": [{i, t_ms}]} as JSON: t_ms is the time since process start.
const https = require("https");
const fs = require("fs");
const [port, caFile, count, interval] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);
const sent = [];

function one(i) {
  return new Promise((resolve, reject) => {
    const body = `node request ${i}`;
    const req = https.request({host: "localhost", port: Number(port), path: `/node/${i}`, method: "POST", ca,
                               agent: false, headers: {"content-length": Buffer.byteLength(body)}},
      (res) => { res.resume(); res.on("end", resolve); });
    req.on("error", reject);
    sent.push({i, t_ms: performance.now()});
    req.end(body);
  });
}

(async () => {
  for (let i = 0; i < Number(count); i++) {
    await one(i);
    if (i + 1 < Number(count)) await new Promise((r) => setTimeout(r, Number(interval)));
  }
  console.log(JSON.stringify({pid: process.pid, sent}));
})().catch((e) => { console.error(e); process.exit(1); });
