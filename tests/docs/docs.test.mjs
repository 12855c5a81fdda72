// The docs hold together: every code fence is closed, every relative link and anchor resolves, and the README stays a front page.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { docFiles, root } from "../support/docs.mjs";

/** GitHub's heading anchor: lowercase, punctuation dropped, spaces to hyphens; repeats get -1, -2. */
function anchors(text) {
  const seen = new Map();
  const out = new Set();
  let fenced = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const m = !fenced && /^#{1,6} (.*)$/.exec(line);
    if (!m) continue;
    const base = m[1].trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, "").replace(/ /g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n ? `${base}-${n}` : base);
  }
  return out;
}

/** Markdown links and images outside code fences and inline code: [text](target). */
function links(text) {
  const out = [];
  let fenced = false;
  text.split("\n").forEach((line, i) => {
    if (line.startsWith("```")) fenced = !fenced;
    if (fenced) return;
    for (const m of line.replace(/`[^`]*`/g, "").matchAll(/\]\(([^)\s]+)\)/g)) out.push({ target: m[1], line: i + 1 });
  });
  return out;
}

test("every code fence in the docs is closed", () => {
  for (const file of docFiles()) {
    const text = readFileSync(file, "utf8");
    const fences = text.split("\n").filter((l) => l.startsWith("```"));
    assert.equal(fences.length % 2, 0, `${path.relative(root, file)} opens a code fence it never closes`);
  }
});

test("every relative link and anchor in the docs resolves", () => {
  const problems = [];
  for (const file of docFiles()) {
    for (const { target, line } of links(readFileSync(file, "utf8"))) {
      if (/^[a-z]+:/i.test(target)) continue; // https:, mailto:
      const [p, anchor] = target.split("#");
      const dest = p ? path.resolve(path.dirname(file), p) : file;
      const where = `${path.relative(root, file)}:${line} -> ${target}`;
      if (!existsSync(dest)) {
        problems.push(`${where}: no such file`);
      } else if (anchor && dest.endsWith(".md") && !anchors(readFileSync(dest, "utf8")).has(anchor)) {
        problems.push(`${where}: no heading with that anchor`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

test("the README is a front page that links every docs page", () => {
  const readme = readFileSync(path.join(root, "README.md"), "utf8");
  assert.ok(Buffer.byteLength(readme) <= 15 * 1024, `README.md is ${Buffer.byteLength(readme)} bytes (at most 15 KiB)`);
  for (const file of docFiles().filter((f) => f.includes(`${path.sep}docs${path.sep}`))) {
    const rel = path.relative(root, file).split(path.sep).join("/");
    assert.ok(readme.includes(`](${rel})`), `README.md does not link ${rel}`);
  }
});
