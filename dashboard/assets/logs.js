// Request log: filters (status class, backend, method, path prefix) and paging by cursor, as
// the logs endpoint answers them. The log keeps every failed, retried, refused or slow request;
// successes are sampled, and the page says at what rate.
import { get, svc } from "./api.js";
import { h, mount, ms, table, unavailable } from "./dom.js";

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

const statusKind = (s) => (s >= 500 ? "bad-text" : s >= 400 ? "warn-text" : "");
/** `logging.success_sample_rate` when the service's config does not set it. */
const DEFAULT_SAMPLE_RATE = 0.01;

function samplingNote(rate) {
  const share = `${+(rate * 100).toFixed(2)}%`;
  return `Every failed, retried, refused or slow request is kept; successes are sampled at ${share} (logging.success_sample_rate).`;
}

export function renderLogs(body, host) {
  const backend = h("select", { name: "backend", "aria-label": "Backend" }, h("option", { value: "" }, "Any backend"));
  const form = h(
    "form",
    { class: "filters", id: "log-filters" },
    h("label", { class: "field" }, h("span", {}, "Status"), h("select", { name: "status_class" }, h("option", { value: "" }, "Any"), ["2xx", "3xx", "4xx", "5xx"].map((c) => h("option", { value: c }, c)))),
    h("label", { class: "field" }, h("span", {}, "Backend"), backend),
    h("label", { class: "field" }, h("span", {}, "Method"), h("select", { name: "method" }, h("option", { value: "" }, "Any"), METHODS.map((m) => h("option", { value: m }, m)))),
    h("label", { class: "field" }, h("span", {}, "Path starts with"), h("input", { name: "path_prefix", placeholder: "/api/", autocomplete: "off" })),
    h("label", { class: "field" }, h("span", {}, "Per page"), h("select", { name: "limit" }, [25, 50, 100, 200].map((n) => h("option", { value: n, selected: n === 50 }, String(n))))),
    h("div", { class: "field" }, h("span", {}, " "), h("button", { type: "submit", class: "primary" }, "Apply")),
  );
  const out = h("div", { id: "log-results" });
  const pager = h("div", { class: "pager" });
  const note = h("p", { class: "muted", id: "log-sampling" }, samplingNote(DEFAULT_SAMPLE_RATE));
  const cursors = []; // `before` of each page shown so far; [] is the newest page
  mount(body, note, form, out, pager);

  get(svc(host, "/config"))
    .then((b) => {
      const rate = b.config?.logging?.success_sample_rate;
      if (typeof rate === "number") note.textContent = samplingNote(rate);
    })
    .catch(() => {});

  get(svc(host))
    .then((st) => {
      for (const b of st.backends) backend.append(h("option", { value: b.url }, b.url));
    })
    .catch(() => {});

  const params = (before) => {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, v);
    if (before) p.set("before", before);
    return p;
  };
  const load = async () => {
    const before = cursors[cursors.length - 1];
    mount(out, h("p", { class: "muted" }, "Loading…"));
    try {
      const page = await get(svc(host, `/logs?${params(before)}`));
      const rows = page.requests.map((r) =>
        h(
          "tr",
          {},
          h("td", {}, new Date(r.ts_ms).toLocaleTimeString()),
          h("td", {}, r.method),
          h("td", { class: "path" }, h("code", {}, r.path)),
          h("td", { class: ["num", statusKind(r.status)] }, String(r.status)),
          h("td", {}, r.backend ? h("code", {}, r.backend) : h("span", { class: "muted" }, "none")),
          h("td", { class: "num" }, String(r.attempts)),
          h("td", { class: "num" }, ms(r.latency_ms)),
          h("td", { "data-kept": r.kept ?? "" }, r.kept ?? h("span", { class: "muted" }, "–"), r.failed?.length ? h("span", { class: "muted" }, ` · ${r.failed.length} failed`) : null),
        ),
      );
      mount(out, rows.length ? table(["Time", "Method", "Path", "Status", "Backend", "Attempts", "Latency", "Kept"], rows, { id: "log-table" }) : h("p", { class: "muted", id: "log-empty" }, "No requests match these filters."));
      mount(
        pager,
        h("span", { class: "muted" }, `Page ${cursors.length + 1} · ${rows.length} rows · newest first`),
        h("button", { type: "button", disabled: cursors.length === 0, onclick: () => (cursors.pop(), load()) }, "← Newer"),
        h("button", { type: "button", id: "log-older", disabled: !page.next_before, onclick: () => (cursors.push(page.next_before), load()) }, "Older →"),
      );
    } catch (e) {
      mount(out, unavailable(e, "The request log") ?? h("p", { class: "error", role: "alert" }, e.message));
      mount(pager);
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    cursors.length = 0;
    load();
  });
  load();
  return () => {};
}
