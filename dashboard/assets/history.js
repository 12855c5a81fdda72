// What happened to a service: its backends' health and breaker transitions (the D1 health
// history) and its webhook events with each delivery's state, attempts and last error.
import { api, get, svc } from "./api.js";
import { ago, dateTime, h, mount, pill, poll, table, toast, unavailable } from "./dom.js";

/** How each state of a transition reads: health up/down, breaker closed/half_open/open. */
const STATE_KIND = { up: "ok", closed: "ok", down: "bad", open: "bad", half_open: "warn" };
const words = (v) => String(v ?? "").replaceAll("_", " ");

export function renderHealthHistory(body, host) {
  const backend = h("select", { name: "backend", "aria-label": "Backend" }, h("option", { value: "" }, "Every backend"));
  const kind = h("select", { name: "kind", "aria-label": "Kind" }, h("option", { value: "" }, "Health and breaker"), h("option", { value: "health" }, "Health (probes)"), h("option", { value: "breaker" }, "Circuit breaker"));
  const out = h("div", { id: "health-history" }, h("p", { class: "muted" }, "Loading the health history…"));
  let events = null;
  /** Every backend the service has now or had in a transition, once each. */
  const offer = (urls) => {
    for (const u of urls) if (![...backend.options].some((o) => o.value === u)) backend.append(h("option", { value: u }, u));
  };
  get(svc(host))
    .then((st) => offer(st.backends.map((b) => b.url)))
    .catch(() => {});
  const draw = () => {
    if (!events) return;
    offer(events.map((e) => e.backend));
    const shown = events.filter((e) => (!backend.value || e.backend === backend.value) && (!kind.value || e.kind === kind.value));
    if (!shown.length) {
      return mount(out, h("p", { class: "muted", id: "health-history-empty" }, events.length ? "No transitions match these filters." : "No health or breaker transitions recorded yet. Backends that stay healthy leave no entries here."));
    }
    const now = Date.now();
    const rows = shown.map((e) =>
      h(
        "tr",
        { "data-backend": e.backend, "data-kind": e.kind },
        h("td", {}, dateTime(e.at_ms), h("small", { class: "muted block" }, ago(e.at_ms, now))),
        h("td", {}, h("code", { class: "url" }, e.backend)),
        h("td", {}, e.kind === "breaker" ? "circuit breaker" : e.kind, e.region ? h("small", { class: "muted block" }, `from ${e.region}`) : null),
        h("td", { class: "change" }, pill(words(e.from), STATE_KIND[e.from] ?? "off"), " → ", pill(words(e.to), STATE_KIND[e.to] ?? "off")),
        h("td", { class: "reason" }, e.reason),
      ),
    );
    mount(out, h("section", { class: "card flush" }, table(["When", "Backend", "What", "Change", "Reason"], rows, { id: "health-events" })));
  };
  backend.addEventListener("change", draw);
  kind.addEventListener("change", draw);
  mount(body, h("div", { class: "toolbar" }, backend, kind, h("span", { class: "muted" }, "Newest first · the last 200 transitions, kept LOG_RETENTION_DAYS")), out);
  return poll(async () => {
    try {
      events = (await get(svc(host, "/health-history?limit=200"))).events ?? [];
      draw();
    } catch (e) {
      mount(out, unavailable(e, "The health history") ?? h("p", { class: "error" }, e.message));
    }
  }, 10000);
}

const DELIVERY_KIND = { delivered: "ok", pending: "warn", given_up: "bad", dropped: "off" };

/** When a delivery finished, or when its next attempt is due. */
function deliveryWhen(d, now) {
  if (d.state === "pending") return d.next_attempt_ms ? `next attempt ${ago(d.next_attempt_ms, now)}` : "queued";
  return d.done_ms ? `${words(d.state)} ${ago(d.done_ms, now)}` : "";
}

export function renderWebhooks(body, host) {
  const summary = h("span", { class: "muted", id: "webhook-summary" });
  const out = h("div", { id: "webhook-events" }, h("p", { class: "muted" }, "Loading webhook events…"));
  const testBtn = h("button", { type: "button", id: "webhook-test" }, "Send a test event");
  const load = async () => {
    try {
      draw(await get(svc(host, "/events")));
    } catch (e) {
      mount(out, h("p", { class: "error" }, e.message));
    }
  };
  const draw = (v) => {
    summary.textContent = `${v.pending_deliveries} pending · ${v.dropped_events} dropped (outbox holds ${v.outbox_capacity} events) · refreshes every 5 s`;
    if (!v.events.length) {
      return mount(out, h("p", { class: "muted", id: "webhook-empty" }, "No webhook events yet. Receivers are set in the configuration under notifications.webhooks; events are queued here before they are sent."));
    }
    const now = Date.now();
    const rows = v.events.flatMap((e) =>
      (e.deliveries.length ? e.deliveries : [null]).map((d, i) =>
        h(
          "tr",
          { "data-event": e.event, "data-id": e.id, "data-url": d?.url ?? "" },
          h("td", {}, i === 0 ? [dateTime(e.ts_ms), h("small", { class: "muted block" }, ago(e.ts_ms, now))] : null),
          h("td", {}, i === 0 ? [h("code", {}, e.event), h("small", { class: "muted block", title: "event id" }, e.id.slice(0, 12))] : null),
          h("td", {}, d ? h("code", { class: "url" }, d.url) : h("span", { class: "muted" }, "no receiver")),
          h("td", {}, d ? pill(words(d.state), DELIVERY_KIND[d.state] ?? "off") : null, d ? h("small", { class: "muted block" }, deliveryWhen(d, now)) : null),
          h("td", { class: "num" }, d ? String(d.attempts) : ""),
          h("td", { class: "num" }, d?.last_status ?? "–"),
          h("td", { class: "err-cell" }, d?.last_error ?? ""),
        ),
      ),
    );
    mount(out, h("section", { class: "card flush" }, table(["When", "Event", "Receiver", "State", "Attempts", "Last status", "Last error"], rows, { id: "deliveries" })));
  };
  testBtn.addEventListener("click", async () => {
    testBtn.disabled = true;
    try {
      const { body: b } = await api(svc(host, "/events/test"), { method: "POST" });
      toast(`Test event queued for ${b.deliveries} webhook${b.deliveries === 1 ? "" : "s"}`);
      await load();
    } catch (e) {
      toast(`Not sent: ${e.message}`, "bad");
    } finally {
      testBtn.disabled = false;
    }
  });
  mount(body, h("div", { class: "toolbar" }, testBtn, summary), out);
  return poll(load, 5000);
}
