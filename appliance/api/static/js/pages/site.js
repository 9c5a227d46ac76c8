// Site: the entities the box learned from Home Assistant discovery (and devices that describe
// themselves), grouped by area, with their live state from the entities topic, a control for each
// kind (what the entity's own actions list allows), and one entity's history as a sparkline.
import { capabilities } from "../capabilities.js";
import { t } from "../i18n.js";
import { ago, errorText, fill, h, keyedRows, notice, number, time } from "../dom.js";

/** The state as people read it: on/off and the like translated, a number with its unit. */
function stateText(entity) {
  if (entity.state === null || entity.state === undefined) return "—";
  const unit = entity.config?.unit_of_measurement;
  const known = t(`site.state.${entity.state}`, {}, "");
  return known || `${entity.state}${unit ? ` ${unit}` : ""}`;
}

function available(entity) {
  if (entity.available === false) return h("span", { class: "badge state-failed" }, t("site.offline"));
  if (entity.state_problem) return h("span", { class: "badge state-failed", title: entity.state_problem }, t("site.raw"));
  return null;
}

/** The controls one entity's actions allow; each calls ``act(entity, action, args)``. */
function controls(entity, act) {
  if (!capabilities.may("entities.set") || !entity.actions.length) return null;
  const button = (action, args = {}, label = `site.action.${action}`) => h("button", { type: "button", class: "small",
    "aria-label": `${t(label, {}, action)} ${entity.name}`, onclick: () => act(entity, action, args) }, t(label, {}, action));
  const actions = new Set(entity.actions);
  const parts = [];
  if (actions.has("turn_on") && entity.component !== "climate") {
    parts.push(entity.state === "on" ? button("turn_off") : button("turn_on"));
  }
  for (const action of ["lock", "unlock", "open", "close", "stop", "press"]) {
    if (actions.has(action)) parts.push(button(action));
  }
  if (actions.has("set_value") || actions.has("set_temperature")) {
    const options = entity.config.options;
    const input = options ? h("select", { "aria-label": t("site.value_of", { name: entity.name }) },
      options.map((o) => h("option", { value: o, selected: o === entity.state }, o)))
      : h("input", { type: entity.component === "text" ? "text" : "number", step: "any", class: "narrow",
        "aria-label": t("site.value_of", { name: entity.name }),
        value: { climate: entity.attributes.temperature, cover: entity.attributes.position,
          fan: entity.attributes.percentage }[entity.component] ?? (entity.component === "cover" ? "" : entity.state ?? "") });
    const action = actions.has("set_temperature") ? "set_temperature" : "set_value";
    const key = action === "set_temperature" ? "temperature" : "value";
    parts.push(input, h("button", { type: "button", class: "small", onclick: () => {
      const raw = input.value;
      const value = entity.component === "text" || options ? raw : Number(raw);
      act(entity, action, { [key]: value });
    } }, t("site.set")));
  }
  if (actions.has("set_mode")) {
    const modes = h("select", { "aria-label": t("site.mode_of", { name: entity.name }) },
      (entity.config.modes ?? []).map((m) => h("option", { value: m, selected: m === entity.state }, m)));
    parts.push(modes, h("button", { type: "button", class: "small", onclick: () => act(entity, "set_mode",
      { mode: modes.value }) }, t("site.set_mode")));
  }
  if (entity.component === "device") {
    for (const action of entity.actions) parts.push(button(action, {}, action));
  }
  return h("span", { class: "buttons" }, parts);
}

/** A small line of a numeric history (oldest to newest); nothing when the states are not numbers. */
function sparkline(history) {
  const values = history.map((row) => Number(row.state)).reverse();
  if (values.length < 2 || values.some((v) => !Number.isFinite(v))) return null;
  const canvas = h("canvas", { class: "sparkline", width: 240, height: 48, role: "img",
    "aria-label": t("site.history_chart", { n: values.length }) });
  const ctx = canvas.getContext("2d");
  const low = Math.min(...values);
  const high = Math.max(...values);
  ctx.strokeStyle = "#2563eb";
  ctx.lineWidth = 2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * 236 + 2;
    const y = high === low ? 24 : 44 - ((v - low) / (high - low)) * 40;
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
  return canvas;
}

export default {
  id: "site",
  title: "nav.site",
  command: "entities.list",
  render(main, { socket }) {
    const status = h("div", { "aria-live": "polite", id: "site-status" });
    const areas = h("div", { id: "site-areas" }, t("common.loading"));
    const detail = h("div", { id: "entity-detail" }, h("p", { class: "muted" }, t("site.pick")));
    const views = new Map(); // area -> {section, rows}
    let selected = null;

    async function act(entity, action, args) {
      notice(status, t("site.sending", { name: entity.name }), "ok");
      try {
        const result = await socket.request("entities.set", { entity_id: entity.entity_id, action, args });
        const text = t(`site.outcome.${result.outcome}`, { name: entity.name });
        notice(status, result.reason ? `${text} ${result.reason}` : text, result.outcome === "confirmed" ? "ok" : "error");
        if (selected === entity.entity_id) show(entity.entity_id);
      } catch (error) {
        notice(status, errorText(error));
      }
    }

    async function show(entityId) {
      selected = entityId;
      try {
        const found = await socket.request("entities.get", { entity_id: entityId, history: 50 });
        if (selected !== entityId) return;
        const entity = found.entity;
        fill(detail, h("h3", {}, entity.name),
          h("p", { class: "muted" }, `${entity.entity_id} · ${entity.origin || "—"} · ${entity.area || t("site.no_area")}`),
          h("p", {}, t("site.state"), ": ", h("strong", {}, stateText(entity)), " ", available(entity)),
          sparkline(found.history.items),
          h("ol", { class: "events" }, found.history.items.slice(0, 20).map((row) => h("li", {},
            h("time", {}, time(row.at)), " ", stateText({ ...entity, state: row.state })))),
          entity.problem ? h("p", { class: "notice error" }, entity.problem) : null);
      } catch (error) {
        notice(detail, errorText(error));
      }
    }

    function viewFor(area) {
      let view = views.get(area);
      if (!view) {
        const rows = keyedRows([
          ["site.name", (e) => h("button", { type: "button", class: "link", onclick: () => show(e.entity_id) }, e.name)],
          ["site.kind", (e) => t(`site.component.${e.component}`, {}, e.component)],
          ["site.state", (e) => h("span", {}, stateText(e), " ", available(e))],
          ["site.changed", (e) => (e.state_at ? h("time", { title: time(e.state_at) }, ago(e.state_at)) : "—")],
          ["site.controls", (e) => controls(e, act)],
        ], (e) => e.entity_id, { rowAttrs: (e) => ({ dataset: { entity: e.entity_id, state: e.state ?? "" } }) });
        view = { section: h("section", { class: "card wide", dataset: { area } },
          h("h2", {}, area || t("site.no_area")), rows.el), rows };
        views.set(area, view);
      }
      return view;
    }

    const off = socket.subscribe("entities", (state) => {
      const byArea = new Map();
      for (const entity of state.items) {
        const area = entity.area || "";
        if (!byArea.has(area)) byArea.set(area, []);
        byArea.get(area).push(entity);
      }
      const order = [...byArea.keys()].sort((a, b) => (a === "" ? 1 : b === "" ? -1 : a.localeCompare(b)));
      for (const area of order) viewFor(area).rows.update(byArea.get(area).sort((a, b) => a.name.localeCompare(b.name)));
      const sections = order.map((area) => views.get(area).section);
      if (!sections.length) fill(areas, h("p", { class: "empty" }, t("site.none")));
      else if (sections.some((s, i) => areas.children[i] !== s) || areas.children.length !== sections.length) {
        fill(areas, sections);
      }
      const summary = t("site.summary", { n: number(state.items.length),
        offline: number(state.items.filter((e) => e.available === false).length) });
      areas.dataset.summary = summary;
    });

    fill(main, h("h1", {}, t("nav.site")), status,
      h("div", { class: "grid" }, h("div", { class: "wide" }, areas),
        h("section", { class: "card" }, h("h2", {}, t("site.detail")), detail)));
    return off;
  },
};
