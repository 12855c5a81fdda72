// Add a service: hostname, backends and the common options, sent to the same parser as every
// config write; its errors are shown at the form field they belong to.
import { api, get, svc } from "./api.js";
import { clearFieldErrors, field, h, mount, showFieldError, toast } from "./dom.js";
import { pretty } from "./diff.js";

/** Which form field an error path belongs to (the longest matching prefix). */
const FIELD_OF = [
  ["hostname", "hostname"],
  ["backends", "backends"],
  ["activeHealthChecks.path", "health_path"],
  ["activeHealthChecks.interval", "interval"],
  ["activeHealthChecks.timeout", "timeout"],
  ["activeHealthChecks", "interval"],
  ["retries", "retries"],
  ["load_balancer.session_affinity", "affinity"],
  ["rate_limit", "rate_requests"],
];

export function renderAdd(main) {
  const form = h(
    "form",
    { class: "card form-grid", id: "add-service", novalidate: true },
    field("hostname", "Hostname", h("input", { name: "hostname", placeholder: "api.example.com", autocomplete: "off", spellcheck: "false" }), "The hostname clients use; route it to this Worker."),
    field("backends", "Backends", h("textarea", { name: "backends", rows: 4, class: "code", placeholder: "https://origin-1.example.com\nhttps://origin-2.example.com 3", spellcheck: "false" }), "One URL per line; an optional weight after a space."),
    field("health_path", "Health check path", h("input", { name: "health_path", placeholder: "/health (discovered when empty)" })),
    field("interval", "Check every (s)", h("input", { name: "interval", type: "number", step: "any", placeholder: "60" })),
    field("timeout", "Check timeout (s)", h("input", { name: "timeout", type: "number", step: "any", placeholder: "5" })),
    field("retries", "Retries", h("input", { name: "retries", type: "number", placeholder: "1" })),
    field("affinity", "Session affinity", h("select", { name: "affinity" }, h("option", { value: "" }, "Off"), h("option", { value: "cookie" }, "Cookie"), h("option", { value: "ip_cookie" }, "Client IP, then cookie"))),
    field("rate_requests", "Rate limit (requests per minute per client)", h("input", { name: "rate_requests", type: "number", placeholder: "off" })),
    h("div", { class: "actions wide" }, h("button", { type: "submit", class: "primary" }, "Add service")),
  );
  const preview = h("pre", { class: "code preview", id: "add-preview" });
  const message = h("div", { id: "add-message" });
  mount(main, h("div", { class: "page-head" }, h("h1", {}, "Add a service")), form, message, h("details", { class: "card" }, h("summary", {}, "The config this form sends"), preview));

  const build = () => {
    const f = Object.fromEntries(new FormData(form));
    const num = (v) => (v.trim() === "" ? undefined : Number(v));
    const backends = f.backends
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean)
      .map((l) => {
        const [url, weight] = l.split(/\s+/);
        return weight === undefined ? url : { url, weight: Number(weight) };
      });
    const cfg = { hostname: f.hostname.trim(), backends };
    const health = { path: f.health_path.trim() || undefined, interval: num(f.interval), timeout: num(f.timeout) };
    if (Object.values(health).some((v) => v !== undefined)) cfg.activeHealthChecks = health;
    if (num(f.retries) !== undefined) cfg.retries = num(f.retries);
    if (f.affinity) cfg.load_balancer = { session_affinity: { type: f.affinity } };
    if (num(f.rate_requests) !== undefined) cfg.rate_limit = { requests: num(f.rate_requests), window: 60 };
    return cfg;
  };
  const show = () => (preview.textContent = pretty(build()));
  form.addEventListener("input", show);
  show();

  const fieldError = (path, text) => showFieldError(form, FIELD_OF.find(([prefix]) => path === prefix || path.startsWith(`${prefix}.`) || path.startsWith(`${prefix}[`))?.[1], text);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearFieldErrors(form);
    mount(message);
    const cfg = build();
    if (!cfg.hostname) return fieldError("hostname", "required");
    try {
      const { services } = await get("/admin/services?window=60");
      if (services.some((s) => s.hostname === cfg.hostname.toLowerCase())) return fieldError("hostname", `${cfg.hostname} already has a service; edit it on its page.`);
      const { body: b } = await api(svc(cfg.hostname, "/config"), { method: "PUT", body: cfg });
      toast(`${cfg.hostname} added (version ${b.version})`);
      location.hash = `#/services/${encodeURIComponent(cfg.hostname)}`;
    } catch (err) {
      if (!err.errors.length && /^hostname:/.test(err.message)) return fieldError("hostname", err.message);
      const rest = [];
      for (const x of err.errors) if (!fieldError(x.path, `${x.path ? `${x.path}: ` : ""}${x.message}`)) rest.push(x);
      if (rest.length || !err.errors.length) mount(message, h("div", { class: "card alert", role: "alert" }, h("ul", {}, (rest.length ? rest : [{ path: "", message: err.message }]).map((x) => h("li", {}, x.path ? [h("code", {}, x.path), " "] : null, x.message)))));
    }
  });
  return () => {};
}
