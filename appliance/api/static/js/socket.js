// The page's one WebSocket to /control (docs/control-protocol.md): commands, streams and topic
// subscriptions, multiplexed by the frame's id. It authenticates with its first frame, takes each
// refreshed token without reconnecting, and when the connection drops it comes back by itself,
// subscribing again: a topic's first event is its whole state, so a live view misses nothing.
import { ApiError, session } from "./api.js";

const BACKOFF_S = [0.5, 1, 2, 4, 8, 15];
const ROW_KEYS = { tasks: "id", devices: "device_id", audit: "id", entities: "entity_id" }; // list topics (control/topics.py)
const PUSHED = new Set(["messages"]); // sent as they happen: no state to replay
const MAX_ROWS = { entities: 20000 }; // rows kept per list topic; 1,000 for the others

export class ControlSocket extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.state = "closed";
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, onToken, onItem} of a request
    this.topics = new Map(); // topic -> Set(handler)
    this.states = new Map(); // topic -> its last state (list topics: a Map of rows by key)
    this.retries = 0;
    this.stopped = true;
    this.onToken = () => this.sendRaw({ id: this.id(), type: "auth", token: session.token });
  }

  id() {
    return this.nextId++;
  }

  start() {
    this.stopped = false;
    session.addEventListener("token", this.onToken);
    this.connect();
  }

  stop() {
    this.stopped = true;
    session.removeEventListener("token", this.onToken);
    clearTimeout(this.retryTimer);
    this.ws?.close(1000, "signed out");
    this.fail(new ApiError(0, { error: { code: "network", message: "signed out" } }));
    this.topics.clear();
    this.states.clear();
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/control`);
    this.ws = ws;
    this.setState("connecting");
    ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "auth", token: session.token })));
    ws.addEventListener("message", (event) => this.receive(JSON.parse(event.data)));
    ws.addEventListener("close", (event) => this.closed(ws, event));
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    this.setState("closed");
    this.fail(new ApiError(0, { error: { code: "network", message: "the connection to the box was lost" } }));
    if (this.stopped) return;
    if (event.code === 4401 && session.data) {
      // The token ended or was refused: a fresh one, then connect again at once. A refused refresh
      // ends the session (and this socket); a box that cannot be reached is tried again later.
      session.refresh().then(() => this.connect(), () => this.retry());
      return;
    }
    this.retry();
  }

  retry() {
    if (this.stopped) return;
    const wait = BACKOFF_S[Math.min(this.retries, BACKOFF_S.length - 1)];
    this.retries += 1;
    this.retryTimer = setTimeout(() => this.connect(), wait * 1000);
  }

  /** Requests in flight when the socket drops fail; topics are subscribed again instead. */
  fail(error) {
    for (const request of this.pending.values()) request.reject(error);
    this.pending.clear();
  }

  opened() {
    this.retries = 0;
    this.setState("open");
    for (const topic of this.topics.keys()) this.sendRaw({ id: this.id(), type: "subscribe", topics: [topic] });
  }

  sendRaw(frame) {
    if (this.ws?.readyState === WebSocket.OPEN && this.state === "open") this.ws.send(JSON.stringify(frame));
  }

  receive(frame) {
    if (frame.type === "ready" && frame.id === null && this.state !== "open") {
      this.opened();
      return;
    }
    if (frame.type === "event") {
      const state = this.merge(frame.topic, frame.content, frame.snapshot);
      for (const handler of this.topics.get(frame.topic) ?? []) handler(state, frame);
      return;
    }
    const request = this.pending.get(frame.id);
    if (!request) return; // an answer to an auth or subscribe frame, or to a request already given up
    if (frame.type === "token") request.onToken?.(frame.text);
    else if (frame.type === "item") request.onItem?.(frame.content);
    else if (frame.type === "result") { this.pending.delete(frame.id); request.resolve(frame.content); }
    else if (frame.type === "error") { this.pending.delete(frame.id); request.reject(new ApiError(400, { error: frame })); }
  }

  waitOpen() {
    if (this.state === "open") return Promise.resolve();
    return new Promise((resolve) => {
      const listener = (event) => {
        if (event.detail === "open") { this.removeEventListener("state", listener); resolve(); }
      };
      this.addEventListener("state", listener);
    });
  }

  /** A command's reply: await socket.request("memory.stats"). */
  async request(command, args = {}, handlers = {}) {
    await this.waitOpen();
    const ident = this.id();
    return new Promise((resolve, reject) => {
      this.pending.set(ident, { resolve, reject, ...handlers });
      this.sendRaw({ id: ident, command, args });
    });
  }

  /** A streaming command: onToken(text) for generated text, onItem(content) for other items; resolves with the last. */
  stream(command, args, { onToken, onItem } = {}) {
    return this.request(command, args, { onToken, onItem });
  }

  /** A topic's whole state: list topics send only changed rows after their snapshot, merged here by key. */
  merge(topic, content, snapshot) {
    const key = ROW_KEYS[topic];
    if (!key) {
      this.states.set(topic, content);
      return content;
    }
    const rows = snapshot ? new Map() : (this.states.get(topic) ?? new Map());
    for (const row of content.items ?? []) rows.set(row[key], row);
    const most = MAX_ROWS[topic] ?? 1000;
    if (rows.size > most) { // the oldest keys go first (ids grow; device ids by name)
      for (const old of [...rows.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).slice(0, rows.size - most)) rows.delete(old);
    }
    this.states.set(topic, rows);
    return { items: [...rows.values()] };
  }

  /** handler(state, frame) for each event of the topic, at once with the state known so far; returns
   * the unsubscribe function. ``state`` is the topic's whole state (list topics: every row seen). */
  subscribe(topic, handler) {
    let handlers = this.topics.get(topic);
    if (!handlers) {
      handlers = new Set();
      this.topics.set(topic, handlers);
      this.sendRaw({ id: this.id(), type: "subscribe", topics: [topic] });
    } else if (this.states.has(topic) && !PUSHED.has(topic)) {
      const known = this.states.get(topic);
      handler(known instanceof Map ? { items: [...known.values()] } : known, { snapshot: true, at: Date.now() / 1000 });
    }
    handlers.add(handler);
    return () => {
      handlers.delete(handler);
      if (!handlers.size && this.topics.get(topic) === handlers) {
        this.topics.delete(topic);
        this.states.delete(topic);
        this.sendRaw({ id: this.id(), type: "unsubscribe", topics: [topic] });
      }
    };
  }
}
