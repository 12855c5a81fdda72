// End to end: probes from several regions with a quorum (and how the console shows them). Every region's prober runs on this machine; the backends tell the regions apart by the X-FlowBalance-Probe-Region header.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startBackend, stopAll, waitFor } from "../support/backends.mjs";
import { adminCall, backendStatus, serviceStatus as status } from "../support/admin.mjs";
import { balancerFor } from "../support/scoped.mjs";
import { consoleFor, shot, signIn } from "../support/console.mjs";

const REGIONS = ["wnam", "weur", "apac"];
const monitor = { regions: REGIONS, interval: 0.5, timeout: 1, consecutive_up: 1, consecutive_down: 1 };

/** Backends on distinct loopback addresses, each failing the probes of the regions in its `failing` set. */
async function regionBackends(t, names) {
  const out = [];
  t.after(() => stopAll(out));
  for (const [i, name] of names.entries()) {
    const b = await startBackend(name, { address: `127.0.0.${i + 2}` });
    b.failing = new Set();
    b.onProbe = (req, res) => res.writeHead(b.failing.has(req.headers["x-flowbalance-probe-region"]) ? 500 : 200).end();
    out.push(b);
  }
  return out;
}

/** Probes `b` got from `region` so far. */
const probesFrom = (b, region) => b.probes().filter((p) => p.headers["x-flowbalance-probe-region"] === region).length;

/** Which backends served `n` requests. */
async function served(lb, n) {
  const seen = new Set();
  for (let i = 0; i < n; i++) {
    const res = await lb.fetch("app.test", `/r${i}`);
    assert.equal(res.status, 200);
    seen.add((await res.json()).backend);
  }
  return seen;
}

/** Waits until backend `b`'s status satisfies `pred`; answers that status. */
function waitBackend(lb, b, pred, what) {
  return waitFor(
    async () => {
      const s = backendStatus(await status(lb), b.url);
      return pred(s) ? s : null;
    },
    { what, timeoutMs: 15000 },
  );
}

test("one region failing leaves a backend in traffic, degraded with the region named; a quorum takes it out; recovery brings it back", async (t) => {
  const [a, b] = await regionBackends(t, ["a", "b"]);
  const lb = await balancerFor(t, { defaultBackends: { hostname: "app.test", backends: [a.url, b.url], activeHealthChecks: monitor } });
  // Loading the service sets up its probers; every region sees both backends up.
  await waitBackend(lb, a, (s) => REGIONS.every((r) => s.regions?.[r] === "up"), "every region's first report");
  for (const r of REGIONS) assert.ok(probesFrom(a, r) > 0, `a probe from ${r}`);
  assert.ok(a.probes().every((p) => REGIONS.includes(p.headers["x-flowbalance-probe-region"])), "the hostname's object does not probe itself");

  a.failing.add("apac");
  let s = await waitBackend(lb, a, (s) => s.regions.apac === "down", "apac to see a down");
  assert.deepEqual(s.regions, { wnam: "up", weur: "up", apac: "down" });
  assert.equal(s.healthy, true, "a minority of regions does not take it out");
  assert.ok((await served(lb, 8)).has("a"), "a stays in traffic");
  // The history names the region that saw it down; Prometheus has its view per region.
  const history = await waitFor(
    async () => {
      const { body } = await adminCall(lb, "/admin/services/app.test/health-history");
      return body.events.find((e) => e.backend === a.url && e.region === "apac" && e.to === "down");
    },
    { what: "apac's transition in the health history" },
  );
  assert.equal(history.reason, "probe: expected 2xx or 3xx, got 500");
  const metrics = await (await lb.admin("/admin/metrics")).text();
  assert.match(metrics, new RegExp(`flowbalance_probe_up\\{hostname="app.test",backend="${a.url}",region="apac"\\} 0`));
  assert.match(metrics, new RegExp(`flowbalance_probe_up\\{hostname="app.test",backend="${a.url}",region="wnam"\\} 1`));

  a.failing.add("weur");
  s = await waitBackend(lb, a, (s) => !s.healthy, "two regions of three to take a out");
  assert.equal(s.regions.weur, "down");
  // Workers deciding under a lease (the default mode) learn it at their next lease, within lease_ms.
  await waitFor(async () => !(await served(lb, 8)).has("a"), { what: "a out of traffic" });
  assert.deepEqual([...(await served(lb, 8))], ["b"], "a stays out of traffic");
  const { body } = await adminCall(lb, "/admin/services/app.test/health-history");
  assert.ok(body.events.some((e) => e.backend === a.url && e.region == null && e.to === "down" && e.reason.startsWith("quorum")), "the backend's own transition");

  a.failing.clear();
  s = await waitBackend(lb, a, (s) => s.healthy && REGIONS.every((r) => s.regions[r] === "up"), "recovery in every region");
  await waitFor(async () => (await served(lb, 8)).has("a"), { what: "a back in traffic" });
  assert.equal(typeof s.region_latency_ms.wnam, "number");
});

test("a region removed from the config, or the service deleted, stops its probers", async (t) => {
  const [a, c] = await regionBackends(t, ["a", "c"]);
  const lb = await balancerFor(t, {
    defaultBackends: {
      services: [
        { hostname: "ctl.test", backends: [c.url], activeHealthChecks: monitor },
      ],
    },
  });
  const put = await adminCall(lb, "/admin/services/app.test/config", { method: "PUT", body: { hostname: "app.test", backends: [a.url], activeHealthChecks: monitor } });
  assert.equal(put.status, 201, put.text);
  await waitFor(() => REGIONS.every((r) => probesFrom(a, r) > 0), { what: "probes from every region" });
  await status(lb, "ctl.test");

  // apac goes: its probes stop once the change is answered (one round already under way may land).
  const st = await status(lb);
  const changed = await adminCall(lb, "/admin/services/app.test/config", {
    method: "PUT",
    headers: { "if-match": `"${st.version}"` },
    body: { ...st.config, activeHealthChecks: { ...st.config.activeHealthChecks, regions: ["wnam", "weur"] } },
  });
  assert.equal(changed.status, 200, changed.text);
  const apacAt = probesFrom(a, "apac");
  const wnamAt = probesFrom(a, "wnam");
  await waitFor(() => probesFrom(a, "wnam") >= wnamAt + 4, { what: "four more wnam probes", timeoutMs: 15000 });
  assert.ok(probesFrom(a, "apac") <= apacAt + 1, `apac kept probing: ${probesFrom(a, "apac") - apacAt} more`);
  const view = backendStatus(await status(lb), a.url);
  assert.deepEqual(Object.keys(view.regions).sort(), ["weur", "wnam"]);

  // Deleting the service stops the rest; the other service's probes keep the time.
  const del = await adminCall(lb, "/admin/services/app.test/config", { method: "DELETE" });
  assert.ok([200, 204].includes(del.status), del.text);
  const left = { wnam: probesFrom(a, "wnam"), weur: probesFrom(a, "weur") };
  const ctlAt = probesFrom(c, "wnam");
  await waitFor(() => probesFrom(c, "wnam") >= ctlAt + 4, { what: "four more probes of the other service", timeoutMs: 15000 });
  for (const r of ["wnam", "weur"]) assert.ok(probesFrom(a, r) <= left[r] + 1, `${r} kept probing a deleted service`);
});

test("console: a backend seen down from a minority of regions shows as degraded, naming them; the history says from where", async (t) => {
  const [a, b] = await regionBackends(t, ["a", "b"]);
  a.failing.add("apac");
  const { lb, base, page, w } = await consoleFor(t, { hostname: "app.test", backends: [a.url, b.url], activeHealthChecks: monitor });
  await status(lb);
  await waitBackend(lb, a, (s) => s.regions?.apac === "down" && s.regions.wnam === "up", "apac to see a down");
  await signIn(page, base);
  await page.goto(`${base}#/services/app.test`);
  const health = page.locator(`#backends tr[data-backend="${a.url}"] td:nth-child(3)`);
  await waitFor(async () => /degraded/.test(await health.innerText()), { what: "a shown degraded" });
  assert.match(await health.innerText(), /down from apac/);
  assert.doesNotMatch(await page.locator(`#backends tr[data-backend="${b.url}"] td:nth-child(3)`).innerText(), /degraded|down from/);
  await shot(page, "regions-degraded");
  await page.locator("#run-health-checks").click();
  assert.match(await page.locator("#probe-regions").innerText(), /wnam, weur, apac are probing now/);
  await page.getByRole("link", { name: "Health history" }).click();
  const row = page.locator(`#health-events tr[data-backend="${a.url}"][data-kind="health"]`);
  await row.first().waitFor({ timeout: 15000 });
  assert.match(await row.first().innerText(), /from apac/);
  w.check("probe regions in the console");
});
