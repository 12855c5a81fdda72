// The config is described once: every docs example validates against the served JSON Schema and is accepted by the parser, and invalid ones are refused by both.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import Ajv2020 from "ajv/dist/2020.js";
import { docFiles } from "../support/docs.mjs";
import { startBalancer } from "../support/runtime.mjs";

/** The ```json blocks the README and the docs pages mark with `<!-- example: DEFAULT_BACKENDS -->`. */
function docsExamples() {
  const re = /<!-- example: DEFAULT_BACKENDS -->\s*```json\n([\s\S]*?)```/g;
  return docFiles().flatMap((file) => [...readFileSync(file, "utf8").matchAll(re)].map((m) => m[1]));
}

function firstHostname(config) {
  if (Array.isArray(config)) return config[0].hostname;
  if (config.services) return config.services[0].hostname;
  return config.hostname;
}

async function validator(lb) {
  const doc = await (await lb.admin("/admin/openapi.json")).json();
  assert.equal(doc.openapi, "3.1.0");
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  // Refs point at #/components/schemas/...: validate inside a document that has them.
  return ajv.compile({ $ref: "#/components/schemas/DefaultBackends", components: doc.components });
}

async function parserAnswer(lb, text, host) {
  const res = await lb.admin(`/admin/services/${host}/config`, {
    method: "PUT",
    body: JSON.stringify({ vars: { DEFAULT_BACKENDS: text } }),
  });
  return { status: res.status, body: await res.json() };
}

test("every config example in the docs passes the schema and the parser", async () => {
  const lb = await startBalancer({ defaultBackends: "" });
  try {
    const validate = await validator(lb);
    const examples = docsExamples();
    assert.ok(examples.length >= 6, `the docs mark ${examples.length} examples`);
    for (const text of examples) {
      const config = JSON.parse(text);
      assert.ok(validate(config), `schema refused a docs example: ${JSON.stringify(validate.errors)}\n${text}`);
      const { status, body } = await parserAnswer(lb, text, firstHostname(config));
      assert.ok(status === 200 || status === 201, `parser refused a docs example (${status}): ${JSON.stringify(body)}\n${text}`);
    }
  } finally {
    await lb.stop();
  }
});

test("invalid configs are refused by the schema and by the parser, at the same field", async () => {
  const lb = await startBalancer({ defaultBackends: "" });
  try {
    const validate = await validator(lb);
    const cases = [
      [{ hostname: "a.test", backends: ["ftp://x"] }, "backends[0]"],
      [{ hostname: "a.test", backends: [{ url: "http://x", weight: "3" }] }, "backends[0].weight"],
      [{ hostname: "a.test", backends: ["http://x"], colour: "red" }, "colour"],
      [{ hostname: "a.test", backends: ["http://x"], retries: 11 }, "retries"],
      [{ services: [{ hostname: "a.test", backends: ["http://x"] }], bogus: 1 }, "bogus"],
      [[{ backends: ["http://x"] }], "[0].hostname"],
    ];
    for (const [config, field] of cases) {
      assert.equal(validate(config), false, `schema accepted ${JSON.stringify(config)}`);
      const { status, body } = await parserAnswer(lb, JSON.stringify(config), "a.test");
      assert.equal(status, 400, JSON.stringify(body));
      const paths = body.errors.map((e) => e.path);
      assert.ok(paths.includes(`vars.DEFAULT_BACKENDS${field.startsWith("[") ? "" : "."}${field}`), `${JSON.stringify(paths)} lacks ${field}`);
    }
    // Nothing was stored by any refused write.
    assert.equal((await lb.admin("/admin/services/a.test/config")).status, 404);
  } finally {
    await lb.stop();
  }
});
