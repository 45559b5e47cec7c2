// Chat: messages over the link's data channel when it is open, through the
// server otherwise — always sealed end to end to the recipient (sealed.js),
// so the server never reads what people say (client/chat.go is the
// reference). Every message has a sender-chosen id; the receiver shows it
// once per id and always answers with a "delivered" receipt (one that
// refuses it says why, e.g. cannot_open). A message with no receipt after
// resendAfter is sent again through the server, so it arrives even when
// the data channel silently dies. Through the server it is "stored" (✓)
// when the server has it, online recipient or not, and "delivered" (✓✓)
// when the recipient's receipt comes back as sealed_receipt, however much
// later.

import { pins } from "./identity.js";
import { checkText, randomID } from "./proto.js";
import { open, seal } from "./sealed.js";

const RANK = { sending: 0, sent: 1, stored: 1.5, delivered: 2 };
// Errors after which a sealed message is tried again (by tick or reconnect).
const TRANSIENT = new Set(["not_signed_in", "timeout", "superseded", "internal"]);
const MAX_SEEN = 4096; // ids remembered per peer for duplicate suppression

/** refusedWords says why a recipient refused a message (proto.Receipt.Refused). */
function refusedWords(peer, code) {
  if (code === "not_accepted") return `not delivered: ${peer} takes messages from contacts only`;
  if (code === "cannot_open") return `not delivered: ${peer} could not open it`;
  return `not delivered: refused by ${peer} (${code})`;
}

/**
 * Chat keeps conversations and emits "change" (detail {peer}) whenever
 * one changes. A message is
 *   {id, peer, dir: "in"|"out"|"note", text, ts,
 *    status: "sending"|"sent"|"stored"|"delivered"|"failed"|"received"|"note",
 *    path: "direct"|"server", error}
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

  /**
   * #transmit sends m on its one route: the open data channel (unless it
   * gave no receipt in time: viaServer), else sealed through the server.
   */
  #transmit(m, viaServer) {
    m.lastSent = Date.now();
    m.sends++;
    if (m.sealed) {
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
    if (!this.canSeal(m.peer)) {
      // No encryption key for the peer yet (presence brings it): the
      // message waits; it never goes through the server in the clear.
      m.error = `waiting for ${m.peer}’s encryption key`;
      this.#changed(m.peer);
      return;
    }
    this.#sendSealed(m);
  }

  /**
   * #sendSealed seals m to its peer (once; a resend reuses the sealed body,
   * which the server stores once per id) and hands it to the server, which
   * passes it on now or keeps it until the peer signs in. Stored: no more
   * resends; the receipt comes as sealed_receipt.
   */
  async #sendSealed(m) {
    if (m.sealing) return;
    m.sealing = true;
    m.sealed = true;
    m.error = "";
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
      this.#advance(m, "stored", "server");
    } catch (e) {
      if (this.pending.get(m.id) !== m) return;
      if (e.code === "over_budget") {
        m.error = `${m.peer}’s mailbox is full; the message waits and is sent again`;
        m.sends = 0; // held, never dropped
        this.#changed(m.peer);
      } else if (!TRANSIENT.has(e.code)) {
        this.#fail(m, `the message could not be handed to the server for ${m.peer}: ${e.message || e.code}`);
      }
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
      this.#receipt(link.peer, msg.id, "direct", msg.code);
    }
  }

  /** onServer handles receipts routed through the server (chat comes sealed: onSealed). */
  onServer(env) {
    if (env.type === "delivered") this.#receipt(env.from, env.body.id, "server", env.body.refused);
  }

  /**
   * onSealed handles a message sealed end to end for us while we were
   * offline (proto.Sealed). Messages are opened one at a time, in the
   * order the server sent them; each is shown once per id, and the
   * receipt goes back after it is shown (so the sender's ✓✓ means it is on
   * screen). One sealed with a key we do not trust for its sender gets a
   * note and no receipt: it stays with the server until that is settled.
   * One that does not open can never be opened here: it gets a note and a
   * receipt refusing it (cannot_open), so the server drops it and the
   * sender learns why.
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
      this.#note(from, body.id, `${from} sent you a sealed message that could not be opened: ${e.message}.`);
      this.sig.send("delivered", from, { id: body.id, refused: "cannot_open" });
      return;
    }
    pins.pin(from, body.sender_key);
    this.#deliver(from, m.id, m.text, m.ts, "server", m.file);
    this.sig.send("delivered", from, { id: m.id });
  }

  /** onSealedReceipt: our sealed message reached its recipient (sealed_receipt, from = recipient). */
  onSealedReceipt(env) {
    this.#receipt(env.from, env.body.id, "server", env.body.refused);
  }

  #note(from, id, text) {
    if (!this.#firstTime(from, "note:" + id)) return;
    this.#list(from).push({ id, peer: from, dir: "note", text, ts: Date.now(), status: "note", path: "server", error: "" });
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

  #receipt(from, id, path, refused = "") {
    const m = this.outgoing.get(id);
    if (!m || m.peer !== from || m.status === "delivered") return;
    if (refused) {
      this.#fail(m, refusedWords(from, refused));
      return;
    }
    this.pending.delete(id);
    m.status = "delivered";
    m.error = "";
    if (!m.path) m.path = path;
    this.#changed(from);
  }
}
