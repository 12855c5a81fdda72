// `npm run bench`, traffic rules: the same service with 20 rules (none matching, so every request walks all
// of them, plus one header rule at the end that sets a response header) against none, in both decision
// modes, measured in alternating rounds of one run.
import { compare, startBackendProcess } from "./bench.mjs";
import { startBalancer } from "../support/runtime.mjs";

const LEASE_MS = 1000;

/** 20 rules of the kinds operators write: prefixes, exact paths, a regex, methods, headers, query, client addresses. */
export function twentyRules() {
  const rules = [];
  for (let i = 0; i < 6; i++) rules.push({ name: `prefix-${i}`, when: { path_prefix: `/area${i}/` }, then: { pool: "p" } });
  for (let i = 0; i < 4; i++) rules.push({ name: `exact-${i}`, when: { path: `/exact/${i}`, methods: ["POST", "PUT"] }, then: { respond: { status: 404 } } });
  rules.push({ name: "regex", when: { path_regex: "^/v[0-9]+/items/[a-z0-9-]+$" }, then: { pool: "p" } });
  for (let i = 0; i < 3; i++) rules.push({ name: `header-${i}`, when: { headers: { [`x-flag-${i}`]: "on" } }, then: { pool: "p" } });
  for (let i = 0; i < 3; i++) rules.push({ name: `query-${i}`, when: { query: { [`q${i}`]: "*" } }, then: { pool: "p" } });
  rules.push({ name: "office", when: { path_prefix: "/internal/", not: { client_ips: ["10.0.0.0/8", "192.168.0.0/16"] } }, then: { respond: { status: 403 } } });
  rules.push({ name: "old", when: { path_prefix: "/old/" }, then: { redirect: { location: "https://example.com", preserve_path: true } } });
  rules.push({ name: "tag", then: { response_headers: { set: { "x-tagged": "1" } }, continue: true } });
  return rules;
}

function service(hostname, urls, mode, rules) {
  return {
    hostname,
    backends: urls,
    pools: [{ name: "p", backends: urls }],
    ...(rules ? { rules } : {}),
    decisions: mode === "lease" ? { mode, lease_ms: LEASE_MS } : { mode },
  };
}

async function main() {
  const { child, urls } = await startBackendProcess(3);
  const rules = twentyRules();
  const lb = await startBalancer({
    defaultBackends: {
      activeHealthChecks: { interval: 60 },
      services: [
        service("none-per.test", urls, "per_request"),
        service("rules-per.test", urls, "per_request", rules),
        service("none-lease.test", urls, "lease"),
        service("rules-lease.test", urls, "lease", rules),
      ],
    },
  });
  const base = `http://${new URL(lb.url).host}/shop/item?id=7`;
  let rows;
  try {
    const probe = await lb.fetch("rules-per.test", "/shop/item?id=7");
    if (probe.status !== 200 || probe.headers.get("x-tagged") !== "1") throw new Error(`the rules service does not apply its rules: ${probe.status}`);
    await probe.arrayBuffer();
    rows = await compare([
      { name: "per-request, no rules", url: base, headers: { host: "none-per.test" } },
      { name: "per-request, 20 rules", url: base, headers: { host: "rules-per.test" } },
      { name: "lease, no rules", url: base, headers: { host: "none-lease.test" } },
      { name: "lease, 20 rules", url: base, headers: { host: "rules-lease.test" } },
    ]);
  } finally {
    await lb.stop();
    child.kill();
  }
  console.log("\ntraffic rules: 20 rules walked on every request against none, alternating rounds, one run\n");
  console.log("| subject | req/s | p50 ms | p99 ms | errors | workerd CPU µs/req |");
  console.log("|---|---:|---:|---:|---:|---:|");
  for (const r of rows) console.log(`| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.cpuUsPerReq.toFixed(0)} |`);
  const [perNone, perRules, leaseNone, leaseRules] = rows;
  const ratio = (a, b) => a.rps / b.rps;
  const verdict = (x) => (x >= 0.95 ? "met" : "NOT met");
  console.log(`\n20 rules / none, per-request: ${ratio(perRules, perNone).toFixed(3)}x throughput (goal >= 0.95x: ${verdict(ratio(perRules, perNone))})`);
  console.log(`20 rules / none, lease:       ${ratio(leaseRules, leaseNone).toFixed(3)}x throughput (goal >= 0.95x: ${verdict(ratio(leaseRules, leaseNone))})`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
