// Dashboard: every service's state, the model and its plan, the box's resources (the status
// topic), and four live charts from the metrics topic: events/s, tokens/s, queue depth and recall
// latency. Both topics are pushed over the WebSocket; the page never polls.
import { detail, t } from "../i18n.js";
import { LineChart } from "../chart.js";
import { upload } from "../api.js";
import { capabilities } from "../capabilities.js";
import { badge, bytes, duration, errorText, fill, h, notice, number, table } from "../dom.js";

/** The sum of a family's samples (with this suffix) across services, or null when none reports it. */
function total(metrics, name, suffix = "", labels = {}) {
  let sum = null;
  for (const families of Object.values(metrics.services ?? {})) {
    for (const family of families) {
      if (family.name !== name) continue;
      for (const sample of family.samples) {
        if ((sample.suffix ?? "") !== suffix) continue;
        if (Object.entries(labels).some(([k, v]) => sample.labels?.[k] !== v)) continue;
        sum = (sum ?? 0) + sample.value;
      }
    }
  }
  return sum;
}

/** What the four charts show, from two consecutive metrics reads (rates need both). */
export function chartPoints(before, now, seconds) {
  const rate = (name) => {
    const a = total(before, name);
    const b = total(now, name);
    return a === null || b === null || seconds <= 0 ? null : Math.max(0, (b - a) / seconds);
  };
  const recall = { method: "recall" };
  const calls = (total(now, "appliance_ipc_request_seconds", "_count", recall) ?? 0)
    - (total(before, "appliance_ipc_request_seconds", "_count", recall) ?? 0);
  const spent = (total(now, "appliance_ipc_request_seconds", "_sum", recall) ?? 0)
    - (total(before, "appliance_ipc_request_seconds", "_sum", recall) ?? 0);
  return {
    events: rate("appliance_store_device_events_total"),
    tokens: rate("appliance_engine_generated_tokens_total"),
    queue: total(now, "appliance_engine_queue_depth"),
    recall: calls > 0 ? (spent / calls) * 1000 : null,
  };
}

const CHARTS = [
  ["events", "dashboard.chart.events", 1, "#2563eb"],
  ["tokens", "dashboard.chart.tokens", 1, "#7c3aed"],
  ["queue", "dashboard.chart.queue", 0, "#d97706"],
  ["recall", "dashboard.chart.recall", 1, "#059669"],
];

function services(health) {
  return table([
    ["dashboard.service", (s) => s.name],
    ["dashboard.state", (s) => badge(s.state)],
    ["dashboard.version", (s) => s.version || "—"],
    ["dashboard.uptime", (s) => h("span", { class: "nowrap" }, s.uptime_s ? duration(s.uptime_s) : "—")],
    ["dashboard.detail", (s) => detail(s)],
  ], health.services);
}

function model(engine) {
  if (!engine) return h("p", { class: "notice warn" }, t("dashboard.engine_away"));
  const plan = engine.plan;
  const file = (path) => (path ? path.split("/").pop() : "—");
  const rows = [
    ["dashboard.chat_model", file(engine.chat_model)],
    ["dashboard.embedding_model", file(engine.embedding_model)],
    ["dashboard.gpu_offload", t(engine.gpu_offload ? "common.yes" : "common.no")],
  ];
  if (plan) {
    rows.push(["dashboard.plan.context", number(plan.n_ctx)], ["dashboard.plan.gpu_layers", number(plan.n_gpu_layers)],
      ["dashboard.plan.threads", number(plan.n_threads)], ["dashboard.plan.kv", plan.kv_type],
      ["dashboard.plan.batch", `${plan.n_batch} / ${plan.n_ubatch}`]);
  }
  return h("div", {},
    h("dl", { class: "facts" }, rows.map(([key, value]) => [h("dt", {}, t(key)), h("dd", {}, value)])),
    plan?.why?.length ? h("details", {}, h("summary", {}, t("dashboard.plan.why")),
      h("ul", {}, plan.why.map((line) => h("li", {}, line)))) : null,
    engine.problems?.length ? h("ul", { class: "notice warn" }, engine.problems.map((p) => h("li", {}, p))) : null);
}

function meter(labelKey, used, totalValue, text) {
  const share = totalValue ? used / totalValue : 0;
  return h("div", { class: "meter-row" },
    h("span", {}, t(labelKey)),
    h("meter", { min: 0, max: 1, value: share, high: 0.85, optimum: 0.2, "aria-label": t(labelKey) }),
    h("span", { class: "meter-text" }, text));
}

function box(resources, engine) {
  const memUsed = resources.memory_total_bytes - resources.memory_available_bytes;
  const diskUsed = resources.disk_total_bytes - resources.disk_free_bytes;
  const gpus = engine?.hardware?.gpus ?? [];
  return h("div", {},
    meter("dashboard.cpu", resources.cpu_percent, 100,
      t("dashboard.cpu_text", { percent: number(resources.cpu_percent, 1), cores: resources.cores,
        load: resources.load.map((v) => number(v, 2)).join(" ") })),
    meter("dashboard.memory", memUsed, resources.memory_total_bytes,
      t("dashboard.of", { used: bytes(memUsed), total: bytes(resources.memory_total_bytes) })),
    meter("dashboard.disk", diskUsed, resources.disk_total_bytes,
      t("dashboard.free", { free: bytes(resources.disk_free_bytes), total: bytes(resources.disk_total_bytes) })),
    gpus.map((gpu) => meter("dashboard.gpu", gpu.total_bytes - gpu.free_bytes, gpu.total_bytes,
      `${gpu.name}: ${t("dashboard.of", { used: bytes(gpu.total_bytes - gpu.free_bytes), total: bytes(gpu.total_bytes) })}`)),
    gpus.length ? null : h("p", { class: "muted" }, t("dashboard.no_gpu")),
    h("h3", {}, t("dashboard.temperatures")),
    resources.temperatures.length
      ? h("ul", { class: "temps" }, resources.temperatures.map((s) => h("li", {}, `${s.sensor}: ${number(s.celsius, 1)} °C`)))
      : h("p", { class: "muted" }, t("dashboard.no_sensors")));
}

/** The software card: running slot and version, an install in progress, the last boots' verdicts
 * (GET /api/v1/system/update), and for an admin on the image the bundle upload. */
function software(state) {
  const facts = [
    ["dashboard.update.version", state.running_version],
    ["dashboard.update.slot", state.running_slot ?? t("dashboard.update.no_slot")],
    ["dashboard.update.state", badge(state.state)],
  ];
  if (state.version) facts.push(["dashboard.update.bundle", state.version]);
  if (state.progress !== null && state.progress !== undefined) {
    facts.push(["dashboard.update.progress", `${number(state.progress * 100)} %`]);
  }
  return h("div", {},
    h("dl", { class: "facts" }, facts.map(([key, value]) => [h("dt", {}, t(key)), h("dd", {}, value)])),
    state.detail ? h("p", { class: "muted" }, state.detail) : null,
    state.boots.length ? table([
      ["dashboard.update.at", (b) => b.at],
      ["dashboard.update.slot", (b) => b.slot],
      ["dashboard.update.version", (b) => b.version],
      ["dashboard.state", (b) => badge(b.result)],
      ["dashboard.detail", (b) => b.reason],
    ], state.boots.slice(-5).reverse()) : null);
}

function installForm(onDone) {
  const file = h("input", { type: "file", name: "bundle", accept: ".bundle" });
  const progress = h("progress", { max: 1, value: 0, hidden: true });
  const status = h("p", { class: "status", role: "status" });
  const button = h("button", { type: "button", disabled: true }, t("dashboard.update.install"));
  file.addEventListener("change", () => { button.disabled = !file.files.length; });
  button.addEventListener("click", async () => {
    button.disabled = true;
    progress.hidden = false;
    try {
      await upload("/api/v1/system/update", file.files[0], (share) => { progress.value = share; });
      notice(status, t("dashboard.update.handed_over"), "ok");
    } catch (error) {
      notice(status, errorText(error));
    } finally {
      progress.hidden = true;
      button.disabled = false;
      onDone();
    }
  });
  return h("div", { class: "update-form" }, h("label", {}, t("dashboard.update.file"), " ", file), button, progress,
    status);
}

export default {
  id: "dashboard",
  title: "nav.dashboard",
  command: "system.status",
  render(main, { socket }) {
    const overall = h("strong", { id: "overall" }, "…");
    const servicesBox = h("div", { id: "services" }, h("p", { class: "muted" }, t("common.loading")));
    const modelBox = h("div", { id: "model" });
    const boxBox = h("div", { id: "box" });
    const softwareBox = h("div", { id: "software" });
    const charts = {};
    const figures = CHARTS.map(([key, label, digits, color]) => {
      const canvas = h("canvas", { class: "chart", role: "img", "aria-label": t(label) });
      const value = h("output", { class: "chart-value", id: `chart-${key}` }, "—");
      charts[key] = { chart: new LineChart(canvas, { digits, color }), value, digits };
      return h("figure", { class: "card chart-card" }, h("figcaption", {}, t(label), " ", value), canvas);
    });
    fill(main,
      h("h1", {}, t("nav.dashboard")),
      h("p", {}, t("dashboard.overall"), " ", overall),
      h("div", { class: "charts" }, figures),
      h("div", { class: "grid" },
        h("section", { class: "card wide" }, h("h2", {}, t("dashboard.services")), servicesBox),
        h("section", { class: "card" }, h("h2", {}, t("dashboard.model")), modelBox),
        h("section", { class: "card" }, h("h2", {}, t("dashboard.box")), boxBox),
        h("section", { class: "card wide" }, h("h2", {}, t("dashboard.update.title")), softwareBox)));

    // The update state is not a pushed topic: read it now, and again every 5 s while an install runs.
    let timer = null;
    const readUpdate = async () => {
      clearTimeout(timer);
      try {
        const state = await socket.request("system.update_status");
        fill(softwareBox, software(state),
          capabilities.may("system.update") && state.running_slot ? installForm(readUpdate) : null);
        if (state.state === "requested" || state.state === "installing") timer = setTimeout(readUpdate, 5000);
      } catch (error) {
        fill(softwareBox, h("p", { class: "notice error" }, errorText(error)));
      }
    };
    if (capabilities.may("system.update_status")) readUpdate();

    const offStatus = socket.subscribe("status", (status) => {
      fill(overall, badge(status.health.status));
      fill(servicesBox, services(status.health));
      fill(modelBox, model(status.engine));
      fill(boxBox, box(status.resources, status.engine));
    });
    let previous = null;
    const offMetrics = socket.subscribe("metrics", (metrics, frame) => {
      if (previous) {
        const points = chartPoints(previous.metrics, metrics, frame.at - previous.at);
        for (const [key, { chart, value, digits }] of Object.entries(charts)) {
          chart.push(frame.at, points[key]);
          const latest = chart.latest();
          value.textContent = latest === null ? "—" : number(latest, digits);
        }
      }
      previous = { metrics, at: frame.at };
    });
    return () => { offStatus(); offMetrics(); clearTimeout(timer); };
  },
};
