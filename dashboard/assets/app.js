// FlowBalance console: the shell (header, navigation, sign-out) and the hash router that shows
// one view at a time. Views live in their own modules and return a cleanup function.
import { auth, detectAuth, root, signOut, whenSignedOut } from "./api.js";
import { h, mount, toast } from "./dom.js";
import { renderLogin } from "./login.js";
import { renderOverview } from "./overview.js";
import { renderService } from "./service.js";
import { renderAdd } from "./add.js";
import { renderKeys } from "./keys.js";
import { renderDocs } from "./docs.js";

const app = document.getElementById("app");
let cleanup = null;
let main = null;

const NAV = [
  ["#/", "Overview", (p) => p === "" || p.startsWith("services")],
  ["#/add", "Add service", (p) => p === "add"],
  ["#/keys", "API keys", (p) => p === "keys"],
  ["#/docs", "API docs", (p) => p === "docs"],
];

function shell() {
  const nav = h("nav", { class: "nav", "aria-label": "Console" }, NAV.map(([href, label]) => h("a", { href, "data-nav": label }, label)));
  const who = h("span", { class: "who", title: auth.via ? `signed in via ${auth.via}` : "" }, auth.user || "signed in");
  const out = h("button", { type: "button", class: "ghost", id: "sign-out", onclick: () => leave(false) }, "Sign out");
  const everywhere = auth.mode === "session" ? h("button", { type: "button", class: "ghost", onclick: () => leave(true) }, "Sign out everywhere") : null;
  main = h("main", { id: "main", tabindex: "-1" });
  mount(
    app,
    h("header", { class: "top" }, h("a", { class: "brand", href: "#/" }, h("img", { src: "assets/icon.svg", alt: "", width: 24, height: 24 }), h("span", {}, "FlowBalance")), nav, h("div", { class: "user" }, who, everywhere, out)),
    main,
  );
}

async function leave(everywhere) {
  try {
    await signOut({ everywhere });
  } catch (e) {
    toast(`Sign-out failed: ${e.message}`, "bad");
    return;
  }
  stopView();
  renderLogin(app, { onSignedIn: start, message: everywhere ? "Signed out on every device." : "Signed out." });
}

function stopView() {
  if (cleanup) cleanup();
  cleanup = null;
}

function route() {
  if (!main) return;
  stopView();
  const path = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  for (const a of document.querySelectorAll("[data-nav]")) {
    const entry = NAV.find(([, label]) => label === a.dataset.nav);
    if (entry[2](path)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const [first, host, tab] = path.split("/");
  mount(main);
  if (first === "services" && host) cleanup = renderService(main, host, tab || "backends");
  else if (first === "add") cleanup = renderAdd(main);
  else if (first === "keys") cleanup = renderKeys(main);
  else if (first === "docs") cleanup = renderDocs(main);
  else cleanup = renderOverview(main);
  document.title = `${document.querySelector("main h1")?.textContent || "Console"} · FlowBalance`;
}

async function start() {
  if (!(await detectAuth())) {
    main = null;
    renderLogin(app, { onSignedIn: start });
    return;
  }
  shell();
  route();
}

whenSignedOut(() => {
  stopView();
  main = null;
  renderLogin(app, { onSignedIn: start, message: "Your session has ended. Sign in again." });
});
window.addEventListener("hashchange", route);
document.documentElement.dataset.root = root;
start();
