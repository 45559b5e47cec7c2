// The signaling connection: one WebSocket to /ws, the signed sign-in
// (hello -> auth -> welcome), acks and errors for requests that carry an id,
// an application-level heartbeat, and reconnecting with jittered
// exponential backoff. See signal/README.md for the server's side.

import { ProtoError, decodeEnvelope, encodeEnvelope, randomID } from "./proto.js";

// Codes that end sign-in for good: retrying cannot help, a person must act.
const FATAL = new Set(["name_taken", "bad_name", "auth_failed"]);
// Codes the server sends just before it closes the connection.
const CLOSING = new Set(["replaced", "shutting_down", "rate_limited", "too_large", "unauthenticated", "internal"]);

/**
 * Signaling emits CustomEvents:
 *   "state"   detail {state: "connecting"|"online"|"waiting"|"stopped", retryAt, error}
 *   "welcome" detail {welcome, reconnect}
 *   "message" detail envelope (presence, routed messages, unrequested errors)
 *   "fatal"   detail ProtoError (the name cannot be used)
 */
export class Signaling extends EventTarget {
  constructor({ url, identity, name, agent = "parley-web", minBackoff = 500, maxBackoff = 15000, handshakeTimeout = 15000 }) {
    super();
    this.url = url;
    this.identity = identity;
    this.name = name;
    this.agent = agent.slice(0, 128);
    this.minBackoff = minBackoff;
    this.maxBackoff = maxBackoff;
    this.handshakeTimeout = handshakeTimeout;
    this.backoff = minBackoff;
    this.ws = null;
    this.ready = false;
    this.everReady = false;
    this.stopped = true;
    this.waiters = new Map(); // envelope id -> {resolve, reject, timer}
    this.queries = new Map(); // envelope id -> {resolve, reject, timer}: answered by a frame with body.ref
    this.retryTimer = 0;
    this.heartbeat = 0;
  }

  get online() {
    return this.ready && this.ws?.readyState === WebSocket.OPEN;
  }

  /** start connects (and keeps reconnecting) until stop. */
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.#connect();
  }

  /** stop closes the connection and stops reconnecting. */
  stop(error = null) {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.#teardown();
    this.#emit("state", { state: "stopped", error });
  }

  /** retryNow skips the rest of a backoff wait. */
  retryNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.retryTimer);
    this.#connect();
  }

  /**
   * send queues a frame. It returns false when not signed in. An id makes
   * the server answer with ack or error; use request to wait for that.
   */
  send(type, to, body, id) {
    if (!this.online) return false;
    try {
      this.ws.send(encodeEnvelope(type, { id, to, body }));
      return true;
    } catch (e) {
      console.warn("parley: send", type, e);
      return false;
    }
  }

  /**
   * request sends a frame with an id and resolves when the server acks it;
   * it rejects with the server's ProtoError (code "offline" when the
   * recipient is not online), or "not_signed_in" / "timeout".
   */
  request(type, to, body, { id = randomID(), timeout = 10000 } = {}) {
    return new Promise((resolve, reject) => {
      const old = this.waiters.get(id);
      if (old) {
        clearTimeout(old.timer);
        old.reject(new ProtoError("superseded", "sent again"));
      }
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new ProtoError("timeout", `no answer from the server to ${type}`));
      }, timeout);
      this.waiters.set(id, { resolve, reject, timer });
      if (!this.send(type, to, body, id)) {
        clearTimeout(timer);
        this.waiters.delete(id);
        reject(new ProtoError("not_signed_in", "not connected to the server"));
      }
    });
  }

  /**
   * query sends a frame with an id and resolves with the body of the
   * server's answer that refers to it (body.ref: a directory_page); it
   * rejects like request.
   */
  query(type, body, { timeout = 10000 } = {}) {
    const id = randomID();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.queries.delete(id);
        reject(new ProtoError("timeout", `no answer from the server to ${type}`));
      }, timeout);
      this.queries.set(id, { resolve, reject, timer });
      if (!this.send(type, "", body, id)) {
        clearTimeout(timer);
        this.queries.delete(id);
        reject(new ProtoError("not_signed_in", "not connected to the server"));
      }
    });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #connect() {
    this.#emit("state", { state: "connecting" });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.#scheduleRetry(new ProtoError("unavailable", e.message));
      return;
    }
    this.ws = ws;
    let phase = "hello";
    let closeError = null;
    const handshake = setTimeout(() => {
      closeError = new ProtoError("timeout", "the server did not complete sign-in");
      ws.close();
    }, this.handshakeTimeout);

    ws.onmessage = async (ev) => {
      if (this.ws !== ws) return;
      let env;
      try {
        env = decodeEnvelope(ev.data);
      } catch (e) {
        console.warn("parley: dropped a bad frame from the server:", e.message);
        return;
      }
      if (phase === "hello") {
        if (env.type !== "hello") {
          closeError = new ProtoError("bad_frame", `expected hello, got ${env.type}`);
          ws.close();
          return;
        }
        phase = "auth";
        try {
          // name, key, signature, and the bound encryption key (identity.js)
          const fields = await this.identity.authFields(env.body.challenge, this.name);
          if (this.ws !== ws) return;
          ws.send(encodeEnvelope("auth", { id: "auth", body: { ...fields, agent: this.agent } }));
        } catch (e) {
          closeError = new ProtoError("auth_failed", `could not sign in: ${e.message}`);
          ws.close();
        }
        return;
      }
      if (phase === "auth") {
        if (env.type === "welcome") {
          phase = "ready";
          clearTimeout(handshake);
          this.ready = true;
          this.backoff = this.minBackoff;
          const reconnect = this.everReady;
          this.everReady = true;
          this.#startHeartbeat(env.body.heartbeat_seconds);
          this.#emit("state", { state: "online" });
          this.#emit("welcome", { welcome: env.body, reconnect });
        } else if (env.type === "error") {
          closeError = new ProtoError(env.body.code, env.body.message);
        }
        return;
      }
      this.#dispatch(env, (e) => (closeError = e));
    };

    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      clearTimeout(handshake);
      const err = closeError || (ev.reason ? new ProtoError(ev.reason, "") : null);
      this.#teardown();
      if (this.stopped) return;
      if (err && FATAL.has(err.code)) {
        this.stopped = true;
        this.#emit("state", { state: "stopped", error: err });
        this.#emit("fatal", err);
        return;
      }
      if (err && err.code === "replaced") {
        // Another tab or device signed in with this name: reconnecting
        // here would push it out in turn, so wait for the person.
        this.stopped = true;
        this.#emit("state", { state: "stopped", error: err });
        return;
      }
      this.#scheduleRetry(err || new ProtoError("connection_lost", ""));
    };
    ws.onerror = () => {
      // onclose follows and decides what to do.
    };
  }

  #dispatch(env, setCloseError) {
    if (env.type === "ack") {
      const w = this.waiters.get(env.body.ref);
      if (w) {
        this.waiters.delete(env.body.ref);
        clearTimeout(w.timer);
        w.resolve();
      }
      return;
    }
    const q = env.type === "directory_page" && env.body.ref && this.queries.get(env.body.ref);
    if (q) {
      this.queries.delete(env.body.ref);
      clearTimeout(q.timer);
      q.resolve(env.body);
      return;
    }
    if (env.type === "error") {
      const e = new ProtoError(env.body.code, env.body.message, env.body.ref);
      const w = e.ref && (this.waiters.get(e.ref) || this.queries.get(e.ref));
      if (w) {
        this.waiters.delete(e.ref);
        this.queries.delete(e.ref);
        clearTimeout(w.timer);
        w.reject(e);
        return;
      }
      if (!e.ref && CLOSING.has(e.code)) setCloseError(e); // the reason for the close that follows
    }
    this.#emit("message", env);
  }

  #startHeartbeat(seconds) {
    clearInterval(this.heartbeat);
    const every = Math.min(Math.max(Number(seconds) || 20, 5), 60) * 1000;
    this.heartbeat = setInterval(() => {
      this.request("ping", "", undefined, { timeout: 10000 }).catch((e) => {
        if (e.code === "timeout" && this.ws) {
          console.warn("parley: server stopped answering; reconnecting");
          this.ws.close();
          this.ws.onclose?.({ reason: "" });
        }
      });
    }, every);
  }

  #teardown() {
    clearInterval(this.heartbeat);
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
    }
    for (const m of [this.waiters, this.queries]) {
      for (const [id, w] of m) {
        clearTimeout(w.timer);
        w.reject(new ProtoError("not_signed_in", "disconnected from the server"));
        m.delete(id);
      }
    }
  }

  #scheduleRetry(error) {
    const wait = Math.round(this.backoff / 2 + Math.random() * (this.backoff / 2));
    this.backoff = Math.min(this.backoff * 2, this.maxBackoff);
    const retryAt = Date.now() + wait;
    this.#emit("state", { state: "waiting", retryAt, error });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (!this.stopped && !this.ws) this.#connect();
    }, wait);
  }
}
