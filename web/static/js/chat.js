// Chat: messages over the link's data channel when it is open, through the
// server otherwise (client/chat.go is the reference). Every message has a
// sender-chosen id; the receiver shows it once per id and always answers
// with a "delivered" receipt. A message with no receipt after resendAfter is
// sent again through the server, so it arrives even when the data channel
// silently dies.

import { checkText, randomID } from "./proto.js";

const RANK = { sending: 0, sent: 1, delivered: 2 };
const MAX_SEEN = 4096; // ids remembered per peer for duplicate suppression

/**
 * Chat keeps conversations and emits "change" (detail {peer}) whenever
 * one changes. A message is
 *   {id, peer, dir: "in"|"out", text, ts, status: "sending"|"sent"|"delivered"|"failed"|"received",
 *    path: "direct"|"server", error}
 */
export class Chat extends EventTarget {
  constructor({ sig, links, resendAfter = 3000, maxSends = 20 }) {
    super();
    this.sig = sig;
    this.links = links;
    this.resendAfter = resendAfter;
    this.maxSends = maxSends;
    this.conversations = new Map(); // peer -> messages, oldest first
    this.pending = new Map(); // id -> outgoing message awaiting its receipt
    this.outgoing = new Map(); // id -> every message we sent (a late receipt still counts)
    this.seen = new Map(); // peer -> {set, queue}
    this.unread = new Map(); // peer -> count
    this.openPeer = "";
  }

  #changed(peer) {
    this.dispatchEvent(new CustomEvent("change", { detail: { peer } }));
  }

  #list(peer) {
    let l = this.conversations.get(peer);
    if (!l) {
      l = [];
      this.conversations.set(peer, l);
    }
    return l;
  }

  /** messages returns the conversation with peer. */
  messages(peer) {
    return this.conversations.get(peer) ?? [];
  }

  /** setOpen marks peer's conversation as the one on screen (and read). */
  setOpen(peer) {
    this.openPeer = peer;
    if (this.unread.delete(peer)) this.#changed(peer);
  }

  /** send queues text for peer and returns the message; it throws on bad text. */
  send(peer, text) {
    const bad = checkText(text);
    if (bad) throw new Error(bad);
    const m = { id: randomID(), peer, dir: "out", text, ts: Date.now(), status: "sending", path: "", sends: 0, lastSent: 0, error: "" };
    this.#list(peer).push(m);
    this.outgoing.set(m.id, m);
    this.pending.set(m.id, m);
    this.#transmit(m, false);
    this.#changed(peer);
    return m;
  }

  /** retry sends a failed message again. */
  retry(id) {
    const m = this.outgoing.get(id);
    if (!m || m.status !== "failed") return;
    m.status = "sending";
    m.error = "";
    m.sends = 0;
    this.pending.set(m.id, m);
    this.#transmit(m, false);
    this.#changed(m.peer);
  }

  #transmit(m, viaServer) {
    m.lastSent = Date.now();
    m.sends++;
    const l = this.links.get(m.peer);
    if (!viaServer && l?.dcOpen) {
      try {
        l.dc.send(JSON.stringify({ type: "chat", id: m.id, text: m.text, ts: m.ts }));
        this.#advance(m, "sent", "direct");
        return;
      } catch (e) {
        console.debug("parley: data channel send failed; using the server", e.message);
      }
    }
    if (!this.sig.online) return; // sent again on reconnect
    this.sig.request("chat", m.peer, { id: m.id, text: m.text, ts: m.ts }, { id: m.id }).then(
      () => this.#advance(m, "sent", "server"),
      (e) => {
        if (this.pending.get(m.id) !== m) return;
        if (e.code === "offline") {
          this.#fail(m, `${m.peer} is offline; not delivered`);
        } else if (e.code === "rate_limited" || e.code === "too_large" || e.code === "bad_request") {
          this.#fail(m, e.message || e.code);
        }
        // not_signed_in, timeout, superseded: the resend timer or reconnect retries.
      },
    );
  }

  #advance(m, status, path) {
    if (m.status === "failed" || RANK[status] <= RANK[m.status]) return;
    m.status = status;
    if (path) m.path = path;
    this.#changed(m.peer);
  }

  #fail(m, why) {
    this.pending.delete(m.id);
    m.status = "failed";
    m.error = why;
    this.#changed(m.peer);
  }

  /** tick resends messages whose receipt is overdue, through the server. */
  tick(now = Date.now()) {
    for (const m of this.pending.values()) {
      if (now - m.lastSent < this.resendAfter) continue;
      if (m.sends >= this.maxSends) {
        this.#fail(m, `no receipt from ${m.peer}`);
        continue;
      }
      this.#transmit(m, true);
    }
  }

  /** onOpen sends what is pending for the link's peer over its new data channel. */
  onOpen(link) {
    for (const m of this.pending.values()) if (m.peer === link.peer) this.#transmit(m, false);
  }

  /** onReconnect resends everything pending through the server. */
  onReconnect() {
    for (const m of this.pending.values()) this.#transmit(m, true);
  }

  /** onDCMessage handles a data-channel message from link's peer. */
  onDCMessage(link, msg) {
    if (msg.type === "chat") {
      this.#deliver(link.peer, msg.id, msg.text, msg.ts, "direct");
      let ok = false;
      try {
        link.dc.send(JSON.stringify({ type: "delivered", id: msg.id }));
        ok = true;
      } catch {
        // fall through to the server
      }
      if (!ok) this.sig.send("delivered", link.peer, { id: msg.id });
    } else if (msg.type === "delivered") {
      this.#receipt(link.peer, msg.id, "direct");
    }
  }

  /** onServer handles chat and receipts routed through the server. */
  onServer(env) {
    if (env.type === "chat") {
      this.#deliver(env.from, env.body.id, env.body.text, env.body.ts, "server");
      this.sig.send("delivered", env.from, { id: env.body.id });
    } else if (env.type === "delivered") {
      this.#receipt(env.from, env.body.id, "server");
    }
  }

  /**
   * onSealed handles an offline message sealed end to end (proto.Sealed,
   * NaCl box to keys derived from the Ed25519 identity). This page keeps
   * its private key non-extractable, so it cannot derive the key to open
   * one: it says so in the conversation, once per message, and sends no
   * receipt (the sender must not think it was read).
   */
  onSealed(env) {
    if (!this.#firstTime(env.from, "sealed:" + env.body.id)) return;
    const text = `${env.from} left you an encrypted message while you were offline. This browser can’t open offline messages yet — ask ${env.from} to send it again now that you’re online.`;
    this.#list(env.from).push({ id: env.body.id, peer: env.from, dir: "note", text, ts: Date.now(), status: "note", path: "server", error: "" });
    this.#bump(env.from);
    this.#changed(env.from);
  }

  #firstTime(from, id) {
    let s = this.seen.get(from);
    if (!s) {
      s = { set: new Set(), queue: [] };
      this.seen.set(from, s);
    }
    if (s.set.has(id)) return false;
    s.set.add(id);
    s.queue.push(id);
    if (s.queue.length > MAX_SEEN) s.set.delete(s.queue.shift());
    return true;
  }

  #bump(from) {
    if (from !== this.openPeer || document.hidden) this.unread.set(from, (this.unread.get(from) ?? 0) + 1);
  }

  #deliver(from, id, text, ts, path) {
    if (!this.#firstTime(from, id)) return false;
    const t = Number.isFinite(ts) && ts > 0 ? ts : Date.now();
    this.#list(from).push({ id, peer: from, dir: "in", text, ts: t, status: "received", path, error: "" });
    this.#bump(from);
    this.#changed(from);
    return true;
  }

  #receipt(from, id, path) {
    const m = this.outgoing.get(id);
    if (!m || m.peer !== from || m.status === "delivered") return;
    this.pending.delete(id);
    m.status = "delivered";
    m.error = "";
    if (!m.path) m.path = path;
    this.#changed(from);
  }
}
