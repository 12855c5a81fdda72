// Benchmark backends in their own process, so serving them does not share the load generator's event loop.
// The parent can send {kill: i} to make backend i refuse connections (a dead backend), {slow: i, ms}
// to make it answer after ms, and {inflight: true} to learn how many requests each holds right now.
import http from "node:http";

const n = Number(process.argv[2] ?? 1);
const urls = [];
const servers = [];
const served = [];
const inflight = [];
const slowMs = [];
for (let i = 0; i < n; i++) {
  const body = Buffer.from(`hello from bench backend ${i + 1}\n`);
  const sockets = new Set();
  served.push(0);
  inflight.push(0);
  const server = http.createServer((req, res) => {
    inflight[i]++;
    res.on("close", () => inflight[i]--);
    req.resume();
    req.on("end", () => {
      const answer = () => {
        served[i]++;
        res.writeHead(200, { "content-type": "text/plain", "content-length": body.length }).end(body);
      };
      if (slowMs[i]) setTimeout(answer, slowMs[i]);
      else answer();
    });
  });
  server.keepAliveTimeout = 30000;
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  urls.push(`http://127.0.0.1:${server.address().port}`);
  servers.push({ server, sockets });
}
process.on("message", (m) => {
  if (m.kill !== undefined) {
    const { server, sockets } = servers[m.kill];
    server.close();
    for (const s of sockets) s.destroy();
    process.send({ killed: m.kill, served: [...served] });
  }
  if (m.served) process.send({ served: [...served] });
  if (m.slow !== undefined) {
    slowMs[m.slow] = m.ms;
    process.send({ slow: m.slow });
  }
  if (m.inflight) process.send({ inflight: [...inflight] });
});
process.send({ urls });
