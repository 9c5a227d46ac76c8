// Tasks: the list live from the tasks topic (state and progress), the tasks waiting for approval
// with approve and reject, one task's step log (read again whenever its last seq moves), cancel and
// retry, and a form that runs a task now (ask, search, notify, an action, or a command line).
import { capabilities } from "../capabilities.js";
import { said, t } from "../i18n.js";
import { ago, badge, confirmButton, errorText, field, fill, form, h, keyedList, keyedRows, notice, showErrors, time } from "../dom.js";

const SHARED = new Set(["kind", "timeout_s", "priority", "input"]); // what every kind's spec has (TaskSpec)

/** What a task does, in one line: its kind's own fields, whatever the kind (the box declares them). */
export function summary(spec) {
  return Object.entries(spec).filter(([key, value]) => !SHARED.has(key) && value !== null && value !== undefined
    && !(typeof value === "object" && !Array.isArray(value) && !Object.keys(value).length))
    .map(([, value]) => (Array.isArray(value) ? value.join(" ") : typeof value === "object" ? JSON.stringify(value) : value))
    .join(" ");
}

function stateCell(task) {
  return h("span", { class: "state-cell" }, badge(task.state),
    task.state === "running" ? h("progress", { max: 100, value: task.progress, "aria-label": t("tasks.progress") }) : null);
}

/** The buttons a task's state and the signed-in user's capabilities allow; each calls ``act(command, args)``. */
function actions(task, act) {
  const final = new Set(capabilities.words("final_task_states"));
  const buttons = [];
  const may = (command) => capabilities.mayOn(command, task.created_by);
  if (task.state === "waiting_approval" && may("tasks.approve")) {
    buttons.push(h("button", { type: "button", class: "small primary", onclick: () => act("tasks.approve", { id: task.id }),
      "aria-label": t("tasks.approve_id", { id: task.id }) }, t("tasks.approve_button")));
  }
  if (task.state === "waiting_approval" && may("tasks.reject")) {
    buttons.push(h("button", { type: "button", class: "small", onclick: () => act("tasks.reject", { id: task.id }),
      "aria-label": t("tasks.reject_id", { id: task.id }) }, t("tasks.reject_button")));
  }
  if (!final.has(task.state) && may("tasks.cancel")) {
    buttons.push(confirmButton("tasks.cancel_button", "tasks.cancel_confirm", () => act("tasks.cancel", { id: task.id }),
      { class: "small", "aria-label": t("tasks.cancel_id", { id: task.id }) }));
  }
  if (final.has(task.state) && task.state !== "succeeded" && may("tasks.retry")) {
    buttons.push(h("button", { type: "button", class: "small", onclick: () => act("tasks.retry", { id: task.id }),
      "aria-label": t("tasks.retry_id", { id: task.id }) }, t("tasks.retry_button")));
  }
  return buttons.length ? h("span", { class: "buttons" }, buttons) : null;
}

/** One step of an agent's run as a person reads it: what it did, with what, how it went, what it cost. */
function traceStep(step) {
  const data = step.data ?? {};
  if (data.tool && data.outcome) {
    return h("li", { value: step.seq, class: `trace trace-${data.outcome}`, dataset: { effect: data.effect ?? "" } },
      h("strong", {}, data.tool), " ", h("code", {}, JSON.stringify(data.args)), " → ",
      h("span", { class: "badge" }, t(`trace.outcome.${data.outcome}`, {}, data.outcome)),
      data.effect ? h("span", { class: "muted" }, ` ${t(`trace.effect.${data.effect}`, {}, data.effect)}`) : null,
      data.detail ? h("div", { class: "muted" }, said(data.detail_phrase, data.detail)) : null,
      h("div", { class: "muted" }, t("trace.cost", { ms: Math.round(data.ms ?? 0) }),
        data.untrusted_read ? ` · ${t("trace.untrusted")}` : "", data.tainted ? ` · ${t("trace.tainted")}` : ""));
  }
  if (step.message === "approval needed") {
    return h("li", { value: step.seq, class: "trace trace-approval" }, h("strong", {}, t("trace.approval")), " ",
      h("code", {}, `${data.tool} ${JSON.stringify(data.args)}`), h("div", { class: "muted" }, data.why ?? ""));
  }
  if ("tokens_in" in data) {
    return h("li", { value: step.seq, class: "trace" }, h("strong", {}, t(`trace.model.${step.message}`, {}, step.message)),
      h("span", { class: "muted" }, ` ${t("trace.tokens", { in: data.tokens_in, out: data.tokens_out, s: (data.ms / 1000).toFixed(1) })}`));
  }
  if (data.offered) {
    return h("li", { value: step.seq, class: "trace" }, h("strong", {}, t("trace.tools")), ` ${data.offered.join(", ")} `,
      h("span", { class: "muted" }, t("trace.system_tokens", { n: data.system_tokens })));
  }
  if (data.steps) {
    return h("li", { value: step.seq, class: "trace" }, h("strong", {}, t(`trace.model.${step.message}`, {}, step.message)), " ",
      h("code", { class: "sample" }, data.steps));
  }
  // A state the task entered, a fixed step word (step.*), the box's words by code, else its text.
  const words = t(`state.${step.message}`, {}, t(`step.${step.message}`, {}, said(step.phrase, step.message)));
  return h("li", { value: step.seq }, h("time", {}, time(step.at)), " ", h("strong", {}, words),
    step.data !== null && step.data !== undefined ? h("code", { class: "sample" }, ` ${JSON.stringify(step.data).slice(0, 300)}`) : null);
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
  if (task.error) facts.push(["tasks.error", h("span", { class: "error-text" }, said(task.error_phrase, task.error))]);
  return h("div", {},
    h("h3", {}, t("tasks.task_n", { id: task.id })),
    h("dl", { class: "facts" }, facts.map(([key, value]) => [h("dt", {}, t(key)), h("dd", {}, value)])),
    actions(task, act),
    task.result?.answer ? h("p", { class: "answer", id: "agent-answer" }, task.result.answer) : null,
    task.result !== null && task.result !== undefined
      ? h("details", { open: !task.result?.answer }, h("summary", {}, t("tasks.result")),
        h("pre", { class: "payload" }, JSON.stringify(task.result, null, 2)))
      : null,
    h("h4", {}, t("tasks.steps")),
    h("ol", { class: "steps", id: "steps" }, detail.steps.map(traceStep)));
}

/** An input for one field of a kind, from its JSON schema: text, a longer text, words (a list), JSON. */
function control(name, schema) {
  const type = schema.type ?? schema.anyOf?.find((option) => option.type !== "null")?.type;
  if (type === "array") return { el: h("input", { type: "text", name }), value: (el) => el.value.trim().split(/\s+/) };
  if (type === "object") {
    return { el: h("textarea", { name, rows: 2, spellcheck: false }, "{}"), json: true, value: (el) => JSON.parse(el.value) };
  }
  const long = (schema.maxLength ?? 0) > 1024;
  return { el: long ? h("textarea", { name, rows: 2, maxlength: schema.maxLength }) : h("input", { type: "text", name,
    maxlength: schema.maxLength ?? schema.anyOf?.[0]?.maxLength }), value: (el) => el.value.trim() };
}

function newTaskForm(socket, onCreated) {
  const kinds = capabilities.kinds;
  const kind = h("select", { name: "kind" }, kinds.map((k) => h("option", { value: k.name }, t(`tasks.kind.${k.name}`, {}, k.name))));
  const inputs = {};
  for (const k of kinds) {
    for (const [name, schema] of Object.entries(k.fields.properties ?? {})) {
      if (inputs[name]) continue;
      const made = control(name, schema);
      if (name === "action") made.el.setAttribute("list", "known-actions");
      inputs[name] = { ...made, field: field(`tasks.field.${name}`, made.el) };
    }
  }
  const known = h("datalist", { id: "known-actions" }, capabilities.actions.map((a) => h("option", { value: a.name }, a.summary)));
  const chosen = () => kinds.find((k) => k.name === kind.value);
  const shown = () => {
    const fields = Object.keys(chosen()?.fields.properties ?? {});
    for (const [name, input] of Object.entries(inputs)) input.field.hidden = !fields.includes(name);
  };
  kind.addEventListener("change", shown);
  shown();
  return form([field("tasks.kind", kind), Object.values(inputs).map((input) => input.field), known], "tasks.run",
    async (el, status) => {
      const body = { kind: kind.value };
      for (const name of Object.keys(chosen()?.fields.properties ?? {})) {
        const input = inputs[name];
        if (!input.el.value.trim() || (input.json && input.el.value.trim() === "{}")) continue;
        try {
          body[name] = input.value(input.el);
        } catch {
          showErrors(el, { field: name, message: t("devices.args_not_object") }, status);
          return;
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
  command: "tasks.list",
  render(main, { socket }) {
    const list = h("div", { id: "task-list", "aria-live": "polite" }, t("common.loading"));
    const waiting = h("div", { id: "approvals" });
    const detail = h("div", { id: "task-detail" }, h("p", { class: "muted" }, t("tasks.pick")));
    const status = h("div", { "aria-live": "polite" });
    const filter = h("select", { id: "state-filter", "aria-label": t("tasks.filter") },
      h("option", { value: "" }, t("tasks.all_states")),
      capabilities.words("task_states").map((s) => h("option", { value: s }, t(`state.${s}`))));
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

    const table = keyedRows([
      ["tasks.id", (r) => (capabilities.mayOn("tasks.get", r.created_by)
        ? h("button", { type: "button", class: "link", onclick: () => show(r.id) }, `#${r.id}`) : `#${r.id}`)],
      ["tasks.kind", (r) => t(`tasks.kind.${r.spec.kind}`, {}, r.spec.kind)],
      ["tasks.what", (r) => h("span", { class: "clip" }, summary(r.spec))],
      ["tasks.state", stateCell],
      ["tasks.created_by", (r) => r.schedule ? t("tasks.by_schedule", { name: r.schedule }) : r.created_by],
      ["tasks.updated", (r) => h("time", { title: time(r.updated_at) }, ago(r.updated_at))],
      ["tasks.actions", (r) => actions(r, act)],
    ], (r) => r.id, { empty: "tasks.none", rowAttrs: (r) => ({ dataset: { task: r.id, state: r.state } }) });
    const approvals = keyedList((r) => h("li", { dataset: { task: r.id } },
      `#${r.id} ${summary(r.spec)} — ${r.created_by} `, actions(r, act)), (r) => r.id,
    { empty: "tasks.none_waiting", attrs: { class: "approvals" } });
    fill(list, table.el);
    fill(waiting, approvals.el);

    function render() {
      const chosen = filter.value;
      table.update(rows.filter((r) => !chosen || r.state === chosen).slice(0, 100));
      approvals.update(rows.filter((r) => r.state === "waiting_approval"));
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
        capabilities.may("tasks.create") && capabilities.kinds.length
          ? h("section", { class: "card" }, h("h2", {}, t("tasks.new")), newTaskForm(socket, show)) : null));
    return off;
  },
};
