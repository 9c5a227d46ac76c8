// Audit (admins): the log newest first with filters (user, action or prefix, time range), older
// pages on demand, new rows as they are written (the audit topic), and the hash chain's verdict.
import { t } from "../i18n.js";
import { errorText, field, fill, form, h, notice, number, table, time, unixOf } from "../dom.js";

function details(row) {
  const text = JSON.stringify(row.details ?? {});
  return h("code", { class: "sample", title: text }, text.length > 160 ? `${text.slice(0, 160)}…` : text);
}

export default {
  id: "audit",
  title: "nav.audit",
  command: "audit.list",
  render(main, { socket }) {
    const user = h("input", { type: "text", name: "user", maxlength: 128 });
    const action = h("input", { type: "text", name: "action", maxlength: 128 });
    const since = h("input", { type: "datetime-local", name: "since" });
    const until = h("input", { type: "datetime-local", name: "until" });
    const list = h("div", { id: "audit-list", "aria-live": "polite" });
    const more = h("button", { type: "button", hidden: true }, t("audit.more"));
    const verdict = h("div", { id: "audit-verdict", "aria-live": "polite" });
    let rows = [];
    let cursor = null;
    let query = {};

    function render() {
      fill(list, table([
        ["audit.when", (r) => time(r.timestamp)],
        ["audit.user", (r) => r.user_id],
        ["audit.action", (r) => h("code", {}, r.action)],
        ["audit.outcome", (r) => h("span", { class: `badge state-${r.details?.ok === false ? "failed" : "succeeded"}` },
          t(r.details?.ok === false ? "audit.failed" : "audit.ok"))],
        ["audit.ip", (r) => r.ip_address || "—"],
        ["audit.details", details],
      ], rows, { empty: "audit.none", rowAttrs: (r) => ({ dataset: { audit: r.id } }) }));
      more.hidden = cursor === null;
    }

    async function load(append = false) {
      const page = await socket.request("audit.list", { ...query, limit: 50, ...(append ? { cursor } : {}) });
      rows = append ? rows.concat(page.items) : page.items;
      cursor = page.next_cursor;
      render();
    }

    const filters = form([
      h("div", { class: "row" }, field("audit.user", user), field("audit.action", action, { hint: "audit.action_hint" }),
        field("audit.since", since), field("audit.until", until)),
    ], "audit.filter", async () => {
      query = {};
      if (user.value.trim()) query.user = user.value.trim();
      if (action.value.trim()) query.action = action.value.trim();
      if (unixOf(since) !== null) query.since = unixOf(since);
      if (unixOf(until) !== null) query.until = unixOf(until);
      await load();
    }, { id: "audit-filters" });
    more.addEventListener("click", () => load(true).catch((error) => notice(list, errorText(error))));

    const verify = h("button", { type: "button", id: "audit-verify" }, t("audit.verify_button"));
    verify.addEventListener("click", async () => {
      verify.disabled = true;
      fill(verdict, h("p", { class: "muted" }, t("audit.verifying")));
      try {
        const result = await socket.request("audit.verify");
        notice(verdict, result.ok ? t("audit.chain_ok", { rows: number(result.rows) })
          : t("audit.chain_bad", { id: result.first_bad_id, reason: result.reason }), result.ok ? "ok" : "error");
      } catch (error) {
        notice(verdict, errorText(error));
      } finally {
        verify.disabled = false;
      }
    });

    // New rows: read the first page again, unless older pages are open (the reader is looking back).
    let pending = null;
    const off = socket.subscribe("audit", (_state, frame) => {
      if (frame.snapshot || rows.length > 50 || pending) return;
      pending = setTimeout(() => { pending = null; load().catch(() => {}); }, 300);
    });

    load().catch((error) => notice(list, errorText(error)));
    fill(main, h("h1", {}, t("nav.audit")),
      h("section", { class: "card wide" }, h("h2", {}, t("audit.chain")), verify, verdict),
      h("section", { class: "card wide" }, h("h2", {}, t("audit.log")), filters, list, more));
    return () => { off(); clearTimeout(pending); };
  },
};
