// End to end: signed webhooks for backend, breaker and config events; every event arrives after a receiver outage and after a runtime restart; Slack format.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startBalancer } from "../support/runtime.mjs";
import { startBackends, stopAll, waitFor } from "../support/backends.mjs";
import { startReceiver } from "../support/receiver.mjs";

const SECRET = "whsec-0123456789abcdef";

function service(backends, webhooks, extra = {}) {
  return {
    hostname: "app.test",
    backends: backends.map((b) => b.url),
    activeHealthChecks: { interval: 1, timeout: 1, consecutive_down: 1, consecutive_up: 1 },
    notifications: { webhooks },
    ...extra,
  };
}

async function events(lb) {
  const res = await lb.admin("/admin/services/app.test/events");
  assert.equal(res.status, 200);
  return res.json();
}

test("a dead backend sends a signed backend.down, its recovery backend.up; config changes name the actor; Slack gets text", async () => {
  const bs = await startBackends(2);
  const rx = await startReceiver("rx", { secret: SECRET });
  const slack = await startReceiver("slack");
  const lb = await startBalancer({
    defaultBackends: service(bs, [
      { url: `${rx.url}/hook`, secret: SECRET },
      { url: `${slack.url}/slack`, format: "slack", events: ["backend.down"] },
    ]),
  });
  try {
    // The object starts (and probes) on its first request.
    await (await lb.fetch("app.test", "/")).arrayBuffer();
    await bs[1].kill();
    const down = await waitFor(() => rx.ofKind("backend.down")[0], { timeoutMs: 20000, what: "backend.down" });
    assert.equal(down.body.details.backend, bs[1].url);
    assert.equal(down.body.details.reason, "probe");
    assert.equal(down.body.hostname, "app.test");
    assert.equal(down.body.event, "backend.down");
    assert.equal(down.body.id, down.headers["x-flowbalance-event-id"]);
    assert.match(down.body.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.match(down.headers["x-flowbalance-signature"], /^t=\d+,v1=[0-9a-f]{64}$/);
    const text = await waitFor(() => slack.ofKind("backend.down")[0], { timeoutMs: 20000, what: "slack backend.down" });
    assert.equal(text.body.text, `[FlowBalance] app.test: backend ${bs[1].url} is DOWN (probe: ${down.body.details.error})`);
    await bs[1].revive();
    const up = await waitFor(() => rx.ofKind("backend.up")[0], { timeoutMs: 20000, what: "backend.up" });
    assert.equal(up.body.details.backend, bs[1].url);
    assert.equal(slack.ofKind("backend.up").length, 0, "the Slack hook subscribed to backend.down only");

    // A config change through the API, by the token holder.
    const cfg = await (await lb.admin("/admin/services/app.test/config")).json();
    const put = await lb.admin("/admin/services/app.test/config", {
      method: "PUT",
      headers: { "if-match": `"${cfg.version}"` },
      body: JSON.stringify({ ...cfg.config, retries: 2 }),
    });
    assert.equal(put.status, 200);
    const changed = await waitFor(() => rx.ofKind("config.changed")[0], { timeoutMs: 15000, what: "config.changed" });
    assert.deepEqual(changed.body.details, { version: 1, previous_version: 0, actor: "token" });
    const rolled = await lb.admin("/admin/services/app.test/config/rollback", { method: "POST", body: JSON.stringify({ version: 1 }) });
    assert.equal(rolled.status, 200);
    const rb = await waitFor(() => rx.ofKind("config.rolled_back")[0], { timeoutMs: 15000, what: "config.rolled_back" });
    assert.equal(rb.body.details.restored_version, 1);

    // A test event, and the events list with each delivery's state.
    const t = await lb.admin("/admin/services/app.test/events/test", { method: "POST" });
    assert.equal(t.status, 202);
    const { id } = await t.json();
    await waitFor(() => rx.events.get(id), { timeoutMs: 15000, what: "test event" });
    const list = await waitFor(async () => {
      const l = await events(lb);
      return l.pending_deliveries === 0 && l;
    }, { timeoutMs: 15000, what: "nothing pending" });
    const listed = list.events.find((e) => e.id === down.body.id);
    assert.equal(listed.event, "backend.down");
    assert.equal(listed.deliveries[0].state, "delivered");
    assert.equal(listed.deliveries[0].last_status, 204);
    assert.equal(listed.deliveries[1].url, `${slack.url}/slack`);
    assert.doesNotMatch(JSON.stringify(list), new RegExp(SECRET), "the events list never shows a secret");
    assert.equal(rx.badSignatures, 0);
    const metrics = await (await lb.admin("/admin/metrics")).text();
    assert.match(metrics, /flowbalance_webhook_deliveries_total\{hostname="app.test",result="delivered"\} [1-9]/);
    // Sending a test is a POST only.
    assert.equal((await lb.admin("/admin/services/app.test/events/test", { method: "GET" })).status, 405);
  } finally {
    await stopAll([...bs, rx, slack]);
    await lb.stop();
  }
});

test("receiver down for a while, then back: every event arrives (at least once, de-duplicated by id)", async () => {
  const bs = await startBackends(2);
  const rx = await startReceiver("rx", { secret: SECRET });
  const lb = await startBalancer({ defaultBackends: service(bs, [{ url: `${rx.url}/hook`, secret: SECRET }]) });
  try {
    await (await lb.fetch("app.test", "/")).arrayBuffer();
    await rx.kill();
    const downAt = Date.now();
    // Two outages of b2 (down and up events) and three test events, all while the receiver is away.
    const status = async () => (await (await lb.admin("/admin/services/app.test")).json()).backends[1];
    for (let round = 0; round < 2; round++) {
      await bs[1].kill();
      await waitFor(async () => !(await status()).healthy, { timeoutMs: 15000, what: "b2 down" });
      await bs[1].revive();
      await waitFor(async () => (await status()).healthy, { timeoutMs: 15000, what: "b2 up" });
    }
    for (let i = 0; i < 3; i++) assert.equal((await lb.admin("/admin/services/app.test/events/test", { method: "POST" })).status, 202);
    const queued = await events(lb);
    const ids = queued.events.map((e) => e.id);
    assert.ok(ids.length >= 7, `events queued: ${ids.length}`);
    // Failed attempts are visible with their error and next attempt.
    await waitFor(async () => (await events(lb)).events.some((e) => e.deliveries[0].attempts > 0 && e.deliveries[0].last_error), {
      timeoutMs: 10000,
      what: "a failed attempt recorded",
    });
    const failed = (await events(lb)).events.find((e) => e.deliveries[0].attempts > 0);
    assert.equal(failed.deliveries[0].state, "pending");
    assert.ok(failed.deliveries[0].next_attempt_ms > Date.now() - 1000);
    await waitFor(() => Date.now() - downAt > 8000, { timeoutMs: 20000, what: "an 8 s outage" });
    await rx.revive();
    await waitFor(() => ids.every((id) => rx.events.has(id)), { timeoutMs: 60000, stepMs: 250, what: "every event delivered" });
    const lost = ids.filter((id) => !rx.events.has(id)).length;
    const dups = [...rx.events.values()].reduce((n, e) => n + e.count - 1, 0);
    console.log(`receiver outage: ${ids.length} events, ${ids.length - lost} delivered, ${lost} lost, ${dups} duplicates`);
    assert.equal(lost, 0);
    assert.ok(rx.ofKind("backend.down").length >= 2 && rx.ofKind("backend.up").length >= 2);
    const after = await waitFor(async () => {
      const l = await events(lb);
      return l.pending_deliveries === 0 && l;
    }, { timeoutMs: 15000, what: "outbox drained" });
    assert.equal(after.dropped_events, 0);
  } finally {
    await stopAll([...bs, rx]);
    await lb.stop();
  }
});

test("a runtime restart with undelivered events still delivers them", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "fb-webhooks-"));
  const bs = await startBackends(1);
  const rx = await startReceiver("rx", { secret: SECRET });
  const config = service(bs, [{ url: `${rx.url}/hook`, secret: SECRET }], { activeHealthChecks: { enabled: false } });
  let lb = await startBalancer({ defaultBackends: config, persistDir: dir });
  try {
    await rx.kill();
    const ids = [];
    for (let i = 0; i < 3; i++) {
      const res = await lb.admin("/admin/services/app.test/events/test", { method: "POST" });
      assert.equal(res.status, 202);
      ids.push((await res.json()).id);
    }
    assert.equal((await events(lb)).pending_deliveries, 3);
    await lb.stop();
    lb = null;
    await rx.revive();
    lb = await startBalancer({ defaultBackends: config, persistDir: dir });
    // Any request wakes the hostname's object; its stored outbox and alarm carry on.
    assert.equal((await events(lb)).pending_deliveries > 0 || ids.every((id) => rx.events.has(id)), true);
    await waitFor(() => ids.every((id) => rx.events.has(id)), { timeoutMs: 40000, stepMs: 250, what: "events from before the restart" });
    assert.equal(rx.badSignatures, 0);
  } finally {
    await stopAll([...bs, rx]);
    await lb?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("real traffic opens a breaker: breaker.open, a passive backend.down and service.unhealthy, then recovery", async () => {
  const [b1] = await startBackends(1);
  const rx = await startReceiver("rx", { secret: SECRET });
  const lb = await startBalancer({
    defaultBackends: service([b1], [{ url: `${rx.url}/hook`, secret: SECRET }], {
      activeHealthChecks: { enabled: false },
      passiveHealthChecks: { circuit_breaker: { failure_threshold: 2, recovery_timeout_ms: 500 } },
    }),
  });
  const hit = async () => (await lb.fetch("app.test", "/")).arrayBuffer();
  try {
    await hit();
    b1.mode = "503";
    await waitFor(async () => (await hit(), rx.ofKind("service.unhealthy")[0]), { timeoutMs: 20000, what: "service.unhealthy" });
    const open = rx.ofKind("breaker.open")[0];
    assert.equal(open.body.details.backend, b1.url);
    assert.equal(open.body.details.error, "status 503");
    const down = rx.ofKind("backend.down")[0];
    assert.equal(down.body.details.reason, "passive");
    b1.mode = "ok";
    await waitFor(async () => (await hit(), rx.ofKind("service.recovered")[0]), { timeoutMs: 20000, what: "service.recovered" });
    // Sent by the alarm the transition brought forward, not by whichever alarm came next
    // (a D1 write up to a minute later, when no error row was waiting).
    const recovered = rx.ofKind("service.recovered")[0];
    const lag = recovered.receivedMs - Date.parse(recovered.body.timestamp);
    assert.ok(lag < 5000, `service.recovered arrived ${lag} ms after it was raised`);
    assert.equal(rx.ofKind("breaker.closed")[0].body.details.backend, b1.url);
    assert.equal(rx.ofKind("backend.up")[0].body.details.reason, "passive");
    // One event per transition, however many requests saw the breaker open.
    assert.equal(rx.ofKind("breaker.open").length, 1);
    assert.equal(rx.ofKind("service.unhealthy").length, 1);
  } finally {
    await stopAll([b1, rx]);
    await lb.stop();
  }
});
