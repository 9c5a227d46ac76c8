// Signing in: the first-boot form (the one-time setup token the box printed, and the first admin's
// name and password) while the box has no user, the login form after that.
import { publicApi, session } from "../api.js";
import { t } from "../i18n.js";
import { errorText, field, fill, form, h, notice, showErrors } from "../dom.js";

function setupForm() {
  const token = h("input", { type: "password", name: "setup_token", autocomplete: "off", maxlength: 256 });
  const username = h("input", { type: "text", name: "username", autocomplete: "username", maxlength: 64 });
  const password = h("input", { type: "password", name: "password", autocomplete: "new-password" });
  const again = h("input", { type: "password", name: "password_again", autocomplete: "new-password" });
  return form([
    h("p", {}, t("login.setup_intro")),
    field("login.setup_token", token, { hint: "login.setup_token_hint" }),
    field("login.username", username),
    field("login.password", password, { hint: "login.password_hint" }),
    field("login.password_again", again),
  ], "login.create_admin", async (el, status) => {
    if (password.value !== again.value) {
      showErrors(el, { field: "password_again", message: t("login.passwords_differ") }, status);
      return;
    }
    session.adopt(await publicApi("POST", "/api/v1/auth/setup", {
      setup_token: token.value.trim(), username: username.value.trim(), password: password.value }));
  }, { id: "setup-form" });
}

function loginForm() {
  const username = h("input", { type: "text", name: "username", autocomplete: "username", maxlength: 64 });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password" });
  return form([field("login.username", username), field("login.password", password)], "login.sign_in",
    async () => {
      session.adopt(await publicApi("POST", "/api/v1/auth/login", { username: username.value.trim(), password: password.value }));
    }, { id: "login-form" });
}

/** The sign-in view in ``main``; ``why`` says why it is shown (expired, logout) when it is not the first visit. */
export async function renderLogin(main, why) {
  const message = h("div", { "aria-live": "polite" });
  const box = h("section", { class: "card login" }, h("h1", {}, t("login.title")), message, t("common.loading"));
  fill(main, box);
  if (why) notice(message, t(`login.why.${why}`, {}, ""), "warn");
  try {
    const setup = await publicApi("GET", "/api/v1/auth/setup");
    fill(box, h("h1", {}, t(setup.needed ? "login.setup_title" : "login.title")), message,
      setup.needed ? setupForm() : loginForm());
  } catch (error) {
    fill(box, h("h1", {}, t("login.title")), message);
    notice(message, errorText(error));
  }
  box.querySelector("input")?.focus();
}
