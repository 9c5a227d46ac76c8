// Tasks: the list live from the tasks topic (state and progress), the tasks waiting for approval
// with approve and reject, one task's step log (read again whenever its last seq moves), cancel and
// retry, and a form that runs a task now (ask, search, notify, an action, or a command line).
import { session } from "../api.js";
import { t } from "../i18n.js";
import { ago, badge, confirmButton, errorText, field, fill, form, h, notice, showErrors, table, time } from "../dom.js";

const STATES = ["queued", "running", "waiting_approval", "succeeded", "failed", "cancelled", "timed_out"];
const CANCELLABLE = new Set(["queued", "running", "waiting_approval"]);
const RETRYABLE = new Set(["failed", "cancelled", "timed_out"]);

/** What a task does, in one line. */
export function summary(spec) {
  switch (spec.kind) {
    case "action": return `${spec.action}${Object.keys(spec.args || {}).length ? ` ${JSON.stringify(spec.args)}` : ""}`;
    case "command": return (spec.argv || []).join(" ");
    case "notify": return spec.message;
    default: return spec.query;
  }
}

function stateCell(task) {
  return h("span", { class: "state-cell" }, badge(task.state),
    task.state === "running" ? h("progress", { max: 100, value: task.progress, "aria-label": t("tasks.progress") }) : null);
}

/** The buttons a task's state and the signed-in role allow; each calls ``act(command, args)``. */
function actions(task, act) {
  if (!session.can("operator")) return null;
  const buttons = [];
  // Someone else decides on a task (an admin may decide on their own); the box checks it too.
  if (task.state === "waiting_approval" && (task.created_by !== session.user || session.can("admin"))) {
    buttons.push(h("button", { type: "button", class: "small primary", onclick: () => act("tasks.approve", { id: task.id }),
      "aria-label": t("tasks.approve_id", { id: task.id }) }, t("tasks.approve_button")));
    buttons.push(h("button", { type: "button", class: "small", onclick: () => act("tasks.reject", { id: task.id }),
      "aria-label": t("tasks.reject_id", { id: task.id }) }, t("tasks.reject_button")));
  }
  if (CANCELLABLE.has(task.state)) {
    buttons.push(confirmButton("tasks.cancel_button", "tasks.cancel_confirm", () => act("tasks.cancel", { id: task.id }),
      `cancel:${task.id}`, { class: "small", "aria-label": t("tasks.cancel_id", { id: task.id }) }));
  }
  if (RETRYABLE.has(task.state)) {
    buttons.push(h("button", { type: "button", class: "small", onclick: () => act("tasks.retry", { id: task.id }),
      "aria-label": t("tasks.retry_id", { id: task.id }) }, t("tasks.retry_button")));
  }
  return h("span", { class: "buttons" }, buttons);
}

function detailView(detail, act) {
  const task = detail.task;
  const facts = [
    ["tasks.kind", t(`tasks.kind.${task.spec.kind}`)], ["tasks.what", summary(task.spec)],
    ["tasks.state", stateCell(task)], ["tasks.created_by", task.created_by],
    ["tasks.schedule", task.schedule || "—"], ["tasks.created_at", time(task.created_at)],
    ["tasks.attempts", `${task.attempts} / ${task.max_attempts}`],
  ];
  if (task.approved_by) facts.push(["tasks.approved_by", task.approved_by]);
  if (task.error) facts.push(["tasks.error", h("span", { class: "error-text" }, task.error)]);
  return h("div", {},
    h("h3", {}, t("tasks.task_n", { id: task.id })),
    h("dl", { class: "facts" }, facts.map(([key, value]) => [h("dt", {}, t(key)), h("dd", {}, value)])),
    actions(task, act),
    task.result !== null && task.result !== undefined
      ? h("details", { open: true }, h("summary", {}, t("tasks.result")), h("pre", { class: "payload" }, JSON.stringify(task.result, null, 2)))
      : null,
    h("h4", {}, t("tasks.steps")),
    h("ol", { class: "steps", id: "steps" }, detail.steps.map((step) => h("li", { value: step.seq },
      h("time", {}, time(step.at)), " ", h("strong", {}, t(`state.${step.message}`, {}, step.message)),
      step.data !== null && step.data !== undefined ? h("code", { class: "sample" }, ` ${JSON.stringify(step.data).slice(0, 300)}`) : null))));
}

const KIND_FIELDS = { ask: ["query"], search: ["query", "output_path"], notify: ["message", "topic"],
  action: ["action", "args"], command: ["argv"] };

function newTaskForm(socket, onCreated) {
  const kinds = ["ask", "search", ...(session.can("operator") ? ["notify", "action"] : []),
    ...(session.can("admin") ? ["command"] : [])];
  const kind = h("select", { name: "kind" }, kinds.map((k) => h("option", { value: k }, t(`tasks.kind.${k}`))));
  const inputs = {
    query: h("textarea", { name: "query", rows: 2, maxlength: 4000 }),
    output_path: h("input", { type: "text", name: "output_path", maxlength: 1024 }),
    message: h("textarea", { name: "message", rows: 2, maxlength: 4000 }),
    topic: h("input", { type: "text", name: "topic", maxlength: 256 }),
    action: h("input", { type: "text", name: "action", maxlength: 64, list: "known-actions" }),
    args: h("textarea", { name: "args", rows: 2, spellcheck: false }, "{}"),
    argv: h("input", { type: "text", name: "argv", maxlength: 4000 }),
  };
  const fields = Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, field(`tasks.field.${name}`, input)]));
  const known = h("datalist", { id: "known-actions" }, ["send_alert", "heartbeat", "archive"].map((a) => h("option", { value: a })));
  const shown = () => {
    for (const [name, wrapper] of Object.entries(fields)) wrapper.hidden = !KIND_FIELDS[kind.value].includes(name);
  };
  kind.addEventListener("change", shown);
  shown();
  return form([field("tasks.kind", kind), Object.values(fields), known], "tasks.run", async (el, status) => {
    const body = { kind: kind.value };
    for (const name of KIND_FIELDS[kind.value]) {
      const value = inputs[name].value.trim();
      if (!value) continue;
      if (name === "args") {
        try {
          body.args = JSON.parse(value);
        } catch {
          showErrors(el, { field: "args", message: t("devices.args_not_object") }, status);
          return;
        }
      } else if (name === "argv") {
        body.argv = value.split(/\s+/);
      } else {
        body[name] = value;
      }
    }
    const task = await socket.request("tasks.create", body);
    notice(status, t("tasks.created", { id: task.id }), "ok");
    onCreated(task.id);
  }, { id: "task-form" });
}

export default {
  id: "tasks",
  title: "nav.tasks",
  role: "viewer",
  render(main, { socket }) {
    const list = h("div", { id: "task-list", "aria-live": "polite" }, t("common.loading"));
    const waiting = h("div", { id: "approvals" });
    const detail = h("div", { id: "task-detail" }, h("p", { class: "muted" }, t("tasks.pick")));
    const status = h("div", { "aria-live": "polite" });
    const filter = h("select", { id: "state-filter", "aria-label": t("tasks.filter") },
      h("option", { value: "" }, t("tasks.all_states")), STATES.map((s) => h("option", { value: s }, t(`state.${s}`))));
    let rows = [];
    let selected = null;
    let shownVersion = null;

    async function act(command, args) {
      notice(status, "");
      try {
        const task = await socket.request(command, args);
        notice(status, t(`tasks.done.${command}`, { id: task.id }), "ok");
        if (selected === args.id || command === "tasks.retry") await show(task.id);
      } catch (error) {
        notice(status, errorText(error));
      }
    }

    async function show(id) {
      selected = id;
      try {
        const found = await socket.request("tasks.get", { id, steps: 200 });
        if (selected !== id) return;
        shownVersion = `${found.task.last_seq}:${found.task.state}:${found.task.progress}`;
        fill(detail, detailView(found, act));
      } catch (error) {
        notice(detail, errorText(error));
      }
    }

    function render() {
      const chosen = filter.value;
      const shownRows = rows.filter((r) => !chosen || r.state === chosen);
      fill(list, table([
        ["tasks.id", (r) => h("button", { type: "button", class: "link", onclick: () => show(r.id) }, `#${r.id}`)],
        ["tasks.kind", (r) => t(`tasks.kind.${r.spec.kind}`)],
        ["tasks.what", (r) => h("span", { class: "clip" }, summary(r.spec))],
        ["tasks.state", stateCell],
        ["tasks.created_by", (r) => r.schedule ? t("tasks.by_schedule", { name: r.schedule }) : r.created_by],
        ["tasks.updated", (r) => h("time", { title: time(r.updated_at) }, ago(r.updated_at))],
        ["tasks.actions", (r) => actions(r, act)],
      ], shownRows.slice(0, 100), { empty: "tasks.none", rowAttrs: (r) => ({ dataset: { task: r.id, state: r.state } }) }));
      const parked = rows.filter((r) => r.state === "waiting_approval");
      fill(waiting, parked.length ? h("ul", { class: "approvals" }, parked.map((r) => h("li", { dataset: { task: r.id } },
        `#${r.id} ${summary(r.spec)} — ${r.created_by} `, actions(r, act)))) : h("p", { class: "empty" }, t("tasks.none_waiting")));
    }
    filter.addEventListener("change", render);

    const off = socket.subscribe("tasks", (state) => {
      rows = [...state.items].sort((a, b) => b.id - a.id);
      render();
      const current = rows.find((r) => r.id === selected);
      if (current && `${current.last_seq}:${current.state}:${current.progress}` !== shownVersion) show(selected);
    });

    fill(main, h("h1", {}, t("nav.tasks")), status,
      h("div", { class: "grid" },
        h("section", { class: "card wide" }, h("h2", {}, t("tasks.list_title")), h("div", { class: "toolbar" }, filter), list),
        h("section", { class: "card" }, h("h2", {}, t("tasks.approvals")), waiting),
        h("section", { class: "card" }, h("h2", {}, t("tasks.detail")), detail),
        h("section", { class: "card" }, h("h2", {}, t("tasks.new")), newTaskForm(socket, show))));
    return off;
  },
};
