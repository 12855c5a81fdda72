// FlowBalance dashboard: lists services and backends through the admin API and changes backend state.
// Data from the API is only ever written with textContent, never as HTML.
(() => {
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("fb-token") || "";
  let current = null;

  async function api(path, init = {}) {
    const res = await fetch(path, { ...init, headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(init.headers || {}) } });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
    return body;
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function say(text) {
    $("message").textContent = text || "";
  }

  async function loadServices() {
    const { services } = await api("/admin/services");
    const tbody = $("services").querySelector("tbody");
    tbody.replaceChildren();
    for (const s of services) {
      const tr = document.createElement("tr");
      tr.className = "clickable";
      cell(tr, s.hostname);
      cell(tr, s.backends);
      cell(tr, `${s.healthy_backends} / ${s.backends}`, s.healthy ? "up" : "down");
      cell(tr, s.version);
      tr.addEventListener("click", () => showService(s.hostname).catch((e) => say(e.message)));
      tbody.appendChild(tr);
    }
  }

  async function setBackend(url, change) {
    await api(`/admin/services/${encodeURIComponent(current)}/backends`, { method: "PATCH", body: JSON.stringify({ url, ...change }) });
    await showService(current);
  }

  async function showService(host) {
    current = host;
    const st = await api(`/admin/services/${encodeURIComponent(host)}`);
    $("detail").hidden = false;
    $("detail-title").textContent = `${host} (config version ${st.version})`;
    const tbody = $("backends").querySelector("tbody");
    tbody.replaceChildren();
    for (const b of st.backends) {
      const tr = document.createElement("tr");
      cell(tr, b.url);
      cell(tr, b.weight);
      cell(tr, b.state);
      cell(tr, b.healthy ? "up" : "down", b.healthy ? "up" : "down");
      cell(tr, b.breaker, b.breaker === "closed" ? "up" : "down");
      cell(tr, b.latency_ms);
      cell(tr, b.last_error);
      const actions = cell(tr, "");
      for (const state of ["enabled", "draining", "disabled"]) {
        if (state === b.state) continue;
        const btn = document.createElement("button");
        btn.type = "button";
        btn.textContent = state === "enabled" ? "enable" : state === "draining" ? "drain" : "disable";
        btn.addEventListener("click", () => setBackend(b.url, { state }).catch((e) => say(e.message)));
        actions.appendChild(btn);
      }
      tbody.appendChild(tr);
    }
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("fb-token", token);
    say("");
    loadServices().catch((err) => say(err.message));
  });
  $("probe").addEventListener("click", () =>
    api(`/admin/services/${encodeURIComponent(current)}/health-check`, { method: "POST" })
      .then(() => showService(current))
      .catch((e) => say(e.message)),
  );
  if (token) loadServices().catch((e) => say(e.message));
})();
