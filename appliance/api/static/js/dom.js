// Building the page: elements from plain calls (no templates, so no HTML is ever parsed from data),
// and the formatting every page shares. Text always goes in as text nodes: what a device or a
// user wrote can never become markup.
import { ApiError } from "./api.js";
import { t, locale, said } from "./i18n.js";

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

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// What each kept element was drawn as, to tell a changed row or cell from an unchanged one.
const DRAWN = new WeakMap();

/** Make ``parent``'s children the ``wanted`` elements, in order, keeping the existing element for each
 * key whose drawing has not changed: an unchanged row, cell or item is never touched, so its focus,
 * an armed button and a half-typed field stay as they were. ``wanted`` is a list of [key, element];
 * an element is compared by its markup as drawn. Used by every live list (keyedRows, keyedList). */
function reconcile(parent, wanted, kept, compareChildren = false) {
  const next = new Map();
  wanted.forEach(([key, fresh], index) => {
    const markup = fresh.outerHTML;
    let el = kept.get(key);
    if (el && DRAWN.get(el) !== markup) {
      if (compareChildren && el.children.length === fresh.children.length) {
        [...fresh.children].forEach((cell, i) => {
          const old = el.children[i];
          if (DRAWN.get(old) !== cell.outerHTML) {
            DRAWN.set(cell, cell.outerHTML);
            old.replaceWith(cell);
          }
        });
        for (const { name, value } of fresh.attributes) el.setAttribute(name, value);
      } else {
        DRAWN.set(fresh, markup);
        for (const cell of fresh.children) DRAWN.set(cell, cell.outerHTML);
        el.replaceWith(fresh);
        el = fresh;
      }
    } else if (!el) {
      el = fresh;
      for (const cell of el.children) DRAWN.set(cell, cell.outerHTML);
    }
    DRAWN.set(el, markup);
    next.set(key, el);
    if (parent.children[index] !== el) parent.insertBefore(el, parent.children[index] ?? null);
  });
  for (const [key, el] of kept) if (!next.has(key)) el.remove();
  return next;
}

/** What keyedRows and keyedList share: the "none" text while there are no rows, else the
 * container, whose children are reconciled by key. draw(rows) gives [key, element] pairs. */
function keyed(container, parent, draw, empty, byCell = false) {
  const none = h("p", { class: "empty" }, t(empty));
  const el = h("div", {}, none);
  let kept = new Map();
  return {
    el,
    update(rows) {
      if (!rows.length) {
        if (!none.isConnected) el.replaceChildren(none);
      } else if (!container.isConnected) {
        el.replaceChildren(container);
      }
      kept = reconcile(parent, draw(rows), kept, byCell);
    },
  };
}

/** A live table updated by key: ``update(rows)`` changes only the rows, and within a row only the
 * cells, whose drawing changed. columns are [header key, row => cell], as for table(). */
export function keyedRows(columns, key, { empty = "common.none", rowAttrs } = {}) {
  const body = h("tbody");
  const wrap = h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([header]) => h("th", { scope: "col" }, t(header))))), body));
  return keyed(wrap, body, (rows) => rows.map((row) => [key(row), h("tr", rowAttrs ? rowAttrs(row) : {},
    columns.map(([, cell]) => h("td", {}, cell(row))))]), empty, true);
}

/** A live list (ul) updated by key, like keyedRows: ``item(row)`` draws one li. */
export function keyedList(item, key, { empty = "common.none", attrs = {} } = {}) {
  const list = h("ul", attrs);
  return keyed(list, list, (rows) => rows.map((row) => [key(row), item(row)]), empty);
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
  const problems = error.problems?.length ? error.problems
    : [{ field: error.field, message: error.message, phrase: error.phrase }];
  const unplaced = [];
  for (const problem of problems) {
    const name = (problem.field || "").split(".")[0];
    const slot = name && form.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
    if (slot) {
      slot.classList.add("invalid");
      slot.querySelector(".field-error").textContent = said(problem.phrase, problem.message);
      slot.querySelector("input, select, textarea")?.setAttribute("aria-invalid", "true");
    } else {
      unplaced.push(said(problem.phrase, problem.message));
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

/** A button that asks once more before it acts: the first press arms it (for a few seconds, or until
 * focus leaves it), the second does it. Live lists keep an unchanged button across pushes
 * (keyedRows), so an armed one stays armed while its row's other cells change. */
export function confirmButton(labelKey, confirmKey, action, attrs = {}) {
  const button = h("button", { type: "button", ...attrs }, t(labelKey));
  let until = 0;
  const armed = () => until > Date.now();
  const show = () => {
    button.textContent = t(armed() ? confirmKey : labelKey);
    button.classList.toggle("danger", armed());
  };
  button.addEventListener("click", async () => {
    if (!armed()) {
      until = Date.now() + ARMED_S * 1000;
      show();
      setTimeout(show, ARMED_S * 1000 + 50);
      return;
    }
    until = 0;
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      show();
    }
  });
  button.addEventListener("blur", () => {
    until = 0;
    show();
  });
  return button;
}

const ARMED_S = 8;

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
export function errorText(error, message = said(error.phrase, error.message)) {
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
