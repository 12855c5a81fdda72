// Live tail: the service's WebSocket tail (requests, health and config changes as they happen),
// newest first, acknowledged as read so the server never drops this consumer as slow.
import { auth, root, svc } from "./api.js";
import { clock, h, mount, ms, pill } from "./dom.js";

/** Lines kept on screen; older ones are removed. */
const KEEP = 200;
/** Acknowledge at least every this many lines (the server allows 500 unacknowledged). */
const ACK_EVERY = 20;

const statusKind = (s) => (s >= 500 ? "bad-text" : s >= 400 ? "warn-text" : "");

/** Why the server closed the tail, in words. */
function closedText(ev) {
  if (ev.code === 4008) return `The server closed the tail: this browser fell behind (slow consumer, code 4008). ${ev.reason || ""}`.trim();
  if (ev.code === 1000 || ev.code === 1001) return `The tail was closed${ev.reason ? `: ${ev.reason}` : "."}`;
  return `The tail closed (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""}). Too many tails open (at most 8), a refused sign-in or a network problem ends it; reload the tab to try again.`;
}

function lineView(l) {
  const at = h("span", { class: "live-time muted" }, clock(l.ts_ms ?? l.at_ms ?? Date.now()));
  switch (l.type) {
    case "request":
      return h(
        "li",
        { class: "live-request", "data-seq": l.seq },
        at,
        h("span", { class: "live-method" }, l.method),
        h("code", { class: "live-path" }, l.path),
        h("span", { class: ["num", statusKind(l.status)] }, String(l.status)),
        l.backend ? h("code", { class: "live-backend" }, l.backend) : h("span", { class: "muted" }, "no backend"),
        h("span", { class: "muted" }, `${ms(l.latency_ms)} · ${l.attempts} attempt${l.attempts === 1 ? "" : "s"} · ${l.why ?? ""}`),
      );
    case "health":
      return h("li", { class: "live-health", "data-seq": l.seq }, at, pill(l.kind ?? "health", "info"), h("code", {}, l.backend ?? ""), h("span", {}, `${l.from} → ${l.to}`), h("span", { class: "muted" }, l.reason ?? ""));
    case "config":
      return h("li", { class: "live-config", "data-seq": l.seq }, at, pill("config", "info"), h("span", {}, l.action === "deleted" ? "service deleted" : `config ${(l.action ?? "changed").replaceAll("_", " ")}: now v${l.version}`));
    case "error":
      return h("li", { class: "live-error error", "data-seq": l.seq }, at, h("span", {}, l.message ?? "error"));
    default:
      return null;
  }
}

export function renderLive(body, host) {
  const state = h("span", { class: "muted", id: "live-state" }, "Connecting…");
  const pauseBtn = h("button", { type: "button", id: "live-pause" }, "Pause");
  const list = h("ol", { class: "live", id: "live-lines", "aria-live": "off" });
  const closed = h("p", { class: "notice", id: "live-closed", hidden: true });
  mount(body, h("div", { class: "toolbar" }, pauseBtn, state), closed, h("section", { class: "card flush" }, list));

  if (auth.mode !== "session") {
    // A browser WebSocket cannot send an Authorization header; the tail needs the session cookie.
    // Only the notice: an empty list would read "Waiting for requests…" for a tail never opened.
    mount(closed, "The live tail needs a signed-in session: a browser cannot send an API key on a WebSocket. Use websocat or the example in the README.");
    closed.hidden = false;
    mount(body, closed);
    return () => {};
  }

  let paused = false;
  let held = []; // lines read while paused, shown on resume
  let lastSeq = 0;
  let acked = 0;
  let leaving = false;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}${root}${svc(host, "/tail")}`);

  const ack = () => {
    if (lastSeq > acked && ws.readyState === WebSocket.OPEN) {
      ws.send(String(lastSeq));
      acked = lastSeq;
    }
  };
  // Lines arriving in a burst are acknowledged once the burst ends, and at least every ACK_EVERY.
  let ackTimer = null;
  const show = (nodes) => {
    list.prepend(...nodes.reverse());
    while (list.childElementCount > KEEP) list.lastElementChild.remove();
  };

  const CONNECTED = "Connected: newest first, at most 200 lines kept.";
  ws.addEventListener("open", () => (state.textContent = CONNECTED));
  ws.addEventListener("message", (ev) => {
    let l;
    try {
      l = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (typeof l.seq === "number" && l.seq > lastSeq) lastSeq = l.seq;
    // Read lines are acknowledged even while paused: pausing stops the screen, not the tail.
    if (lastSeq - acked >= ACK_EVERY) ack();
    clearTimeout(ackTimer);
    ackTimer = setTimeout(ack, 250);
    if (l.type === "hello") return;
    const node = lineView(l);
    if (!node) return;
    if (paused) {
      held.push(node);
      if (held.length > KEEP) held = held.slice(-KEEP);
      state.textContent = `Paused: ${held.length} new line${held.length === 1 ? "" : "s"} held.`;
    } else show([node]);
  });
  ws.addEventListener("close", (ev) => {
    clearTimeout(ackTimer);
    if (leaving) return;
    state.textContent = "Disconnected.";
    pauseBtn.disabled = true;
    mount(closed, closedText(ev));
    closed.hidden = false;
  });
  ws.addEventListener("error", () => (state.textContent = "The tail could not be opened."));
  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    pauseBtn.setAttribute("aria-pressed", String(paused));
    if (paused) state.textContent = "Paused: 0 new lines held.";
    else {
      show(held);
      held = [];
      if (ws.readyState === WebSocket.OPEN) state.textContent = CONNECTED;
    }
  });

  return () => {
    leaving = true;
    clearTimeout(ackTimer);
    // Closing before the handshake finishes makes the browser log an error: wait for it.
    if (ws.readyState === WebSocket.CONNECTING) ws.addEventListener("open", () => ws.close(1000, "console left the tab"));
    else {
      ack();
      ws.close(1000, "console left the tab");
    }
  };
}
