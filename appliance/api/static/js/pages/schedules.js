// Schedules: every schedule with its last and next fire (read again whenever one of them fires a
// task), and the reference form (name, trigger, action, fallback, and the optional keys) to create
// or edit a saved one; each refusal is shown next to its field. The file's schedules are read-only.
import { capabilities } from "../capabilities.js";
import { t } from "../i18n.js";
import { confirmButton, errorText, field, fill, form, h, notice, showErrors, table, time } from "../dom.js";

const NUMBERS = ["retries", "retry_backoff_s", "timeout_s", "max_parallel", "missed_max", "debounce_s"];
const CHOICES = { concurrency: ["skip", "queue", "parallel"], missed: ["once", "skip", "all"],
  priority: ["scheduled", "interactive", "background"] };

function scheduleForm(socket, onSaved) {
  const inputs = {
    name: h("input", { type: "text", name: "name", maxlength: 64, autocomplete: "off" }),
    trigger: h("input", { type: "text", name: "trigger", maxlength: 300, autocomplete: "off" }),
    action: h("input", { type: "text", name: "action", maxlength: 4000, autocomplete: "off" }),
    fallback: h("input", { type: "text", name: "fallback", maxlength: 4000, autocomplete: "off" }),
    args: h("textarea", { name: "args", rows: 2, spellcheck: false }),
    timezone: h("input", { type: "text", name: "timezone", maxlength: 64, value: "UTC" }),
    ...Object.fromEntries(NUMBERS.map((name) => [name, h("input", { type: "number", name, step: "any" })])),
    ...Object.fromEntries(Object.entries(CHOICES).map(([name, values]) => [name,
      h("select", { name }, values.map((v) => h("option", { value: v }, t(`schedules.${name}.${v}`))))])),
  };
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: true });
  const title = h("h2", {}, t("schedules.new"));
  const cancelEdit = h("button", { type: "button", hidden: true }, t("schedules.cancel_edit"));
  let editing = null;

  const defaults = { concurrency: "skip", missed: "once", priority: "scheduled", timezone: "UTC" };
  function load(schedule) {
    editing = schedule?.name ?? null;
    for (const [name, input] of Object.entries(inputs)) {
      const value = schedule?.[name];
      if (name === "args") input.value = value && Object.keys(value).length ? JSON.stringify(value) : "";
      else input.value = value ?? defaults[name] ?? "";
    }
    enabled.checked = schedule?.enabled ?? true;
    inputs.name.readOnly = editing !== null;
    title.textContent = editing ? t("schedules.edit_n", { name: editing }) : t("schedules.new");
    cancelEdit.hidden = editing === null;
  }
  cancelEdit.addEventListener("click", () => load(null));
  load(null);

  const el = form([
    h("div", { class: "row" },
      field("schedules.name", inputs.name),
      field("schedules.trigger", inputs.trigger, { hint: "schedules.trigger_hint" })),
    h("div", { class: "row" },
      field("schedules.action", inputs.action, { hint: "schedules.action_hint" }),
      field("schedules.fallback", inputs.fallback, { hint: "schedules.fallback_hint" })),
    h("details", {}, h("summary", {}, t("schedules.more")),
      field("schedules.args", inputs.args, { hint: "devices.args_hint" }),
      h("div", { class: "row" }, ["retries", "retry_backoff_s", "timeout_s"].map((n) => field(`schedules.${n}`, inputs[n]))),
      h("div", { class: "row" }, ["concurrency", "max_parallel", "priority"].map((n) => field(`schedules.${n}`, inputs[n]))),
      h("div", { class: "row" }, ["missed", "missed_max", "debounce_s", "timezone"].map((n) => field(`schedules.${n}`, inputs[n]))),
      h("label", { class: "check" }, enabled, t("schedules.enabled"))),
    cancelEdit,
  ], "schedules.save", async (form_, status) => {
    const body = { name: inputs.name.value.trim(), trigger: inputs.trigger.value.trim(),
      action: inputs.action.value.trim(), enabled: enabled.checked, timezone: inputs.timezone.value.trim() || "UTC" };
    if (inputs.fallback.value.trim()) body.fallback = inputs.fallback.value.trim();
    for (const name of NUMBERS) if (inputs[name].value !== "") body[name] = Number(inputs[name].value);
    for (const name of Object.keys(CHOICES)) body[name] = inputs[name].value;
    if (inputs.args.value.trim()) {
      try {
        body.args = JSON.parse(inputs.args.value);
      } catch {
        showErrors(form_, { field: "args", message: t("devices.args_not_object") }, status);
        return;
      }
    }
    const saved = await socket.request(editing ? "schedules.replace" : "schedules.create", body);
    notice(status, t(editing ? "schedules.replaced" : "schedules.created", { name: saved.schedule.name }), "ok");
    load(null);
    onSaved();
  }, { id: "schedule-form" });
  return { section: h("section", { class: "card" }, title, el), load };
}

export default {
  id: "schedules",
  title: "nav.schedules",
  command: "schedules.list",
  render(main, { socket }) {
    const list = h("div", { id: "schedule-list" }, t("common.loading"));
    const status = h("div", { "aria-live": "polite" });
    const editor = capabilities.may("schedules.create") ? scheduleForm(socket, () => refresh()) : null;

    async function remove(name) {
      try {
        await socket.request("schedules.delete", { name });
        notice(status, t("schedules.deleted", { name }), "ok");
        await refresh();
      } catch (error) {
        notice(status, errorText(error));
      }
    }

    async function refresh() {
      try {
        const views = await socket.request("schedules.list");
        fill(list,
          views.file_error ? h("p", { class: "notice warn" }, views.file_error) : null,
          table([
            ["schedules.name", (v) => v.schedule.name],
            ["schedules.trigger", (v) => h("code", {}, v.schedule.trigger)],
            ["schedules.action", (v) => h("code", {}, v.schedule.action)],
            ["schedules.fallback", (v) => (v.schedule.fallback ? h("code", {}, v.schedule.fallback) : "—")],
            ["schedules.source", (v) => t(`schedules.source.${v.source}`)],
            ["schedules.last_fire", (v) => time(v.last_fire)],
            ["schedules.next_fire", (v) => (v.schedule.enabled ? time(v.next_fire) : t("schedules.disabled"))],
            ["schedules.actions", (v) => (editor && v.source === "saved" && capabilities.mayOn("schedules.replace", v.updated_by) ? h("span", { class: "buttons" },
              h("button", { type: "button", class: "small", onclick: () => editor.load(v.schedule),
                "aria-label": t("schedules.edit_n", { name: v.schedule.name }) }, t("schedules.edit")),
              confirmButton("schedules.delete_button", "schedules.delete_confirm", () => remove(v.schedule.name),
                { class: "small", "aria-label": t("schedules.delete_n", { name: v.schedule.name }) })) : "")],
          ], views.items, { empty: "schedules.none", rowAttrs: (v) => ({ dataset: { schedule: v.schedule.name } }) }));
      } catch (error) {
        notice(list, errorText(error));
      }
    }

    // A schedule that fires makes a task: its last and next fire have moved, so read the list again.
    let newest = null;
    const off = socket.subscribe("tasks", (state) => {
      const fired = state.items.filter((task) => task.schedule && (newest === null || task.id > newest));
      const top = Math.max(newest ?? 0, ...state.items.map((task) => task.id));
      if (newest !== null && fired.length) refresh();
      newest = top;
    });
    refresh();
    fill(main, h("h1", {}, t("nav.schedules")), status,
      h("div", { class: "grid" },
        h("section", { class: "card wide" }, h("h2", {}, t("schedules.list_title")), list),
        editor?.section));
    return off;
  },
};
