// REST and the session: signing in, the refresh, signing out and the upload (every other command
// goes over the WebSocket, js/socket.js). The access token (15 minutes) is refreshed before it ends
// with the refresh token, which the box honours once (a reused one ends the whole session); both
// live in sessionStorage, so a reload keeps the session and closing the tab ends it. Tokens never
// go in a URL. A 401 is answered by one refresh and one retry; if that fails the session is over.
const STORE_KEY = "appliance.session";

export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || (status === 0 ? "network" : "internal");
    this.field = error.field ?? null;
    this.problems = error.problems ?? null;
    this.retryAfter = error.retry_after ?? null;
    this.phrase = error.phrase ?? null;  // the message by code, for said() (i18n.js)
  }
}

class Session extends EventTarget {
  constructor() {
    super();
    this.data = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    this.refreshing = null;
    this.timer = null;
  }

  get user() { return this.data?.username ?? null; }
  get role() { return this.data?.role ?? null; }
  get token() { return this.data?.access ?? null; }

  /** A token pair from login, setup or refresh becomes the session. */
  adopt(pair) {
    const now = Date.now() / 1000;
    this.data = { username: pair.username, role: pair.role, access: pair.access_token,
      refresh: pair.refresh_token, expiresAt: now + pair.expires_in, refreshExpiresAt: now + pair.refresh_expires_in };
    sessionStorage.setItem(STORE_KEY, JSON.stringify(this.data));
    this.schedule();
    this.dispatchEvent(new Event("token"));
  }

  /** Refresh when 80% of the access token's life is gone (at once if that is past). */
  schedule() {
    clearTimeout(this.timer);
    if (!this.data) return;
    const now = Date.now() / 1000;
    const lifetime = this.data.expiresAt - now;
    const wait = Math.max(0, lifetime * 0.8 - (lifetime > 60 ? 0 : 5));
    this.timer = setTimeout(() => this.refresh().catch(() => {}), wait * 1000);
  }

  /** One refresh at a time; its promise is shared by whoever needs a fresh token meanwhile. */
  refresh() {
    if (!this.data) return Promise.reject(new ApiError(401, null));
    this.refreshing ??= send("POST", "/api/v1/auth/refresh", { refresh_token: this.data.refresh }, null)
      .then((pair) => this.adopt(pair))
      .catch((error) => {
        if (error.status === 401 || error.status === 400) this.end("expired");
        throw error;
      })
      .finally(() => { this.refreshing = null; });
    return this.refreshing;
  }

  async logout() {
    const data = this.data;
    if (data) {
      await send("POST", "/api/v1/auth/logout", { refresh_token: data.refresh }, data.access).catch(() => {});
    }
    this.end("logout");
  }

  end(why) {
    clearTimeout(this.timer);
    this.data = null;
    sessionStorage.removeItem(STORE_KEY);
    this.dispatchEvent(new CustomEvent("end", { detail: why }));
  }
}

export const session = new Session();

async function send(method, path, body, token) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let reply;
  try {
    reply = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, { error: { code: "network", message: "the box cannot be reached" } });
  }
  const data = (reply.headers.get("Content-Type") || "").includes("json") ? await reply.json() : await reply.text();
  if (!reply.ok) throw new ApiError(reply.status, data);
  return data;
}

/** Calls made before signing in: setup status, login, setup. */
export function publicApi(method, path, body) {
  return send(method, path, body, null);
}

/** A multipart upload with progress (fetch cannot report upload progress; XMLHttpRequest can); a 401
 * (a token gone stale while the tab slept) is answered by one refresh and one retry. */
export async function upload(path, form, onProgress) {
  try {
    return await uploadOnce(path, form, onProgress);
  } catch (error) {
    if (error.status !== 401 || !session.data) throw error;
    await session.refresh();
    return uploadOnce(path, form, onProgress);
  }
}

function uploadOnce(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    request.setRequestHeader("Authorization", `Bearer ${session.token}`);
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => (request.status < 300 ? resolve(request.response)
      : reject(new ApiError(request.status, request.response))));
    request.addEventListener("error", () => reject(new ApiError(0, null)));
    request.send(form);
  });
}
