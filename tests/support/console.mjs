// The console's browser tests share these: Chromium for a test, a page watcher that fails on page errors and unexpected refusals, screenshots, sign-in through the fake GitHub, and traffic helpers.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { waitFor } from "./backends.mjs";
import { startOAuthFakes } from "./oauth-fakes.mjs";
import { balancerFor } from "./scoped.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Screenshots of each main screen (git-ignored). */
export const SHOTS = path.join(root, "test-artifacts/screenshots");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const JWT_SECRET = "console-test-jwt-secret-0123456789abcdef";
export const OPERATOR = "ops@example.com";

/** Starts Chromium for test `t`; closed when the test ends. */
export async function browserFor(t) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--host-resolver-rules=MAP *.test 127.0.0.1"] });
  t.after(() => browser.close());
  return browser;
}

/**
 * Watches a page: console errors, uncaught exceptions, failed requests and responses >= 400 fail
 * the test unless announced with `allow(urlPart, status)` (a step that expects a refusal says so).
 */
export function watch(page) {
  const problems = [];
  const allowed = [];
  const isAllowed = (url, status) => allowed.some((a) => url.includes(a.part) && (a.status === undefined || a.status === status));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    // Chromium logs every >= 400 response; those are judged by the response listener below.
    if (/Failed to load resource: the server responded with a status of (\d+)/.test(msg.text())) return;
    problems.push(`console error: ${msg.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => {
    if (r.status() >= 400 && !isAllowed(r.url(), r.status())) problems.push(`unexpected ${r.status()} for ${r.request().method()} ${r.url()}`);
  });
  return {
    allow(part, status) {
      allowed.push({ part, status });
    },
    check(step) {
      // Reported once: a later step fails only for its own problems.
      assert.deepEqual(problems.splice(0), [], `problems in the page during ${step}`);
    },
  };
}

export async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  // Earlier steps' notices would cover the screen.
  await page.evaluate(() => document.getElementById("toasts")?.replaceChildren());
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Sends `n` requests to `host` and returns the HTTP statuses. */
export async function traffic(lb, host, n, pathname = "/", init = {}) {
  const statuses = [];
  for (let i = 0; i < n; i++) {
    const res = await lb.fetch(host, typeof pathname === "function" ? pathname(i) : pathname, init);
    await res.arrayBuffer();
    statuses.push(res.status);
  }
  return statuses;
}

export const api = async (lb, p, init) => (await lb.admin(p, init)).json();

/** Sends one request per poll until the log holds `n` rows for `host` (rows are written in batches). */
export async function logged(lb, host, n) {
  return waitFor(
    async () => {
      const { requests } = await api(lb, `/admin/services/${host}/logs?limit=1000`);
      if (requests.length >= n) return requests;
      await traffic(lb, host, 1, "/flush");
      return null;
    },
    { timeoutMs: 20000, stepMs: 300, what: `${n} logged requests for ${host}` },
  );
}

/** Signs in through the fake GitHub provider (tests/support/oauth-fakes.mjs), like an operator. */
export async function signIn(page, base) {
  await page.goto(base);
  await page.getByRole("link", { name: "Sign in with GitHub" }).click();
  await page.getByRole("heading", { name: "Overview" }).waitFor();
}


/**
 * A signed-out console for test `t`: the fake GitHub and Google, the Worker with `defaultBackends`
 * and sign-in for OPERATOR, and a Chromium page under `watch` (the two 401s the console meets
 * before sign-in are allowed). `runtime`: more `startBalancer` options. Returns { lb, base, browser, context, page, w }.
 */
export async function consoleFor(t, defaultBackends, { viewport = { width: 1280, height: 860 }, bindings = {}, runtime = {} } = {}) {
  const fakes = await startOAuthFakes({ email: OPERATOR });
  t.after(() => fakes.stop());
  const lb = await balancerFor(t, { bindings: { ...fakes.env, JWT_SECRET, AUTHORIZED_USERS: OPERATOR, ...bindings }, defaultBackends, ...runtime });
  const browser = await browserFor(t);
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const w = watch(page);
  return { lb, base: lb.url.toString(), browser, context, page, w };
}
