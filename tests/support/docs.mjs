// The project's Markdown: the README, the repository files beside it and every page in docs/.
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Absolute paths of every Markdown file the docs consist of. */
export function docFiles() {
  const top = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"].map((f) => path.join(root, f)).filter((f) => existsSync(f));
  const pages = readdirSync(path.join(root, "docs"))
    .filter((f) => f.endsWith(".md"))
    .sort()
    .map((f) => path.join(root, "docs", f));
  return [...top, ...pages];
}
