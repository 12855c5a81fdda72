// `npm run bench`: time of one /admin/metrics scrape with 1, 10 and 100 services (each hostname's object asked in parallel).
import { startBalancer } from "../support/runtime.mjs";
import { startBackend } from "../support/backends.mjs";

const SCRAPES = 15;
const backend = await startBackend("scrape");
const rows = [];
try {
  for (const n of [1, 10, 100]) {
    const services = Array.from({ length: n }, (_, i) => ({
      hostname: `s${i}.bench`,
      backends: [backend.url],
      activeHealthChecks: { enabled: false },
    }));
    const lb = await startBalancer({ defaultBackends: { services } });
    try {
      // One request per hostname first, so every object exists and has counters.
      for (const s of services) await (await lb.fetch(s.hostname, "/")).arrayBuffer();
      await (await lb.admin("/admin/metrics")).text();
      const times = [];
      let bytes = 0;
      for (let i = 0; i < SCRAPES; i++) {
        const t0 = performance.now();
        const res = await lb.admin("/admin/metrics");
        bytes = (await res.text()).length;
        if (res.status !== 200) throw new Error(`scrape answered ${res.status}`);
        times.push(performance.now() - t0);
      }
      times.sort((a, b) => a - b);
      rows.push({
        services: n,
        "median ms": Number(times[Math.floor(times.length / 2)].toFixed(1)),
        "max ms": Number(times[times.length - 1].toFixed(1)),
        "body bytes": bytes,
      });
    } finally {
      await lb.stop();
    }
  }
} finally {
  await backend.kill();
}
console.log(`\n/admin/metrics scrape time (${SCRAPES} scrapes each, Miniflare, loopback)`);
console.table(rows);
