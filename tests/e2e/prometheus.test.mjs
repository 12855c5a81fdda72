// End to end: a real Prometheus scrapes /admin/metrics (Bearer and basic auth) after a known mix of traffic and sees the expected series; promtool accepts the exposition; counters survive a restart.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { API_SECRET, startBalancer } from "../support/runtime.mjs";
import { startBackends, stopAll, waitFor } from "../support/backends.mjs";
import { promtoolCheck, startPrometheus } from "../support/prometheus.mjs";

const BASIC = { user: "ops", password: "basic-pass-0123456789" };

test("Prometheus scrapes requests, retries, failovers, health checks, limits and gauges", async () => {
  const bs = await startBackends(3);
  bs[2].mode = "503";
  const lb = await startBalancer({
    defaultBackends: {
      services: [
        {
          hostname: "app.test",
          backends: bs.map((b) => b.url),
          retries: 1,
          activeHealthChecks: { enabled: false },
          passiveHealthChecks: { circuit_breaker: { failure_threshold: 1000 } },
          // Per request: round robin keeps meeting the 503 backend (a lease ejects it locally).
          decisions: { mode: "per_request" },
        },
        {
          hostname: "limited.test",
          backends: [bs[0].url],
          activeHealthChecks: { interval: 1, timeout: 1 },
          rate_limit: { requests: 2, window: 60 },
          access_control: { deny: ["10.0.0.0/8"] },
        },
      ],
    },
    bindings: { WEB_AUTH_USERNAME: BASIC.user, WEB_AUTH_PASSWORD: BASIC.password },
  });
  const target = new URL(lb.url).host;
  let prom;
  try {
    // The mix: 30 requests, every third lands first on the 503 backend and is retried elsewhere.
    for (let i = 0; i < 30; i++) {
      const res = await lb.fetch("app.test", `/mix/${i}`);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    // Successes travel batched; a request that meets the 503 backend reports at once and
    // carries every batched success with it, so end on one.
    let flushes = 0;
    for (let i = 0, before = bs[2].requests().length; bs[2].requests().length === before; i++) {
      assert.ok(i < 5, "round robin reaches the 503 backend");
      await (await lb.fetch("app.test", `/flush/${i}`)).arrayBuffer();
      flushes++;
    }
    // A request that came back through a backend pointing at the balancer: FlowBalance's 508.
    const loop = await lb.fetch("app.test", "/loop", { headers: { "x-flowbalance-hop": "1" } });
    assert.equal(loop.status, 508);
    await loop.arrayBuffer();
    const via503 = bs[2].requests().length;
    const served = bs[0].requests().length + bs[1].requests().length;
    assert.ok(via503 >= 10, `503 backend saw ${via503}`);
    // limited.test: 2 pass, 3 are rate limited, 1 denied by its access list.
    const statuses = [];
    for (let i = 0; i < 5; i++) {
      const res = await lb.fetch("limited.test", "/", { headers: { "cf-connecting-ip": "192.0.2.7" } });
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    assert.deepEqual(statuses, [200, 200, 429, 429, 429]);
    const denied = await lb.fetch("limited.test", "/", { headers: { "cf-connecting-ip": "10.1.2.3" } });
    assert.equal(denied.status, 403);
    await denied.arrayBuffer();

    // No webhook configured: a test event is refused, naming the field.
    const noHooks = await lb.admin("/admin/services/app.test/events/test", { method: "POST" });
    assert.equal(noHooks.status, 400);
    assert.match((await noHooks.json()).error, /notifications\.webhooks/);

    // The exposition itself: authenticated, both formats, promtool-clean.
    assert.equal((await lb.admin("/admin/metrics", { headers: { authorization: "Bearer wrong" } })).status, 401);
    const text = await lb.admin("/admin/metrics");
    assert.equal(text.status, 200);
    assert.equal(text.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const body = await text.text();
    assert.match(body, /# TYPE flowbalance_requests_total counter/);
    assert.doesNotMatch(body, /192\.0\.2\.7|\/mix\//, "no client address or path labels");
    const checked = await promtoolCheck(body);
    assert.equal(checked.code, 0, `promtool check metrics: ${checked.output}`);
    const om = await lb.admin("/__lb_admin__/admin/metrics", { headers: { accept: "application/openmetrics-text;version=1.0.0" } });
    assert.equal(om.headers.get("content-type"), "application/openmetrics-text; version=1.0.0; charset=utf-8");
    const omBody = await om.text();
    assert.match(omBody, /# TYPE flowbalance_requests counter\n/);
    assert.ok(omBody.endsWith("# EOF\n"));

    prom = await startPrometheus(`
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: flowbalance
    metrics_path: /admin/metrics
    authorization:
      credentials: "${API_SECRET}"
    static_configs:
      - targets: ["${target}"]
  - job_name: flowbalance_basic
    metrics_path: /__lb_admin__/admin/metrics
    basic_auth:
      username: "${BASIC.user}"
      password: "${BASIC.password}"
    static_configs:
      - targets: ["${target}"]
`);
    const value = async (q) => {
      const r = await prom.query(q);
      return r.length ? r[0].value : undefined;
    };
    const expect = async (q, want) => {
      let got;
      await waitFor(async () => (got = await value(q)) === want, { timeoutMs: 20000, stepMs: 250, what: `${q} == ${want} (last ${got})` });
    };
    await expect(`up{job="flowbalance"}`, 1);
    await expect(`up{job="flowbalance_basic"}`, 1);
    const job = `job="flowbalance"`;
    await expect(`sum(flowbalance_requests_total{${job},hostname="app.test",code_class="2xx"})`, served);
    await expect(`flowbalance_requests_total{${job},hostname="app.test",backend="${bs[2].url}",code_class="5xx"}`, via503);
    await expect(`flowbalance_retries_total{${job},hostname="app.test",reason="status_5xx"}`, via503);
    await expect(`flowbalance_failovers_total{${job},hostname="app.test"}`, via503);
    await expect(`sum(flowbalance_request_duration_seconds_count{${job},hostname="app.test"})`, served + via503);
    await expect(`flowbalance_rate_limited_total{${job},hostname="limited.test"}`, 3);
    // What clients got: backends' answers and FlowBalance's own, by code (retried 503s are not among them).
    const responses = (host, code, source) => `flowbalance_responses_total{${job},hostname="${host}",code="${code}",source="${source}"}`;
    await expect(responses("app.test", 200, "backend"), 30 + flushes);
    await expect(`sum(flowbalance_responses_total{${job},hostname="app.test",code="503"})`, undefined);
    await expect(responses("app.test", 508, "flowbalance"), 1);
    await expect(responses("limited.test", 200, "backend"), 2);
    await expect(responses("limited.test", 429, "flowbalance"), 3);
    await expect(responses("limited.test", 403, "flowbalance"), 1);
    await expect(`flowbalance_access_denied_total{${job},hostname="limited.test"}`, 1);
    await expect(`flowbalance_backend_up{${job},hostname="app.test",backend="${bs[0].url}"}`, 1);
    await expect(`flowbalance_circuit_breaker_state{${job},hostname="app.test",backend="${bs[0].url}",state="closed"}`, 1);
    // A backend that answers every request and probe scores high (latency may cost a few points).
    const score = await value(`flowbalance_backend_health_score{${job},hostname="app.test",backend="${bs[0].url}"}`);
    assert.ok(score >= 80 && score <= 100, `health score ${score}`);
    await expect(`flowbalance_config_version{${job},hostname="app.test"}`, 0);
    await expect(`flowbalance_config_errors{${job}}`, 0);
    await waitFor(async () => (await value(`flowbalance_health_checks_total{${job},hostname="limited.test",result="success"}`)) > 0, {
      timeoutMs: 20000,
      what: "health checks counted",
    });
    // limited.test's 6 requests were each decided by its object (per-request mode); scrapes and alarms add more.
    await waitFor(async () => (await value(`flowbalance_object_requests_total{${job},hostname="limited.test"}`)) >= 6, {
      timeoutMs: 20000,
      what: "object requests counted",
    });
    // Histogram buckets are cumulative: the +Inf bucket equals the count.
    await expect(`sum(flowbalance_request_duration_seconds_bucket{${job},hostname="app.test",le="+Inf"})`, served + via503);
  } finally {
    await prom?.stop();
    await stopAll(bs);
    await lb.stop();
  }
});

test("counters survive a runtime restart (stored by the alarm and every 10 s, never per request)", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "fb-metrics-"));
  const bs = await startBackends(2);
  bs[1].mode = "503";
  const config = {
    hostname: "app.test",
    backends: bs.map((b) => b.url),
    retries: 1,
    activeHealthChecks: { interval: 1, timeout: 1, consecutive_down: 100 },
    passiveHealthChecks: { circuit_breaker: { failure_threshold: 1000 } },
    // Per request: round robin keeps meeting the 503 backend (a lease ejects it locally).
    decisions: { mode: "per_request" },
  };
  let lb = await startBalancer({ defaultBackends: config, persistDir: dir });
  const sample = async (re) => {
    const body = await (await lb.admin("/admin/metrics")).text();
    return [...body.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  };
  const served = /^flowbalance_requests_total\{hostname="app\.test",backend="[^"]+",code_class="2xx"\} (\d+)$/gm;
  const failed = /^flowbalance_requests_total\{hostname="app\.test",backend="[^"]+",code_class="5xx"\} (\d+)$/gm;
  const checks = /^flowbalance_health_checks_total\{hostname="app\.test",backend="[^"]+",result="[a-z]+"\} (\d+)$/gm;
  try {
    for (let i = 0; i < 12; i++) await (await lb.fetch("app.test", `/r/${i}`)).arrayBuffer();
    // End on a request that meets the 503 backend: it reports at once, with the batched successes.
    for (let i = 0, before = bs[1].requests().length; bs[1].requests().length === before; i++) {
      assert.ok(i < 4);
      await (await lb.fetch("app.test", `/flush/${i}`)).arrayBuffer();
    }
    const want = { served: bs[0].requests().length, failed: bs[1].requests().length };
    await waitFor(async () => (await sample(served)) === want.served, { timeoutMs: 10000, what: "successes counted" });
    assert.equal(await sample(failed), want.failed);
    // Two probe rounds after the traffic: the alarm has stored the counters since.
    const c0 = await sample(checks);
    await waitFor(async () => (await sample(checks)) >= c0 + 4, { timeoutMs: 15000, what: "two probe rounds" });
    await lb.stop();
    lb = await startBalancer({ defaultBackends: config, persistDir: dir });
    assert.equal(await sample(served), want.served, "2xx count after the restart");
    assert.equal(await sample(failed), want.failed, "5xx count after the restart");
    assert.ok((await sample(checks)) >= c0 + 2);
  } finally {
    await stopAll(bs);
    await lb.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
