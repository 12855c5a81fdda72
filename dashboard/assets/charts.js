// Small SVG line charts: time on x, one line per series, a few gridlines, native tooltips.
import { h, s } from "./dom.js";

export const PALETTE = ["#0051c3", "#f6821f", "#2e8540", "#9b2c9f", "#c62828", "#00838f", "#6d4c41", "#5c6bc0"];

const W = 640;
const H = 200;
const PAD = { l: 58, r: 14, t: 12, b: 28 };

/** A y maximum that reads well (1, 2, 2.5, 5 × 10^n) above `v`. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * `series`: [{ name, color, dashed, points: [[t_ms, value|null], ...] }] (null leaves a gap).
 * `from`/`to`: the x range in epoch ms. `format`: y label formatter. `yMax`: fixed top (e.g. 1 for rates).
 */
export function lineChart({ title, series, from, to, format = String, yMax, yMin = 0 }) {
  const values = series.flatMap((x) => x.points.map((p) => p[1])).filter((v) => v != null);
  const top = yMax ?? niceMax(Math.max(...values, 0));
  const bottom = yMin;
  const x = (t) => PAD.l + ((t - from) / Math.max(1, to - from)) * (W - PAD.l - PAD.r);
  const y = (v) => PAD.t + (1 - (v - bottom) / Math.max(1e-9, top - bottom)) * (H - PAD.t - PAD.b);
  const grid = [];
  for (let i = 0; i <= 4; i++) {
    const v = bottom + ((top - bottom) * i) / 4;
    grid.push(s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }), s("text", { x: PAD.l - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, format(v)));
  }
  for (const f of [0, 0.5, 1]) {
    const t = from + (to - from) * f;
    const label = new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    grid.push(s("text", { x: x(t), y: H - 6, class: "tick", "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle" }, label));
  }
  const lines = series.map((ser) => {
    const segs = [];
    let cur = [];
    for (const [t, v] of ser.points) {
      if (v == null) {
        if (cur.length) segs.push(cur);
        cur = [];
      } else cur.push(`${x(t).toFixed(1)},${y(Math.min(v, top)).toFixed(1)}`);
    }
    if (cur.length) segs.push(cur);
    const dots = ser.points.filter(([, v]) => v != null).map(([t, v]) => s("circle", { cx: x(t).toFixed(1), cy: y(Math.min(v, top)).toFixed(1), r: 2.2, fill: ser.color }, s("title", {}, `${ser.name} · ${new Date(t).toLocaleTimeString()} · ${format(v)}`)));
    return s(
      "g",
      { class: "series" },
      segs.map((pts) => s("polyline", { points: pts.join(" "), fill: "none", stroke: ser.color, "stroke-width": 2, "stroke-dasharray": ser.dashed ? "5 4" : null, "stroke-linejoin": "round" })),
      dots,
    );
  });
  const empty = values.length === 0 ? s("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, "No requests in this window") : null;
  return h(
    "figure",
    { class: "chart" },
    h("figcaption", {}, title),
    s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title }, grid, lines, empty),
  );
}

/** The colour key for a chart group. */
export function legend(items) {
  return h(
    "ul",
    { class: "legend" },
    items.map(({ name, color, dashed }) => h("li", {}, s("svg", { viewBox: "0 0 20 8", width: 20, height: 8, "aria-hidden": "true" }, s("line", { x1: 0, x2: 20, y1: 4, y2: 4, stroke: color, "stroke-width": 3, "stroke-dasharray": dashed ? "4 3" : null })), name)),
  );
}
