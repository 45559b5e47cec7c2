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
//
// Kept (store.js, IndexedDB): every message, in and out, so a reload loses
// nothing; what we sent without a receipt yet (the outbox), sent again
// after a reload under the same id and number; and a received message is
// stored before its receipt goes back. Order: our messages to each peer
// are numbered from 1 (seq, persisted); the receiver takes a peer's
// messages in that order, holding a later one up to GAP_WAIT for an
// earlier one still on its way (client/chat.go does the same).

import { pins } from "./identity.js";
import { checkText, randomID, validDisplayName } from "./proto.js";
import { open, seal } from "./sealed.js";
import { MemoryStore } from "./store.js";

/** GAP_WAIT is how long a message waits for an earlier one of its sender. */
export const GAP_WAIT = 5000;

const RANK = { sending: 0, sent: 1, stored: 1.5, delivered: 2, read: 3 };
const TYPING_SHOWN = 6000; // a typing indicator with no news fades after this
const TYPING_EVERY = 3000; // we say we type at most this often
// Errors after which a sealed message is tried again (by tick or reconnect).
const TRANSIENT = new Set(["not_signed_in", "timeout", "superseded", "internal"]);
const MAX_NOTES = 4096; // note ids remembered per peer (messages are deduplicated by the store)

/** refusedWords says why a recipient refused a message (proto.Receipt.Refused). */
function refusedWords(peer, code) {
  if (code === "not_accepted") return `not delivered: ${peer} does not accept messages from you`; // contacts only, or blocked
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
  constructor({ sig, links, identity = null, peers = () => undefined, resendAfter = 3000, maxSends = 20, store = new MemoryStore(), accept = () => true }) {
    super();
    this.store = store;
    this.accept = accept; // (peer) => false refuses their messages (not_accepted)
    this.taking = Promise.resolve(); // received messages are taken one at a time, in order
    this.recv = new Map(); // peer -> {next, held: Map(seq -> {m, path, ack}), gapSince}
    this.lastN = 0; // order of messages on this page (persisted as n)
    this.typingUntil = new Map(); // peer -> until when they are shown typing
    this.typingSent = new Map(); // peer -> when we last said we type (0: not typing)
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
    this.display = ""; // our display name, sent with each message (proto.Chat.Display)
  }

  /**
   * load brings back the history, and the outbox to send again, from the
   * store (before signing in).
   */
  async load() {
    const rows = await this.store.history();
    for (const r of rows) {
      const m = { ...r, sends: 0, lastSent: 0, file: r.file ?? null };
      this.lastN = Math.max(this.lastN, m.n || 0);
      this.#list(m.peer).push(m);
      if (m.dir === "out") this.outgoing.set(m.id, m);
    }
    for (const o of await this.store.unsent()) {
      let m = this.outgoing.get(o.id);
      if (!m) {
        m = { ...o, dir: "out", status: "sending", path: "", error: "", file: null, sends: 0, lastSent: 0 };
        this.#list(m.peer).push(m);
        this.outgoing.set(m.id, m);
      }
      if (m.status === "delivered") {
        this.store.finish(m.id).catch(() => {});
        continue;
      }
      if (m.status === "failed") continue; // the person decides (Retry)
      m.status = m.status === "stored" ? "stored" : "sending";
      m.queued = Promise.resolve();
      this.pending.set(m.id, m); // sent once signed in (onReconnect)
    }
    for (const peer of this.conversations.keys()) this.#changed(peer);
  }

  #n() {
    this.lastN = Math.max(this.lastN + 1, Date.now());
    return this.lastN;
  }

  #persist(m) {
    if (m.dir === "out" || m.dir === "in") this.store.update(m).catch((e) => console.warn("parley: history:", e?.message ?? e));
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

  /**
   * logCall puts a call in peer's conversation (and the history): a line
   * such as "Outgoing voice call · 0:22" or "Missed call"; a missed one
   * counts as unread.
   */
  logCall(peer, { id, text, missed = false }) {
    const m = { id: "call:" + id, peer, dir: "call", text, ts: Date.now(), n: this.#n(), status: missed ? "missed" : "call", path: "", error: "" };
    this.#list(peer).push(m);
    this.store.update(m).catch((e) => console.warn("parley: history:", e?.message ?? e));
    if (missed) this.#bump(peer);
    this.#changed(peer);
  }

  /** isContact: we have written to peer, or taken a message from them. */
  isContact(peer) {
    return (this.conversations.get(peer) ?? []).some((m) => m.dir === "out" || m.dir === "in");
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
    const m = { id, peer, dir: "out", text, ts: Date.now(), n: this.#n(), seq: 0, status: "sending", path: "", sends: 0, lastSent: 0, error: "", file };
    this.#list(peer).push(m);
    this.outgoing.set(m.id, m);
    this.pending.set(m.id, m);
    // Numbered and in the outbox (durable) before it goes anywhere.
    m.queued = this.store.queue(m).then(
      () => this.pending.get(m.id) === m && this.#transmit(m, false),
      (e) => this.#fail(m, `the message could not be kept for sending: ${e?.message ?? e}`),
    );
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
    m.queued = (m.file ? Promise.resolve() : this.store.requeue(m)).then(() => this.pending.get(m.id) === m && this.#transmit(m, false));
    this.#persist(m);
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
    if (!m.seq && !m.file && m.queued) return; // still being numbered: sent when queued
    m.lastSent = Date.now();
    m.sends++;
    if (m.sealed) {
      this.#sendSealed(m);
      return;
    }
    const l = this.links.get(m.peer);
    if (!viaServer && l?.dcOpen) {
      try {
        l.dc.send(JSON.stringify({ type: "chat", id: m.id, text: m.text, ts: m.ts, ...(m.seq ? { seq: m.seq } : {}), ...(m.file ? { file: m.file } : {}), ...(this.display ? { display: this.display } : {}) }));
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
        m.sealedBody = await seal(this.identity, this.sig.name, { name: m.peer, key: pinned || p.publicKey, encKey: p.encKey, encSig: p.encSig }, { ...m, display: this.display }); // with m.file, if any
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
    this.#persist(m);
    this.#changed(m.peer);
  }

  #fail(m, why) {
    this.pending.delete(m.id);
    m.status = "failed";
    m.error = why;
    this.store.finish(m.id).catch(() => {});
    this.#persist(m);
    this.#changed(m.peer);
  }

  /** tick resends messages whose receipt is overdue, through the server. */
  tick(now = Date.now()) {
    for (const [from, r] of this.recv) {
      if (r.held.size && now - r.gapSince >= GAP_WAIT) this.#enqueue(() => this.#skipGap(from, r, now));
    }
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
      const ack = (refused) => {
        const r = { type: "delivered", id: msg.id, ...(refused ? { code: refused } : {}) };
        try {
          link.dc.send(JSON.stringify(r));
          return;
        } catch {
          // fall through to the server
        }
        this.sig.send("delivered", link.peer, { id: msg.id, ...(refused ? { refused } : {}) });
      };
      return this.receive(link.peer, { id: msg.id, text: msg.text, ts: msg.ts, seq: msg.seq, file: msg.file, display: msg.display }, "direct", ack);
    } else if (msg.type === "read") {
      this.#read(link.peer, msg.id);
    } else if (msg.type === "typing") {
      this.#typing(link.peer, msg.typing === true);
    } else if (msg.type === "delivered") {
      this.#receipt(link.peer, msg.id, "direct", msg.code);
    }
  }

  /** onServer handles receipts routed through the server (chat comes sealed: onSealed). */
  onServer(env) {
    if (env.type === "delivered") this.#receipt(env.from, env.body.id, "server", env.body.refused);
    else if (env.type === "read") this.#read(env.from, env.body.id);
    else if (env.type === "typing") this.#typing(env.from, env.body.typing === true);
  }

  /** #read: peer read our message id (✓✓ read). Ids we never sent them are dropped. */
  #read(from, id) {
    const m = this.outgoing.get(id);
    if (!m || m.peer !== from || m.status === "failed" || m.status === "read") return;
    if (m.status !== "delivered") this.pending.delete(id); // a read receipt implies delivery
    m.status = "read";
    m.error = "";
    this.store.finish(id).catch(() => {});
    this.#persist(m);
    this.#changed(from);
  }

  /** #typing: peer says it types (or stopped); shown for TYPING_SHOWN at most. */
  #typing(from, on) {
    if (!this.accept(from)) return;
    const until = on ? Date.now() + TYPING_SHOWN : 0;
    if (!on && !this.typingUntil.get(from)) return;
    this.typingUntil.set(from, until);
    this.#changed(from);
  }

  /** isTyping reports whether peer is typing to us now. */
  isTyping(peer, now = Date.now()) {
    return (this.typingUntil.get(peer) ?? 0) > now;
  }

  /**
   * markRead sends read receipts for what we received from peer and have
   * not reported yet (the conversation is on screen), on the data channel
   * when it is open, else through the server.
   */
  markRead(peer) {
    const unread = (this.conversations.get(peer) ?? []).filter((m) => m.dir === "in" && m.status === "received");
    if (!unread.length) return;
    const l = this.links.get(peer);
    for (const m of unread) {
      let sent = false;
      if (l?.dcOpen) {
        try {
          l.dc.send(JSON.stringify({ type: "read", id: m.id }));
          sent = true;
        } catch {
          // through the server
        }
      }
      if (!sent) sent = this.sig.send("read", peer, { id: m.id });
      if (!sent) return; // offline: next time
      m.status = "read";
      this.#persist(m);
    }
  }

  /** setTyping tells peer whether we type (at most every TYPING_EVERY while on). */
  setTyping(peer, on) {
    if (!peer) return;
    const now = Date.now();
    const last = this.typingSent.get(peer) ?? 0;
    if (on && now - last < TYPING_EVERY) return;
    if (!on && !last) return;
    this.typingSent.set(peer, on ? now : 0);
    const l = this.links.get(peer);
    if (l?.dcOpen) {
      try {
        l.dc.send(JSON.stringify({ type: "typing", typing: on }));
        return;
      } catch {
        // through the server
      }
    }
    this.sig.send("typing", peer, { typing: on });
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
    await this.receive(from, m, "server", (refused) => this.sig.send("delivered", from, { id: m.id, ...(refused ? { refused } : {}) }));
  }

  /** onSealedReceipt: our sealed message reached its recipient (sealed_receipt, from = recipient). */
  onSealedReceipt(env) {
    this.#receipt(env.from, env.body.id, "server", env.body.refused);
  }

  #note(from, id, text) {
    if (!this.#firstTime(from, "note:" + id)) return;
    this.#list(from).push({ id, peer: from, dir: "note", text, ts: Date.now(), n: this.#n(), status: "note", path: "server", error: "" });
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
    if (s.queue.length > MAX_NOTES) s.set.delete(s.queue.shift());
    return true;
  }

  #bump(from) {
    if (from !== this.openPeer || document.hidden) this.unread.set(from, (this.unread.get(from) ?? 0) + 1);
  }

  /**
   * receive takes a message from peer, whatever its route: refused when
   * accept says so; taken in the sender's order (seq), a later one held
   * (no receipt yet: the sender keeps trying) up to GAP_WAIT for an
   * earlier one; stored, then acknowledged with ack(refused), then shown
   * once. Messages are taken one at a time.
   */
  receive(from, m, path, ack) {
    return this.#enqueue(() => this.#receiveNow(from, m, path, ack));
  }

  #enqueue(fn) {
    const next = this.taking.then(fn);
    this.taking = next.catch((e) => console.warn("parley: receiving:", e));
    return this.taking;
  }

  async #recvState(from) {
    let r = this.recv.get(from);
    if (!r) {
      r = { next: 0, held: new Map(), gapSince: 0 };
      this.recv.set(from, r);
      try {
        const last = await this.store.lastSeq(from);
        if (last > 0 && !r.next) r.next = last + 1;
      } catch {
        // unknown: take what comes
      }
    }
    return r;
  }

  async #receiveNow(from, m, path, ack) {
    if (!this.accept(from)) {
      ack("not_accepted");
      this.onRefused?.(from, "message", m.id);
      return;
    }
    const r = await this.#recvState(from);
    const seq = Number.isSafeInteger(m.seq) && m.seq > 0 ? m.seq : 0;
    if (seq && r.next && seq > r.next) {
      if (!r.held.size) r.gapSince = Date.now();
      if (r.held.size < 1024 || r.held.has(seq)) r.held.set(seq, { m, path, ack });
      return;
    }
    await this.#take(from, m, path, ack);
    while (r.next && r.held.has(r.next)) {
      const h = r.held.get(r.next);
      r.held.delete(r.next);
      await this.#take(from, h.m, h.path, h.ack);
    }
    if (!r.held.size) r.gapSince = 0;
  }

  /** #skipGap takes a peer's held messages after GAP_WAIT, in order. */
  async #skipGap(from, r, now) {
    if (!r.held.size || now - r.gapSince < GAP_WAIT) return;
    const seqs = [...r.held.keys()].sort((a, b) => a - b);
    console.info("parley: taking messages from", from, "past a gap: expected", r.next, "got", seqs);
    for (const s of seqs) {
      const h = r.held.get(s);
      r.held.delete(s);
      await this.#take(from, h.m, h.path, h.ack);
    }
    r.gapSince = 0;
  }

  async #take(from, m, path, ack) {
    const r = await this.#recvState(from);
    const seq = Number.isSafeInteger(m.seq) && m.seq > 0 ? m.seq : 0;
    if (seq >= r.next) r.next = seq + 1;
    const t = Number.isFinite(m.ts) && m.ts > 0 ? m.ts : Date.now();
    const msg = { id: m.id, peer: from, dir: "in", text: m.text, ts: t, n: this.#n(), seq, status: "received", path, error: "", file: m.file ?? null };
    const display = validDisplayName(m.display); // a bad one is dropped, the message kept
    if (display) msg.display = display;
    let isNew;
    try {
      isNew = await this.store.saveIncoming(msg); // before the receipt
    } catch (e) {
      console.warn("parley: could not keep a message from", from, e);
      return; // no receipt: the sender tries again
    }
    ack("");
    if (!isNew) return; // shown before (this visit or an earlier one)
    this.#list(from).push(msg);
    this.typingUntil.delete(from);
    if (msg.file) this.onFileOffer?.(from, msg.id, msg.file); // files.js
    this.#bump(from);
    this.#changed(from);
    this.dispatchEvent(new CustomEvent("message", { detail: msg }));
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
    this.store.finish(id).catch(() => {});
    this.#persist(m);
    this.#changed(from);
  }
}
