// Small HTTP backends on loopback for `npm run dev`: each answers with its own name and port.
import http from "node:http";

const ports = process.argv.slice(2).map(Number);
for (const [i, port] of ports.entries()) {
  const name = `backend-${i + 1}`;
  http
    .createServer((req, res) => {
      if (req.url === "/health") {
        res.writeHead(200, { "content-type": "text/plain" }).end("ok");
        return;
      }
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`hello from ${name} (127.0.0.1:${port}) ${req.method} ${req.url}`);
    })
    .listen(port, "127.0.0.1");
}
console.log(`demo backends listening on ${ports.map((p) => `127.0.0.1:${p}`).join(", ")}`);
