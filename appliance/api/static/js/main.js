// The admin page: the shell (navigation, connection state, language, who is signed in) and the
// router. Pages are chosen by the URL's hash (#/devices), so a reload or a bookmark opens the same
// page, and the back button works. A page is shown when the signed-in user may run the command it is
// built on, and its controls when they may run theirs (js/capabilities.js: the box's own answer);
// the box refuses anything else anyway.
import { session } from "./api.js";
import { capabilities } from "./capabilities.js";
import { LANGUAGES, language, preferredLanguage, setLanguage, t } from "./i18n.js";
import { fill, h } from "./dom.js";
import { ControlSocket } from "./socket.js";
import { renderLogin } from "./pages/login.js";
import dashboard from "./pages/dashboard.js";
import memory from "./pages/memory.js";
import devices from "./pages/devices.js";
import site from "./pages/site.js";
import tasks from "./pages/tasks.js";
import schedules from "./pages/schedules.js";
import chat from "./pages/chat.js";
import audit from "./pages/audit.js";
import users from "./pages/users.js";

const PAGES = [dashboard, memory, devices, site, tasks, schedules, chat, audit, users];
const root = document.getElementById("app");
let socket = null;
let cleanup = null;

function pageOf(hash) {
  const id = hash.replace(/^#\/?/, "").split("/")[0];
  const allowed = PAGES.filter((page) => capabilities.may(page.command));
  return allowed.find((page) => page.id === id) ?? allowed[0];
}

function languageSwitch() {
  const select = h("select", { id: "language", "aria-label": t("shell.language") },
    LANGUAGES.map((code) => h("option", { value: code, selected: code === language() }, t(`shell.language.${code}`))));
  select.addEventListener("change", async () => {
    await setLanguage(select.value, true);
    render();
  });
  return select;
}

function showConnection(state) {
  const badge = document.getElementById("connection");
  if (!badge) return;
  badge.dataset.state = state;
  badge.textContent = t(`shell.connection.${state}`);
}

function connectionBadge() {
  const badge = h("span", { id: "connection", class: "connection", role: "status" });
  queueMicrotask(() => showConnection(socket.state));
  return badge;
}

function shell() {
  const current = pageOf(location.hash);
  const nav = h("nav", { "aria-label": t("shell.navigation") }, h("ul", {}, PAGES.filter((p) => capabilities.may(p.command))
    .map((page) => h("li", {}, h("a", { href: `#/${page.id}`, "aria-current": page === current ? "page" : false }, t(page.title))))));
  const logout = h("button", { type: "button", id: "logout" }, t("shell.logout"));
  logout.addEventListener("click", () => session.logout());
  const main = h("main", { id: "main", tabindex: "-1" });
  fill(root,
    h("a", { class: "skip", href: "#main" }, t("shell.skip")),
    h("header", { class: "top" },
      h("a", { class: "brand", href: "#/dashboard" }, t("app.name")),
      nav,
      h("div", { class: "session" }, connectionBadge(), languageSwitch(),
        h("span", { id: "whoami" }, t("shell.signed_in", { user: session.user, role: t(`role.${session.role}`) })), logout)),
    main);
  return { main, current };
}

function render() {
  cleanup?.();
  cleanup = null;
  if (session.data && !capabilities.data) {
    // Signed in, capabilities not read yet: read them, then draw (a failure shows the login again).
    capabilities.load().then(render, () => session.end("expired"));
    return;
  }
  if (!session.data) {
    const main = h("main", { id: "main", class: "centered" });
    fill(root, h("header", { class: "top" }, h("span", { class: "brand" }, t("app.name")),
      h("div", { class: "session" }, languageSwitch())), main);
    document.title = t("login.title");
    renderLogin(main, render.why);
    return;
  }
  const { main, current } = shell();
  document.title = `${t(current.title)} · ${t("app.name")}`;
  cleanup = current.render(main, { socket }) ?? null;
}

function start() {
  socket = new ControlSocket();
  socket.addEventListener("state", (event) => showConnection(event.detail));
  socket.start();
  render();
}

session.addEventListener("token", () => {
  if (!socket) start(); // signed in just now (a refresh keeps the socket: it takes the new token)
});
session.addEventListener("end", (event) => {
  capabilities.clear();
  socket?.stop();
  socket = null;
  render.why = event.detail;
  render();
});
window.addEventListener("hashchange", () => {
  if (session.data && socket) render();
});

await setLanguage(preferredLanguage());
if (session.data) {
  session.schedule();
  start();
} else {
  render();
}
