// Service page: header, tabs, the backends table with its actions and health checks on demand,
// the add-backend form, the traffic charts and the audit trail. Configuration, rules, the request log, the
// live tail and the health and webhook history have their own modules.
import { api, get, svc } from "./api.js";
import { ago, clearFieldErrors, confirmDialog, field, h, mount, ms, pct, pill, poll, promptDialog, rate, showFieldError, table, toast, unavailable } from "./dom.js";
import { legend, lineChart, PALETTE } from "./charts.js";
import { renderConfig, renderVersions } from "./config.js";
import { renderRules } from "./rules.js";
import { renderLogs } from "./logs.js";
import { renderLive } from "./live.js";
import { renderHealthHistory, renderWebhooks } from "./history.js";

const TABS = [
  ["backends", "Backends"],
  ["analytics", "Analytics"],
  ["logs", "Request log"],
  ["live", "Live"],
  ["health", "Health history"],
  ["webhooks", "Webhooks"],
  ["rules", "Rules"],
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
  const views = { backends: renderBackends, analytics: renderAnalytics, logs: renderLogs, live: renderLive, health: renderHealthHistory, webhooks: renderWebhooks, rules: renderRules, config: renderConfig, versions: renderVersions, audit: renderAudit };
  return (views[tab] ?? renderBackends)(body, host, head);
}

/** Health of a backend as a pill. */
function healthPill(b) {
  if (b.state === "disabled") return pill("disabled", "off");
  if (b.health === "unknown") return pill("unknown", "off");
  // Probe regions: seen down from fewer than the quorum, it stays in traffic (degraded).
  const down = Object.keys(b.regions ?? {}).filter((r) => b.regions[r] === "down");
  const where = down.length ? h("small", { class: "muted block regions-down" }, `down from ${down.join(", ")}`) : null;
  if (b.healthy && where) return h("span", { title: "seen down from a minority of probe regions; still in traffic" }, pill("degraded", "warn"), where);
  const p = b.healthy ? pill("healthy", "ok") : pill("unhealthy", "bad");
  return where ? h("span", {}, p, where) : p;
}

/** The health score (0–100), green from 80, amber from 50, red below. */
const scorePill = (s) => (s == null ? "–" : h("span", { class: `pill ${s >= 80 ? "ok" : s >= 50 ? "warn" : "bad"}`, title: "health score: probes, errors, latency, breaker" }, String(s)));

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

/** The `dns` record set: its addresses, the last sync, and whether it is held (nothing healthy). */
function dnsCard(d, now) {
  const last = d.last_sync;
  return h(
    "section",
    { class: "card", id: "dns" },
    h("h2", {}, "DNS records ", h("code", {}, d.name)),
    h("p", {}, d.records.length ? d.records.map((r) => h("code", { class: "url" }, `${r.type} ${r.content} `)) : h("span", { class: "muted" }, "none written yet")),
    d.held ? h("p", {}, pill("held", "warn"), " no healthy backend, the last set stays") : null,
    h("p", { class: "muted" }, last ? [`last sync ${ago(last.at_ms, now)}: `, last.error ? pill("failed", "bad") : pill("synced", "ok"), last.error ? ` ${last.error}` : ""] : "not synced yet"),
  );
}

/** The config change FlowBalance is watching (change_safety), with both error rates so far; null when none is. */
function watchBanner(w) {
  if (!w) return null;
  const rate = (t) => `${t.error_rate}% of ${t.requests} request${t.requests === 1 ? "" : "s"}`;
  return h(
    "p",
    { class: "notice", id: "change-watch", role: "status" },
    h("strong", {}, `Watching config v${w.version}`),
    ` · ${w.seconds_left} s left · errors ${rate(w.after)} since the change, ${rate(w.before)} in the 5 minutes before. `,
    `It is rolled back to v${w.previous_version} automatically if errors rise by more than ${w.max_error_rate_increase} points over at least ${w.min_requests} requests.`,
  );
}

/** Requests in flight and the decaying response-time average, when the steering mode tracks them. */
function inFlight(b) {
  const parts = [b.outstanding ? `${b.outstanding} in flight` : null, b.ewma_ms != null ? `avg ${ms(b.ewma_ms)}` : null].filter(Boolean);
  return parts.length ? h("small", { class: "muted block", title: "in flight now · decaying average response time" }, parts.join(" · ")) : null;
}

/** Probe latency from each region that sees the backend up (activeHealthChecks.regions). */
function regionLatency(b) {
  const list = Object.entries(b.region_latency_ms ?? {});
  return list.length ? h("small", { class: "muted block" }, list.map(([r, l]) => `${r} ${ms(l)}`).join(" · ")) : null;
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
        h("td", {}, healthPill(b), b.regions ? null : h("small", { class: "muted block" }, `${b.consecutive_successes} ok · ${b.consecutive_failures} failed in a row`)),
        h("td", { class: "num score" }, scorePill(b.health_score)),
        h("td", {}, breakerCell(b, now), b.consecutive_request_failures ? h("small", { class: "muted block" }, `${b.consecutive_request_failures} request failures`) : null),
        h("td", { class: "num" }, String(b.weight), b.effective_weight != null && b.effective_weight !== b.weight ? h("small", { class: "muted block" }, `now ${Math.round(b.effective_weight * 10) / 10}`) : null),
        h("td", { class: "num" }, ms(b.latency_ms), inFlight(b), regionLatency(b)),
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
    // The mode in effect, then why: what auto found, or that decisions.mode says so.
    const effective = d?.effective_mode ?? d?.mode;
    const chosen = d?.why ? ` · ${d.mode === "auto" ? "auto: " : ""}${d.why}` : "";
    mode.textContent = !d
      ? ""
      : effective === "lease"
        ? `Decisions: lease mode (${d.lease_ms} ms), ${d.leases_outstanding} lease${d.leases_outstanding === 1 ? "" : "s"} outstanding${chosen}`
        : `Decisions: per request${chosen}`;
    mount(list, watchBanner(status.change_watch), status.pools?.length ? poolsCard(status.pools) : null, status.dns ? dnsCard(status.dns, now) : null, h("section", { class: "card flush" }, table(["Backend", "State", "Health", "Score", "Breaker", "Weight", "Latency", "Last probe", "Last error", "Actions"], rows, { id: "backends" })));
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
      const { results, regions } = await get2(svc(host, "/health-check"));
      if (regions?.length) {
        mount(probeOut, h("p", { class: "muted", id: "probe-regions" }, `The probers in ${regions.join(", ")} are probing now; the table follows their reports.`));
        return await refresh();
      }
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
  mount(body, h("div", { class: "toolbar" }, probeBtn, h("span", { class: "muted" }, "Refreshes every 5 s")), list, addBackendForm(host, () => status, refresh), probeOut);
  return poll(refresh, 5000);
}

/**
 * Adds a backend through `POST .../backends`, on top of the version the table shows (If-Match).
 * An error goes under its field: `url`, `weight`, `state`, or the new backend's entry
 * (`backends[N].url`) when the whole config's check refused it.
 */
function addBackendForm(host, current, refresh) {
  const form = h(
    "form",
    { class: "card form-grid compact", id: "add-backend", novalidate: true, "aria-labelledby": "add-backend-title" },
    h("h2", { class: "wide", id: "add-backend-title" }, "Add a backend"),
    field("url", "URL", h("input", { name: "url", placeholder: "https://origin-3.example.com", autocomplete: "off", spellcheck: "false" }), "http or https, with an optional port and path prefix."),
    field("weight", "Weight", h("input", { name: "weight", type: "number", placeholder: "1", min: 1, max: 1000 })),
    field("state", "State", h("select", { name: "state" }, h("option", { value: "enabled" }, "Enabled: takes traffic"), h("option", { value: "draining" }, "Draining: no new traffic"), h("option", { value: "disabled" }, "Disabled"))),
    h("div", { class: "field" }, h("span", {}, " "), h("button", { type: "submit", class: "primary" }, "Add backend")),
  );
  const message = h("p", { class: "error wide", id: "add-backend-message", role: "alert" });
  form.append(message);
  const fieldOf = (path) => {
    const inner = path.replace(/^(backends|pools\[\d+\]\.backends)\[\d+\]\.?/, "");
    const name = inner.split(/[.[]/)[0] || "url";
    return ["url", "weight", "state"].includes(name) ? name : null;
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearFieldErrors(form);
    message.textContent = "";
    const f = Object.fromEntries(new FormData(form));
    const url = f.url.trim();
    if (!url) return showFieldError(form, "url", "required: the backend's URL");
    const backend = { url, state: f.state };
    if (f.weight.trim() !== "") backend.weight = Number(f.weight);
    const status = current();
    if (!status) return (message.textContent = "The service is still loading; try again in a moment.");
    try {
      const { body: b } = await api(svc(host, "/backends"), { method: "POST", body: backend, ifMatch: status.version });
      toast(`${url} added (version ${b.version})`);
      form.reset();
      await refresh();
    } catch (err) {
      if (err.status === 412) {
        message.textContent = "Someone else changed this service just now; the table is reloaded. Check it and add again.";
        return refresh();
      }
      const rest = err.errors.filter((x) => !showFieldError(form, fieldOf(x.path ?? ""), x.message));
      if (rest.length || !err.errors.length) message.textContent = rest.length ? rest.map((x) => `${x.path ? `${x.path}: ` : ""}${x.message}`).join(" ") : err.message;
    }
  });
  return form;
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
      mount(out, unavailable(e, "Analytics") ?? h("p", { class: "error" }, e.message));
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
    serviceTotals(m.total, windowS),
    legend(names.map((n) => ({ name: n, color: color(n) }))),
    h(
      "div",
      { class: "chart-grid" },
      lineChart({ title: "Requests per second", series: series(perSec), from, to, format: (v) => (v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : String(Number(v.toPrecision(2)))) }),
      lineChart({ title: "Success rate (non-5xx)", series: series((p) => p?.success_rate ?? null), from, to, yMax: 1, format: (v) => `${Math.round(v * 100)}%` }),
      lineChart({ title: "Latency p95 (solid) and p50 (dashed)", series: [...series((p) => p?.p95_ms ?? null), ...series((p) => p?.p50_ms ?? null, { dashed: true })], from, to, format: (v) => ms(v) }),
    ),
    h("section", { class: "card" }, h("h2", {}, "By backend over the window"), totals),
    errorBreakdown(m.errors_by_status ?? [], m.total),
  );
}

/** The whole service over the window: one tile per figure. */
function serviceTotals(t, windowS) {
  const tile = (label, value, kind) => h("div", { class: ["tile", kind], "data-total": label }, h("span", { class: "tile-label" }, label), h("strong", {}, value));
  const errRate = t?.requests ? t.errors / t.requests : null;
  return h(
    "section",
    { class: "tiles", id: "service-totals", "aria-label": "Service totals over the window" },
    tile("Requests", t ? String(t.requests) : "0"),
    tile("Per second", t ? rate(t.requests / windowS) : "–"),
    tile("5xx errors", t ? String(t.errors) : "0", t?.errors ? "bad" : null),
    tile("Error rate", errRate == null ? "–" : pct(errRate), errRate > 0.05 ? "bad" : errRate > 0 ? "warn" : null),
    tile("p50 / p95 / p99", t ? `${ms(t.p50_ms)} / ${ms(t.p95_ms)} / ${ms(t.p99_ms)}` : "–"),
    tile("Retried", t ? String(t.retried) : "0"),
  );
}

/** What the error statuses were and who answered them (a backend, or FlowBalance when none could). */
const SOURCE = { backend: "a backend", flowbalance: "FlowBalance (no backend answered)" };
function errorBreakdown(rows, total) {
  const head = h("h2", {}, "Errors by status");
  if (!rows.length) return h("section", { class: "card", id: "error-breakdown" }, head, h("p", { class: "muted" }, "No 4xx or 5xx answers in this window."));
  const max = Math.max(...rows.map((r) => r.requests));
  const list = table(
    ["Status", "Answered by", "Requests", "Share of all requests", ""],
    rows.map((r) =>
      h(
        "tr",
        // A backend's 4xx are counted by class only (the log keeps them as samples): status is null.
        { "data-status": r.status ?? r.class, "data-source": r.source },
        h("td", { class: ["num", r.class === "5xx" ? "bad-text" : "warn-text"] }, String(r.status ?? r.class)),
        h("td", {}, SOURCE[r.source] ?? r.source),
        h("td", { class: "num" }, String(r.requests)),
        h("td", { class: "num" }, total?.requests ? pct(r.requests / total.requests) : "–"),
        h("td", { class: "bar-cell" }, h("span", { class: ["bar", r.class === "5xx" ? "bad" : "warn"], "data-width": Math.max(2, Math.round((r.requests / max) * 100)) })),
      ),
    ),
    { id: "errors-table" },
  );
  // Set through the CSSOM: the CSP allows no inline style attributes.
  for (const bar of list.querySelectorAll(".bar")) bar.style.width = `${bar.dataset.width}%`;
  return h("section", { class: "card", id: "error-breakdown" }, head, list);
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
