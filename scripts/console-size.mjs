// Prints the weight of the operator console (dashboard/): what a browser downloads on first load, raw and gzip.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../dashboard");
const files = ["index.html", ...readdirSync(path.join(dir, "assets")).map((f) => `assets/${f}`)];
let raw = 0;
let gz = 0;
for (const f of files) {
  const b = readFileSync(path.join(dir, f));
  raw += b.length;
  // Each file is its own response, so each is compressed on its own.
  gz += gzipSync(b, { level: 9 }).length;
}
console.log(`console: ${files.length} files, ${(raw / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzip`);
