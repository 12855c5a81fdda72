// API keys: list with last use, create (the key is shown once), revoke with a confirmation.
import { api, get } from "./api.js";
import { confirmDialog, dateTime, h, mount, pill, table, toast } from "./dom.js";

export function renderKeys(main) {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading keys…"));
  const created = h("div", { id: "key-created" });
  const form = h(
    "form",
    { class: "card form-grid", id: "key-form" },
    h("label", { class: "field" }, h("span", {}, "Name"), h("input", { name: "name", required: true, placeholder: "deploy-bot", autocomplete: "off" })),
    h("label", { class: "field" }, h("span", {}, "Scope"), h("select", { name: "scope" }, h("option", { value: "read" }, "read (GET only)"), h("option", { value: "write" }, "write"))),
    h("label", { class: "field" }, h("span", {}, "Hostnames (optional)"), h("input", { name: "hostnames", placeholder: "api.example.com, www.example.com", autocomplete: "off" }), h("small", { class: "hint" }, "Empty: every service.")),
    h("div", { class: "actions wide" }, h("button", { type: "submit", class: "primary" }, "Create key")),
  );
  mount(main, h("div", { class: "page-head" }, h("h1", {}, "API keys")), h("p", { class: "muted" }, "Named keys for scripts and CI. A key is shown once, stored only as a hash, and stops working the moment it is revoked."), created, form, list);

  const load = async () => {
    try {
      const { keys } = await get("/admin/keys");
      if (!keys?.length) return mount(list, h("p", { class: "muted" }, "No keys yet."));
      mount(
        list,
        table(
          ["Name", "Scope", "Hostnames", "Created", "Last used", ""],
          keys.map((k) =>
            h(
              "tr",
              { "data-key": k.name },
              h("td", {}, k.name),
              h("td", {}, pill(k.scope, k.scope === "write" ? "warn" : "info")),
              h("td", {}, k.hostnames?.length ? k.hostnames.join(", ") : "all"),
              h("td", {}, dateTime(k.created_at ?? k.created_ms)),
              h("td", {}, k.last_used_at || k.last_used_ms ? dateTime(k.last_used_at ?? k.last_used_ms) : "never"),
              h(
                "td",
                {},
                h(
                  "button",
                  {
                    type: "button",
                    class: "danger-outline",
                    onclick: async () => {
                      if (!(await confirmDialog({ title: `Revoke ${k.name}?`, body: "Requests with this key are refused from now on.", confirm: "Revoke", danger: true }))) return;
                      try {
                        await api(`/admin/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
                        toast(`${k.name} revoked`);
                      } catch (e) {
                        toast(e.message, "bad");
                      }
                      load();
                    },
                  },
                  "Revoke",
                ),
              ),
            ),
          ),
          { id: "keys" },
        ),
      );
    } catch (e) {
      if (e.status === 404 || e.status === 405) {
        form.hidden = true;
        mount(list, h("p", { class: "muted", id: "keys-unavailable" }, "This deployment does not manage named API keys yet; API_SECRET is the only key."));
      } else mount(list, h("p", { class: "error" }, e.message));
    }
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(form));
    const hostnames = f.hostnames
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean);
    try {
      const { body } = await api("/admin/keys", { method: "POST", body: { name: f.name.trim(), scope: f.scope, ...(hostnames.length ? { hostnames } : {}) } });
      const value = h("code", { class: "secret", id: "new-key" }, body.key);
      mount(
        created,
        h(
          "section",
          { class: "card notice-card" },
          h("h2", {}, `Key ${body.name ?? f.name} created`),
          h("p", {}, "Copy it now: it is not shown again."),
          value,
          h("button", { type: "button", onclick: () => navigator.clipboard?.writeText(body.key).then(() => toast("Copied")) }, "Copy"),
        ),
      );
      form.reset();
      load();
    } catch (err) {
      toast(err.message, "bad");
    }
  });
  load();
  return () => {};
}
