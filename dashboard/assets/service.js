// Service page: header, tabs, the backends table with its actions and health checks on demand,
// the traffic charts and the audit trail. Configuration and the request log have their own modules.
import { api, get, svc } from "./api.js";
import { ago, confirmDialog, h, mount, ms, pct, pill, poll, promptDialog, table, toast } from "./dom.js";
import { legend, lineChart, PALETTE } from "./charts.js";
import { renderConfig, renderVersions } from "./config.js";
import { renderLogs } from "./logs.js";
import { renderLive } from "./live.js";

const TABS = [
  ["backends", "Backends"],
  ["analytics", "Analytics"],
  ["logs", "Request log"],
  ["live", "Live"],
  ["config", "Configuration"],
  ["versions", "Versions"],
  ["audit", "Audit"],
];

export function renderService(main, host, tab) {
  const head = h("div", { class: "page-head" }, h("h1", {}, host));
  const tabs = h(
    "nav",
    { class: "tabs", "aria-label": "Service sections" },
    TABS.map(([id, label]) => h("a", { href: `#/services/${encodeURIComponent(host)}/${id}`, "aria-current": id === tab ? "page" : null }, label)),
  );
  const body = h("div", { class: "tab-body" });
  mount(main, h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " / ", host), head, tabs, body);
  const views = { backends: renderBackends, analytics: renderAnalytics, logs: renderLogs, live: renderLive, config: renderConfig, versions: renderVersions, audit: renderAudit };
  return (views[tab] ?? renderBackends)(body, host, head);
}

/** Health of a backend as a pill. */
function healthPill(b) {
  if (b.state === "disabled") return pill("disabled", "off");
  if (b.health === "unknown") return pill("unknown", "off");
  return b.healthy ? pill("healthy", "ok") : pill("unhealthy", "bad");
}

function breakerCell(b, now) {
  if (b.breaker === "closed") return pill("closed", "ok");
  if (b.breaker === "open") return h("span", {}, pill("open", "bad"), h("small", { class: "muted block" }, b.breaker_open_until_ms ? `may close ${ago(b.breaker_open_until_ms, now)}` : ""));
  return h("span", {}, pill("half-open", "warn"), h("small", { class: "muted block" }, "trial requests"));
}

const STATE_KIND = { enabled: "ok", draining: "warn", disabled: "off" };
const HEALTH_KIND = { healthy: "ok", degraded: "warn", critical: "bad" };
const words = (v) => String(v ?? "").replaceAll("_", " ");

/** Pool health from the status view: each pool's badge and healthy / total. */
function poolsCard(pools) {
  return h(
    "section",
    { class: "card", id: "pools" },
    h("h2", {}, "Pools"),
    h(
      "ul",
      { class: "pools" },
      pools.map((p) => h("li", { "data-pool": p.name }, h("strong", {}, p.name), pill(p.health, HEALTH_KIND[p.health] ?? "off"), h("span", { class: "muted" }, `${p.healthy_backends ?? p.healthy} / ${p.total_backends ?? p.total} healthy`))),
    ),
  );
}

/** Requests in flight and the decaying response-time average, when the steering mode tracks them. */
function inFlight(b) {
  const parts = [b.outstanding ? `${b.outstanding} in flight` : null, b.ewma_ms != null ? `avg ${ms(b.ewma_ms)}` : null].filter(Boolean);
  return parts.length ? h("small", { class: "muted block", title: "in flight now · decaying average response time" }, parts.join(" · ")) : null;
}

/** The backend's last error, and the monitor's reason when its last probe failed for another one. */
function lastError(b) {
  const reason = b.monitor?.result === "down" ? b.monitor.reason : null;
  return [b.last_error ?? "", reason && reason !== b.last_error ? h("small", { class: "block" }, `monitor: ${reason}`) : null];
}

function renderBackends(body, host, head) {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading backends…"));
  const probeOut = h("div", { id: "probe-results" });
  const probeBtn = h("button", { type: "button", class: "primary", id: "run-health-checks" }, "Run health checks now");
  let status = null;
  const pools = () => {
    const map = {};
    for (const p of status?.config?.pools ?? []) for (const b of p.backends) (map[typeof b === "string" ? b : b.url] ??= []).push(p.name);
    return map;
  };
  const change = async (b, patch, done) => {
    try {
      await api(svc(host, "/backends"), { method: "PATCH", body: { url: b.url, ...patch }, ifMatch: status.version });
      toast(done);
      await refresh();
    } catch (e) {
      toast(e.status === 412 ? "Someone else changed this service just now; the table is reloaded." : `Not changed: ${e.message}`, "bad");
      await refresh();
    }
  };
  const actions = (b) => {
    const out = [];
    if (b.state !== "enabled") out.push(h("button", { type: "button", onclick: () => change(b, { state: "enabled" }, `${b.url} enabled`) }, "Enable"));
    if (b.state !== "draining") out.push(h("button", { type: "button", onclick: () => change(b, { state: "draining" }, `${b.url} draining: it takes no new traffic`) }, "Drain"));
    if (b.state !== "disabled")
      out.push(
        h(
          "button",
          {
            type: "button",
            class: "danger-outline",
            onclick: async () => {
              const ok = await confirmDialog({ title: "Disable backend?", body: h("p", {}, "No traffic and no health checks will go to ", h("code", {}, b.url), " until it is enabled again."), confirm: "Disable", danger: true });
              if (ok) change(b, { state: "disabled" }, `${b.url} disabled`);
            },
          },
          "Disable",
        ),
      );
    out.push(
      h(
        "button",
        {
          type: "button",
          onclick: async () => {
            const v = await promptDialog({ title: "Change weight", label: `Weight of ${b.url} (1–1000)`, value: b.weight, type: "number", min: 1, max: 1000 });
            if (v != null) change(b, { weight: Number(v) }, `${b.url} weight ${v}`);
          },
        },
        "Weight…",
      ),
    );
    return h("div", { class: "row-actions" }, out);
  };
  const draw = () => {
    const now = Date.now();
    const inPools = pools();
    const rows = status.backends.map((b) =>
      h(
        "tr",
        { "data-backend": b.url },
        h("td", {}, h("code", { class: "url" }, b.url), inPools[b.url] ? h("small", { class: "muted block" }, `pool ${inPools[b.url].join(", ")}`) : null),
        h("td", {}, pill(b.state, STATE_KIND[b.state] ?? "off")),
        h("td", {}, healthPill(b), h("small", { class: "muted block" }, `${b.consecutive_successes} ok · ${b.consecutive_failures} failed in a row`)),
        h("td", {}, breakerCell(b, now), b.consecutive_request_failures ? h("small", { class: "muted block" }, `${b.consecutive_request_failures} request failures`) : null),
        h("td", { class: "num" }, String(b.weight), b.effective_weight != null && b.effective_weight !== b.weight ? h("small", { class: "muted block" }, `now ${Math.round(b.effective_weight * 10) / 10}`) : null),
        h("td", { class: "num" }, ms(b.latency_ms), inFlight(b)),
        h("td", {}, b.last_probe_ms ? ago(b.last_probe_ms, now) : "never", h("small", { class: "muted block" }, b.health_path ?? "")),
        h("td", { class: "err-cell" }, lastError(b), b.error_rate != null ? h("small", { class: "muted block" }, `${pct(b.error_rate)} errors`) : null),
        h("td", {}, actions(b)),
      ),
    );
    const pillEl = head.querySelector(".pill");
    const health = [status.health, HEALTH_KIND[status.health] ?? "off"];
    if (pillEl) pillEl.replaceWith(pill(...health));
    else head.append(pill(...health), h("span", { class: "muted" }, `config v${status.version}`));
    head.querySelector(".muted").textContent = status.version === 0 ? "config from DEFAULT_BACKENDS" : `config v${status.version}`;
    const steering = status.endpoint_steering ? `${words(status.endpoint_steering)} within a pool${status.pools?.length ? ` · pools by ${words(status.steering)}` : ""}` : "";
    let steer = head.querySelector("#steering");
    if (!steer) head.append((steer = h("span", { class: "muted", id: "steering", title: "load_balancer.endpoint_steering and steering" })));
    steer.textContent = steering ? `Steering: ${steering}` : "";
    const d = status.decisions;
    let mode = head.querySelector("#decisions");
    if (!mode) head.append((mode = h("span", { class: "muted", id: "decisions", title: "decisions.mode: where routing decisions are made" })));
    mode.textContent = !d
      ? ""
      : d.mode === "lease"
        ? `Decisions: lease mode (${d.lease_ms} ms), ${d.leases_outstanding} lease${d.leases_outstanding === 1 ? "" : "s"} outstanding`
        : "Decisions: per request";
    mount(list, status.pools?.length ? poolsCard(status.pools) : null, h("section", { class: "card flush" }, table(["Backend", "State", "Health", "Breaker", "Weight", "Latency", "Last probe", "Last error", "Actions"], rows, { id: "backends" })));
  };
  const refresh = async () => {
    try {
      status = await get(svc(host));
      draw();
    } catch (e) {
      mount(list, h("p", { class: "error" }, e.status === 404 ? `No service is configured for ${host}.` : e.message));
    }
  };
  probeBtn.addEventListener("click", async () => {
    probeBtn.disabled = true;
    mount(probeOut, h("p", { class: "muted" }, "Probing every enabled backend…"));
    try {
      const { results } = await get2(svc(host, "/health-check"));
      mount(
        probeOut,
        h(
          "section",
          { class: "card" },
          h("h2", {}, "Health check results"),
          table(
            ["Backend", "Result", "Status", "Path", "Latency", "Error"],
            (results ?? []).map((r) => h("tr", {}, h("td", {}, h("code", {}, r.url)), h("td", {}, r.ok ? pill("passed", "ok") : pill("failed", "bad")), h("td", { class: "num" }, r.status ?? "–"), h("td", {}, h("code", {}, r.path)), h("td", { class: "num" }, ms(r.latency_ms)), h("td", {}, r.error ?? ""))),
            { id: "probe-table" },
          ),
        ),
      );
      await refresh();
    } catch (e) {
      mount(probeOut, h("p", { class: "error" }, `Health checks failed: ${e.message}`));
    } finally {
      probeBtn.disabled = false;
    }
  });
  const get2 = async (p) => (await api(p, { method: "POST" })).body;
  mount(body, h("div", { class: "toolbar" }, probeBtn, h("span", { class: "muted" }, "Refreshes every 5 s")), list, probeOut);
  return poll(refresh, 5000);
}

const WINDOWS = [
  ["15m", "15 min", 900, 30],
  ["1h", "1 hour", 3600, 60],
  ["24h", "24 hours", 86400, 900],
];

function renderAnalytics(body, host) {
  let win = WINDOWS[0];
  const out = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const picker = h(
    "div",
    { class: "segmented", role: "group", "aria-label": "Time window" },
    WINDOWS.map((w) =>
      h(
        "button",
        {
          type: "button",
          "aria-pressed": String(w === win),
          onclick: (e) => {
            win = w;
            for (const b of picker.children) b.setAttribute("aria-pressed", String(b === e.currentTarget));
            load();
          },
        },
        w[1],
      ),
    ),
  );
  const load = async () => {
    const [, , windowS, bucketS] = win;
    try {
      const m = await get(svc(host, `/metrics?window=${windowS}&bucket=${bucketS}`));
      mount(out, charts(m, windowS, bucketS));
    } catch (e) {
      mount(out, h("p", { class: "error" }, e.message));
    }
  };
  mount(body, h("div", { class: "toolbar" }, picker, h("span", { class: "muted" }, "From the request log in D1 (written in batches: the last seconds may be missing)")), out);
  return poll(load, 15000);
}

function charts(m, windowS, bucketS) {
  const bucketMs = bucketS * 1000;
  const to = Math.floor(m.now_ms / bucketMs) * bucketMs;
  const from = to - Math.ceil(windowS / bucketS - 1) * bucketMs;
  const names = [...new Set((m.backends ?? []).map((b) => b.backend ?? "(no backend)"))];
  const color = (n) => PALETTE[names.indexOf(n) % PALETTE.length];
  const byBackend = {};
  for (const p of m.series ?? []) (byBackend[p.backend ?? "(no backend)"] ??= new Map()).set(p.t_ms, p);
  const ticks = [];
  for (let t = from; t <= to; t += bucketMs) ticks.push(t);
  const series = (pick, opts = {}) => names.map((n) => ({ name: n, color: color(n), ...opts, points: ticks.map((t) => [t, pick(byBackend[n]?.get(t))]) }));
  const perSec = (p) => (p ? p.requests / bucketS : 0);
  const totals = table(
    ["Backend", "Requests", "Success rate", "p50", "p95", "p99", "Retried"],
    (m.backends ?? []).map((b) => h("tr", {}, h("td", {}, h("span", { class: "swatch", "data-color": color(b.backend ?? "(no backend)") }), h("code", {}, b.backend ?? "(no backend)")), h("td", { class: "num" }, String(b.requests)), h("td", { class: "num" }, pct(b.success_rate)), h("td", { class: "num" }, ms(b.p50_ms)), h("td", { class: "num" }, ms(b.p95_ms)), h("td", { class: "num" }, ms(b.p99_ms)), h("td", { class: "num" }, String(b.retried)))),
    { id: "metrics-table" },
  );
  for (const sw of totals.querySelectorAll(".swatch")) sw.style.background = sw.dataset.color;
  return h(
    "div",
    { class: "charts" },
    legend(names.map((n) => ({ name: n, color: color(n) }))),
    h(
      "div",
      { class: "chart-grid" },
      lineChart({ title: "Requests per second", series: series(perSec), from, to, format: (v) => (v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : String(Number(v.toPrecision(2)))) }),
      lineChart({ title: "Success rate (non-5xx)", series: series((p) => p?.success_rate ?? null), from, to, yMax: 1, format: (v) => `${Math.round(v * 100)}%` }),
      lineChart({ title: "Latency p95 (solid) and p50 (dashed)", series: [...series((p) => p?.p95_ms ?? null), ...series((p) => p?.p50_ms ?? null, { dashed: true })], from, to, format: (v) => ms(v) }),
    ),
    h("section", { class: "card" }, h("h2", {}, "Totals over the window"), totals),
  );
}

function renderAudit(body, host) {
  const out = h("div", {}, h("p", { class: "muted" }, "Loading the audit trail…"));
  mount(body, out);
  (async () => {
    try {
      const { entries } = await get(svc(host, "/audit"));
      if (!entries?.length) return mount(out, h("p", { class: "muted" }, "No changes recorded yet."));
      mount(
        out,
        table(
          ["When", "Who", "Action", "What changed", "Version"],
          entries.map((e) => h("tr", {}, h("td", {}, new Date(e.at).toLocaleString()), h("td", {}, e.actor?.name ?? "", h("small", { class: "muted block" }, e.actor?.kind ?? "")), h("td", {}, e.action ?? ""), h("td", {}, e.summary ?? ""), h("td", { class: "num" }, e.version == null ? "–" : `v${e.version}`))),
          { id: "audit" },
        ),
      );
    } catch (e) {
      const missing = e.status === 404 || e.status === 405;
      mount(out, h("p", { class: missing ? "muted" : "error", id: "audit-unavailable" }, missing ? "This deployment does not record an audit trail yet." : e.message));
    }
  })();
  return () => {};
}
