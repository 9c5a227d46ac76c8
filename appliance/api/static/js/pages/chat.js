// Chat with the agent: the reply streams in token by token over the WebSocket, and the memories
// put before the model are listed under it as numbered citations. The turns are kept in one
// conversation ring per tab, so follow-up questions have their context.
import { session } from "../api.js";
import { t } from "../i18n.js";
import { errorText, fill, h, number } from "../dom.js";

const CONVERSATION_KEY = "appliance.conversation";

function conversationId() {
  let id = sessionStorage.getItem(CONVERSATION_KEY);
  if (!id) {
    const random = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
    id = `web:${(session.user || "user").replace(/[^A-Za-z0-9._@-]/g, "_").slice(0, 40)}:${random}`;
    sessionStorage.setItem(CONVERSATION_KEY, id);
  }
  return id;
}

function citations(list) {
  if (!list.length) return null;
  return h("details", { class: "citations", open: true }, h("summary", {}, t("chat.citations", { n: list.length })),
    h("ol", {}, list.map((c) => h("li", { value: c.n, dataset: { memory: c.memory_id } },
      h("span", { class: "badge" }, t(`kind.${c.kind}`, {}, c.kind)), " ",
      h("strong", {}, c.source || "—"), " ",
      h("span", { class: "muted" }, t("chat.score", { score: number(c.score, 3) })),
      h("p", { class: "snippet" }, c.snippet)))));
}

export default {
  id: "chat",
  title: "nav.chat",
  command: "chat",
  render(main, { socket }) {
    const log = h("div", { id: "chat-log", class: "chat-log", role: "log", "aria-live": "polite" });
    const input = h("textarea", { id: "chat-input", rows: 2, maxlength: 8000, placeholder: t("chat.placeholder") });
    const useMemory = h("input", { type: "checkbox", id: "chat-memory", checked: true });
    const send = h("button", { type: "submit", class: "primary" }, t("chat.send"));
    const chatForm = h("form", { class: "chat-form", id: "chat-form" },
      h("label", { for: "chat-input", class: "visually-hidden" }, t("chat.message")), input,
      h("div", { class: "actions" }, h("label", { class: "check" }, useMemory, t("chat.use_memory")), send));

    async function ask(text) {
      log.append(h("div", { class: "bubble user" }, h("span", { class: "who" }, t("chat.you")), h("p", {}, text)));
      const answer = h("p", { class: "answer" });
      const bubble = h("div", { class: "bubble agent", "aria-busy": "true" }, h("span", { class: "who" }, t("chat.agent")), answer);
      log.append(bubble);
      bubble.scrollIntoView({ block: "end" });
      try {
        const done = await socket.stream("chat", { message: text, conversation: conversationId(), use_memory: useMemory.checked }, {
          onToken: (piece) => { answer.textContent += piece; },
        });
        if (!answer.textContent) answer.textContent = t("chat.no_reply");
        if (done?.fallback) bubble.append(h("p", { class: "notice warn" }, t("memory.fallback", { why: done.fallback })));
        bubble.append(citations(done?.citations ?? []) ?? "");
        if (done) bubble.append(h("p", { class: "muted small" }, t("chat.tokens", { prompt: done.prompt_tokens, completion: done.completion_tokens })));
      } catch (error) {
        bubble.append(h("p", { class: "notice error", role: "alert" }, errorText(error)));
      } finally {
        bubble.removeAttribute("aria-busy");
        bubble.scrollIntoView({ block: "end" });
      }
    }

    chatForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      input.value = "";
      send.disabled = true;
      await ask(text);
      send.disabled = false;
      input.focus();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        chatForm.requestSubmit();
      }
    });
    const restart = h("button", { type: "button", onclick: () => {
      sessionStorage.removeItem(CONVERSATION_KEY);
      fill(log);
      input.focus();
    } }, t("chat.new_conversation"));
    fill(main, h("h1", {}, t("nav.chat")), h("section", { class: "card chat" }, h("div", { class: "toolbar" }, restart), log, chatForm));
    input.focus();
  },
};
