// Rules: the service's traffic rules in order with a one-line summary each; add, edit as JSON,
// delete and reorder, saved as a whole config with If-Match; errors at their rule; and a "try a
// request" box that asks the explain endpoint, against the draft when it has unsaved edits.
import { api, svc } from "./api.js";
import { clearFieldErrors, field, h, mount, pill, showFieldError, toast } from "./dom.js";
import { pretty } from "./diff.js";

const list = (v) => (Array.isArray(v) ? v : []).join(", ");
const has = (o) => o && Object.keys(o).length > 0;
const pairs = (o, sep) => Object.entries(o ?? {}).map(([k, v]) => (v === "*" ? `has ${sep}${k}` : `${sep}${k}=${v}`));
const names = (ops) => Object.keys(Array.isArray(ops?.set) ? Object.fromEntries(ops.set) : ops?.set ?? {});

/** `when` as words: "path starts /api/, not DELETE"; no conditions: "always". */
export function whenText(w = {}) {
  const parts = [
    w.path && `path is ${w.path}`,
    w.path_prefix && `path starts ${w.path_prefix}`,
    w.path_regex && `path ~ ${w.path_regex}`,
    w.methods?.length && w.methods.join(" or "),
    ...pairs(w.headers, ""),
    ...pairs(w.query, "?"),
    w.countries?.length && `from ${list(w.countries)}`,
    w.client_ips?.length && `client in ${list(w.client_ips)}`,
    has(w.not) && `not ${whenText(w.not)}`,
  ].filter(Boolean);
  return parts.length ? parts.join(", ") : "always";
}

/** `then` as words: "pool api, strip /api, set x-from-rule". */
export function thenText(t = {}) {
  const hdr = (ops, prefix) => [names(ops).length && `${prefix}set ${names(ops).join(", ")}`, ops?.remove?.length && `${prefix}remove ${list(ops.remove)}`];
  const rd = t.redirect;
  return [
    t.pool && `pool ${t.pool}`,
    t.split?.length && `split ${t.split.map((s) => `${s.pool} ${s.weight}`).join(" / ")}`,
    rd && `redirect ${rd.status ?? 302} → ${rd.location}${rd.preserve_path ? " + path" : ""}`,
    t.respond && `respond ${t.respond.status}`,
    t.rewrite?.strip_prefix && `strip ${t.rewrite.strip_prefix}`,
    t.rewrite?.add_prefix && `add prefix ${t.rewrite.add_prefix}`,
    t.rewrite?.replace_path && `path → ${t.rewrite.replace_path}`,
    ...hdr(t.request_headers, ""),
    ...hdr(t.response_headers, "response "),
    t.continue && "continue",
  ]
    .filter(Boolean)
    .join(", ") || "nothing";
}

/** One line for a rule; a draft of the wrong shape says so (the server names the field on save). */
export function summary(r) {
  try {
    return `${r.name}: ${whenText(r.when ?? {})} → ${thenText(r.then ?? {})}`;
  } catch {
    return `${r?.name ?? "?"}: (not a rule's shape)`;
  }
}

/** The 400's errors split by rule index (`rules[2].then.pool` → 2: "then.pool"); the rest apart. */
function byRule(errors, prefix) {
  const at = {};
  const rest = [];
  for (const e of errors) {
    const m = new RegExp(`^${prefix}rules\\[(\\d+)\\]\\.?(.*)$`).exec(e.path ?? "");
    if (m) (at[m[1]] ??= []).push({ path: m[2], message: e.message });
    else rest.push(e);
  }
  return { at, rest };
}

export function renderRules(body, host) {
  const out = h("div", {}, h("p", { class: "muted" }, "Loading the rules…"));
  mount(body, out);
  let stored = null; // { version, config }
  let items = []; // { rule, text: editor text or null, errors: [] }
  let dirty = false;
  const message = h("div", { id: "rules-message", role: "alert" });
  const ol = h("ol", { id: "rules", class: "rules" });

  const load = async () => {
    const { body: b, headers } = await api(svc(host, "/config"));
    stored = { version: Number((headers.get("etag") ?? `"${b.version}"`).replace(/\D/g, "")), config: b.config };
    items = (b.config.rules ?? []).map((rule) => ({ rule, text: null, errors: [] }));
    dirty = false;
  };
  const touched = () => {
    dirty = true;
    saveBtn.disabled = false;
    state.textContent = "Unsaved changes";
  };
  const change = () => {
    touched();
    draw();
  };
  /** The rules as edited, open editors included; null (and the error at its rule) when one is not JSON. */
  const draft = () => {
    let ok = true;
    for (const it of items) {
      if (it.text == null) continue;
      try {
        it.rule = JSON.parse(it.text);
        it.errors = [];
      } catch (e) {
        it.errors = [{ path: "", message: `not JSON: ${e.message}` }];
        ok = false;
      }
    }
    draw();
    return ok ? items.map((it) => it.rule) : null;
  };
  const showErrors = (errors, prefix) => {
    const { at, rest } = byRule(errors, prefix);
    items.forEach((it, i) => {
      it.errors = at[i] ?? [];
      if (it.errors.length && it.text == null) it.text = pretty(it.rule);
    });
    draw();
    return rest;
  };
  const move = (i, d) => {
    [items[i], items[i + d]] = [items[i + d], items[i]];
    change();
  };
  const ruleItem = (it, i) => {
    const editor =
      it.text == null
        ? null
        : h("textarea", { class: "code", rows: Math.min(16, it.text.split("\n").length + 1), spellcheck: "false", "aria-label": `Rule ${i + 1} JSON`, oninput: (e) => ((it.text = e.target.value), touched()) }, it.text);
    const btn = (label, onclick, disabled) => h("button", { type: "button", onclick, disabled }, label);
    const actions = h(
      "div",
      { class: "row-actions" },
      it.text == null ? btn("Edit", () => ((it.text = pretty(it.rule)), draw())) : btn("Done", () => draft() && ((it.text = null), change())),
      btn("↑", () => move(i, -1), i === 0),
      btn("↓", () => move(i, 1), i === items.length - 1),
      h("button", { type: "button", class: "danger-outline", onclick: () => (items.splice(i, 1), change()) }, "Delete"),
    );
    const errors = it.errors.map((e) => h("li", { "data-path": e.path }, e.path ? [h("code", { class: "path" }, e.path), ": "] : null, e.message));
    return h(
      "li",
      { "data-rule": it.rule?.name ?? "", class: it.errors.length ? "invalid" : null },
      h("div", { class: "rule-head" }, h("code", { class: "rule-summary" }, summary(it.rule ?? {})), actions),
      editor,
      errors.length ? h("ul", { class: "errors rule-errors", role: "alert" }, errors) : null,
    );
  };
  const add = () => {
    const taken = new Set(items.map((it) => it.rule?.name));
    let n = items.length + 1;
    while (taken.has(`rule-${n}`)) n++;
    const rule = { name: `rule-${n}`, when: { path_prefix: "/" }, then: { response_headers: { set: { "x-rule": `rule-${n}` } }, continue: true } };
    items.push({ rule, text: pretty(rule), errors: [] });
    change();
  };
  const save = async () => {
    const rules = draft();
    if (!rules) return;
    mount(message);
    try {
      const { body: b } = await api(svc(host, "/config"), { method: "PUT", body: { ...stored.config, rules }, ifMatch: stored.version });
      toast(`Rules saved: version ${b.version}`);
      await load();
      draw();
      mount(message, h("p", { class: "notice", id: "rules-saved" }, `Saved: version ${b.version} is live.`));
    } catch (e) {
      if (e.status === 412) {
        await load();
        draw();
        return mount(message, h("p", { class: "error" }, `Someone else changed this service; nothing of yours was saved. The rules of version ${stored.version} are shown.`));
      }
      const rest = showErrors(e.errors, "");
      mount(message, h("p", { class: "error" }, rest.length || !e.errors.length ? (rest.length ? rest.map((x) => `${x.path}: ${x.message}`).join(" ") : e.message) : "Not saved: see the errors at the rules."));
    }
  };
  const draw = () => {
    mount(ol, items.map(ruleItem));
    if (!items.length) mount(ol, h("li", { class: "muted" }, "No rules: every request goes to the service's steering."));
    if (dirty) return touched();
    saveBtn.disabled = true;
    state.textContent = `Version ${stored.version}`;
  };
  const saveBtn = h("button", { type: "button", class: "primary", id: "rules-save", onclick: save }, "Save rules");
  const state = h("span", { class: "muted" });
  const tryBox = tryForm(host, () => (dirty || items.some((it) => it.text != null) ? draft() : undefined), () => stored.config, showErrors);
  load()
    .then(() => {
      mount(
        out,
        h(
          "section",
          { class: "card", id: "rules-card" },
          h("h2", {}, "Rules"),
          h("p", { class: "muted" }, "Checked in order: the first matching rule without continue decides; header actions of continue rules before it apply too."),
          ol,
          h("div", { class: "actions" }, state, h("button", { type: "button", id: "rules-add", onclick: add }, "Add rule"), h("button", { type: "button", onclick: () => load().then(() => (mount(message), draw()), (e) => mount(message, h("p", { class: "error" }, e.message))) }, "Discard changes"), saveBtn),
          message,
        ),
        tryBox,
      );
      draw();
    })
    .catch((e) => mount(out, h("p", { class: "error" }, e.message)));
  return () => {};
}

/** The "try a request" box: a sample request explained by the rules (the draft's, when `rules()` gives one). */
function tryForm(host, rules, config, showErrors) {
  const form = h(
    "form",
    { class: "card form-grid", id: "rules-try", novalidate: true },
    h("h2", { class: "wide" }, "Try a request"),
    field("method", "Method", h("input", { name: "method", value: "GET", autocomplete: "off" })),
    field("path", "Path and query", h("input", { name: "path", value: "/", autocomplete: "off", spellcheck: "false" })),
    field("country", "Country", h("input", { name: "country", placeholder: "DE", autocomplete: "off" })),
    field("client_ip", "Client IP", h("input", { name: "client_ip", placeholder: "203.0.113.9", autocomplete: "off" })),
    h("div", { class: "wide" }, field("headers", "Headers, one name: value a line", h("textarea", { name: "headers", rows: 2, class: "code", spellcheck: "false" }))),
    h("div", { class: "actions wide" }, h("button", { type: "submit", class: "primary" }, "Explain")),
  );
  const result = h("div", { class: "wide", id: "rules-result", role: "status" });
  form.append(result);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearFieldErrors(form);
    const f = Object.fromEntries(new FormData(form));
    const headers = {};
    for (const line of f.headers.split("\n")) {
      const i = line.indexOf(":");
      if (line.trim()) headers[(i < 0 ? line : line.slice(0, i)).trim()] = i < 0 ? "" : line.slice(i + 1).trim();
    }
    const request = { method: f.method.trim() || "GET", path: f.path.trim(), headers };
    if (f.country.trim()) request.country = f.country.trim();
    if (f.client_ip.trim()) request.client_ip = f.client_ip.trim();
    const draft = rules();
    if (draft === null) return mount(result, h("p", { class: "error" }, "A rule being edited is not JSON: see it above."));
    try {
      const { body: x } = await api(svc(host, "/rules/test"), { method: "POST", body: draft ? { request, config: { ...config(), rules: draft } } : { request } });
      mount(result, explained(x, Boolean(draft)));
    } catch (err) {
      const atRules = err.errors.some((x) => /^config\.rules\[/.test(x.path ?? ""));
      const rest = (atRules ? showErrors(err.errors, "config\\.") : err.errors).filter((x) => !showFieldError(form, /^request\.(\w+)/.exec(x.path ?? "")?.[1], x.message));
      mount(result, rest.length || !err.errors.length ? h("p", { class: "error" }, rest.length ? rest.map((x) => `${x.path}: ${x.message}`).join(" ") : err.message) : null);
    }
  });
  return form;
}

function explained(x, draft) {
  const a = x.action ?? {};
  const action = {
    steering: "the service's own steering picks the pool",
    pool: `pool ${a.pool}`,
    split: `split ${(a.split ?? []).map((s) => `${s.pool} ${s.weight}`).join(" / ")}: this client gets ${a.chosen}`,
    redirect: `redirect ${a.status} to ${a.location}`,
    respond: `answered ${a.status} by FlowBalance${a.body ? `: ${a.body}` : ""}`,
  }[a.type] ?? a.type;
  const ops = (o) => [...(o?.set ?? []).map(([k, v]) => `set ${k}: ${v}`), ...(o?.remove ?? []).map((k) => `remove ${k}`)].join(", ") || "none";
  const dl = (rows) => h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", { "data-key": k }, v)]));
  return h(
    "section",
    { id: "rules-explained" },
    h("p", {}, draft ? pill("draft", "warn") : pill("stored config", "info"), " ", x.decided_by ? ["decided by ", h("strong", { id: "rules-decided" }, x.decided_by)] : "no rule decided"),
    dl([
      ["Matched", x.matched?.length ? x.matched.join(" → ") : "none"],
      ["Action", action],
      ["Backend path", x.path ? h("code", {}, x.path) : "none: no backend is asked"],
      ["Request headers", ops(x.request_headers)],
      ["Response headers", ops(x.response_headers)],
    ]),
  );
}
