// A loopback fake of the Cloudflare v4 DNS records API (list, create, delete) for the tests: real HTTP, the v4 envelope, a bearer token checked on every call, records kept in memory.
import http from "node:http";
import { randomBytes } from "node:crypto";

/**
 * Starts the fake on 127.0.0.1. `token`: the only bearer token accepted (401 and an envelope error
 * otherwise; with `echo`, that error quotes the header it got, as a careless proxy might, so a test
 * can show the token is redacted wherever the error goes). Answers `{ base, calls, records(zone, name), seed(zone, record), stop() }`: `base`
 * is what CLOUDFLARE_API_BASE takes, `calls` every request seen ({ method, path, auth }).
 */
export async function startCloudflareDns({ token, echo = false }) {
  const zones = new Map(); // zone id -> Map(record id -> record)
  const calls = [];
  const zone = (id) => zones.get(id) ?? zones.set(id, new Map()).get(id);
  const make = (zoneId, r) => {
    const id = randomBytes(16).toString("hex");
    const record = { id, zone_id: zoneId, type: r.type, name: r.name, content: r.content, ttl: r.ttl ?? 1, proxied: r.proxied ?? false, comment: r.comment ?? null };
    zone(zoneId).set(id, record);
    return record;
  };
  const send = (res, status, result, errors = []) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ success: errors.length === 0, errors, messages: [], result }));
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url, "http://fake");
      calls.push({ method: req.method, path: url.pathname + url.search, auth: req.headers.authorization ?? null });
      if (req.headers.authorization !== `Bearer ${token}`) {
        const got = echo ? ` (got ${req.headers.authorization ?? "nothing"})` : "";
        return send(res, 401, null, [{ code: 10000, message: `Authentication error${got}` }]);
      }
      const m = /^\/client\/v4\/zones\/([^/]+)\/dns_records(?:\/([^/]+))?$/.exec(url.pathname);
      if (!m) return send(res, 404, null, [{ code: 7003, message: "Could not route to " + url.pathname }]);
      const [, zoneId, recordId] = m;
      const records = zone(zoneId);
      if (req.method === "GET" && !recordId) {
        const name = url.searchParams.get("name");
        const list = [...records.values()].filter((r) => !name || r.name === name);
        return send(res, 200, list);
      }
      if (req.method === "POST" && !recordId) {
        let body;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString());
        } catch {
          return send(res, 400, null, [{ code: 9207, message: "Request body is invalid." }]);
        }
        if (!["A", "AAAA"].includes(body.type) || !body.name || !body.content) {
          return send(res, 400, null, [{ code: 9000, message: "DNS name, type and content are required" }]);
        }
        return send(res, 200, make(zoneId, body));
      }
      if (req.method === "DELETE" && recordId) {
        if (!records.delete(recordId)) return send(res, 404, null, [{ code: 81044, message: "Record does not exist." }]);
        return send(res, 200, { id: recordId });
      }
      return send(res, 405, null, [{ code: 10405, message: "Method not allowed" }]);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${server.address().port}/client/v4`;
  return {
    base,
    calls,
    /** The records of `name` in `zone`, as the API would list them. */
    records: (zoneId, name) => [...zone(zoneId).values()].filter((r) => r.name === name),
    /** Adds a record as someone else would (no FlowBalance marker unless given). */
    seed: (zoneId, record) => make(zoneId, record),
    stop: () => new Promise((r) => server.close(() => r())),
  };
}
