// `node tests/bench/profile.mjs`: where workerd's CPU per request goes, FlowBalance round robin against the bare
// JS Worker -> Durable Object -> backend hop, from V8's sampling profiler (DevTools protocol through Miniflare's inspector).
// Prints self time per request by function (wasm functions carry their Rust names) and by group.
// PROFILE_BUILDS=dir1,dir2: instead, throughput and CPU of this build against other builds of the Worker (a
// variant with one piece disabled) and the bare hop, in alternating rounds of one run.
import autocannon from "autocannon";
import { startBareHop } from "./subjects.mjs";
import { inspector } from "./inspector.mjs";
import { startBalancer } from "../support/runtime.mjs";
import { compare, startBackendProcess } from "./bench.mjs";

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const SECONDS = Number(process.env.PROFILE_SECONDS ?? 5);
const TOP = Number(process.env.PROFILE_TOP ?? 40);
// PROFILE_MODE=lease: FlowBalance in lease mode (decided in the Worker) instead of per request.
const MODE = process.env.PROFILE_MODE ?? "per_request";

/** Load for SECONDS while the profiler samples; returns self µs per request by function. */
async function profile(port, url, headers) {
  const insp = await inspector(port);
  await autocannon({ url, connections: CONNECTIONS, duration: 1, headers }); // warm up
  await insp.send("Profiler.enable");
  await insp.send("Profiler.setSamplingInterval", { interval: 50 });
  await insp.send("Profiler.start");
  const r = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS, headers });
  const { result } = await insp.send("Profiler.stop");
  insp.close();
  const p = result.profile;
  const self = new Map(p.nodes.map((n) => [n.id, 0]));
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], self.get(p.samples[i]) + (p.timeDeltas[i] ?? 0));
  const byFn = new Map();
  for (const n of p.nodes) {
    const f = n.callFrame;
    const name = `${f.functionName || "(anonymous)"}${f.url && !f.url.includes("wasm") ? ` ${f.url.split("/").pop()}:${f.lineNumber}` : ""}`;
    byFn.set(name, (byFn.get(name) ?? 0) + self.get(n.id));
  }
  const n = r.requests.total;
  const rows = [...byFn].map(([name, us]) => ({ name, us: us / n })).sort((a, b) => b.us - a.us);
  // PROFILE_STACKS=1: the callers (up to 4 frames) of each heavy node, to see who pays.
  if (process.env.PROFILE_STACKS) {
    const parent = new Map();
    const byId = new Map(p.nodes.map((x) => [x.id, x]));
    for (const x of p.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
    const stacks = new Map();
    for (const x of p.nodes) {
      const chain = [];
      for (let id = x.id, k = 0; id !== undefined && k < 7; id = parent.get(id), k++) chain.push(byId.get(id).callFrame.functionName || "(anon)");
      const key = chain.join(" < ");
      stacks.set(key, (stacks.get(key) ?? 0) + self.get(x.id));
    }
    // Inclusive time per function (each sample counted once per function on its stack).
    const incl = new Map();
    for (const x of p.nodes) {
      const seen = new Set();
      for (let id = x.id; id !== undefined; id = parent.get(id)) seen.add(byId.get(id).callFrame.functionName || "(anon)");
      for (const f of seen) incl.set(f, (incl.get(f) ?? 0) + self.get(x.id));
    }
    for (const [k, us] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, 60)) console.log(`incl ${(us / n).toFixed(1)} µs  ${k.slice(0, 160)}`);
    for (const [k, us] of [...stacks].sort((a, b) => b[1] - a[1]).slice(0, 40)) console.log(`${(us / n).toFixed(1)} µs  ${k.slice(0, 260)}`);
  }
  return { rows, requests: n, rps: r.requests.average };
}

function groupOf(name) {
  if (name === "(idle)") return "idle";
  if (name === "(garbage collector)") return "GC";
  if (name === "(program)") return "runtime (C++, not attributed)";
  if (/^\$?(_?_?ZN|core::|alloc::|serde|worker::|flowbalance::|std::|js_sys|wasm_bindgen|web_sys|hashbrown|dlmalloc|__rust|memcpy|memmove|memset)/.test(name) || /::/.test(name)) return "wasm (Rust)";
  if (/^__wbg_|^__wbindgen/.test(name)) return "wasm-bindgen glue (JS)";
  return "JS / runtime builtins";
}

function report(label, { rows, requests, rps }) {
  const busy = rows.filter((r) => r.name !== "(idle)").reduce((s, r) => s + r.us, 0);
  console.log(`\n## ${label}: ${requests} requests, ${rps.toFixed(0)} req/s, sampled busy ${busy.toFixed(0)} µs/request\n`);
  const groups = new Map();
  for (const r of rows) groups.set(groupOf(r.name), (groups.get(groupOf(r.name)) ?? 0) + r.us);
  console.log("| group | µs/request |\n|---|---:|");
  for (const [g, us] of [...groups].sort((a, b) => b[1] - a[1])) console.log(`| ${g} | ${us.toFixed(1)} |`);
  console.log("\n| function (self) | µs/request |\n|---|---:|");
  for (const r of rows.filter((r) => r.name !== "(idle)").slice(0, TOP)) console.log(`| ${r.name.slice(0, 110)} | ${r.us.toFixed(1)} |`);
}

async function main() {
  const { child, urls } = await startBackendProcess(3);
  const { mf: hop, url: hopUrl } = await startBareHop(urls, 0, { inspectorPort: 9301 });
  const lb = await startBalancer({
    defaultBackends: { activeHealthChecks: { interval: 60 }, decisions: { mode: MODE }, services: [{ hostname: "bench.test", backends: urls }] },
    miniflare: { inspectorPort: 9302 },
  });
  if (process.env.PROFILE_BUILDS) {
    const others = [];
    for (const dir of process.env.PROFILE_BUILDS.split(","))
      others.push([dir, await startBalancer({ buildDir: dir, defaultBackends: { activeHealthChecks: { interval: 60 }, decisions: { mode: "per_request" }, services: [{ hostname: "bench.test", backends: urls }] } })]);
    const headers = { host: "bench.test" };
    const rows = await compare([
      { name: "bare hop", url: `${hopUrl}/` },
      { name: "FlowBalance (this build)", url: `http://${new URL(lb.url).host}/`, headers },
      ...others.map(([dir, b]) => ({ name: `FlowBalance (${dir})`, url: `http://${new URL(b.url).host}/`, headers })),
    ]);
    console.log("| subject | req/s | CPU µs/req |\n|---|---:|---:|");
    for (const r of rows) console.log(`| ${r.name} | ${r.rps.toFixed(0)} | ${r.cpuUsPerReq.toFixed(0)} |`);
    for (const [, b] of others) await b.stop();
    await hop.dispose();
    await lb.stop();
    child.kill();
    return;
  }
  try {
    const which = (process.env.PROFILE ?? "hop,fb").split(",");
    if (which.includes("hop")) report("bare JS Worker -> DO -> backend hop", await profile(9301, `${hopUrl}/`, {}));
    if (which.includes("fb"))
      report(`FlowBalance round robin, ${MODE}`, await profile(9302, `http://${new URL(lb.url).host}/`, { host: "bench.test" }));
  } finally {
    await hop.dispose();
    await lb.stop();
    child.kill();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
