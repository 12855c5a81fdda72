// Benchmark backends in their own process, so serving them does not share the load generator's event loop.
import http from "node:http";

const n = Number(process.argv[2] ?? 1);
const urls = [];
for (let i = 0; i < n; i++) {
  const body = Buffer.from(`hello from bench backend ${i + 1}\n`);
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(200, { "content-type": "text/plain", "content-length": body.length }).end(body));
  });
  server.keepAliveTimeout = 30000;
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  urls.push(`http://127.0.0.1:${server.address().port}`);
}
process.send({ urls });
