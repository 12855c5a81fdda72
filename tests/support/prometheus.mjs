// Runs Debian's Prometheus on loopback against a given scrape config, and asks its HTTP API.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { waitFor } from "./backends.mjs";

export async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** Starts /usr/bin/prometheus with `configYaml`; `stop()` kills it and removes its data. */
export async function startPrometheus(configYaml) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "fb-prom-"));
  const config = path.join(dir, "prometheus.yml");
  writeFileSync(config, configYaml, { mode: 0o600 });
  const port = await freePort();
  const child = spawn(
    "/usr/bin/prometheus",
    [`--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`, "--log.level=warn"],
    { stdio: ["ignore", "ignore", process.env.FB_LOG ? "inherit" : "ignore"] },
  );
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => (await fetch(`${base}/-/ready`).catch(() => null))?.ok, { timeoutMs: 30000, what: "prometheus ready" });
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    base,
    stop,
    /** Instant query: [{metric, value: number}]. */
    async query(q) {
      const res = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = await res.json();
      if (body.status !== "success") throw new Error(`query ${q}: ${JSON.stringify(body)}`);
      return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    async targets() {
      return (await (await fetch(`${base}/api/v1/targets`)).json()).data.activeTargets;
    },
  };
}

/** Runs `promtool check metrics` on `body`: {code, output}. */
export function promtoolCheck(body) {
  return new Promise((resolve, reject) => {
    const child = spawn("/usr/bin/promtool", ["check", "metrics"], { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, output }));
    child.stdin.end(body);
  });
}
