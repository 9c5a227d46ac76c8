// Users (admins): the accounts with role, state and last login; add one, change a role, disable or
// enable, clear a lockout, set a new password; and the device and app tokens, made (shown once)
// and revoked. Tokens themselves are never listed: the box keeps only their ids.
import { session } from "../api.js";
import { capabilities } from "../capabilities.js";
import { t } from "../i18n.js";
import { confirmButton, errorText, field, fill, form, h, notice, table, time } from "../dom.js";

function roleSelect(name, selected, attrs = {}) {
  const roles = capabilities.words("roles"); // the box's own list
  return h("select", { name, ...attrs }, roles.map((r) => h("option", { value: r, selected: r === selected }, t(`role.${r}`))));
}

function userState(user) {
  if (user.disabled) return h("span", { class: "badge state-failed" }, t("users.disabled"));
  if (user.locked_until && user.locked_until > Date.now() / 1000) {
    return h("span", { class: "badge state-waiting_approval" }, t("users.locked", { until: time(user.locked_until) }));
  }
  return h("span", { class: "badge state-succeeded" }, t("users.active"));
}

export default {
  id: "users",
  title: "nav.users",
  command: "users.list",
  render(main, { socket }) {
    const status = h("div", { "aria-live": "polite" });
    const users = h("div", { id: "user-list" }, t("common.loading"));
    const tokens = h("div", { id: "token-list" }, t("common.loading"));
    const issued = h("div", { id: "token-issued", "aria-live": "polite" });

    async function change(args, done) {
      notice(status, "");
      try {
        const user = await socket.request("users.update", args);
        notice(status, t(done, { user: user.username }), "ok");
      } catch (error) {
        notice(status, errorText(error));
      }
      await refresh();
    }

    function userActions(user) {
      const own = user.username === session.user;
      const password = h("input", { type: "password", autocomplete: "new-password",
        "aria-label": t("users.new_password_for", { user: user.username }) });
      const setPassword = h("button", { type: "button", class: "small" }, t("users.set_password"));
      setPassword.addEventListener("click", () => change({ username: user.username, password: password.value },
        "users.password_set"));
      return h("span", { class: "buttons" },
        own ? null : h("button", { type: "button", class: "small", onclick: () => change(
          { username: user.username, disabled: !user.disabled }, user.disabled ? "users.enabled" : "users.disabled_done"),
        "aria-label": t(user.disabled ? "users.enable_n" : "users.disable_n", { user: user.username }) },
        t(user.disabled ? "users.enable" : "users.disable")),
        user.locked_until ? h("button", { type: "button", class: "small", onclick: () => change(
          { username: user.username, unlock: true }, "users.unlocked") }, t("users.unlock")) : null,
        password, setPassword);
    }

    async function refresh() {
      try {
        const [list, issuedTokens] = await Promise.all([socket.request("users.list"), socket.request("tokens.list")]);
        fill(users, table([
          ["users.username", (u) => u.username],
          ["users.role", (u) => (u.username === session.user ? t(`role.${u.role}`) : roleSelect("role", u.role, {
            "aria-label": t("users.role_of", { user: u.username }),
            onchange: (event) => change({ username: u.username, role: event.target.value }, "users.role_changed") }))],
          ["users.state", userState],
          ["users.last_login", (u) => time(u.last_login_at)],
          ["users.actions", userActions],
        ], list.users, { rowAttrs: (u) => ({ dataset: { user: u.username } }) }));
        fill(tokens, table([
          ["users.token_name", (k) => k.name],
          ["users.role", (k) => t(`role.${k.role}`)],
          ["users.created_by", (k) => k.created_by],
          ["users.expires", (k) => time(k.expires_at)],
          ["users.state", (k) => (k.revoked_at ? h("span", { class: "badge state-cancelled" }, t("users.revoked"))
            : h("span", { class: "badge state-succeeded" }, t("users.active")))],
          ["users.actions", (k) => (k.revoked_at ? "" : confirmButton("users.revoke", "users.revoke_confirm", async () => {
            await socket.request("tokens.revoke", { jti: k.jti }).catch((error) => notice(status, errorText(error)));
            await refresh();
          }, { class: "small", "aria-label": t("users.revoke_n", { name: k.name }) }))],
        ], issuedTokens.tokens, { empty: "users.no_tokens", rowAttrs: (k) => ({ dataset: { token: k.name } }) }));
      } catch (error) {
        notice(users, errorText(error));
      }
    }

    const username = h("input", { type: "text", name: "username", maxlength: 64, autocomplete: "off" });
    const password = h("input", { type: "password", name: "password", autocomplete: "new-password" });
    const newUser = form([
      h("div", { class: "row" }, field("users.username", username), field("users.role", roleSelect("role", "viewer"))),
      field("login.password", password, { hint: "login.password_hint" }),
    ], "users.add", async (el, formStatus) => {
      const role = el.querySelector("select[name=role]").value;
      const made = await socket.request("users.create", { username: username.value.trim(), role, password: password.value });
      notice(formStatus, t("users.added", { user: made.username }), "ok");
      el.reset();
      await refresh();
    }, { id: "user-form" });

    const tokenName = h("input", { type: "text", name: "name", maxlength: 64, autocomplete: "off" });
    const days = h("input", { type: "number", name: "ttl_s", min: 1, max: 365, value: "30" });
    const newToken = form([
      h("div", { class: "row" }, field("users.token_name", tokenName, { hint: "users.token_name_hint" }),
        field("users.role", roleSelect("role", "viewer")), field("users.days", days)),
    ], "users.make_token", async (el) => {
      const role = el.querySelector("select[name=role]").value;
      const made = await socket.request("tokens.create", { name: tokenName.value.trim(), role,
        ttl_s: Math.round(Number(days.value) * 86400) });
      fill(issued, h("p", { class: "notice warn" }, t("users.token_once", { name: made.name })),
        h("pre", { class: "payload", id: "issued-token" }, made.token));
      el.reset();
      await refresh();
    }, { id: "token-form" });

    refresh();
    fill(main, h("h1", {}, t("nav.users")), status,
      h("div", { class: "grid" },
        h("section", { class: "card wide" }, h("h2", {}, t("users.accounts")), users),
        h("section", { class: "card" }, h("h2", {}, t("users.add_title")), newUser),
        h("section", { class: "card wide" }, h("h2", {}, t("users.tokens")), tokens),
        h("section", { class: "card" }, h("h2", {}, t("users.token_title")), newToken, issued)));
  },
};
