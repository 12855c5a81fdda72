// Overview: every service with its health, backends up, request rate, error rate and p95 over
// the last five minutes, the DEFAULT_BACKENDS errors, and D1's state and daily budget; refreshed
// every few seconds.
import { get } from "./api.js";
import { clock, h, mount, ms, pct, pill, poll, rate, table, unavailable } from "./dom.js";

const WINDOW_S = 300;
const HEALTH = { healthy: "ok", degraded: "warn", critical: "bad" };

export function renderOverview(main) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading services…"));
  const stamp = h("span", { class: "muted stamp", "aria-live": "off" });
  mount(main, h("div", { class: "page-head" }, h("h1", {}, "Overview"), stamp, h("a", { class: "button primary", href: "#/add" }, "Add service")), body);
  return poll(async () => {
    try {
      // D1's state is extra: the overview stands without it.
      const [data, d1] = await Promise.all([get(`/admin/services?window=${WINDOW_S}`), get("/admin/d1").catch(() => null)]);
      mount(body, view(data, d1));
      stamp.textContent = `Last ${WINDOW_S / 60} minutes · updated ${clock(Date.now())}`;
    } catch (e) {
      stamp.textContent = `Update failed: ${e.message}`;
    }
  }, 5000);
}

/** The banner shown once the day's D1 rows written reach 80% (samples stop) or 100% of the budget. */
function budgetBanner(d1) {
  if (!d1 || d1.state === "ok") return null;
  const title = d1.state === "exhausted" ? "D1 daily budget reached: request-log rows are counted, not written" : "D1 daily budget at 80%: sampled successes stopped";
  return h("section", { class: "card alert", id: "d1-budget", role: "status" }, h("h2", {}, title), h("p", {}, `${d1.rows_today} of ${d1.budget} rows written today (UTC, D1_DAILY_ROWS_BUDGET). Rollups and the counters go on.`));
}

function d1Tile(d1) {
  if (!d1) return null;
  const t = tile("D1", d1.up ? "up" : "unavailable", d1.up ? null : "bad");
  t.id = "d1-state";
  t.append(h("small", { class: "muted" }, d1.up ? `${d1.rows_today} / ${d1.budget} rows today` : d1.reason));
  return t;
}

function view({ services, config_errors: errors, traffic_unavailable: noTraffic }, d1) {
  const count = (k) => services.filter((s) => s.health === k).length;
  const totalRate = services.reduce((n, s) => n + (s.traffic?.requests ?? 0), 0) / WINDOW_S;
  const tiles = h(
    "div",
    { class: "tiles" },
    tile("Services", services.length),
    tile("Healthy", count("healthy"), "ok"),
    tile("Degraded", count("degraded"), count("degraded") ? "warn" : null),
    tile("Critical", count("critical"), count("critical") ? "bad" : null),
    tile("Requests", noTraffic ? "–" : rate(totalRate)),
    d1Tile(d1),
  );
  const alerts = [budgetBanner(d1), noTraffic && unavailable({ body: noTraffic }, "Traffic figures")];
  const problems = errors?.length
    ? h("section", { class: "card alert", id: "config-errors", "aria-labelledby": "config-errors-title" }, h("h2", { id: "config-errors-title" }, "DEFAULT_BACKENDS has errors"), h("p", {}, "These services are not balanced until the variable is fixed and deployed:"), h("ul", {}, errors.map((e) => h("li", {}, h("code", {}, e)))))
    : null;
  if (!services.length) return h("div", {}, tiles, alerts, problems, h("section", { class: "card empty-state" }, h("h2", {}, "No services yet"), h("p", {}, "Set DEFAULT_BACKENDS or add a service here."), h("a", { class: "button primary", href: "#/add" }, "Add a service")));
  const rows = services.map((s) => {
    const t = s.traffic;
    const errRate = t?.requests ? t.errors / t.requests : null;
    return h(
      "tr",
      { "data-host": s.hostname },
      h("td", {}, h("a", { href: `#/services/${encodeURIComponent(s.hostname)}`, class: "host" }, s.hostname)),
      h("td", {}, pill(s.health, HEALTH[s.health] ?? "off")),
      h("td", { class: "num" }, `${s.healthy_backends} / ${s.backends}`),
      h("td", { class: "num" }, t ? rate(t.requests / WINDOW_S) : "–"),
      h("td", { class: ["num", errRate > 0.05 && "bad-text"] }, errRate == null ? "–" : pct(errRate)),
      h("td", { class: "num" }, ms(t?.p95_ms)),
      h("td", { class: "num" }, s.version == null ? "–" : s.version === 0 ? "env" : `v${s.version}`),
    );
  });
  return h("div", {}, tiles, alerts, problems, h("section", { class: "card" }, table(["Service", "Health", "Backends up", "Requests", "Error rate", "p95", "Config"], rows, { id: "services" })));
}

function tile(label, value, kind) {
  return h("div", { class: ["tile", kind] }, h("span", { class: "tile-label" }, label), h("strong", {}, String(value)));
}
