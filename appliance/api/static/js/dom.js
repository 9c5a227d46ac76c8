// Building the page: elements from plain calls (no templates, so no HTML is ever parsed from data),
// and the formatting every page shares. Text always goes in as text nodes: what a device or a
// user wrote can never become markup.
import { ApiError } from "./api.js";
import { t, locale } from "./i18n.js";

/** h("button", {class: "primary", onclick}, "Save") */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. Live lists are redrawn on every push from the box: when the focus
 * was on a button, link or menu inside, it goes to the same control of the new drawing (same label,
 * or same kind and text), so a keyboard user is not thrown back to the top of the page. */
export function fill(el, ...children) {
  const active = document.activeElement;
  const focused = el.contains(active) && ["BUTTON", "A", "SELECT"].includes(active.tagName) ? active : null;
  const label = focused?.getAttribute("aria-label");
  const text = focused?.textContent;
  el.replaceChildren();
  append(el, children);
  if (focused) {
    const same = [...el.querySelectorAll(focused.tagName)].find((candidate) => (label
      ? candidate.getAttribute("aria-label") === label : candidate.textContent === text));
    same?.focus();
  }
  return el;
}

let uid = 0;
/** A labelled form field: label, control, hint, and a slot for its error (aria-describedby). */
export function field(labelKey, control, { hint, name } = {}) {
  const id = control.id || `f${++uid}`;
  control.id = id;
  if (name) control.name = name;
  const error = h("span", { class: "field-error", id: `${id}-error`, role: "alert" });
  control.setAttribute("aria-describedby", `${id}-error`);
  return h("div", { class: "field", dataset: { field: control.name || "" } },
    h("label", { for: id }, t(labelKey)), control, hint ? h("small", { class: "hint" }, t(hint)) : null, error);
}

/** Show a command's refusal next to the fields it names; what names no field goes to ``general``. */
export function showErrors(form, error, general) {
  clearErrors(form);
  const problems = error.problems?.length ? error.problems : [{ field: error.field, message: error.message }];
  const unplaced = [];
  for (const problem of problems) {
    const name = (problem.field || "").split(".")[0];
    const slot = name && form.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
    if (slot) {
      slot.classList.add("invalid");
      slot.querySelector(".field-error").textContent = problem.message;
      slot.querySelector("input, select, textarea")?.setAttribute("aria-invalid", "true");
    } else {
      unplaced.push(problem.message);
    }
  }
  if (general) fill(general, unplaced.length ? errorText(error, unplaced.join("; ")) : "");
  form.querySelector("[aria-invalid=true]")?.focus();
}

/** A form that submits through ``onSubmit(form, status)``: its button is disabled meanwhile, and a
 * refusal is shown next to the fields it names (the rest in the form's status line). */
export function form(children, submitKey, onSubmit, attrs = {}) {
  const status = h("div", { class: "form-status", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary" }, t(submitKey));
  const el = h("form", { novalidate: true, ...attrs }, children, h("div", { class: "actions" }, button), status);
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(el);
    fill(status);
    button.disabled = true;
    try {
      await onSubmit(el, status);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showErrors(el, error, status);
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

// Which confirm buttons are armed, by what they act on, until when: a live list redraws its rows
// whenever the box pushes a change, and an armed button must survive that redraw.
const ARMED = new Map();
const ARMED_S = 8;

/** A button that asks once more before it acts: the first press arms it (for a few seconds, or until
 * focus leaves it), the second does it. ``key`` names what it acts on ("cancel:17"). */
export function confirmButton(labelKey, confirmKey, action, key, attrs = {}) {
  const button = h("button", { type: "button", ...attrs }, t(labelKey));
  const show = (armed) => {
    button.textContent = t(armed ? confirmKey : labelKey);
    button.classList.toggle("danger", armed);
  };
  const armed = () => (ARMED.get(key) ?? 0) > Date.now();
  show(armed());
  button.addEventListener("click", async () => {
    if (!armed()) {
      ARMED.set(key, Date.now() + ARMED_S * 1000);
      show(true);
      setTimeout(() => show(armed()), ARMED_S * 1000 + 50);
      return;
    }
    ARMED.delete(key);
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      show(false);
    }
  });
  button.addEventListener("blur", () => {
    // Chromium blurs a focused button that a redraw removes, before it is gone: look once it is.
    setTimeout(() => {
      if (!button.isConnected || !armed()) return; // redrawn away: the new button keeps the state
      ARMED.delete(key);
      show(false);
    });
  });
  return button;
}

/** Comma-separated words of a text input as a list (null when empty, so the field is left out). */
export function words(input) {
  const list = input.value.split(",").map((w) => w.trim()).filter(Boolean);
  return list.length ? list : null;
}

export function clearErrors(form) {
  for (const slot of form.querySelectorAll(".field.invalid")) {
    slot.classList.remove("invalid");
    slot.querySelector(".field-error").textContent = "";
    slot.querySelector("[aria-invalid]")?.removeAttribute("aria-invalid");
  }
}

/** A refusal as a person reads it: what kind of refusal (translated), then the box's own words. */
export function errorText(error, message = error.message) {
  const kind = t(`error.${error.code}`, {}, "");
  return kind ? `${kind}: ${message}` : message;
}

export function notice(el, text, kind = "error") {
  return fill(el, text ? h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text) : "");
}

const units = ["B", "KiB", "MiB", "GiB", "TiB"];
export function bytes(n) {
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${number(n, i ? 1 : 0)} ${units[i]}`;
}

export function number(n, digits = 0) {
  return Number(n).toLocaleString(locale(), { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function time(unix) {
  if (unix === null || unix === undefined) return "—";
  return new Date(unix * 1000).toLocaleString(locale(), { dateStyle: "short", timeStyle: "medium" });
}

export function ago(unix) {
  if (!unix) return "—";
  const seconds = Math.max(0, Date.now() / 1000 - unix);
  const format = new Intl.RelativeTimeFormat(locale(), { numeric: "auto" });
  if (seconds < 60) return format.format(-Math.round(seconds), "second");
  if (seconds < 3600) return format.format(-Math.round(seconds / 60), "minute");
  if (seconds < 86400) return format.format(-Math.round(seconds / 3600), "hour");
  return format.format(-Math.round(seconds / 86400), "day");
}

export function duration(seconds) {
  if (seconds < 90) return t("unit.seconds", { n: number(seconds) });
  if (seconds < 5400) return t("unit.minutes", { n: number(seconds / 60) });
  if (seconds < 172800) return t("unit.hours", { n: number(seconds / 3600, 1) });
  return t("unit.days", { n: number(seconds / 86400, 1) });
}

/** A table from rows: columns are [header key, row => cell]. */
export function table(columns, rows, { empty = "common.none", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, t(empty));
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([key]) => h("th", { scope: "col" }, t(key))))),
    h("tbody", {}, rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {},
      columns.map(([, cell]) => h("td", {}, cell(row))))))));
}

export function badge(state) {
  return h("span", { class: `badge state-${state}` }, t(`state.${state}`, {}, state));
}

/** A date input's value (local time) as unix seconds; null when empty. */
export function unixOf(input) {
  return input.value ? new Date(input.value).getTime() / 1000 : null;
}
