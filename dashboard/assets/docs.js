// API documentation: /admin/openapi.json rendered as readable endpoints and schemas.
import { root } from "./api.js";
import { h, mount } from "./dom.js";

const ref = (r) => r?.$ref?.split("/").pop();

/** A schema as a short type description: `integer 1..1000`, `array of Backend`, `one of …`. */
function typeOf(sc, doc) {
  if (!sc) return "";
  if (sc.$ref) return ref(sc);
  const parts = [];
  if (sc.anyOf || sc.oneOf) return `one of ${(sc.anyOf ?? sc.oneOf).map((x) => typeOf(x, doc)).join(" | ")}`;
  if (sc.enum) return sc.enum.map((x) => JSON.stringify(x)).join(" | ");
  const t = Array.isArray(sc.type) ? sc.type.filter((x) => x !== "null").join(" | ") + (sc.type.includes("null") ? " (or null)" : "") : sc.type;
  if (t === "array") parts.push(`array of ${typeOf(sc.items, doc)}`);
  else if (t) parts.push(t);
  if (sc.minimum != null || sc.maximum != null) parts.push(`${sc.minimum ?? sc.exclusiveMinimum ?? ""}..${sc.maximum ?? ""}`);
  if (sc.pattern) parts.push(`matching ${sc.pattern}`);
  if (sc.default !== undefined) parts.push(`default ${JSON.stringify(sc.default)}`);
  return parts.join(", ");
}

function schemaView(name, sc, doc) {
  const props = Object.entries(sc.properties ?? {});
  const required = new Set(sc.required ?? []);
  return h(
    "details",
    { class: "schema", id: `schema-${name}` },
    h("summary", {}, h("code", {}, name), sc.description ? h("span", { class: "muted" }, ` — ${sc.description}`) : null),
    props.length
      ? h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Type"), h("th", {}, "Description"))), h("tbody", {}, props.map(([k, v]) => h("tr", {}, h("td", {}, h("code", {}, k), required.has(k) ? h("small", { class: "req" }, " required") : null), h("td", {}, typeOf(v, doc)), h("td", {}, v.description ?? ""))))))
      : h("p", {}, typeOf(sc, doc)),
  );
}

/** The group an endpoint is listed under in the contents: its resource after the hostname. */
function groupOf(path) {
  const m = /^\/admin\/services\/\{hostname\}\/([^/]+)/.exec(path);
  if (m) return `Service ${m[1].replace(/-/g, " ")}`;
  if (path.startsWith("/admin/services")) return "Services";
  return path.replace(/^\/admin\/?/, "").split("/")[0] || "admin";
}

/** Moves to a section of the page without touching the location hash (the console's router owns it). */
function jump(id) {
  return (e) => {
    e.preventDefault();
    const target = document.getElementById(id);
    if (!target) return;
    if (target.tagName === "DETAILS") target.open = true;
    target.scrollIntoView({ block: "start" });
    target.focus({ preventScroll: true });
  };
}

/** The contents: every endpoint by group, then every schema, each a link to its section. */
function contents(entries, schemaNames) {
  const groups = new Map();
  for (const e of entries) {
    const g = groupOf(e.path);
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(e);
  }
  return h(
    "nav",
    { class: "card toc", id: "docs-toc", "aria-label": "Contents" },
    h("h2", {}, "Contents"),
    h(
      "div",
      { class: "toc-groups" },
      [...groups].map(([name, ops]) =>
        h(
          "section",
          {},
          h("h3", {}, name[0].toUpperCase() + name.slice(1)),
          h("ul", {}, ops.map((o) => h("li", {}, h("a", { href: `#${o.id}`, onclick: jump(o.id) }, h("span", { class: `method m-${o.method}` }, o.method.toUpperCase()), " ", h("code", {}, o.path))))),
        ),
      ),
      h("section", { class: "toc-all" }, h("h3", {}, "Schemas"), h("ul", { class: "toc-schemas" }, schemaNames.map((n) => h("li", {}, h("a", { href: `#schema-${n}`, onclick: jump(`schema-${n}`) }, h("code", {}, n)))))),
    ),
  );
}

export function renderDocs(main) {
  const out = h("div", {}, h("p", { class: "muted" }, "Loading the API description…"));
  mount(main, h("div", { class: "page-head" }, h("h1", {}, "API documentation"), h("a", { class: "button", href: `${root}/admin/openapi.json`, download: "openapi.json" }, "openapi.json")), out);
  (async () => {
    try {
      const res = await fetch(`${root}/admin/openapi.json`, { credentials: "omit" });
      const doc = await res.json();
      const ops = [];
      const entries = [];
      for (const [path, item] of Object.entries(doc.paths ?? {})) {
        for (const [method, op] of Object.entries(item)) {
          if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
          const params = (op.parameters ?? []).map((p) => (p.$ref ? doc.components?.parameters?.[ref(p)] : p)).filter(Boolean);
          const bodyRef = op.requestBody?.content?.["application/json"]?.schema;
          const id = `op-${method}-${path}`;
          entries.push({ id, method, path });
          ops.push(
            h(
              "section",
              { class: "card op", id, tabindex: "-1" },
              h("h3", {}, h("span", { class: `method m-${method}` }, method.toUpperCase()), " ", h("code", {}, path)),
              op.summary ? h("p", {}, op.summary) : null,
              op.description ? h("p", { class: "muted" }, op.description) : null,
              params.length ? h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Parameter"), h("th", {}, "In"), h("th", {}, "Type"), h("th", {}, "Description"))), h("tbody", {}, params.map((p) => h("tr", {}, h("td", {}, h("code", {}, p.name), p.required ? h("small", { class: "req" }, " required") : null), h("td", {}, p.in), h("td", {}, typeOf(p.schema, doc)), h("td", {}, p.description ?? "")))))) : null,
              bodyRef ? h("p", {}, "Body: ", h("code", {}, typeOf(bodyRef, doc))) : null,
              h("ul", { class: "responses" }, Object.entries(op.responses ?? {}).map(([code, r]) => h("li", {}, h("code", { class: `status s${code[0]}` }, code), " ", (r.$ref ? doc.components?.responses?.[ref(r)]?.description : r.description) ?? ""))),
            ),
          );
        }
      }
      const schemaEntries = Object.entries(doc.components?.schemas ?? {});
      const schemas = schemaEntries.map(([n, sc]) => schemaView(n, sc, doc));
      mount(out, h("p", { class: "muted" }, `${doc.info?.title ?? "API"} ${doc.info?.version ?? ""}. ${doc.info?.description ?? ""}`), contents(entries, schemaEntries.map(([n]) => n)), h("h2", {}, "Endpoints"), ops, h("h2", {}, "Schemas"), schemas);
    } catch (e) {
      mount(out, h("p", { class: "error" }, e.message));
    }
  })();
  return () => {};
}
