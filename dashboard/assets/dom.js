// DOM building and formatting helpers. Text from the API only ever goes in as text nodes or
// attribute values, never as HTML.

/** Creates an element: `h("a", { href, class: "x", onclick }, "text", child)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Creates an SVG element (same arguments as `h`). */
export function s(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

function fill(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    else if (k === "value" && "value" in el) el.value = v;
    else if (k === "checked" || k === "selected" || k === "disabled" || k === "hidden" || k === "open") el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Milliseconds as "12 ms" / "1.3 s". */
export function ms(v) {
  if (v == null || Number.isNaN(v)) return "–";
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} s`;
  return `${v >= 10 ? Math.round(v) : Math.round(v * 10) / 10} ms`;
}

/** A 0..1 share as "99.5%". */
export function pct(v) {
  if (v == null || Number.isNaN(v)) return "–";
  const p = v * 100;
  return `${p === 100 || p === 0 ? p.toFixed(0) : p >= 99.9 ? p.toFixed(2) : p.toFixed(1)}%`;
}

/** Requests per second. */
export function rate(v) {
  if (v == null || Number.isNaN(v)) return "–";
  return `${v >= 100 ? Math.round(v) : v >= 1 ? v.toFixed(1) : v.toFixed(2)}/s`;
}

/** Time since `t` (epoch ms) as "5 s ago"; in the future as "in 5 s". */
export function ago(t, now = Date.now()) {
  if (!t) return "never";
  const d = Math.round((now - t) / 1000);
  const span = (x) => (x < 60 ? `${x} s` : x < 3600 ? `${Math.round(x / 60)} min` : x < 86400 ? `${Math.round(x / 3600)} h` : `${Math.round(x / 86400)} d`);
  return d >= 0 ? `${span(d)} ago` : `in ${span(-d)}`;
}

export function clock(t) {
  return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function dateTime(t) {
  return t ? new Date(t).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" }) : "–";
}

/** A coloured label: kind is one of ok, warn, bad, off, info. */
export function pill(text, kind) {
  return h("span", { class: `pill ${kind}` }, text);
}

const toasts = () => document.getElementById("toasts") ?? document.body.appendChild(h("div", { id: "toasts", role: "status", "aria-live": "polite" }));

/** A short message in the corner; errors stay until dismissed. */
export function toast(text, kind = "ok") {
  const t = h("div", { class: `toast ${kind}` }, h("span", {}, text), h("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: () => t.remove() }, "×"));
  toasts().append(t);
  if (kind !== "bad") setTimeout(() => t.remove(), 5000);
}

/**
 * A modal dialog that resolves true on confirm, false on cancel. `body` is a node or text;
 * `typed` asks the operator to type a word (e.g. a hostname) before confirming.
 */
export function confirmDialog({ title, body, confirm = "Confirm", danger = false, typed }) {
  return new Promise((resolve) => {
    const input = typed ? h("input", { type: "text", "aria-label": `Type ${typed} to confirm`, autocomplete: "off", spellcheck: "false" }) : null;
    const ok = h("button", { type: "submit", class: danger ? "danger" : "primary", disabled: Boolean(typed) }, confirm);
    if (input) input.addEventListener("input", () => (ok.disabled = input.value.trim() !== typed));
    const dlg = h(
      "dialog",
      { class: "dialog", "aria-label": title },
      h(
        "form",
        { method: "dialog" },
        h("h2", {}, title),
        h("div", { class: "dialog-body" }, body),
        input ? h("label", { class: "field" }, h("span", {}, `Type ${typed} to confirm`), input) : null,
        h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dlg.close("cancel") }, "Cancel"), ok),
      ),
    );
    dlg.querySelector("form").addEventListener("submit", (e) => {
      e.preventDefault();
      dlg.close("ok");
    });
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok");
      dlg.remove();
    });
    document.body.append(dlg);
    dlg.showModal();
    (input ?? ok).focus();
  });
}

/** A dialog asking for one value; resolves the value, or null when cancelled. */
export function promptDialog({ title, label, value, type = "text", min, max, confirm = "Save" }) {
  return new Promise((resolve) => {
    const input = h("input", { type, value: String(value ?? ""), min, max, required: true });
    const dlg = h(
      "dialog",
      { class: "dialog", "aria-label": title },
      h("form", { method: "dialog" }, h("h2", {}, title), h("label", { class: "field" }, h("span", {}, label), input), h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dlg.close("cancel") }, "Cancel"), h("button", { type: "submit", class: "primary" }, confirm))),
    );
    dlg.querySelector("form").addEventListener("submit", (e) => {
      e.preventDefault();
      if (input.reportValidity()) dlg.close("ok");
    });
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok" ? input.value : null);
      dlg.remove();
    });
    document.body.append(dlg);
    dlg.showModal();
    input.select();
  });
}

/** A table inside a horizontally scrolling wrapper (wide tables stay usable on a phone). */
/** The card a D1-backed view shows when the API answers 503 `unavailable: "d1"`; null for other errors. */
export function unavailable(e, what) {
  if (e?.body?.unavailable !== "d1") return null;
  return h("section", { class: "card unavailable", "data-unavailable": "d1", role: "status" }, h("h2", {}, `${what} unavailable`), h("p", {}, "D1 refused the query. Balancing, config, health checks, webhooks and metrics go on without it."), h("p", {}, h("code", {}, e.body.reason)));
}

export function table(headers, rows, attrs = {}) {
  return h("div", { class: "table-wrap" }, h("table", attrs, h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))), h("tbody", {}, rows)));
}

/** Runs `fn` now and every `everyMs` while the view lives; returns the stop function. */
export function poll(fn, everyMs) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(tick, document.hidden ? everyMs * 4 : everyMs);
    }
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** A labelled form field with an optional hint and a place for its error; `data-field` names it. */
export function field(name, label, input, hint) {
  return h("label", { class: "field", "data-field": name }, h("span", {}, label), input, hint ? h("small", { class: "hint" }, hint) : null, h("small", { class: "field-error", role: "alert" }));
}

/** Clears every field error shown in `form`. */
export function clearFieldErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** Shows `text` under field `name` of `form` (after any error already there); false when there is no such field. */
export function showFieldError(form, name, text) {
  const label = name && form.querySelector(`[data-field="${name}"]`);
  if (!label) return false;
  const out = label.querySelector(".field-error");
  out.textContent = out.textContent ? `${out.textContent} ${text}` : text;
  label.querySelector("input, textarea, select").setAttribute("aria-invalid", "true");
  return true;
}
