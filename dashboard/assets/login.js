// The sign-in screen, built from /auth/providers: GitHub and Google buttons, the password form,
// configuration problems, and the ?error= of a failed sign-in shown as text (never as HTML).
import { root, useApiKey } from "./api.js";
import { h, mount } from "./dom.js";

const GENERIC_ERROR = "Sign-in failed. Try again, or ask the operator of this deployment.";

/** Only our own routes or http(s) URLs may become links. */
const safeUrl = (u) => (typeof u === "string" && (/^\/(?!\/)/.test(u) || /^https?:\/\//i.test(u)) ? u : null);

let renders = 0;

export async function renderLogin(app, { onSignedIn, message } = {}) {
  const mine = ++renders;
  let providers = null;
  try {
    const res = await fetch(`${root}/auth/providers`, { credentials: "same-origin", headers: { accept: "application/json" } });
    if (res.ok) providers = await res.json();
  } catch {
    providers = null;
  }
  // A newer sign-in screen (e.g. a 401 arriving while signing out) replaces this one.
  if (mine !== renders) return;
  const params = new URLSearchParams(location.search);
  const code = params.get("error");
  const errorText = code ? (providers?.error_texts && Object.hasOwn(providers.error_texts, code) ? String(providers.error_texts[code]) : GENERIC_ERROR) : null;

  const buttons = [];
  for (const [id, label] of [
    ["github", "Sign in with GitHub"],
    ["google", "Sign in with Google"],
  ]) {
    const p = providers?.[id];
    const href = safeUrl(p?.login_url);
    if (!p?.enabled || !href) continue;
    buttons.push(
      h(
        "div",
        { class: "provider" },
        h("a", { class: `button provider-${id}`, href }, label),
        p.redirect_uri ? h("p", { class: "hint" }, "Redirect URI to register: ", h("code", {}, String(p.redirect_uri))) : null,
      ),
    );
  }
  const password = providers?.password?.enabled
    ? h(
        "form",
        { method: "post", action: `${root}/auth/password`, class: "password-form" },
        h("label", { class: "field" }, h("span", {}, "Username"), h("input", { name: "username", autocomplete: "username", required: true })),
        h("label", { class: "field" }, h("span", {}, "Password"), h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
        h("button", { type: "submit", class: "primary" }, "Sign in"),
      )
    : null;
  const problems = [...(providers?.problems ?? []).map(String)];
  // Only a problem when GitHub or Google sign-in is on: the password form needs no allow-list.
  const oauthOn = providers?.github?.enabled || providers?.google?.enabled;
  if (oauthOn && providers?.authorized_users_empty && !problems.some((p) => p.includes("AUTHORIZED_USERS"))) problems.push("AUTHORIZED_USERS is empty: nobody can sign in with GitHub or Google.");
  if (!providers) problems.push("Sign-in with GitHub, Google or a password is not set up on this deployment; use an API key.");

  const keyInput = h("input", { type: "password", autocomplete: "off", "aria-label": "API key", placeholder: "fbk_… or API_SECRET" });
  const keyError = h("p", { class: "error", role: "alert" });
  const keyForm = h(
    "form",
    {
      class: "key-form",
      onsubmit: async (e) => {
        e.preventDefault();
        keyError.textContent = "";
        if (await useApiKey(keyInput.value.trim())) onSignedIn();
        else keyError.textContent = "That key was not accepted.";
      },
    },
    h("label", { class: "field" }, h("span", {}, "API key"), keyInput),
    h("button", { type: "submit" }, "Use key"),
    keyError,
  );
  const anyLogin = buttons.length > 0 || password;
  mount(
    app,
    h(
      "main",
      { class: "login" },
      h(
        "section",
        { class: "card login-card", "aria-labelledby": "login-title" },
        h("div", { class: "brand big" }, h("img", { src: "assets/icon.svg", alt: "", width: 36, height: 36 }), h("span", {}, "FlowBalance")),
        h("h1", { id: "login-title" }, "Sign in"),
        message ? h("p", { class: "notice", role: "status" }, message) : null,
        errorText ? h("p", { class: "error", role: "alert", id: "login-error" }, errorText) : null,
        buttons,
        buttons.length && password ? h("p", { class: "or" }, "or") : null,
        password,
        problems.length ? h("ul", { class: "problems" }, problems.map((p) => h("li", {}, p))) : null,
        h("details", { class: "api-key", open: !anyLogin }, h("summary", {}, "Use an API key instead"), keyForm),
      ),
    ),
  );
}
