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

export function renderDocs(main) {
  const out = h("div", {}, h("p", { class: "muted" }, "Loading the API description…"));
  mount(main, h("div", { class: "page-head" }, h("h1", {}, "API documentation"), h("a", { class: "button", href: `${root}/admin/openapi.json`, download: "openapi.json" }, "openapi.json")), out);
  (async () => {
    try {
      const res = await fetch(`${root}/admin/openapi.json`, { credentials: "omit" });
      const doc = await res.json();
      const ops = [];
      for (const [path, item] of Object.entries(doc.paths ?? {})) {
        for (const [method, op] of Object.entries(item)) {
          if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
          const params = (op.parameters ?? []).map((p) => (p.$ref ? doc.components?.parameters?.[ref(p)] : p)).filter(Boolean);
          const bodyRef = op.requestBody?.content?.["application/json"]?.schema;
          ops.push(
            h(
              "section",
              { class: "card op", id: `op-${method}-${path}` },
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
      const schemas = Object.entries(doc.components?.schemas ?? {}).map(([n, sc]) => schemaView(n, sc, doc));
      mount(out, h("p", { class: "muted" }, `${doc.info?.title ?? "API"} ${doc.info?.version ?? ""}. ${doc.info?.description ?? ""}`), h("h2", {}, "Endpoints"), ops, h("h2", {}, "Schemas"), schemas);
    } catch (e) {
      mount(out, h("p", { class: "error" }, e.message));
    }
  })();
  return () => {};
}
