// Starts the built FlowBalance Worker in workerd through Miniflare, with a SQLite-backed Durable Object and a local D1.
import { Log, LogLevel, Miniflare } from "miniflare";
import { readFileSync, readdirSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

// Miniflare would otherwise fetch its default `request.cf` from the network: stay on loopback.
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const API_SECRET = "test-secret-0123456789";

// `buildDir`: another build of the Worker (a benchmark's baseline); default this checkout's.
// `miniflare`: extra Miniflare options (a profiler's inspectorPort).
// `migrations: false`: leave D1 without its tables, so every D1 query fails (D1 unavailable).
export async function startBalancer({ defaultBackends, bindings = {}, persistDir, buildDir = path.join(root, "build"), miniflare = {}, migrations = true } = {}) {
  const mf = new Miniflare({
    scriptPath: path.join(buildDir, "index.js"),
    modules: true,
    modulesRoot: buildDir,
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"], fallthrough: true }],
    compatibilityDate: "2025-09-01",
    durableObjects: {
      BALANCER: { className: "Balancer", useSQLite: true },
      THROTTLE: { className: "LoginThrottle", useSQLite: true },
      ACCOUNTS: { className: "Accounts", useSQLite: true },
      PROBER: { className: "Prober", useSQLite: true },
    },
    d1Databases: ["DB"],
    bindings: {
      DEFAULT_BACKENDS: typeof defaultBackends === "string" ? defaultBackends : JSON.stringify(defaultBackends ?? ""),
      API_SECRET,
      ...bindings,
    },
    ...(persistDir ? { durableObjectsPersist: path.join(persistDir, "do"), d1Persist: path.join(persistDir, "d1") } : {}),
    host: "127.0.0.1",
    port: 0,
    // FB_LOG=1 shows the Worker's console output while debugging a test.
    ...(process.env.FB_LOG ? { log: new Log(LogLevel.DEBUG) } : {}),
    ...miniflare,
  });
  const url = await mf.ready;
  const db = await mf.getD1Database("DB");
  if (migrations) await applyMigrations(db);
  return {
    mf,
    url,
    db,
    /** Sends a request for `host` through the Worker. */
    fetch(host, pathname = "/", init = {}) {
      return mf.dispatchFetch(`http://${host}${pathname}`, init);
    },
    /** Real HTTP/1.1 to the runtime's socket (dispatchFetch buffers bodies and drops Content-Length). */
    raw(host, pathname, { method = "GET", headers = {}, body } = {}) {
      const u = new URL(url);
      return new Promise((resolve, reject) => {
        const req = http.request(
          { host: u.hostname, port: u.port, path: pathname, method, headers: { host, ...headers, ...(body != null ? { "content-length": Buffer.byteLength(body) } : {}) } },
          (res) => {
            const chunks = [];
            res.on("data", (c) => chunks.push(c));
            res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    },
    admin(pathname, init = {}) {
      const headers = { authorization: `Bearer ${API_SECRET}`, ...(init.headers ?? {}) };
      return mf.dispatchFetch(`http://localhost${pathname}`, { ...init, headers });
    },
    async stop() {
      await mf.dispose();
    },
  };
}

/** Applies each migration in migrations/ once, as `wrangler d1 migrations apply` does (a persisted D1
 * keeps its d1_migrations table across restarts: ALTER TABLE cannot run twice). */
export async function applyMigrations(db) {
  await db.prepare("CREATE TABLE IF NOT EXISTS d1_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TEXT)").run();
  const done = new Set((await db.prepare("SELECT name FROM d1_migrations").all()).results.map((r) => r.name));
  for (const file of readdirSync(path.join(root, "migrations")).sort()) {
    if (done.has(file)) continue;
    // D1's exec() splits on newlines: apply statement by statement. Comments go first, since one
    // may hold a ";".
    const sql = readFileSync(path.join(root, "migrations", file), "utf8").replace(/^\s*--.*$/gm, "");
    for (const stmt of sql.split(";").map((s) => s.trim()).filter(Boolean)) {
      await db.prepare(stmt).run();
    }
    await db.prepare("INSERT INTO d1_migrations (name, applied_at) VALUES (?1, datetime('now'))").bind(file).run();
  }
}
