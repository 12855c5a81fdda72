// End to end: decisions.location_hint creates the hostname's object with a location hint (workerd accepts
// and ignores it locally), for DEFAULT_BACKENDS services and for services created through the API.

import { test } from "node:test";
import assert from "node:assert/strict";
import { backendsFor, serve } from "../support/scoped.mjs";
import { adminCall as admin } from "../support/admin.mjs";
import { backendOf } from "../support/requests.mjs";

test("a location hint places the object without changing what it does, in both config sources", async (t) => {
  const [a, b] = await backendsFor(t, ["hint-a", "hint-b"]);
  const lb = await serve(t, [{ hostname: "hinted.test", backends: [a.url], decisions: { mode: "per_request", location_hint: "weur" } }]);
  assert.equal(await backendOf(lb, "hinted.test", "/"), "hint-a");
  const res = await admin(lb, "/admin/services/made.test/config", { method: "POST", body: { backends: [b.url], decisions: { location_hint: "apac" } } });
  assert.equal(res.status, 201, res.text);
  assert.equal(res.body.config.decisions.location_hint, "apac");
  assert.equal(await backendOf(lb, "made.test", "/"), "hint-b");
  const bad = await admin(lb, "/admin/services/made.test/config", { method: "POST", body: { backends: [b.url], decisions: { location_hint: "mars" } } });
  assert.equal(bad.status, 400);
  assert.match(bad.text, /decisions\.location_hint/);
});
