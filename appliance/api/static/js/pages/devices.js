// Devices: the registry live from the devices topic (online state, last seen, event count), one
// device's recent events (read again whenever its count moves), a send-command form with the
// device's answer, and the quarantine with its counts per reason.
import { t } from "../i18n.js";
import { capabilities } from "../capabilities.js";
import { ago, errorText, field, fill, form, h, keyedRows, notice, number, showErrors, table, time } from "../dom.js";

function onlineBadge(row) {
  const state = row.online === null ? "unknown" : row.online ? "online" : "offline";
  return h("span", { class: `badge state-${state}` }, t(`devices.${state}`));
}

function commandForm(socket, deviceInput) {
  const command = h("input", { type: "text", name: "command", maxlength: 64, autocomplete: "off" });
  const args = h("textarea", { name: "args", rows: 3, spellcheck: false }, "{}");
  const wait = h("input", { type: "number", name: "wait_s", min: 0, max: 120, step: "any", value: "5" });
  const answer = h("div", { id: "command-answer", "aria-live": "polite" });
  const sent = form([
    h("div", { class: "row" }, field("devices.device", deviceInput), field("devices.command_name", command),
      field("devices.wait", wait)),
    field("devices.args", args, { hint: "devices.args_hint" }),
  ], "devices.send", async (el, status) => {
    let parsed;
    try {
      parsed = JSON.parse(args.value || "{}");
    } catch {
      parsed = null;
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      showErrors(el, { field: "args", message: t("devices.args_not_object") }, status);
      return;
    }
    fill(answer, h("p", { class: "muted" }, t("devices.sending")));
    const reply = await socket.request("devices.command", { device_id: deviceInput.value, command: command.value,
      args: parsed, wait_s: Number(wait.value) }).catch((error) => { fill(answer); throw error; });
    fill(answer,
      h("p", {}, h("span", { class: `badge state-${reply.status}` }, t(`devices.status.${reply.status}`)), " ",
        reply.latency_ms !== null && reply.latency_ms !== undefined ? t("devices.latency", { ms: number(reply.latency_ms, 1) }) : ""),
      reply.response !== null && reply.response !== undefined
        ? h("pre", { class: "payload" }, JSON.stringify(reply.response, null, 2)) : null);
  }, { id: "command-form" });
  return h("div", {}, sent, answer);
}

function quarantineSection(socket) {
  const box = h("div", { id: "quarantine" }, t("common.loading"));
  async function refresh() {
    try {
      const page = await socket.request("devices.quarantine", { limit: 50 });
      const counts = Object.entries(page.counts);
      fill(box,
        counts.length ? h("p", { class: "muted" }, counts.map(([kind, n]) => `${t(`quarantine.${kind}`, {}, kind)}: ${number(n)}`).join(" · ")) : null,
        table([
          ["devices.when", (r) => time(r.at)],
          ["devices.reason", (r) => h("span", { title: r.reason }, t(`quarantine.${r.kind}`, {}, r.kind))],
          ["devices.topic", (r) => h("code", {}, r.topic)],
          ["devices.size", (r) => number(r.size)],
          ["devices.sample", (r) => h("code", { class: "sample" }, r.sample)],
        ], page.items, { empty: "devices.quarantine_empty" }));
    } catch (error) {
      notice(box, errorText(error));
    }
  }
  const again = h("button", { type: "button", onclick: refresh }, t("common.refresh"));
  refresh();
  return h("section", { class: "card wide" }, h("h2", {}, t("devices.quarantine_title")), again, box);
}

export default {
  id: "devices",
  title: "nav.devices",
  command: "devices.list",
  render(main, { socket }) {
    const registry = h("div", { id: "registry", "aria-live": "polite" }, t("common.loading"));
    const detail = h("div", { id: "device-detail" }, h("p", { class: "muted" }, t("devices.pick")));
    const deviceInput = h("input", { type: "text", name: "device_id", maxlength: 128, autocomplete: "off" });
    let selected = null;
    let seenCount = null;

    async function show(deviceId) {
      selected = deviceId;
      deviceInput.value = deviceId;
      try {
        const found = await socket.request("devices.get", { device_id: deviceId, events: 20 });
        if (selected !== deviceId) return;
        seenCount = found.device.event_count;
        fill(detail, h("h3", {}, deviceId),
          h("p", { class: "muted" }, t("devices.first_seen", { when: time(found.device.first_seen) })),
          found.recent_events.length ? h("ol", { class: "events" }, found.recent_events.map((event) =>
            h("li", {}, h("time", {}, time(event.created_at)), " ", h("code", { class: "payload" }, event.text))))
            : h("p", { class: "empty" }, t("devices.no_events")));
      } catch (error) {
        notice(detail, errorText(error));
      }
    }

    const rowsView = keyedRows([
      ["devices.device", (r) => h("button", { type: "button", class: "link", onclick: () => show(r.device_id) }, r.device_id)],
      ["devices.online", onlineBadge],
      ["devices.last_seen", (r) => h("time", { title: time(r.last_seen) }, ago(r.last_seen))],
      ["devices.events", (r) => number(r.event_count)],
      ["devices.last_payload", (r) => h("code", { class: "sample" }, r.last_payload.slice(0, 120))],
    ], (r) => r.device_id, { empty: "devices.none", rowAttrs: (r) => ({ dataset: { device: r.device_id } }) });
    let drawn = false;
    const off = socket.subscribe("devices", (state) => {
      const rows = [...state.items].sort((a, b) => b.last_seen - a.last_seen);
      if (!drawn) fill(registry, rowsView.el);
      drawn = true;
      rowsView.update(rows);
      const current = rows.find((r) => r.device_id === selected);
      if (current && current.event_count !== seenCount) show(selected);
    });

    fill(main, h("h1", {}, t("nav.devices")),
      h("div", { class: "grid" },
        h("section", { class: "card wide" }, h("h2", {}, t("devices.registry")), registry),
        h("section", { class: "card" }, h("h2", {}, t("devices.recent")), detail),
        capabilities.may("devices.command") ? h("section", { class: "card" }, h("h2", {}, t("devices.command_title")),
          commandForm(socket, deviceInput)) : null,
        quarantineSection(socket)));
    return off;
  },
};
