// Overview: every service with its health, backends up, request rate, error rate and p95 over
// the last five minutes, and the DEFAULT_BACKENDS errors; refreshed every few seconds.
import { get } from "./api.js";
import { clock, h, mount, ms, pct, pill, poll, rate, table } from "./dom.js";

const WINDOW_S = 300;
const HEALTH = { healthy: "ok", degraded: "warn", critical: "bad" };

export function renderOverview(main) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading services…"));
  const stamp = h("span", { class: "muted stamp", "aria-live": "off" });
  mount(main, h("div", { class: "page-head" }, h("h1", {}, "Overview"), stamp, h("a", { class: "button primary", href: "#/add" }, "Add service")), body);
  return poll(async () => {
    try {
      const data = await get(`/admin/services?window=${WINDOW_S}`);
      mount(body, view(data));
      stamp.textContent = `Last ${WINDOW_S / 60} minutes · updated ${clock(Date.now())}`;
    } catch (e) {
      stamp.textContent = `Update failed: ${e.message}`;
    }
  }, 5000);
}

function view({ services, config_errors: errors }) {
  const count = (k) => services.filter((s) => s.health === k).length;
  const totalRate = services.reduce((n, s) => n + (s.traffic?.requests ?? 0), 0) / WINDOW_S;
  const tiles = h(
    "div",
    { class: "tiles" },
    tile("Services", services.length),
    tile("Healthy", count("healthy"), "ok"),
    tile("Degraded", count("degraded"), count("degraded") ? "warn" : null),
    tile("Critical", count("critical"), count("critical") ? "bad" : null),
    tile("Requests", rate(totalRate)),
  );
  const problems = errors?.length
    ? h("section", { class: "card alert", id: "config-errors", "aria-labelledby": "config-errors-title" }, h("h2", { id: "config-errors-title" }, "DEFAULT_BACKENDS has errors"), h("p", {}, "These services are not balanced until the variable is fixed and deployed:"), h("ul", {}, errors.map((e) => h("li", {}, h("code", {}, e)))))
    : null;
  if (!services.length) return h("div", {}, tiles, problems, h("section", { class: "card empty-state" }, h("h2", {}, "No services yet"), h("p", {}, "Set DEFAULT_BACKENDS or add a service here."), h("a", { class: "button primary", href: "#/add" }, "Add a service")));
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
  return h("div", {}, tiles, problems, h("section", { class: "card" }, table(["Service", "Health", "Backends up", "Requests", "Error rate", "p95", "Config"], rows, { id: "services" })));
}

function tile(label, value, kind) {
  return h("div", { class: ["tile", kind] }, h("span", { class: "tile-label" }, label), h("strong", {}, String(value)));
}
