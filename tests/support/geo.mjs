// The geo-steering scenario both decision modes are tested with: an eu and a us pool, and which backends a place reaches.
import { backendOf } from "./requests.mjs";

/** geo.test over pools eu and us (started backends): DE and the EU continent to eu, NA to us, fallback us. */
export function geoService(eu, us) {
  return {
    hostname: "geo.test",
    pools: [
      { name: "eu", backends: eu.map((b) => b.url) },
      { name: "us", backends: us.map((b) => b.url) },
    ],
    geo_steering: { regions: { DE: "eu", EU: "eu", NA: "us" }, fallback_pool: "us" },
  };
}

/** The backends, sorted, that `n` requests to geo.test reach from `cf` (`request.cf`; null for none). */
export async function reachedFrom(lb, cf, n) {
  const got = new Set();
  for (let i = 0; i < n; i++) got.add(await backendOf(lb, "geo.test", `/g${i}`, cf ? { cf } : {}));
  return [...got].sort();
}
