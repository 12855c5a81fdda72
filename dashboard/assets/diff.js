// Line diff (longest common subsequence) of two texts, rendered as a unified diff with long
// unchanged runs folded.
import { h } from "./dom.js";

/** Ops `[kind, line]` with kind " " (same), "-" (only in a) or "+" (only in b). */
export function diffLines(a, b) {
  const x = a.split("\n");
  const y = b.split("\n");
  // Trim the common head and tail first: configs differ in a few lines.
  let head = 0;
  while (head < x.length && head < y.length && x[head] === y[head]) head++;
  let tail = 0;
  while (tail < x.length - head && tail < y.length - head && x[x.length - 1 - tail] === y[y.length - 1 - tail]) tail++;
  const xs = x.slice(head, x.length - tail);
  const ys = y.slice(head, y.length - tail);
  const n = xs.length;
  const m = ys.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = xs[i] === ys[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const ops = x.slice(0, head).map((l) => [" ", l]);
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && xs[i] === ys[j]) {
      ops.push([" ", xs[i++]]);
      j++;
    } else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) ops.push(["-", xs[i++]]);
    else ops.push(["+", ys[j++]]);
  }
  for (const l of x.slice(x.length - tail)) ops.push([" ", l]);
  return ops;
}

/** A rendered diff; `labels` name the two sides. Shows "No changes" when equal. */
export function diffView(a, b, labels = ["stored", "yours"]) {
  const ops = diffLines(a, b);
  const changed = ops.filter(([k]) => k !== " ").length;
  if (!changed) return h("p", { class: "muted diff-none" }, "No changes.");
  const added = ops.filter(([k]) => k === "+").length;
  const lines = [];
  const CONTEXT = 3;
  for (let i = 0; i < ops.length; ) {
    if (ops[i][0] !== " ") {
      lines.push(h("div", { class: ops[i][0] === "+" ? "add" : "del" }, `${ops[i][0]} ${ops[i][1]}`));
      i++;
      continue;
    }
    let end = i;
    while (end < ops.length && ops[end][0] === " ") end++;
    const run = ops.slice(i, end);
    const keepHead = i === 0 ? 0 : CONTEXT;
    const keepTail = end === ops.length ? 0 : CONTEXT;
    if (run.length > keepHead + keepTail + 1) {
      for (const [, l] of run.slice(0, keepHead)) lines.push(h("div", {}, `  ${l}`));
      lines.push(h("div", { class: "fold" }, `⋯ ${run.length - keepHead - keepTail} unchanged lines`));
      for (const [, l] of run.slice(run.length - keepTail)) lines.push(h("div", {}, `  ${l}`));
    } else for (const [, l] of run) lines.push(h("div", {}, `  ${l}`));
    i = end;
  }
  return h(
    "div",
    { class: "diff" },
    h("p", { class: "diff-legend" }, h("span", { class: "del" }, `− ${labels[0]}`), " ", h("span", { class: "add" }, `+ ${labels[1]}`), ` · ${added} added, ${changed - added} removed`),
    h("pre", { class: "diff-body" }, lines),
  );
}

/** Pretty JSON for diffs and the editor. */
export const pretty = (v) => JSON.stringify(v, null, 2);
