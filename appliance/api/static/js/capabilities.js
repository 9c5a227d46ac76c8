// What the signed-in user may do, as the box says (GET /api/v1/capabilities: the commands with their
// owner rules, the task kinds and actions they may start, the topics, the box's vocabularies). The
// page builds every control from it and copies no list of its own: a control is shown when the box
// would take its command, and the box refuses anything else anyway.
import { ApiError, session } from "./api.js";

class Capabilities {
  constructor() {
    this.data = null;
    this.commands = new Map();
  }

  /** Read them for the current session (again after a sign-in as someone else). */
  async load() {
    const reply = await fetch("/api/v1/capabilities", { headers: { Authorization: `Bearer ${session.token}` } });
    const body = await reply.json();
    if (!reply.ok) throw new ApiError(reply.status, body);
    this.data = body;
    this.commands = new Map(body.commands.map((command) => [command.name, command]));
    return this;
  }

  clear() {
    this.data = null;
    this.commands = new Map();
  }

  /** Whether this user may call ``name`` at all. */
  may(name) {
    return this.commands.has(name);
  }

  /** Whether this user may call ``name`` on a row that ``owner`` owns (its owner rule, if any). */
  mayOn(name, owner) {
    const command = this.commands.get(name);
    if (!command) return false;
    if (!command.owner) return true;
    return owner === session.user ? command.owner.own : command.owner.others;
  }

  get kinds() { return this.data?.task_kinds ?? []; }
  get actions() { return this.data?.actions ?? []; }
  get topics() { return this.data?.topics ?? []; }
  /** One of the box's vocabularies: task_states, roles, memory_kinds, error_codes... */
  words(name) { return this.data?.vocabularies?.[name] ?? []; }
}

export const capabilities = new Capabilities();
