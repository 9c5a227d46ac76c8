// Memory: search (hybrid, vector or text, with filters) with scores and sources, remember a fact,
// upload a document with a progress bar, forget (admin), and the archive's state with a run button.
import { upload } from "../api.js";
import { capabilities } from "../capabilities.js";
import { t } from "../i18n.js";
import { bytes, confirmButton, errorText, field, fill, form, h, notice, number, time, unixOf, words } from "../dom.js";

const MODES = ["hybrid", "vector", "text"];

function options(values, prefix, selected) {
  return values.map((v) => h("option", { value: v, selected: v === selected }, t(`${prefix}.${v}`)));
}

function hitView(hit, onForget) {
  const record = hit.record;
  const scores = [[t("memory.score"), hit.score], [t("memory.similarity"), hit.similarity],
    [t("memory.text_score"), hit.text_score]].filter(([, v]) => v !== null && v !== undefined);
  return h("li", { class: "hit", dataset: { id: record.id } },
    h("div", { class: "hit-head" },
      h("span", { class: "badge" }, t(`kind.${record.kind}`)),
      h("span", { class: "source" }, record.source || "—"),
      h("time", {}, time(record.created_at)),
      h("span", { class: "scores" }, scores.map(([label, v]) => `${label} ${number(v, 3)}`).join(" · ")),
      capabilities.may("memory.forget") ? confirmButton("memory.forget_button", "memory.forget_confirm", () => onForget(record.id),
        { class: "small", "aria-label": t("memory.forget_id", { id: record.id }) }) : null),
    h("p", { class: "hit-text" }, record.text),
    record.tags.length ? h("p", { class: "tags" }, record.tags.map((tag) => h("span", { class: "tag" }, tag))) : null);
}

function searchSection(socket) {
  const q = h("input", { type: "search", name: "q", required: true, maxlength: 4096 });
  const mode = h("select", { name: "mode" }, options(MODES, "memory.mode", "hybrid"));
  const k = h("input", { type: "number", name: "k", min: 1, max: 100, value: "10" });
  const kinds = capabilities.words("memory_kinds").map((kind) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "kind", value: kind }), t(`kind.${kind}`)));
  const source = h("input", { type: "text", name: "source" });
  const tag = h("input", { type: "text", name: "tag" });
  const since = h("input", { type: "datetime-local", name: "since" });
  const until = h("input", { type: "datetime-local", name: "until" });
  const results = h("div", { id: "results", "aria-live": "polite" });

  async function forget(id) {
    try {
      await socket.request("memory.forget", { id });
      results.querySelector(`[data-id="${id}"]`)?.remove();
    } catch (error) {
      results.prepend(h("p", { class: "notice error", role: "alert" }, errorText(error)));
    }
  }

  const searchForm = form([
    h("div", { class: "row" }, field("memory.query", q), field("memory.mode", mode), field("memory.k", k)),
    h("details", {}, h("summary", {}, t("memory.filters")),
      h("fieldset", { class: "field", dataset: { field: "kind" } }, h("legend", {}, t("memory.kinds")), kinds,
        h("span", { class: "field-error", role: "alert" })),
      h("div", { class: "row" }, field("memory.sources", source, { hint: "memory.comma_hint" }),
        field("memory.tags", tag, { hint: "memory.comma_hint" })),
      h("div", { class: "row" }, field("memory.since", since), field("memory.until", until))),
  ], "memory.search_button", async () => {
    const args = { q: q.value, mode: mode.value, k: Number(k.value) || 10 };
    const chosen = kinds.map((label) => label.firstChild).filter((box) => box.checked).map((box) => box.value);
    if (chosen.length) args.kind = chosen;
    if (words(source)) args.source = words(source);
    if (words(tag)) args.tag = words(tag);
    if (unixOf(since) !== null) args.since = unixOf(since);
    if (unixOf(until) !== null) args.until = unixOf(until);
    fill(results, h("p", { class: "muted" }, t("common.loading")));
    const reply = await socket.request("memory.search", args).catch((error) => {
      fill(results);
      throw error;
    });
    fill(results,
      h("p", { class: "muted" }, t("memory.found", { n: reply.hits.length, mode: t(`memory.mode.${reply.mode}`),
        ms: number(reply.took_ms, 1) })),
      reply.fallback ? h("p", { class: "notice warn" }, t("memory.fallback", { why: reply.fallback })) : null,
      reply.hits.length ? h("ol", { class: "hits" }, reply.hits.map((hit) => hitView(hit, forget)))
        : h("p", { class: "empty" }, t("memory.no_hits")));
  }, { role: "search", id: "search-form" });
  return h("section", { class: "card wide" }, h("h2", {}, t("memory.search_title")), searchForm, results);
}

function rememberSection(socket) {
  const text = h("textarea", { name: "text", rows: 3, maxlength: 65536 });
  const kind = h("select", { name: "kind" }, options(capabilities.words("memory_kinds"), "kind", "fact"));
  const tags = h("input", { type: "text", name: "tags" });
  const pinned = h("input", { type: "checkbox", name: "pinned" });
  const remembered = form([
    field("memory.text", text),
    h("div", { class: "row" }, field("memory.kind", kind), field("memory.tags", tags, { hint: "memory.comma_hint" })),
    h("label", { class: "check" }, pinned, t("memory.pinned")),
  ], "memory.remember_button", async (el, status) => {
    const reply = await socket.request("memory.remember", {
      text: text.value, kind: kind.value, tags: words(tags) ?? [], pinned: pinned.checked });
    notice(status, t(reply.embedded ? "memory.remembered" : "memory.remembered_no_vector", { id: reply.id }), "ok");
    el.reset();
  }, { id: "remember-form" });
  return h("section", { class: "card" }, h("h2", {}, t("memory.remember_title")), remembered);
}

function uploadSection() {
  const file = h("input", { type: "file", name: "file", accept: ".txt,.md,.markdown,.csv,.json,.log,text/*" });
  const tags = h("input", { type: "text", name: "tags" });
  const progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": t("memory.upload_progress") });
  const uploaded = form([
    field("memory.file", file, { name: "text" }),
    field("memory.tags", tags, { hint: "memory.comma_hint" }),
    progress,
  ], "memory.upload", async (el, status) => {
    const chosen = file.files[0];
    if (!chosen) {
      notice(status, t("memory.choose_file"));
      return;
    }
    const body = new FormData();
    body.append("file", chosen, chosen.name);
    if (tags.value.trim()) body.append("tags", tags.value);
    progress.hidden = false;
    progress.value = 0;
    try {
      const reply = await upload("/api/v1/memory/documents", body, (share) => { progress.value = share; });
      progress.value = 1;
      notice(status, t("memory.ingested", { path: reply.path, chunks: reply.chunks, replaced: reply.replaced }), "ok");
      el.reset();
    } finally {
      setTimeout(() => { progress.hidden = true; }, 1500);
    }
  }, { id: "upload-form" });
  return h("section", { class: "card" }, h("h2", {}, t("memory.upload_title")),
    h("p", { class: "muted" }, t("memory.upload_hint")), uploaded);
}

function archiveSection(socket) {
  const stats = h("div", { id: "memory-stats" }, t("common.loading"));
  const status = h("div", { "aria-live": "polite" });
  const progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": t("memory.archive_progress") });

  async function refresh() {
    try {
      const s = await socket.request("memory.stats");
      const rows = [["memory.stats.memories", number(s.memories)], ["memory.stats.vectors", number(s.vectors)],
        ["memory.stats.archived", number(s.archived)], ["memory.stats.segments", number(s.segments)],
        ["memory.stats.forgotten", number(s.forgotten)], ["memory.stats.file", bytes(s.file_bytes + s.wal_bytes)],
        ["memory.stats.index", s.index]];
      fill(stats, h("dl", { class: "facts" }, rows.map(([key, value]) => [h("dt", {}, t(key)), h("dd", {}, value)])));
    } catch (error) {
      notice(stats, errorText(error));
    }
  }

  const run = h("button", { type: "button", id: "archive-run" }, t("memory.archive_run"));
  run.addEventListener("click", async () => {
    run.disabled = true;
    progress.hidden = false;
    notice(status, "");
    try {
      const last = await socket.stream("memory.archive", {}, {
        onItem: (p) => { progress.value = p.total ? p.done / p.total : 1; },
      });
      notice(status, t("memory.archived", { n: last?.done ?? 0, segments: last?.segments ?? 0 }), "ok");
      await refresh();
    } catch (error) {
      notice(status, errorText(error));
    } finally {
      run.disabled = false;
      progress.hidden = true;
    }
  });
  refresh();
  return h("section", { class: "card" }, h("h2", {}, t("memory.archive_title")), stats,
    capabilities.may("memory.archive") ? h("div", {}, run, progress, status) : null);
}

export default {
  id: "memory",
  title: "nav.memory",
  command: "memory.search",
  render(main, { socket }) {
    fill(main, h("h1", {}, t("nav.memory")),
      h("div", { class: "grid" },
        searchSection(socket),
        capabilities.may("memory.remember") ? rememberSection(socket) : null,
        capabilities.may("memory.ingest") ? uploadSection() : null,
        archiveSection(socket)));
    main.querySelector("input[name=q]").focus();
  },
};
