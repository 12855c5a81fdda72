// Reads wrangler.toml and .dev.vars with wrangler's own readers, for dev.sh and deploy.sh.
//   var NAME                 prints [vars] NAME (JSON values as JSON), empty when unset
//   d1-id BINDING            prints the database_id of a [[d1_databases]] binding
//   dev-secrets FILE NAME..  writes FILE (mode 0600) for `wrangler dev --env-file`: what wrangler would
//                            read from .dev.vars, overlaid with the NAMEs exported in this environment
// Secret values travel through the environment and files, never through a command line.
const fs = require("node:fs");
const wrangler = require("wrangler");

const CONFIG = "wrangler.toml";
const [command, ...args] = process.argv.slice(2);

function readConfig() {
  return wrangler.unstable_readConfig({ config: CONFIG }, { hideWarnings: true });
}

/** The secrets a local Worker gets, as `wrangler dev` computes them (envFiles: undefined reads .dev.vars). */
function devSecrets(envFiles) {
  const bindings = wrangler.unstable_getVarsForDev(CONFIG, envFiles, {}, undefined, true);
  return Object.fromEntries(Object.entries(bindings).map(([k, b]) => [k, b.value]));
}

/** One dotenv line that wrangler reads back as exactly `value` (it expands `$NAME` unless escaped). */
function dotenvLine(name, value) {
  const escaped = value.replace(/\$/g, "\\$");
  const quote = ["'", "`", '"'].find((q) => !escaped.includes(q));
  if (!quote) throw new Error(`${name} contains ', \` and " at once: put it in .dev.vars instead of exporting it`);
  return `${name}=${quote}${escaped}${quote}\n`;
}

const commands = {
  var(name) {
    const value = readConfig().vars?.[name];
    process.stdout.write(value === undefined ? "" : typeof value === "string" ? value : JSON.stringify(value));
  },
  "d1-id"(binding) {
    const db = (readConfig().d1_databases ?? []).find((d) => d.binding === binding);
    process.stdout.write(db?.database_id ?? "");
  },
  "dev-secrets"(file, ...names) {
    const want = devSecrets(undefined);
    for (const name of names) if (process.env[name]) want[name] = process.env[name];
    fs.writeFileSync(file, Object.entries(want).map(([k, v]) => dotenvLine(k, v)).join(""), { mode: 0o600 });
    // Read it back the way `wrangler dev --env-file` will, so a quoting mistake cannot change a secret.
    const got = devSecrets([file]);
    const wrong = Object.keys(want).filter((k) => got[k] !== want[k]);
    if (wrong.length) throw new Error(`wrangler would read ${wrong.join(", ")} differently from ${file}`);
  },
};

if (!commands[command]) {
  console.error("usage: wrangler-helper.cjs var NAME | d1-id BINDING | dev-secrets FILE NAME...");
  process.exit(2);
}
try {
  commands[command](...args);
} catch (e) {
  console.error(`${command}: ${e.message}`);
  process.exit(1);
}
