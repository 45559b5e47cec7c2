// Chat: messages over the link's data channel when it is open, through the
// server otherwise (client/chat.go is the reference). Every message has a
// sender-chosen id; the receiver shows it once per id and always answers
// with a "delivered" receipt. A message with no receipt after resendAfter is
// sent again through the server, so it arrives even when the data channel
// silently dies. A message for someone offline is sealed end to end
// (sealed.js) and left with the server: "stored" (✓) when the server has
// it, "delivered" (✓✓) when the recipient's receipt comes back as
// sealed_receipt, however much later.

import { pins } from "./identity.js";
import { checkText, randomID } from "./proto.js";
import { open, seal } from "./sealed.js";

const RANK = { sending: 0, sent: 1, stored: 1.5, delivered: 2 };
// Errors after which a sealed message is tried again (by tick or reconnect).
const TRANSIENT = new Set(["not_signed_in", "timeout", "superseded", "internal"]);
const MAX_SEEN = 4096; // ids remembered per peer for duplicate suppression

/**
 * Chat keeps conversations and emits "change" (detail {peer}) whenever
 * one changes. A message is
 *   {id, peer, dir: "in"|"out"|"note", text, ts,
 *    status: "sending"|"sent"|"stored"|"delivered"|"failed"|"received"|"note",
 *    path: "direct"|"server"|"offline", error}
 * peers(name) returns what presence says of name: {status, publicKey, encKey, encSig}.
 */
export class Chat extends EventTarget {
  constructor({ sig, links, identity = null, peers = () => undefined, resendAfter = 3000, maxSends = 20 }) {
    super();
    this.sig = sig;
    this.links = links;
    this.identity = identity;
    this.peers = peers;
    this.opening = Promise.resolve(); // sealed messages are opened one at a time, in order
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

  /**
   * send queues text for peer and returns the message; it throws on bad
   * text. A file offer (files.js) passes its transfer id and file.
   */
  send(peer, text, { id = randomID(), file = null } = {}) {
    const bad = checkText(text);
    if (bad) throw new Error(bad);
    const m = { id, peer, dir: "out", text, ts: Date.now(), status: "sending", path: "", sends: 0, lastSent: 0, error: "", file };
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
    m.sealed = false; // decided afresh: the peer may be online by now
    m.sealedBody = null;
    this.pending.set(m.id, m);
    this.#transmit(m, false);
    this.#changed(m.peer);
  }

  /**
   * canSeal reports whether a message to peer can be sealed: this browser
   * has an encryption key and presence told us peer's.
   */
  canSeal(peer) {
    const p = this.peers(peer);
    return !!(this.identity?.encKeyPair && p?.encKey && p?.publicKey);
  }

  #offline(peer) {
    return this.peers(peer)?.status === "offline";
  }

  #transmit(m, viaServer) {
    m.lastSent = Date.now();
    m.sends++;
    if (m.sealed || (this.#offline(m.peer) && this.canSeal(m.peer))) {
      this.#sendSealed(m);
      return;
    }
    const l = this.links.get(m.peer);
    if (!viaServer && l?.dcOpen) {
      try {
        l.dc.send(JSON.stringify({ type: "chat", id: m.id, text: m.text, ts: m.ts, ...(m.file ? { file: m.file } : {}) }));
        this.#advance(m, "sent", "direct");
        return;
      } catch (e) {
        console.debug("parley: data channel send failed; using the server", e.message);
      }
    }
    if (!this.sig.online) return; // sent again on reconnect
    this.sig.request("chat", m.peer, { id: m.id, text: m.text, ts: m.ts, ...(m.file ? { file: m.file } : {}) }, { id: m.id }).then(
      () => this.#advance(m, "sent", "server"),
      (e) => {
        if (this.pending.get(m.id) !== m) return;
        if (e.code === "offline") {
          if (this.canSeal(m.peer)) this.#sendSealed(m); // left with the server, sealed
          else this.#fail(m, `${m.peer} is offline; not delivered`);
        } else if (e.code === "rate_limited" || e.code === "too_large" || e.code === "bad_request") {
          this.#fail(m, e.message || e.code);
        }
        // not_signed_in, timeout, superseded: the resend timer or reconnect retries.
      },
    );
  }

  /**
   * #sendSealed seals m to its offline peer (once; a resend reuses the
   * sealed body, which the server stores once per id) and leaves it with
   * the server. Stored: no more resends; the receipt comes as sealed_receipt.
   */
  async #sendSealed(m) {
    if (m.sealing) return;
    m.sealing = true;
    m.sealed = true;
    try {
      if (!m.sealedBody) {
        const p = this.peers(m.peer) ?? {};
        const pinned = pins.get(m.peer);
        if (pinned && p.publicKey && pinned !== p.publicKey) {
          this.#fail(m, `${m.peer}’s identity key is not the one this browser first saw for them, so the message was not sealed to it`);
          return;
        }
        m.sealedBody = await seal(this.identity, this.sig.name, { name: m.peer, key: pinned || p.publicKey, encKey: p.encKey, encSig: p.encSig }, m); // with m.file, if any
      }
      if (this.pending.get(m.id) !== m || !this.sig.online) return; // sent again on reconnect
      await this.sig.request("sealed", m.peer, m.sealedBody, { id: m.id });
      if (this.pending.get(m.id) !== m) return;
      this.pending.delete(m.id);
      this.#advance(m, "stored", "offline");
    } catch (e) {
      if (this.pending.get(m.id) !== m) return;
      if (!TRANSIENT.has(e.code)) this.#fail(m, `${m.peer} is offline and the message could not be left for them: ${e.message || e.code}`);
    } finally {
      m.sealing = false;
    }
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
    if (msg.type === "file") {
      this.onFileControl?.(link.peer, msg); // files.js
    } else if (msg.type === "chat") {
      this.#deliver(link.peer, msg.id, msg.text, msg.ts, "direct", msg.file);
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
      this.#deliver(env.from, env.body.id, env.body.text, env.body.ts, "server", env.body.file);
      this.sig.send("delivered", env.from, { id: env.body.id });
    } else if (env.type === "delivered") {
      this.#receipt(env.from, env.body.id, "server");
    }
  }

  /**
   * onSealed handles a message sealed end to end for us while we were
   * offline (proto.Sealed). Messages are opened one at a time, in the
   * order the server sent them; each is shown once per id, and the
   * receipt goes back after it is shown (so the sender's ✓✓ means it is on
   * screen). One that is sealed with a key we do not trust for its sender,
   * or that does not open, gets a note in the conversation and no receipt:
   * it stays with the server.
   */
  onSealed(env) {
    const next = this.opening.then(() => this.#openSealed(env));
    this.opening = next.catch((e) => console.warn("parley: sealed message", e));
    return next;
  }

  async #openSealed(env) {
    const from = env.from;
    const body = env.body;
    const pinned = pins.get(from);
    if (pinned && pinned !== body.sender_key) {
      this.#note(from, body.id, `${from} left you a sealed message, but it is signed with a key that is not the one this browser first saw for ${from}. It was not opened.`);
      return;
    }
    let m;
    try {
      m = await open(this.identity, this.sig.name, from, body);
    } catch (e) {
      this.#note(from, body.id, `${from} left you a sealed message that could not be opened: ${e.message}.`);
      return;
    }
    pins.pin(from, body.sender_key);
    this.#deliver(from, m.id, m.text, m.ts, "offline", m.file);
    this.sig.send("delivered", from, { id: m.id });
  }

  /** onSealedReceipt: our sealed message reached its recipient (sealed_receipt, from = recipient). */
  onSealedReceipt(env) {
    this.#receipt(env.from, env.body.id, "offline");
  }

  #note(from, id, text) {
    if (!this.#firstTime(from, "note:" + id)) return;
    this.#list(from).push({ id, peer: from, dir: "note", text, ts: Date.now(), status: "note", path: "offline", error: "" });
    this.#bump(from);
    this.#changed(from);
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

  #deliver(from, id, text, ts, path, file = null) {
    if (!this.#firstTime(from, id)) return false;
    const t = Number.isFinite(ts) && ts > 0 ? ts : Date.now();
    this.#list(from).push({ id, peer: from, dir: "in", text, ts: t, status: "received", path, error: "", file: file ?? null });
    if (file) this.onFileOffer?.(from, id, file); // files.js
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
