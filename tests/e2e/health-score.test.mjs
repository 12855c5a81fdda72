// End to end: health scores and score weighting. Three loopback backends, one answering 30 % of its
// requests with 503 (a failure for its breaker, whose thresholds keep it closed): with
// `load_balancer.score_weighting` it scores lower than its peers and gets a visibly smaller share,
// in both decision modes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "../support/backends.mjs";
import { backendStatus, serviceStatus } from "../support/admin.mjs";
import { backendsFor, serve } from "../support/scoped.mjs";

/** Sends `n` requests one after the other; answers how many each backend received. */
async function spread(lb, host, backends, n) {
  const before = backends.map((b) => b.requests().length);
  for (let i = 0; i < n; i++) await (await lb.fetch(host, `/r${i}`)).text();
  return backends.map((b, k) => b.requests().length - before[k]);
}

for (const mode of ["per_request", "lease"]) {
  test(`a backend answering 30 % errors scores lower and gets a smaller share (${mode})`, async (t) => {
    const [g1, g2, bad] = await backendsFor(t, ["good-1", "good-2", "bad"]);
    // Every 10 requests, the 1st, 4th and 7th get a 503: 30 %, never many in a row.
    let n = 0;
    bad.handler = (req, res) => {
      const fail = [0, 3, 6].includes(n++ % 10);
      res.writeHead(fail ? 503 : 200, { "content-type": "application/json" }).end(JSON.stringify({ backend: "bad" }));
    };
    const lb = await serve(t, [
      {
        hostname: "app.test",
        backends: [g1.url, g2.url, bad.url],
        retries: 0,
        // A breaker that never opens here: the score alone moves traffic.
        passiveHealthChecks: { circuit_breaker: { failure_threshold: 1000, error_rate_threshold: 100, min_requests: 10 } },
        load_balancer: { score_weighting: true },
        decisions: { mode },
      },
    ]);
    // Traffic until the breaker's window holds enough of the bad backend's requests for an error
    // rate (in lease mode a Worker also sets a backend aside for the rest of its lease after each
    // failure, so that takes longer).
    await waitFor(
      async () => {
        await spread(lb, "app.test", [g1, g2, bad], 30);
        return backendStatus(await serviceStatus(lb), bad).error_rate != null;
      },
      { timeoutMs: 30000, what: "the bad backend's error rate in the window" },
    );

    const [a, b, c] = await spread(lb, "app.test", [g1, g2, bad], 300);
    assert.equal(a + b + c, 300);
    assert.ok(c < 0.75 * Math.min(a, b), `the bad backend's share is visibly smaller: ${[a, b, c]}`);
    // Above the floor it keeps some traffic (per request; under a lease each failure also sets it
    // aside in the Worker until the next lease, so there it may get very little).
    if (mode === "per_request") assert.ok(c > 0.1 * Math.min(a, b), `it still gets some traffic above the floor: ${[a, b, c]}`);

    const st = await serviceStatus(lb);
    assert.equal(st.decisions.effective_mode, mode);
    const [s1, s2, s3] = [g1, g2, bad].map((x) => backendStatus(st, x));
    for (const s of [s1, s2, s3]) assert.ok(Number.isInteger(s.health_score) && s.health_score >= 0 && s.health_score <= 100, JSON.stringify(s));
    assert.ok(s3.health_score < s1.health_score && s3.health_score < s2.health_score, `scores ${[s1, s2, s3].map((s) => s.health_score)}`);
    assert.ok(s3.health_score >= 10 && s3.health_score <= 70, `30 % errors cost about half: ${s3.health_score} at ${s3.error_rate} % errors`);
    assert.equal(s3.breaker, "closed");
    // The weight in use follows the score.
    assert.ok(s3.effective_weight < s1.effective_weight, JSON.stringify([s1.effective_weight, s3.effective_weight]));
  });
}
