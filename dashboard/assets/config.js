// Configuration: a readable summary of every block, the JSON editor (server validation at field
// paths, a diff and a preview against recent traffic before saving, If-Match, the 412 story), version
// history with rollback, and delete.
import { api, get, svc } from "./api.js";
import { confirmDialog, dateTime, h, mount, ms, pill, table, toast } from "./dom.js";
import { diffView, pretty } from "./diff.js";

/** Start offsets of every value in a JSON text, by field path (`backends[0].url`). */
export function locatePaths(text) {
  const at = new Map();
  let i = 0;
  const ws = () => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const str = () => {
    const start = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const value = (path) => {
    ws();
    at.set(path, i);
    if (text[i] === "{") {
      i++;
      for (;;) {
        ws();
        if (text[i] === "}" || i >= text.length) return i++;
        const key = str();
        ws();
        i++; // :
        value(path ? `${path}.${key}` : key);
        ws();
        if (text[i] === ",") i++;
      }
    } else if (text[i] === "[") {
      i++;
      for (let n = 0; ; n++) {
        ws();
        if (text[i] === "]" || i >= text.length) return i++;
        value(`${path}[${n}]`);
        ws();
        if (text[i] === ",") i++;
      }
    } else if (text[i] === '"') str();
    else while (i < text.length && !/[\s,\]}]/.test(text[i])) i++;
  };
  try {
    value("");
  } catch {
    // A broken text locates what it can; the server's message names the rest.
  }
  return at;
}

/** Where an error's path points in the text: the longest located prefix of the path. */
function locate(at, path) {
  for (let p = path; ; p = p.replace(/(\.[^.[\]]*|\[\d+\])$/, "")) {
    if (at.has(p)) return at.get(p);
    if (!p) return 0;
  }
}

const yes = (b) => (b ? "on" : "off");
const secs = (v) => (v == null ? "–" : `${v} s`);

function dl(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function backendList(list) {
  return h("ul", { class: "plain" }, list.map((b) => (typeof b === "string" ? { url: b, weight: 1, state: "enabled" } : b)).map((b) => h("li", {}, h("code", {}, b.url), ` · weight ${b.weight ?? 1}`, b.state && b.state !== "enabled" ? [" · ", pill(b.state, b.state === "draining" ? "warn" : "off")] : null)));
}

/** The config as an operator reads it, one card per block. */
export function readable(cfg) {
  const ah = cfg.activeHealthChecks ?? {};
  const br = cfg.passiveHealthChecks?.circuit_breaker ?? {};
  const ce = cfg.connection_error_handling ?? {};
  const lb = cfg.load_balancer ?? {};
  const aff = lb.session_affinity;
  const card = (title, ...content) => h("section", { class: "card block" }, h("h3", {}, title), content);
  return h(
    "div",
    { class: "readable", id: "config-readable" },
    card("Backends", cfg.backends?.length ? backendList(cfg.backends) : h("p", { class: "muted" }, "None at the top level."), (cfg.pools ?? []).map((p) => h("div", { class: "pool" }, h("h4", {}, `Pool ${p.name}`), backendList(p.backends)))),
    card("Session affinity", aff ? dl([["Type", aff.type], ["Cookie", aff.cookie_name], aff.header_name && ["Header", aff.header_name], ["TTL", secs(aff.ttl)]]) : h("p", { class: "muted" }, "Off: each request is balanced on its own."), dl([["Slow start", lb.slow_start ? secs(lb.slow_start) : "off"]])),
    card("Health checks", dl([["Active checks", yes(ah.enabled)], ["Path", ah.path ?? "discovered (/health, /healthz, then /)"], ["Interval", secs(ah.interval)], ["Timeout", secs(ah.timeout)], ["Healthy after", `${ah.consecutive_up} passes`], ["Unhealthy after", `${ah.consecutive_down} failures`]])),
    card("Circuit breaker", dl([["Opens after", `${br.failure_threshold} failures in a row`], ["or error rate", `${br.error_rate_threshold}% of ≥ ${br.min_requests} requests in ${ms(br.window_ms)}`], ["Stays open", ms(br.recovery_timeout_ms)]])),
    card("Retries and failover", dl([["Retries", String(cfg.retries)], ["Immediate failover", yes(ce.immediate_failover)], ["Connection retries", String(ce.max_connection_retries)], ["Connection timeout", ms(ce.connection_timeout_ms)]])),
    card("Geo steering", cfg.geo_steering ? dl([...Object.entries(cfg.geo_steering.regions ?? {}).map(([r, p]) => [r, `pool ${p}`]), ["Everyone else", `pool ${cfg.geo_steering.fallback_pool}`]]) : h("p", { class: "muted" }, "Off.")),
    card("Rate limit", cfg.rate_limit ? dl([["Limit", `${cfg.rate_limit.requests} requests per ${cfg.rate_limit.window} s per client`]]) : h("p", { class: "muted" }, "Off.")),
    card("Access lists", cfg.access_control ? dl([["Allow", cfg.access_control.allow?.length ? cfg.access_control.allow.join(", ") : "everyone"], ["Deny", cfg.access_control.deny?.length ? cfg.access_control.deny.join(", ") : "nobody"]]) : h("p", { class: "muted" }, "Off: every client may connect.")),
  );
}

/** Line and column (from 1) of offset `pos` in `text`. */
function lineColumn(text, pos) {
  const before = text.slice(0, pos).split("\n");
  return { line: before.length, column: before[before.length - 1].length + 1 };
}

/**
 * Where JSON.parse stopped in `text`, and its message without the position: engines say
 * "at position 1234" (V8, with "(line 53 column 5)" in newer versions) or "at line 53 column 5".
 */
export function syntaxError(text, error) {
  const msg = String(error?.message ?? error);
  let pos = null;
  const offset = /at position (\d+)/.exec(msg);
  const lc = /line (\d+) column (\d+)/.exec(msg);
  if (offset) pos = Math.min(Number(offset[1]), text.length);
  else if (lc) {
    const lines = text.split("\n").slice(0, Number(lc[1]) - 1);
    pos = Math.min(lines.reduce((n, l) => n + l.length + 1, 0) + Number(lc[2]) - 1, text.length);
  }
  const message = msg
    .replace(/\s*\(line \d+ column \d+\)/, "")
    .replace(/\s*(in JSON )?at position \d+/, "")
    .replace(/\s*at line \d+ column \d+ of the JSON data/, "")
    .replace(/^JSON\.parse: /, "");
  return { pos: pos ?? text.length, message };
}

/** Errors at their paths (or at an offset `pos`); each one selects its place in the editor. */
function errorList(errors, editor, title) {
  const at = locatePaths(editor.value);
  return h(
    "div",
    { class: "card alert", id: "config-errors", role: "alert" },
    h("h3", {}, title ?? (errors.length === 1 ? "The server refused this config: 1 error" : `The server refused this config: ${errors.length} errors`)),
    h(
      "ul",
      { class: "errors" },
      errors.map((e) => {
        const pos = e.pos ?? locate(at, e.path ?? "");
        const where = lineColumn(editor.value, pos);
        return h(
          "li",
          { "data-path": e.path ?? "" },
          h(
            "button",
            {
              type: "button",
              class: "link",
              onclick: () => {
                editor.focus();
                const end = editor.value.indexOf("\n", pos);
                editor.setSelectionRange(pos, end < 0 ? editor.value.length : end);
                // A selection alone does not scroll the textarea: bring its line into view.
                const lineHeight = parseFloat(getComputedStyle(editor).lineHeight) || 18;
                editor.scrollTop = Math.max(0, (where.line - 4) * lineHeight);
              },
            },
            e.pos == null ? h("code", { class: "path" }, e.path || "(whole config)") : `line ${where.line}, column ${where.column}`,
          ),
          e.pos == null ? ` line ${where.line}: ` : ": ",
          e.message,
        );
      }),
    ),
  );
}

/** What saving would do to recent traffic (`config/preview`): requests replayed, shares per backend, warnings. */
function previewView(p) {
  const pct = (x) => (x == null ? "–" : `${Math.round(x * 1000) / 10}%`);
  const urls = [...new Set([...Object.keys(p.before), ...Object.keys(p.after)])];
  return h(
    "div",
    { id: "config-preview" },
    h("h4", {}, "Against recent traffic"),
    h("p", {}, `${p.requests} recent requests replayed: ${pct(p.changed)} would change backend, ${pct(p.refused)} would be refused.`),
    table(["Backend", "Now", "After saving"], urls.map((u) => h("tr", {}, h("td", {}, u), h("td", {}, pct(p.before[u])), h("td", {}, pct(p.after[u]))))),
    p.warnings.map((w) => h("p", { class: "notice warning" }, w)),
  );
}

export function renderConfig(body, host) {
  const out = h("div", {}, h("p", { class: "muted" }, "Loading the configuration…"));
  mount(body, out);
  let stored = null; // { version, config, source }
  const load = async () => {
    const { body: b, headers } = await api(svc(host, "/config"));
    stored = { version: Number((headers.get("etag") ?? `"${b.version}"`).replace(/\D/g, "")), config: b.config, source: b.source };
  };
  const editor = h("textarea", { id: "config-editor", class: "code", spellcheck: "false", rows: 24, "aria-label": "Service configuration JSON" });
  const result = h("div", { id: "config-result" });
  const based = h("span", { class: "muted" });
  const reset = () => {
    editor.value = pretty(stored.config);
    based.textContent = `Editing version ${stored.version}${stored.source === "DEFAULT_BACKENDS" ? " (from DEFAULT_BACKENDS; saving stores it through the API)" : ""}`;
    mount(result);
  };
  const review = async () => {
    let parsed;
    try {
      parsed = JSON.parse(editor.value);
    } catch (e) {
      const { pos, message } = syntaxError(editor.value, e);
      return mount(result, errorList([{ path: "", pos, message }], editor, "This is not valid JSON"));
    }
    try {
      const { body: v } = await api(svc(host, "/config/validate"), { method: "POST", body: parsed });
      const next = pretty(v.config);
      const same = next === pretty(stored.config);
      // The preview informs the save; when it cannot be had, saving still can.
      const preview = same ? null : await api(svc(host, "/config/preview"), { method: "POST", body: parsed }).then(({ body: p }) => previewView(p), (e) => h("p", { class: "error", id: "config-preview" }, `No preview: ${e.message}`));
      mount(
        result,
        h(
          "section",
          { class: "card", id: "config-review" },
          h("h3", {}, same ? "No changes" : `Changes against version ${stored.version}`),
          diffView(pretty(stored.config), next, [`v${stored.version} (stored)`, "yours"]),
          preview,
          same ? null : h("div", { class: "actions" }, h("button", { type: "button", class: "primary", id: "config-save", onclick: () => save(parsed) }, `Save as version ${stored.version + 1}`)),
        ),
      );
    } catch (e) {
      mount(result, e.errors.length ? errorList(e.errors, editor) : h("p", { class: "error" }, e.message));
    }
  };
  const save = async (parsed) => {
    try {
      const { body: b } = await api(svc(host, "/config"), { method: "PUT", body: parsed, ifMatch: stored.version });
      toast(`Saved version ${b.version}`);
      await load();
      draw();
      mount(result, h("p", { class: "notice", id: "config-saved" }, `Saved: version ${b.version} is live.`));
    } catch (e) {
      if (e.status === 412) return conflict(parsed);
      mount(result, e.errors.length ? errorList(e.errors, editor) : h("p", { class: "error" }, e.message));
    }
  };
  const conflict = async (parsed) => {
    const mine = pretty(parsed);
    const before = stored.version;
    await load();
    mount(
      result,
      h(
        "section",
        { class: "card alert", id: "config-conflict", role: "alert" },
        h("h3", {}, "Someone else changed this service"),
        h("p", {}, `You started from version ${before}; the stored version is now ${stored.version}. Nothing of yours was saved. Their version against yours:`),
        diffView(pretty(stored.config), mine, [`v${stored.version} (theirs)`, "yours"]),
        h(
          "div",
          { class: "actions" },
          h("button", { type: "button", onclick: () => (draw(), reset()) }, "Discard mine, load theirs"),
          h("button", { type: "button", class: "primary", onclick: () => (draw(true), review()) }, `Review mine against version ${stored.version}`),
        ),
      ),
    );
  };
  const draw = (keepText = false) => {
    const text = editor.value;
    mount(
      out,
      h("h2", {}, "Summary"),
      readable(stored.config),
      h(
        "section",
        { class: "card editor" },
        h("h2", {}, "Edit as JSON"),
        based,
        editor,
        h("div", { class: "actions" }, h("button", { type: "button", onclick: reset }, "Revert"), h("button", { type: "button", class: "primary", id: "config-review-btn", onclick: review }, "Review changes")),
        result,
      ),
      h(
        "section",
        { class: "card danger-zone" },
        h("h2", {}, "Delete this service"),
        h("p", {}, "The hostname stops being balanced at once (421 to clients), unless DEFAULT_BACKENDS has a config for it: then that deployed config serves again, as a new version. Its versions are kept, so adding it again continues the history."),
        h("button", { type: "button", class: "danger", id: "delete-service", onclick: remove }, "Delete service…"),
      ),
    );
    if (keepText) {
      editor.value = text;
      based.textContent = `Editing on top of version ${stored.version}`;
    } else reset();
  };
  const remove = async () => {
    const ok = await confirmDialog({ title: `Delete ${host}?`, body: h("p", {}, "Requests to this hostname will be refused, unless DEFAULT_BACKENDS has a config for it (then that config serves again)."), confirm: "Delete service", danger: true, typed: host });
    if (!ok) return;
    try {
      const { body: b } = await api(svc(host, "/config"), { method: "DELETE", ifMatch: stored.version });
      if (b.deleted) {
        toast(`${host} deleted`);
        location.hash = "#/";
      } else {
        toast(`${host} is back on its deployed config (version ${b.version})`);
        await load();
        draw();
      }
    } catch (e) {
      toast(e.status === 412 ? "Someone else changed this service; reload and try again." : e.message, "bad");
    }
  };
  load()
    .then(() => draw())
    .catch((e) => mount(out, h("p", { class: "error" }, e.message)));
  return () => {};
}

export function renderVersions(body, host) {
  const out = h("div", {}, h("p", { class: "muted" }, "Loading versions…"));
  mount(body, out);
  const load = async () => {
    const hist = await get(svc(host, "/config/history"));
    if (!hist.versions.length) return mount(out, h("p", { class: "muted" }, "No versions yet: this service runs on its DEFAULT_BACKENDS config. Every change made here or through the API becomes a version you can roll back to."));
    const current = hist.versions.find((v) => v.current);
    const rows = hist.versions.map((v) =>
      h(
        "tr",
        { "data-version": v.version },
        h("td", { class: "num" }, `v${v.version}`, v.current ? [" ", pill("live", "ok")] : null, v.action === "config.auto_rolled_back" ? [" ", pill("automatic rollback", "warn")] : null),
        h("td", {}, dateTime(v.ts_ms), v.actor ? h("small", { class: "muted block" }, `by ${v.actor}`) : null, v.action === "config.auto_rolled_back" ? h("small", { class: "block auto-rollback" }, v.summary) : null),
        h("td", {}, v.config?.backends?.length != null ? `${v.config.backends.length + (v.config.pools ?? []).reduce((n, p) => n + p.backends.length, 0)} backends` : ""),
        h(
          "td",
          {},
          v.current
            ? h("span", { class: "muted" }, "current")
            : h(
                "button",
                {
                  type: "button",
                  onclick: async () => {
                    const ok = await confirmDialog({
                      title: `Roll back to version ${v.version}?`,
                      body: h("div", {}, h("p", {}, `This stores version ${v.version}'s config as a new version. Changes from the live version:`), current ? diffView(pretty(current.config), pretty(v.config), [`v${current.version} (live)`, `v${v.version}`]) : null),
                      confirm: `Roll back to v${v.version}`,
                    });
                    if (!ok) return;
                    try {
                      const { body: b } = await api(svc(host, "/config/rollback"), { method: "POST", body: { version: v.version }, ifMatch: hist.current });
                      toast(`Rolled back: version ${b.version} has version ${v.version}'s config`);
                      await load();
                    } catch (e) {
                      toast(e.status === 412 ? "Someone else changed this service; the list is reloaded." : e.message, "bad");
                      await load();
                    }
                  },
                },
                "Roll back…",
              ),
        ),
      ),
    );
    mount(out, h("p", { class: "muted" }, "The last versions written through the API, and version 0: the deployed config (DEFAULT_BACKENDS). Rolling back writes a new version."), table(["Version", "Saved", "Size", ""], rows, { id: "versions" }));
  };
  load().catch((e) => mount(out, h("p", { class: "error" }, e.message)));
  return () => {};
}
