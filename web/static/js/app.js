// The Parley call page: wires identity, signaling, links, chat and calls to
// the DOM. Protocol logic lives in the other modules; this one only renders
// state and turns clicks into calls on them.

import { Calls } from "./calls.js";
import { Chat } from "./chat.js";
import { Files, humanBytes } from "./files.js";
import { Contacts } from "./contacts.js";
import { answerWho, loadIdentity, nameInUse, pins, restoreIdentity, saveName, savedName, unsupportedReason, verified } from "./identity.js";
import { safetyNumber } from "./safety.js";
import { Links, toRTCIceServers } from "./links.js";
import { signSDP, verifySDP } from "./sdpsig.js";
import { openStore } from "./store.js";
import { checkDisplayName, checkName, normalizeName, safeFileName } from "./proto.js";
import { Signaling } from "./signaling.js";
import { QualityGraph, fmt, summarize, supernodeFor } from "./stats.js";
import { ago, callEnded, duration, serverError } from "./words.js";

const $ = (id) => document.getElementById(id);
const MIC_KEY = "parley.mic";
const RELAY_KEY = "parley.relay";
const SPEAKER_KEY = "parley.speaker";
// Per signed-in name: whom we refuse, and whether only contacts may reach us.
const BLOCKED_KEY = (name) => `parley.blocked:${name}`;
const CONTACTS_ONLY_KEY = (name) => `parley.contactsOnly:${name}`;
const DISPLAY_KEY = (name) => `parley.display:${name}`; // our display name
const DISPLAYS_KEY = (name) => `parley.displays:${name}`; // {handle: the display name they last sent}

function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("aria-") || k === "role" || k === "for") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

// syncChildren makes parent's children exactly kids, moving only what is
// out of place (a moved node would lose focus).
function syncChildren(parent, kids) {
  kids.forEach((k, i) => {
    if (parent.children[i] !== k) parent.insertBefore(k, parent.children[i] ?? null);
  });
  while (parent.children.length > kids.length) parent.lastElementChild.remove();
}

function load(key) {
  try {
    return localStorage.getItem(key) || "";
  } catch {
    return "";
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // storage disabled: the choice lasts for this visit
  }
}

function timeOf(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

const TICKS = {
  sending: ["…", "sending"],
  sent: ["✓", "sent"],
  stored: ["✓", "stored"],
  delivered: ["✓✓", "delivered"],
  read: ["✓✓", "read"],
  failed: ["!", "not delivered"],
};

class App {
  constructor() {
    this.identity = null;
    this.name = "";
    this.sig = null;
    this.links = null;
    this.chat = null;
    this.calls = null;
    this.presence = new Map(); // name -> {status, lastSeen, publicKey, encKey, encSig}
    this.unconfirmed = new Set(); // online before our reconnect, not confirmed since, link still up
    this.contacts = null; // whose presence we ask for (contacts.js)
    this.stale = new Set(); // online before a reconnect, not confirmed yet
    this.peer = "";
    this.stats = null; // last summary of the call's link
    this.graph = new QualityGraph($("graph"));
    this.sinks = new Map(); // peer -> <audio>
    this.rows = new Map(); // contact rows by "on:name" / "off:name"
    this.msgRows = new Map(); // message rows by "peer/dir/id"
    this.errors = new Map(); // words -> element
    this.timers = [];
    this.statsBusy = false;
    this.waitingUntil = 0;
    this.ringer = null;
    this.ringback = null;
    this.store = null; // this name's history (store.js)
    this.joins = 0; // join generations: a later join or sign-out wins
    this.notified = []; // the last notifications shown (console and tests)
    this.keyMode = ""; // "backup" or "restore" while the key dialog is open
    this.safetyPeer = ""; // whose safety number the dialog shows
    this.micMeter = null; // our microphone's level during a call
    this.callView = "screen"; // on a phone: "screen" (the call fills it) or "chat" (a bar above the conversation)
    this.callScreenFor = ""; // the call the view was last reset for
    this.awayAfter = 5 * 60 * 1000; // hidden this long: away
    this.awayTimer = 0;
    this.away = false;
    this.lastBackup = "";
    this.drafts = new Map(); // peer -> unsent text of that conversation
  }

  // ---- start, join, leave ----

  async boot() {
    this.#wireUI();
    const why = unsupportedReason();
    if (why) return this.#showJoin(serverError(why), true);
    try {
      this.identity = await loadIdentity();
    } catch (e) {
      return this.#showJoin(e.code === "unsupported" ? serverError("unsupported") : `Your identity key could not be loaded: ${e.message}`, true);
    }
    answerWho(() => (this.sig && !this.sig.stopped ? this.name : ""));
    const { tab, last } = savedName();
    if (tab && !checkName(tab, true)) return this.join(tab); // a reload
    if (last && !checkName(last, true)) {
      if (!(await nameInUse(last))) return this.join(last);
      // Another tab of this browser is signed in as last: offer a second name.
      this.#showJoin("");
      $("join-error").textContent = `You’re signed in as “${last}” in another tab. Pick another name to use both, or close that tab.`;
      return;
    }
    this.#showJoin("");
  }

  #showJoin(error, disabled = false) {
    $("app-view").hidden = true;
    $("join-view").hidden = false;
    $("join-error").textContent = error;
    $("join").disabled = disabled;
    $("name-input").disabled = disabled;
    document.title = "Parley";
    if (!disabled) $("name-input").focus();
  }

  async join(name) {
    this.#teardown();
    const gen = ++this.joins;
    // The history of this name on this browser (IndexedDB), opened before
    // anything can arrive: a message is kept before its receipt goes back.
    const store = await openStore(name);
    if (gen !== this.joins) return store.close(); // another join or a sign-out came first
    this.store = store;
    this.name = name;
    $("me-name").textContent = name;
    $("join-view").hidden = true;
    $("app-view").hidden = false;
    this.#setConn("connecting", "Connecting…");

    const sig = new Signaling({ url: wsURL(), identity: this.identity, name, agent: `parley-web/1 ${navigator.userAgent}` });
    this.sig = sig;
    this.contacts = new Contacts({ sig, me: name });
    this.links = new Links({
      me: name,
      send: (type, to, body) => sig.send(type, to, body),
      canSignal: () => sig.online,
      sign: (type, to, body) => signSDP(this.identity, type, name, to, body),
      // The key we trust for a peer: pinned on first contact, else presence's.
      verify: (type, from, body) => verifySDP(pins.get(from) || this.presence.get(from)?.publicKey || "", type, from, name, body),
      iceServers: () => this.iceServers,
      rtcConfig: () => (this.relayOnly ? { iceTransportPolicy: "relay" } : {}),
      hooks: {
        onState: (l) => {
          this.calls.onLinkState(l);
          this.#renderContacts();
        },
        onOpen: (l) => {
          this.chat.onOpen(l);
          this.files.onLinkOpen(l);
        },
        onMessage: (l, m) => (m.type === "mute" ? this.calls.onRemoteMute(l.peer, m.muted === true) : this.chat.onDCMessage(l, m)),
        onTrack: (l, stream) => this.#attachAudio(l.peer, stream),
        onDataChannel: (l, dc) => this.files.onDataChannel(l, dc),
        onInsecure: (peer, why) => {
          this.calls.onInsecure?.(peer, why);
          this.showError(`Security: ${why}. Someone between you and ${peer} (the server?) may be trying to listen in; the connection was refused.`, true);
        },
        onClosed: (l, reason) => {
          this.calls.onLinkClosed(l, reason);
          if (!this.links.get(l.peer)) {
            this.#detachAudio(l.peer);
            // Left "unknown" at our reconnect because its link was up: now
            // that the link is gone, the welcome's word stands.
            if (this.unconfirmed.delete(l.peer)) this.#setPresence({ name: l.peer, status: "offline", last_seen: Date.now() });
          }
        },
      },
    });
    this.iceServers = [];
    this.welcomeIce = [];
    this.supernodes = [];
    this.seenTURN = new Set(); // TURN host:port of every supernode listed so far
    this.blocked = new Set(parseList(load(BLOCKED_KEY(name))));
    this.contactsOnly = load(CONTACTS_ONLY_KEY(name)) === "1";
    $("contacts-only").checked = this.contactsOnly;
    this.displays = new Map(Object.entries(parseJSON(load(DISPLAYS_KEY(name)))));
    const accepts = (peer) => this.#accepts(peer);
    this.chat = new Chat({ sig, links: this.links, identity: this.identity, peers: (n) => this.presence.get(n), store, accept: accepts });
    this.calls = new Calls({ sig, links: this.links, accept: accepts });
    this.refused = { message: 0, call: 0 }; // counts, for the console and tests
    this.chat.onRefused = () => this.refused.message++;
    this.calls.addEventListener("refused", () => this.refused.call++);
    this.calls.addEventListener("ended", (e) => this.#logCall(e.detail));
    this.chat.display = load(DISPLAY_KEY(name));
    $("display-input").value = this.chat.display;
    $("display-error").textContent = "";
    this.#renderMe();
    this.chat.addEventListener("message", (e) => {
      const m = e.detail;
      this.#learnDisplay(m.peer, m.display);
      this.#notify(this.#label(m.peer), m.file ? `offers a file: ${m.file.name}` : m.text, `msg:${m.peer}`);
    });

    this.files = new Files({ sig, links: this.links, chat: this.chat, online: (n) => this.#online(n), budget: (p) => this.#fileBudget(p) });
    this.chat.onFileOffer = (from, id, file) => this.files.onOffer(from, id, file);
    this.chat.onFileControl = (from, c) => this.files.onControl(from, c);
    this.files.addEventListener("change", (e) => {
      if (e.detail.peer === this.peer) this.#renderMessages();
    });
    this.calls.micDeviceId = load(MIC_KEY);
    this.relayOnly = load(RELAY_KEY) === "1";
    $("relay-only").checked = this.relayOnly;

    sig.addEventListener("state", (e) => this.#onSigState(e.detail));
    sig.addEventListener("welcome", (e) => this.#onWelcome(e.detail));
    sig.addEventListener("fatal", (e) => this.#onFatal(e.detail));
    sig.addEventListener("message", (e) => this.#onMessage(e.detail));
    this.chat.addEventListener("change", (e) => {
      if (e.detail.peer === this.peer) {
        this.#renderMessages();
        this.#renderTyping();
        this.#markRead();
      }
      this.#renderContacts();
    });
    this.calls.addEventListener("change", () => this.#onCallChange());
    this.calls.addEventListener("error", (e) => this.showError(e.detail));
    this.calls.addEventListener("mic", () => this.#refreshMics());

    this.timers.push(setInterval(() => this.#tick(), 500));
    this.timers.push(setInterval(() => this.#sampleStats(), 1000));
    this.#selectPeer("");
    this.#renderContacts();
    this.#onCallChange();
    this.drafts = new Map();
    try {
      await this.chat.load();
      // Everyone in the kept conversations is a contact: the server tells
      // the page only about the people it asks for (contacts.js).
      for (const peer of this.chat.conversations.keys()) if (!this.contacts.has(peer)) this.contacts.add(peer);
      for (const d of await store.drafts()) this.drafts.set(d.peer, d.text);
    } catch (e) {
      this.showError(`Your earlier messages could not be loaded: ${e?.message ?? e}`);
    }
    if (gen !== this.joins) return;
    this.#renderContacts();
    sig.start();
  }

  /** signOut forgets the name on this browser (the key stays) and returns to the picker. */
  signOut() {
    this.calls?.hangup();
    this.links?.closeAll("signed out", true);
    this.sig?.stop();
    saveName("");
    this.#teardown();
    $("name-input").value = this.name;
    this.#showJoin("");
  }

  #teardown() {
    this.joins++; // a join still opening its store gives up
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    if (this.sig) this.sig.stop();
    this.links?.closeAll("closing", false);
    for (const p of [...this.sinks.keys()]) this.#detachAudio(p);
    this.#stopRinging();
    this.#stopRingback();
    this.micMeter?.stop();
    this.micMeter = null;
    this.sig = this.links = this.chat = this.calls = this.files = this.contacts = null;
    this.store?.close();
    this.store = null;
    this.stale.clear();
    this.presence.clear();
    this.unconfirmed.clear();
    this.rows.clear();
    this.msgRows.clear();
    this.peer = "";
    this.stats = null;
    for (const p of [...this.errors.keys()]) this.#dismissError(p);
  }

  // ---- signaling events ----

  #onSigState({ state, retryAt, error }) {
    $("retry-now").hidden = true;
    this.waitingUntil = 0;
    if (state === "connecting") this.#setConn("connecting", "Connecting…");
    else if (state === "online") this.#setConn("online", "Online");
    else if (state === "waiting") {
      this.waitingUntil = retryAt;
      $("retry-now").textContent = "Retry now";
      $("retry-now").hidden = false;
      this.#renderWaiting();
      if (error?.code === "shutting_down") this.showError(serverError("shutting_down"));
    } else if (state === "stopped") {
      if (error?.code === "replaced") {
        this.#setConn("offline", "Signed in elsewhere");
        this.showError(serverError("replaced"), true);
        $("retry-now").textContent = "Use Parley here";
        $("retry-now").hidden = false;
      } else {
        this.#setConn("offline", "Offline");
      }
    }
  }

  #renderWaiting() {
    const s = Math.max(0, Math.ceil((this.waitingUntil - Date.now()) / 1000));
    this.#setConn("waiting", `Connection to the server lost — reconnecting${s ? ` in ${s} s` : "…"}`);
  }

  #setConn(state, text) {
    const c = $("conn-status");
    c.dataset.state = state;
    if (c.textContent !== text) c.textContent = text;
  }

  #onWelcome({ welcome, reconnect }) {
    if (!reconnect) performance.mark?.("parley:online"); // load -> signed in, for devtools and benchmarks
    saveName(welcome.name);
    this.welcomeIce = toRTCIceServers(welcome.ice_servers);
    this.iceServers = this.welcomeIce;
    // Presence comes for contacts and the directory's page of people
    // online (contacts.js); whoever was online before a reconnect and is
    // not confirmed by the answers is shown offline once they are in.
    const stale = new Set([...this.presence].filter(([, p]) => p.status !== "offline").map(([n]) => n));
    for (const p of welcome.online ?? []) {
      stale.delete(p.name);
      this.#setPresence(p); // a server from before contacts lists everyone here
    }
    this.stale = stale;
    const sig = this.sig;
    this.contacts.sync(welcome).then((page) => {
      if (this.sig !== sig) return;
      for (const p of page?.entries ?? []) this.#setPresence(p);
      for (const name of [...this.stale]) {
        // Not confirmed right after our own reconnect: after a server
        // restart the peer may not be back yet. One whose link still works
        // is "unknown", not offline: its presence, or its link failing,
        // decides.
        if (this.links?.get(name)?.connected) this.unconfirmed.add(name);
        else this.#setPresence({ name, status: "offline", last_seen: Date.now() });
      }
      this.stale.clear();
    });
    this.#dismissError(serverError("connection_lost"));
    this.chat.onReconnect(); // also sends what the outbox kept from an earlier visit
    this.away = false;
    this.#autoAway();
    this.#renderContacts();
    this.#renderPeer();
  }

  #onFatal(err) {
    const name = this.name;
    this.#teardown();
    saveName("");
    $("name-input").value = name;
    this.#showJoin(serverError(err.code, err.message, { name }));
  }

  #onMessage(env) {
    // Whoever calls or messages us becomes a contact (contacts.js).
    if (env.from && (env.type === "ring" || env.type === "chat" || env.type === "sealed")) this.contacts.add(env.from);
    switch (env.type) {
      case "presence":
        if (env.body.name) this.#setPresence(env.body);
        return;
      case "presence_list":
        for (const p of env.body.entries ?? []) this.#setPresence(p);
        return;
      case "offer":
      case "answer":
      case "candidate":
      case "bye":
      case "restart":
        this.links.handle(env);
        return;
      case "ring":
      case "accept":
      case "decline":
      case "hangup":
        this.calls.onSignal(env);
        return;
      case "chat":
      case "delivered":
      case "read":
      case "typing":
        this.chat.onServer(env);
        return;
      case "sealed":
        this.chat.onSealed(env);
        return;
      case "sealed_receipt":
        this.chat.onSealedReceipt(env);
        return;
      case "file":
        this.files.onControl(env.from, env.body);
        return;
      case "supernodes":
        this.#onSupernodes(env.body);
        return;
      case "error":
        // "offline" for a fire-and-forget message (a candidate or bye to
        // someone who just left) needs no words.
        if (env.body.code === "offline") return;
        if (env.body.code === "replaced" || env.body.code === "shutting_down") return; // the close says it
        this.showError(serverError(env.body.code, env.body.message));
        return;
    }
  }

  /**
   * #onSupernodes takes a new supernode list: its TURN servers replace the
   * supernodes the welcome (or an earlier list) gave; other ICE servers
   * (the server's STUN) stay. New links use them.
   */
  #onSupernodes(list) {
    this.supernodes = list.supernodes ?? [];
    for (const n of this.supernodes) for (const a of [n.turn_udp, n.turn_tcp, n.turn_tls]) if (a) this.seenTURN.add(a);
    const isSupernode = (s) => s.urls.some((u) => this.seenTURN.has(u.replace(/^turns?:/, "").replace(/\?.*$/, "")));
    this.iceServers = [...this.welcomeIce.filter((s) => !isSupernode(s)), ...toRTCIceServers(list.ice_servers)];
    this.#renderContacts();
    this.#renderStats();
    this.#renderCallState();
  }

  #setRelayOnly(on) {
    this.relayOnly = on;
    store(RELAY_KEY, on ? "1" : "");
    // Links made before keep their policy: close the idle ones so the next
    // message or call makes a fresh one.
    if (!this.links) return;
    for (const [peer, l] of [...this.links.links]) if (this.calls?.call?.peer !== peer) this.links.close(peer, l, "relay setting changed", true);
  }

  /** #pathWords describes the call's path: direct, or relay via which supernode. */
  #pathWords(s) {
    if (!s?.path) return "";
    if (s.path !== "relay") return "direct";
    const n = supernodeFor(s, this.supernodes);
    if (n) return `relay via supernode ${n.label || n.id}`;
    return `relay${s.via ? " via " + s.via : ""}`;
  }

  #setPresence(p) {
    if (p.name === this.name) return;
    this.stale.delete(p.name);
    const old = this.presence.get(p.name);
    // An entry without keys keeps what we knew; an encryption key counts
    // only with the identity key it is bound to.
    const publicKey = p.public_key || old?.publicKey || "";
    const sameKey = publicKey === old?.publicKey;
    this.presence.set(p.name, {
      status: p.status,
      lastSeen: p.last_seen || old?.lastSeen || 0,
      publicKey,
      encKey: p.enc_key || (sameKey ? old?.encKey : "") || "",
      encSig: p.enc_sig || (sameKey ? old?.encSig : "") || "",
    });
    if (p.public_key) pins.pin(p.name, p.public_key); // trust on first use (sealed messages)
    if (p.status !== "offline") this.unconfirmed.delete(p.name);
    if (old?.status === p.status) return;
    // A call whose media flows keeps its link whatever the server says:
    // it does not depend on the server, and a dead peer's link fails by
    // itself. A link without a call goes (a restarted peer makes a new one).
    const callUp = this.calls?.call?.peer === p.name && this.calls.call.state === "connected" && this.links.get(p.name)?.connected;
    if (p.status === "offline" && !callUp) {
      this.calls.onOffline(p.name);
      this.links.close(p.name, this.links.get(p.name), "peer offline", false);
    }
    this.#renderContacts();
    if (p.name === this.peer) this.#renderPeer();
  }

  /** #soundBlocked shows (or hides) the "Enable sound" prompt. */
  #soundBlocked(on) {
    $("sound-blocked").hidden = !on;
  }

  /** #enableSound is the person's click that lets the page make sound. */
  #enableSound() {
    for (const a of this.sinks.values()) a.play().catch(() => {});
    for (const c of [this.ringer?.ctx, this.ringback?.ctx]) c?.resume().catch(() => {});
    this.#soundBlocked(false);
  }

  /**
   * #autoAway tells the server we are away once the page has been hidden
   * for awayAfter, and online again when it is looked at.
   */
  #autoAway() {
    clearTimeout(this.awayTimer);
    if (!this.sig) return;
    if (document.visibilityState === "hidden") {
      this.awayTimer = setTimeout(() => {
        if (document.visibilityState === "hidden" && this.sig?.send("presence", "", { status: "away" })) this.away = true;
      }, this.awayAfter);
    } else if (this.away) {
      if (this.sig.send("presence", "", { status: "online" })) this.away = false;
    }
  }

  /** #logCall writes an ended call into its conversation (calls.js "ended"). */
  #logCall(c) {
    let text;
    if (c.busy) text = `${c.peer} tried to call you while you were in another call`;
    else if (c.connected) text = `${c.outgoing ? "Outgoing" : "Incoming"} voice call · ${duration(Math.max(c.durationMs, 1000))}`;
    else if (c.missed) text = `Missed call from ${c.peer}`;
    else if (c.declined) text = `You declined a call from ${c.peer}`;
    else if (c.outgoing) text = `Call to ${c.peer} — ${c.reason}`;
    else text = `Call from ${c.peer} — ${c.reason}`;
    this.chat?.logCall(c.peer, { id: c.id, text, missed: !!c.missed });
    if (c.missed) this.#notify(c.busy ? `${this.#label(c.peer)} tried to call` : `Missed call from ${this.#label(c.peer)}`, "", `call:${c.peer}`);
  }

  /**
   * #notify shows an OS notification while the page is not looked at
   * (hidden tab or another window focused), once the person allowed it.
   */
  #notify(title, body, tag) {
    if (!globalThis.Notification || Notification.permission !== "granted") return;
    if (document.visibilityState === "visible" && document.hasFocus()) return;
    try {
      const n = new Notification(title, { body: body.slice(0, 200), tag, icon: "favicon.svg" });
      n.onclick = () => {
        window.focus();
        const peer = tag.split(":")[1];
        if (peer) this.#selectPeer(peer);
        n.close();
      };
      this.notified.push({ title, body, tag });
      if (this.notified.length > 50) this.notified.shift();
    } catch (e) {
      console.debug("parley: notification", e);
    }
  }

  #renderNotify() {
    const p = globalThis.Notification?.permission ?? "unsupported";
    $("notify").hidden = p !== "default";
    $("notify-state").textContent = { granted: "Notifications on while Parley is in the background.", denied: "Notifications are blocked in this browser’s site settings.", unsupported: "" }[p] ?? "";
  }

  /** #updateTitle puts the unread count in the tab's title (unless a call rings). */
  #updateTitle() {
    if (this.ringer) return;
    let n = 0;
    for (const c of this.chat?.unread?.values() ?? []) n += c;
    const t = n ? `(${n}) Parley` : "Parley";
    if (document.title !== t) document.title = t;
  }

  /**
   * #label is how a person is named in words: "Alice Martin (alice)" when
   * they sent a display name, else their handle. A display name is what
   * its owner chose, so the handle always goes with it.
   */
  #label(name) {
    const d = this.displays?.get(name);
    return d ? `${d} (${name})` : name;
  }

  /** #nameParts renders a person's name: the display name and the handle beside it, or the handle. */
  #nameParts(name) {
    const d = this.displays?.get(name);
    return d ? [d, el("span", { className: "handle", textContent: name })] : [name];
  }

  /** #learnDisplay keeps the display name peer sent with a message (kept per name in localStorage). */
  #learnDisplay(peer, display) {
    if (!display || this.displays.get(peer) === display) return;
    this.displays.set(peer, display);
    store(DISPLAYS_KEY(this.name), JSON.stringify(Object.fromEntries(this.displays)));
    this.#renderContacts();
    if (peer === this.peer) this.#renderPeer();
  }

  /** setDisplayName sets ours (checked), sent with our next messages and kept for this name. */
  setDisplayName(s) {
    s = s.trim();
    const bad = s ? checkDisplayName(s) : null;
    $("display-error").textContent = bad ?? "";
    if (bad) return false;
    this.chat.display = s;
    store(DISPLAY_KEY(this.name), s);
    this.#renderMe();
    return true;
  }

  /** #renderMe names us in the top bar: our display name, if any, beside our handle. */
  #renderMe() {
    const d = this.chat?.display;
    $("me-name").replaceChildren(...(d ? [d, el("span", { className: "handle", textContent: this.name })] : [this.name]));
  }

  /** #accepts: whether peer may message and call us (blocking, contacts only). */
  #accepts(peer) {
    if (this.blocked?.has(peer)) return false;
    return !this.contactsOnly || !!this.chat?.isContact(peer);
  }

  /** setBlocked blocks or unblocks peer: their messages and calls are refused. */
  setBlocked(peer, on) {
    if (!peer || !this.blocked) return;
    if (on) this.blocked.add(peer);
    else this.blocked.delete(peer);
    store(BLOCKED_KEY(this.name), JSON.stringify([...this.blocked]));
    if (on && this.calls?.call?.peer === peer) this.calls.hangup();
    this.#renderPeer();
    this.#renderContacts();
  }

  #online(name) {
    const s = this.presence.get(name)?.status;
    return s === "online" || s === "away";
  }

  // ---- timers ----

  #renderTyping() {
    const on = !!this.peer && !!this.chat?.isTyping(this.peer);
    const t = $("typing");
    t.hidden = !on;
    if (on && t.textContent !== `${this.peer} is typing…`) t.textContent = `${this.peer} is typing…`;
  }

  #tick() {
    this.chat?.tick();
    this.#renderTyping();
    this.files?.tick();
    this.calls?.tick();
    if (this.waitingUntil) this.#renderWaiting();
    this.#renderCallTimer();
  }

  async #sampleStats() {
    const k = this.calls?.call;
    if (!k || k.state !== "connected" || this.statsBusy) return;
    await this.#pullStats(true);
  }

  /**
   * sampleStats reads the call's link stats now, for the console and
   * tests; it leaves the panel and graph (fed once a second) alone.
   */
  sampleStats() {
    return this.#pullStats(false);
  }

  async #pullStats(record) {
    const k = this.calls?.call;
    const l = k && this.links.get(k.peer);
    if (!l || l.closed) return null;
    if (record) this.statsBusy = true;
    try {
      const report = await l.pc.getStats();
      const prev = record && this.stats && this.stats.peer === k.peer && this.stats.session === l.session ? this.stats : null;
      const sum = summarize(report.values(), prev, performance.now());
      sum.peer = k.peer;
      sum.session = l.session;
      if (!record || this.calls?.call !== k) return sum;
      this.stats = sum;
      if (prev) this.graph.push(sum);
      this.#renderStats();
      this.#renderCallState();
      return sum;
    } catch (e) {
      console.debug("parley: stats", e);
      return null;
    } finally {
      if (record) this.statsBusy = false;
    }
  }

  // ---- UI wiring ----

  #wireUI() {
    $("join-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const name = normalizeName($("name-input").value);
      $("name-input").value = name;
      const bad = checkName(name, true);
      if (bad) {
        $("join-error").textContent = bad;
        $("name-input").setAttribute("aria-invalid", "true");
        $("name-input").focus();
        return;
      }
      $("name-input").removeAttribute("aria-invalid");
      this.join(name);
    });
    $("name-input").addEventListener("input", () => {
      $("join-error").textContent = "";
      $("name-input").removeAttribute("aria-invalid");
    });
    $("sign-out").addEventListener("click", () => this.signOut());
    $("retry-now").addEventListener("click", () => {
      if (!this.sig) return;
      if (this.sig.stopped) {
        this.#dismissError(serverError("replaced"));
        this.sig.start();
      } else this.sig.retryNow();
    });
    window.addEventListener("online", () => this.sig?.retryNow());
    $("back").addEventListener("click", () => this.#selectPeer(""));
    $("call").addEventListener("click", () => {
      if (this.peer && this.calls) this.calls.place(this.peer);
    });
    $("answer").addEventListener("click", () => this.calls?.answer());
    $("decline").addEventListener("click", () => this.calls?.decline());
    $("hangup").addEventListener("click", () => this.calls?.hangup());
    $("mute").addEventListener("click", () => {
      const k = this.calls?.call;
      if (k) this.calls.setMuted(!k.muted);
    });
    $("call-dismiss").addEventListener("click", () => {
      if (this.calls) this.calls.last = null;
      this.#onCallChange();
    });
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.#send();
    });
    $("attach").addEventListener("click", () => $("file-input").click());
    $("file-input").addEventListener("change", () => {
      this.sendFiles($("file-input").files);
      $("file-input").value = "";
    });
    // Drop files anywhere on the open conversation to send them.
    const pane = $("peer-pane");
    pane.addEventListener("dragover", (e) => {
      if (!this.peer || !e.dataTransfer?.types?.includes("Files")) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
      pane.classList.add("dropping");
    });
    pane.addEventListener("dragleave", (e) => {
      if (e.target === pane) pane.classList.remove("dropping");
    });
    pane.addEventListener("drop", (e) => {
      pane.classList.remove("dropping");
      if (!this.peer || !e.dataTransfer?.files?.length) return;
      e.preventDefault();
      this.sendFiles(e.dataTransfer.files);
    });
    $("relay-only").addEventListener("change", () => this.#setRelayOnly($("relay-only").checked));
    $("display-input").addEventListener("change", () => {
      if (this.name) this.setDisplayName($("display-input").value);
    });
    $("contacts-only").addEventListener("change", () => {
      this.contactsOnly = $("contacts-only").checked;
      if (this.name) store(CONTACTS_ONLY_KEY(this.name), this.contactsOnly ? "1" : "");
    });
    $("block").addEventListener("click", () => this.setBlocked(this.peer, !this.blocked?.has(this.peer)));
    // Key backup and restore (keybackup.js): a dialog with a passphrase.
    const dlg = $("key-dialog");
    const openKey = (mode) => {
      this.keyMode = mode;
      $("key-title").textContent = mode === "backup" ? "Back up your key" : "Restore a name from a key backup";
      $("key-lead").textContent =
        mode === "backup"
          ? `The file holds the key that owns “${this.name}”, locked with this passphrase. Keep both safe: with them you can be ${this.name} on another browser or in the terminal (parley key import).`
          : "Pick the backup file (from “Back up my key” or parley key export) and type its passphrase. This browser’s current key is replaced.";
      $("key-file-row").hidden = mode === "backup";
      $("key-go").textContent = mode === "backup" ? "Save backup" : "Restore";
      $("key-msg").textContent = "";
      $("key-pass").value = "";
      $("key-file").value = "";
      if (!dlg.open) dlg.showModal?.() ?? (dlg.open = true);
      $(mode === "backup" ? "key-pass" : "key-file").focus();
    };
    $("backup-open").addEventListener("click", () => openKey("backup"));
    $("restore-open").addEventListener("click", () => openKey("restore"));
    $("key-cancel").addEventListener("click", () => dlg.close());
    $("key-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      $("key-go").disabled = true;
      $("key-msg").textContent = this.keyMode === "backup" ? "Locking the key…" : "Opening the backup…";
      try {
        if (this.keyMode === "backup") await this.backupKey($("key-pass").value);
        else await this.restoreKey($("key-file").files?.[0], $("key-pass").value);
        dlg.close();
      } catch (err) {
        $("key-msg").textContent = err.message;
      } finally {
        $("key-go").disabled = false;
      }
    });
    // Safety numbers and a changed key (safety.js).
    $("safety").addEventListener("click", () => this.showSafety(this.peer));
    $("safety-close").addEventListener("click", () => $("safety-dialog").close());
    $("safety-verify").addEventListener("click", () => {
      const key = pins.get(this.safetyPeer);
      if (key) verified.set(this.safetyPeer, key, !verified.get(this.safetyPeer, key));
      $("safety-dialog").close();
      this.#renderPeer();
    });
    $("key-accept").addEventListener("click", () => {
      const p = this.presence.get(this.peer);
      if (!p?.publicKey) return;
      pins.replace(this.peer, p.publicKey);
      verified.set(this.peer, p.publicKey, false);
      this.#renderPeer();
    });
    $("bars").addEventListener("click", () => {
      const q = $("call-quality");
      q.dataset.folded = q.dataset.folded === "1" ? "" : "1";
      $("bars").setAttribute("aria-expanded", String(q.dataset.folded !== "1"));
      this.#onCallChange();
    });
    $("call-chat").addEventListener("click", () => {
      this.callView = this.callView === "chat" ? "screen" : "chat";
      const k = this.calls?.call;
      if (this.callView === "chat" && k && this.peer !== k.peer) this.#selectPeer(k.peer);
      this.#onCallChange();
      if (this.callView === "chat") $("message-input").focus();
    });
    $("speaker-select").addEventListener("change", () => this.#setSpeaker($("speaker-select").value));
    $("notify").addEventListener("click", async () => {
      try {
        await Notification.requestPermission();
      } catch {
        // old browsers: the callback form, or nothing
      }
      this.#renderNotify();
    });
    this.#renderNotify();
    // Drafts: each conversation keeps its own unsent text.
    $("message-input").addEventListener("input", () => {
      this.#saveDraft();
      this.chat?.setTyping(this.peer, $("message-input").value !== "");
    });
    $("message-input").addEventListener("blur", () => this.chat?.setTyping(this.peer, false));
    // What is on screen, in a tab someone looks at, is read.
    document.addEventListener("visibilitychange", () => {
      this.#markRead();
      this.#autoAway();
    });
    $("enable-sound").addEventListener("click", () => this.#enableSound());
    window.addEventListener("focus", () => this.#markRead());
    window.addEventListener("beforeunload", (e) => {
      // A reload or close mid-call asks first.
      if (this.calls?.call) {
        e.preventDefault();
        e.returnValue = "";
      }
    });
    let findTimer = 0;
    $("find-input").addEventListener("input", () => {
      clearTimeout(findTimer);
      findTimer = setTimeout(() => this.#find(), 200);
    });
    $("find-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const name = normalizeName($("find-input").value);
      if (checkName(name) === null && name !== this.name) this.#found(name, null);
    });
    $("mic-select").addEventListener("change", () => {
      const id = $("mic-select").value;
      store(MIC_KEY, id);
      this.calls?.setMic(id);
    });
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.#refreshMics());
    document.addEventListener("keydown", (e) => {
      const k = this.calls?.call;
      if (e.key === "Escape" && k && !k.outgoing && !k.accepted) this.calls.decline();
    });
    window.addEventListener("pageshow", (e) => {
      // Back from the back/forward cache: the connection was closed on
      // pagehide and peers have let go of us, so start fresh.
      if (e.persisted) location.reload();
    });
    window.addEventListener("pagehide", () => {
      // Leave cleanly so peers see us go at once, and a reload signs in fresh.
      this.calls?.hangup();
      this.sig?.stop();
    });
    this.#refreshMics();
  }

  /** showSafety opens the safety number to compare with peer. */
  async showSafety(peer) {
    const key = pins.get(peer) || this.presence.get(peer)?.publicKey;
    if (!peer || !key) return;
    this.safetyPeer = peer;
    $("safety-title").textContent = `Safety number with ${peer}`;
    $("safety-lead").textContent = `Compare these digits with ${peer}, face to face or on a call: if they match on both screens, nobody is in the middle. The terminal shows the same number (/verify).`;
    $("safety-number").textContent = "…";
    $("safety-verify").textContent = verified.get(peer, key) ? "Mark as not verified" : "We compared it: mark as verified";
    const dlg = $("safety-dialog");
    if (!dlg.open) dlg.showModal?.() ?? (dlg.open = true);
    const n = await safetyNumber(this.name, this.identity.publicKey, peer, key);
    if (this.safetyPeer === peer) $("safety-number").textContent = n;
  }

  /** backupKey downloads a backup of this browser's key for the signed-in name. */
  async backupKey(passphrase) {
    const text = await this.identity.backup(this.name, passphrase);
    this.lastBackup = text; // for the console and tests
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const a = el("a", { href: url, download: `parley-key-${this.name}.json` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    this.showError(`Your key is in parley-key-${this.name}.json (in your downloads). Keep it and its passphrase safe.`);
  }

  /** restoreKey makes this browser the owner of the name in a backup file, then starts again as it. */
  async restoreKey(file, passphrase) {
    if (!file) throw new Error("Pick the backup file first.");
    if (file.size > 64 * 1024) throw new Error("That file is too big to be a key backup.");
    const name = await restoreIdentity(await file.text(), passphrase);
    this.calls?.hangup();
    this.sig?.stop();
    saveName(name);
    location.reload();
  }

  /** sendFiles offers each file to the open conversation's peer (the file button and drag-and-drop). */
  sendFiles(list) {
    const peer = this.peer;
    if (!peer || !this.files) return;
    for (const f of [...(list ?? [])]) {
      this.files.send(peer, f).catch((e) => this.showError(`${f.name} could not be sent: ${e.message}`));
    }
    if (this.#online(peer)) this.links.ensure(peer);
  }

  /**
   * #fileBudget is how fast a transfer may send on a path (bytes/s, 0 =
   * unpaced), as the Go client's fileRate: a relayed path keeps under the
   * supernode's per-session budget (85 %), and while a call is up under
   * half of it less the call's audio, so the relay never drops the call.
   */
  #fileBudget(p) {
    if (p?.path !== "relay") return 0;
    const kbps = supernodeFor(p, this.supernodes)?.session_kbps || 0;
    const k = this.calls?.call;
    if (k && (k.state === "connected" || k.accepted)) return Math.max(4096, (((kbps || 1000) * 0.5 - 160) * 1000) / 8);
    return kbps ? (kbps * 0.85 * 1000) / 8 : 0;
  }

  /** #find searches the directory for names starting with what was typed. */
  async #find() {
    const prefix = normalizeName($("find-input").value);
    const list = $("find-results");
    if (!prefix || !this.contacts || !this.sig?.online) {
      list.hidden = true;
      list.replaceChildren();
      return;
    }
    let page;
    try {
      page = await this.contacts.search(prefix);
    } catch (e) {
      list.hidden = false;
      list.replaceChildren(el("li", { className: "empty", textContent: e.code === "forbidden" ? "This server has no directory: type a whole name and press Enter." : `Search failed: ${e.message}` }));
      return;
    }
    if (normalizeName($("find-input").value) !== prefix) return; // typed on meanwhile
    const rows = (page.entries ?? []).filter((p) => p.name !== this.name).map((p) => {
      const btn = el("button", { type: "button", className: "contact", dataset: { testid: `found-${p.name}`, status: p.status } },
        el("span", { className: "dot", "aria-hidden": "true" }), el("span", { className: "cname", textContent: p.name }));
      btn.setAttribute("aria-label", `${p.name}, ${p.status === "offline" ? "offline" : p.status}`);
      btn.addEventListener("click", () => this.#found(p.name, p));
      return el("li", {}, btn);
    });
    list.hidden = false;
    list.replaceChildren(...(rows.length ? rows : [el("li", { className: "empty", textContent: `Nobody here is called “${prefix}…”` })]));
  }

  /** #found opens a conversation with someone found (a contact from now on). */
  #found(name, presence) {
    if (presence) this.#setPresence(presence);
    $("find-input").value = "";
    $("find-results").hidden = true;
    $("find-results").replaceChildren();
    this.#selectPeer(name);
  }

  #send() {
    const input = $("message-input");
    const text = input.value;
    if (!text.trim() || !this.peer) return;
    try {
      this.chat.send(this.peer, text);
      this.chat.setTyping(this.peer, false);
      input.value = "";
      this.#saveDraft();
      if (this.#online(this.peer)) this.links.ensure(this.peer); // later messages go direct
    } catch (e) {
      this.showError(e.message);
    }
    input.focus();
  }

  #markRead() {
    if (this.peer && this.chat && document.visibilityState === "visible" && document.hasFocus() && this.#online(this.peer)) this.chat.markRead(this.peer);
  }

  #saveDraft() {
    if (!this.peer || !this.drafts) return;
    const text = $("message-input").value;
    if ((this.drafts.get(this.peer) ?? "") === text) return;
    if (text) this.drafts.set(this.peer, text);
    else this.drafts.delete(this.peer);
    this.store?.saveDraft(this.peer, text).catch(() => {});
  }

  #selectPeer(name) {
    if (name !== this.peer) {
      this.#saveDraft();
      // A draft never follows you to another conversation.
      $("message-input").value = (name && this.drafts?.get(name)) || "";
    }
    if (name) this.contacts?.add(name);
    this.peer = name;
    this.chat?.setOpen(name);
    $("app-view").dataset.view = name ? "chat" : "contacts";
    if (name && this.#online(name)) this.links.ensure(name); // warm the link: chat goes direct, calls start fast
    this.#renderPeer();
    this.#renderContacts();
    this.#renderTyping();
    this.#markRead();
    if (name) $("message-input").focus();
  }

  // ---- rendering ----

  #renderContacts() {
    if (!this.chat) return;
    const online = [];
    const offline = [];
    // Supernodes sign in like people but relay instead of talking: the
    // ones our list names are left out.
    const relays = new Set((this.supernodes ?? []).map((n) => n.id));
    for (const [name, p] of this.presence) if (!relays.has(name)) (p.status === "offline" ? offline : online).push(name);
    online.sort();
    offline.sort((a, b) => (this.presence.get(b).lastSeen || 0) - (this.presence.get(a).lastSeen || 0));
    const call = this.calls?.call;
    // Rows are kept per name and updated in place, so a focused or
    // clicked button survives re-rendering.
    const row = (name, isOnline) => {
      const key = (isOnline ? "on:" : "off:") + name;
      let r = this.rows.get(key);
      if (!r) {
        const btn = el("button", { type: "button", className: "contact" });
        btn.addEventListener("click", () => this.#selectPeer(name));
        r = { li: el("li", {}, btn), btn, sig: "" };
        if (isOnline) btn.dataset.testid = `contact-${name}`;
        this.rows.set(key, r);
      }
      const p = this.presence.get(name);
      const unread = this.chat.unread.get(name) ?? 0;
      const linked = !!this.links.get(name)?.connected;
      const inCall = call?.peer === name;
      const status = p.status === "away" ? "away" : isOnline ? "online" : `offline${p.lastSeen ? ", last seen " + ago(p.lastSeen) : ""}`;
      const display = this.displays?.get(name) ?? "";
      const sig = [status, unread, linked, inCall, name === this.peer, display].join("|");
      if (r.sig !== sig) {
        r.sig = sig;
        const bits = [status];
        if (inCall) bits.push("in a call");
        if (unread) bits.push(`${unread} unread`);
        r.btn.dataset.status = p.status;
        r.btn.setAttribute("aria-label", `${this.#label(name)}, ${bits.join(", ")}`);
        if (name === this.peer) r.btn.setAttribute("aria-current", "true");
        else r.btn.removeAttribute("aria-current");
        const kids = [el("span", { className: "dot", "aria-hidden": "true" }), el("span", { className: "cname" }, ...this.#nameParts(name))];
        if (inCall) kids.push(el("span", { className: "badge call-badge", textContent: "call", "aria-hidden": "true" }));
        if (unread) kids.push(el("span", { className: "badge", textContent: String(unread), "aria-hidden": "true" }));
        if (linked) kids.push(el("span", { className: "linked", title: "Direct connection open", "aria-hidden": "true" }));
        r.btn.replaceChildren(...kids);
      }
      return r.li;
    };
    const keep = new Set([...online.map((n) => "on:" + n), ...offline.slice(0, 50).map((n) => "off:" + n)]);
    for (const key of [...this.rows.keys()]) if (!keep.has(key)) this.rows.delete(key);
    syncChildren($("contacts"), online.map((n) => row(n, true)));
    syncChildren($("offline-list"), offline.slice(0, 50).map((n) => row(n, false)));
    $("online-count").textContent = online.length ? `(${online.length})` : "";
    this.#updateTitle();
    $("contacts-empty").hidden = online.length > 0;
    $("offline-box").hidden = offline.length === 0;
  }

  #renderPeer() {
    const name = this.peer;
    $("no-peer").hidden = !!name;
    $("peer-pane").hidden = !name;
    if (!name) return;
    const p = this.presence.get(name);
    const online = this.#online(name);
    $("peer-title").replaceChildren(...this.#nameParts(name));
    $("peer-status").textContent = online ? (p.status === "away" ? "away" : "online") : p?.lastSeen ? `offline · last seen ${ago(p.lastSeen)}` : "offline";
    $("peer-status").dataset.status = online ? p.status : "offline";
    const call = this.calls?.call;
    // A key other than the one first seen: loud, until the person accepts it.
    const pinned = pins.get(name);
    const changed = !!(pinned && p?.publicKey && pinned !== p.publicKey);
    $("key-changed").hidden = !changed;
    if (changed) $("key-changed-text").textContent = `⚠ ${name}’s key changed. Messages to ${name} are not sealed to the new key until you accept it. If ${name} did not get a new device or browser, someone may be trying to listen in: compare safety numbers first.`;
    const isVerified = !changed && verified.get(name, pinned);
    const blocked = !!this.blocked?.has(name);
    $("block").textContent = blocked ? "Unblock" : "Block";
    $("block").setAttribute("aria-pressed", String(blocked));
    $("block").title = blocked ? `Let ${name} message and call you again` : `Refuse messages and calls from ${name}`;
    if (blocked) $("peer-status").textContent += " · blocked";
    if (isVerified) $("peer-status").textContent += " · verified ✔";
    if (changed) $("peer-status").textContent += " · ⚠ key changed";
    $("call").disabled = !online || !!call;
    $("call").setAttribute("aria-label", `Call ${name}`);
    $("call").title = !online ? `${name} is offline` : call ? "You are in a call" : `Call ${name}`;
    $("message-input").setAttribute("aria-label", `Message to ${name}`);
    this.#renderMessages();
  }

  #renderMessages() {
    const list = $("messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const msgs = this.chat.messages(this.peer);
    const items = msgs.map((m) => {
      const key = `${this.peer}/${m.dir}/${m.id}`;
      let r = this.msgRows.get(key);
      if (!r) {
        const li = el("li", { className: `msg ${m.dir}`, dataset: { id: m.id } });
        li.append(el("p", { className: "text", textContent: m.text }));
        const meta = el("p", { className: "meta" }, el("time", { dateTime: new Date(m.ts).toISOString(), textContent: timeOf(m.ts) }));
        const tick = m.dir === "out" ? el("span", { dataset: { testid: "tick" } }) : null;
        if (tick) meta.append(tick);
        li.append(meta);
        const failed = el("p", { className: "undelivered", role: "note", hidden: true });
        li.append(failed);
        const card = m.file ? el("div", { className: "file-card", dataset: { testid: "file-card", id: m.id } }) : null;
        if (card) {
          li.querySelector(".text").hidden = true; // the words for clients without files; the card says more
          li.querySelector(".text").after(card);
        }
        r = { li, tick, failed, card, cardSig: "", sig: "" };
        this.msgRows.set(key, r);
      }
      if (r.card) this.#renderFileCard(r, m);
      const sig = `${m.status}|${m.path}|${m.error}`;
      if (r.sig !== sig) {
        r.sig = sig;
        r.li.dataset.status = m.status;
        r.li.dataset.path = m.path || "";
        if (r.tick) {
          const [sym, words] = TICKS[m.status] ?? ["", m.status];
          r.tick.className = `tick ${m.status}`;
          r.tick.textContent = sym;
          const via = { direct: "direct, end to end", server: "through the server, sealed end to end" }[m.path];
          r.tick.title = via ? `${words} (${via})` : words;
          r.tick.setAttribute("aria-label", words);
        }
        r.failed.hidden = m.status !== "failed";
        if (m.status === "failed") {
          const retry = el("button", { type: "button", className: "small quiet", textContent: "Retry" });
          retry.addEventListener("click", () => this.chat.retry(m.id));
          r.failed.replaceChildren(`${m.error || "Not delivered"}. `, retry);
        }
      }
      return r.li;
    });
    if (!items.length) {
      const words = this.#online(this.peer)
        ? `Say hello to ${this.peer}.`
        : this.chat.canSeal(this.peer)
          ? `${this.peer} is offline. Messages are sealed end to end and wait on the server until they’re back.`
          : `${this.peer} is offline; messages can be sent once they’re back.`;
      items.push(el("li", { className: "empty", textContent: words }));
    }
    syncChildren(list, items);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  /**
   * #renderFileCard draws a file message: name, size and type; Accept and
   * Decline for an offer to us; a progress bar while bytes move; a
   * download link (and a thumbnail for an image) once the SHA-256 matched.
   */
  #renderFileCard(r, m) {
    const t = this.files?.get(m.id);
    const f = t?.file ?? m.file;
    const state = t?.state ?? (m.dir === "in" ? "offered" : "preparing");
    const sig = [state, t?.bytes, t?.rate, t?.path, t?.url, t?.reason].join("|");
    if (r.cardSig === sig) return;
    r.cardSig = sig;
    const card = r.card;
    card.dataset.state = state;
    const kids = [];
    const image = (f.type ?? "").startsWith("image/") && t?.url && (t.out || state === "done");
    if (image) kids.push(el("img", { className: "file-thumb", src: t.url, alt: f.name, dataset: { testid: "file-thumb" } }));
    kids.push(el("p", { className: "file-name" }, el("span", { className: "clip", "aria-hidden": "true" }), f.name));
    kids.push(el("p", { className: "file-meta", textContent: `${humanBytes(f.size)}${f.type ? " · " + f.type : ""}` }));
    const line = (text, testid = "file-status") => el("p", { className: "file-status", textContent: text, dataset: { testid } });
    if (state === "active" || state === "preparing") {
      const done = state === "preparing" ? 0 : t?.bytes ?? 0;
      const bar = el("progress", { max: f.size || 1, value: done, dataset: { testid: "file-progress" } });
      bar.setAttribute("aria-label", `${f.name}: ${humanBytes(done)} of ${humanBytes(f.size)}`);
      kids.push(bar);
      const rate = t?.rate > 0 ? ` · ${humanBytes(Math.round(t.rate))}/s · ${Math.ceil(t.eta)} s left` : "";
      kids.push(line(state === "preparing" ? "Checking the file…" : `${humanBytes(done)} of ${humanBytes(f.size)}${rate}${t?.path === "relay" ? " · relayed" : ""}`));
    } else if (state === "offered" && m.dir === "in") {
      const accept = el("button", { type: "button", className: "small good", textContent: "Accept", dataset: { testid: "file-accept" } });
      const decline = el("button", { type: "button", className: "small quiet", textContent: "Decline", dataset: { testid: "file-decline" } });
      accept.addEventListener("click", () => {
        this.files?.accept(m.id);
        if (this.#online(m.peer)) this.links.ensure(m.peer);
      });
      decline.addEventListener("click", () => this.files?.decline(m.id));
      accept.setAttribute("aria-label", `Accept ${f.name} from ${m.peer}`);
      decline.setAttribute("aria-label", `Decline ${f.name} from ${m.peer}`);
      kids.push(el("p", { className: "file-actions" }, accept, decline));
    } else if (state === "offered") {
      kids.push(line(`Waiting for ${m.peer} to accept`));
    } else if (state === "done" && m.dir === "in") {
      const a = el("a", { href: t.url, download: safeFileName(f.name), textContent: `Save ${safeFileName(f.name)}`, dataset: { testid: "file-download" } });
      kids.push(el("p", { className: "file-status" }, a, " · SHA-256 checked"));
    } else if (state === "done") {
      kids.push(line(`Sent · ${m.peer} has it (SHA-256 checked)`));
    } else if (state === "declined" || state === "failed") {
      kids.push(line(t?.reason || state, "file-error"));
    }
    card.replaceChildren(...kids);
  }

  #onCallChange() {
    const k = this.calls?.call;
    const last = this.calls?.last;
    const panel = $("call-panel");
    panel.hidden = !k && !last;
    panel.dataset.state = k ? (k.state === "ringing" ? (k.outgoing ? "calling" : "incoming") : k.state) : last ? "ended" : "idle";
    const incoming = k && !k.outgoing && !k.accepted;
    $("answer").hidden = !incoming;
    $("decline").hidden = !incoming;
    $("hangup").hidden = !k || incoming;
    $("mute").hidden = !k || incoming;
    $("call-dismiss").hidden = !!k;
    this.#renderCallScreen(k, incoming);
    $("call-quality").hidden = !k || k.state !== "connected" || $("call-quality").dataset.folded === "1";
    if (k) {
      $("mute").setAttribute("aria-pressed", String(k.muted));
      $("mute").textContent = k.muted ? "Unmute" : "Mute";
      $("hangup").textContent = k.state === "ringing" ? "Cancel" : "Hang up";
      $("answer").setAttribute("aria-label", `Answer the call from ${k.peer}`);
      $("decline").setAttribute("aria-label", `Decline the call from ${k.peer}`);
    }
    // The microphone list sits in the call panel during a call.
    const field = $("mic-field");
    const slot = k ? $("call-mic-slot") : $("mic-home");
    if (field.parentElement !== slot) slot.append(field);
    if (!k || k.state !== "connected") {
      this.stats = null;
      this.graph.clear();
    } else if (!this.stats) {
      this.#pullStats(true); // the path at once, not a second later
    }
    if (incoming) this.#startRinging(k.peer);
    else this.#stopRinging();
    if (k && k.outgoing && k.rung && !k.accepted) this.#startRingback();
    else this.#stopRingback();
    if (incoming && !this.peer) this.#selectPeer(k.peer);
    this.#renderCallState();
    this.#renderCallTimer();
    this.#renderStats();
    this.#watchMicLevel();
    this.#refreshSpeakers();
    this.#renderContacts();
    if (this.peer) this.#renderPeer();
  }

  /**
   * #renderCallScreen: on a phone the call is the screen (data-call
   * "screen": the peer, the state and big buttons fill it, the numbers
   * behind the bars); "Chat" folds it to a bar above the conversation
   * (data-call "chat") and "Back to call" unfolds it. Each new call starts
   * as the screen. On wider windows the CSS ignores data-call.
   */
  #renderCallScreen(k, incoming) {
    if (k && k.id !== this.callScreenFor) {
      this.callScreenFor = k.id;
      this.callView = "screen";
      if (matchMedia("(max-width: 720px)").matches) $("call-quality").dataset.folded = "1";
    }
    const chat = !!k && !incoming && this.callView === "chat";
    $("app-view").dataset.call = !k ? "" : chat ? "chat" : "screen";
    const b = $("call-chat");
    b.hidden = !k || incoming;
    b.textContent = chat ? "Back to call" : "Chat";
    const shown = k ? this.displays?.get(k.peer) || k.peer : "";
    $("call-peer-name").replaceChildren(...(k ? this.#nameParts(k.peer) : []));
    $("call-avatar").textContent = shown ? [...shown][0].toUpperCase() : "";
  }

  #renderCallState() {
    const k = this.calls?.call;
    const last = this.calls?.last;
    let text = "";
    if (k) {
      const l = this.links.get(k.peer);
      if (k.state === "ringing") text = !k.outgoing ? `${k.peer} is calling you` : !k.mic ? `Calling ${k.peer}… (opening your microphone)` : k.rung ? `Ringing ${k.peer}…` : `Calling ${k.peer}…`;
      else if (k.state === "accepted") text = `Connecting to ${k.peer}…`;
      else if (!l || l.closed || l.state === "disconnected" || l.state === "failed") text = `Call with ${k.peer} — reconnecting… (the network path dropped)`;
      else {
        const path = this.#pathWords(this.stats) || "finding the path";
        text = `Call with ${k.peer} — connected · ${path}${k.remoteMuted ? ` · ${k.peer} muted their microphone` : ""}`;
      }
    } else if (last) {
      text = callEnded(last.peer, last.reason, last.connected ? Math.max(last.durationMs, 1000) : 0);
    }
    const cs = $("call-state");
    if (cs.textContent !== text) cs.textContent = text;
  }

  #renderCallTimer() {
    const k = this.calls?.call;
    $("call-timer").textContent = k?.state === "connected" ? duration(Date.now() - k.connectedAt) : "";
  }

  /**
   * #renderBars draws the call's quality as 1–4 bars from loss, round trip
   * and jitter (roughly ITU-T G.114's 150 ms and the loss Opus hides well);
   * a click shows or hides the numbers behind them.
   */
  #renderBars() {
    const s = this.stats;
    const b = $("bars");
    const k = this.calls?.call;
    b.hidden = !k || k.state !== "connected" || !s;
    if (b.hidden) return;
    const loss = s.lossPct ?? 0;
    const rtt = s.rttMs ?? 0;
    const jit = s.jitterMs ?? 0;
    const level = loss < 1 && rtt < 150 && jit < 20 ? 4 : loss < 3 && rtt < 300 && jit < 40 ? 3 : loss < 8 && rtt < 500 ? 2 : 1;
    const words = ["", "poor", "fair", "good", "excellent"][level];
    b.dataset.level = String(level);
    b.title = `Call quality: ${words} (round trip ${fmt(s.rttMs, 0, " ms")}, loss ${fmt(s.lossPct, 1, " %")}); click for the numbers`;
    b.setAttribute("aria-label", `Call quality: ${words}`);
  }

  /** #watchMicLevel shows how loud our microphone is, and when we speak. */
  #watchMicLevel() {
    const k = this.calls?.call;
    const meter = $("mic-level");
    const track = k && k.state === "connected" ? k.mic : null;
    if (this.micMeter?.track === track) return;
    this.micMeter?.stop();
    this.micMeter = null;
    meter.hidden = !track;
    if (!track) return;
    let ctx;
    try {
      ctx = new AudioContext();
    } catch {
      meter.hidden = true;
      return;
    }
    const src = ctx.createMediaStreamSource(new MediaStream([track]));
    const an = ctx.createAnalyser();
    an.fftSize = 1024;
    src.connect(an);
    const buf = new Float32Array(an.fftSize);
    const m = { track, peak: 0, stop: () => {} };
    const timer = setInterval(() => {
      an.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      const rms = Math.sqrt(sum / buf.length);
      const level = k.muted ? 0 : Math.min(1, rms * 4);
      meter.value = level;
      meter.classList.toggle("speaking", level > 0.05);
      m.peak = Math.max(m.peak, level);
    }, 100);
    ctx.resume().catch(() => {});
    m.stop = () => (clearInterval(timer), ctx.close().catch(() => {}));
    this.micMeter = m;
  }

  /** #refreshSpeakers lists the audio outputs (where the browser lets a page pick one). */
  async #refreshSpeakers() {
    const field = $("speaker-field");
    const sel = $("speaker-select");
    if (!("setSinkId" in HTMLMediaElement.prototype)) return (field.hidden = true);
    let outs = [];
    try {
      outs = ((await navigator.mediaDevices?.enumerateDevices?.()) ?? []).filter((d) => d.kind === "audiooutput" && d.deviceId && d.deviceId !== "default");
    } catch {
      // none listed
    }
    const want = load(SPEAKER_KEY);
    sel.replaceChildren(el("option", { value: "", textContent: "Default speaker" }), ...outs.map((d, i) => el("option", { value: d.deviceId, textContent: d.label || `Speaker ${i + 1}` })));
    sel.value = outs.some((d) => d.deviceId === want) ? want : "";
    field.hidden = !this.calls?.call || outs.length === 0;
  }

  #setSpeaker(id) {
    store(SPEAKER_KEY, id);
    for (const a of this.sinks.values()) a.setSinkId?.(id).catch((e) => this.showError(`That speaker cannot be used: ${e.message}`));
  }

  #renderStats() {
    this.#renderBars();
    const s = this.stats;
    $("st-path").textContent = !s || !s.path ? "–" : `${this.#pathWords(s)}${s.path === "relay" && s.via ? " · " + s.via : ""} (${s.local} ↔ ${s.remote})`;
    $("st-rtt").textContent = fmt(s?.rttMs, 0, " ms");
    $("st-jitter").textContent = fmt(s?.jitterMs, 1, " ms");
    $("st-loss").textContent = fmt(s?.lossPct, 1, " %");
    $("st-rate").textContent = s && (s.recvKbps !== null || s.sendKbps !== null) ? `↓ ${fmt(s.recvKbps, 0)} ↑ ${fmt(s.sendKbps, 0)} kbit/s` : "–";
    const d = $("call-stats").dataset;
    d.packetsReceived = s?.packetsReceived ?? 0;
    d.packetsSent = s?.packetsSent ?? 0;
  }

  // ---- audio ----

  #attachAudio(peer, stream) {
    let a = this.sinks.get(peer);
    if (!a) {
      a = el("audio", { autoplay: true });
      a.dataset.peer = peer;
      $("audio-sinks").append(a);
      this.sinks.set(peer, a);
    }
    if (a.srcObject !== stream) a.srcObject = stream;
    const speaker = load(SPEAKER_KEY);
    if (speaker && a.sinkId !== speaker) a.setSinkId?.(speaker).catch(() => {});
    a.play().catch((e) => {
      // Autoplay held back (no click on this page yet): say so, with a
      // button, instead of a silent call.
      if (e?.name === "NotAllowedError") this.#soundBlocked(true);
    });
  }

  #detachAudio(peer) {
    const a = this.sinks.get(peer);
    if (!a) return;
    a.srcObject = null;
    a.remove();
    this.sinks.delete(peer);
  }

  async #refreshMics() {
    const sel = $("mic-select");
    let devices = [];
    try {
      devices = (await navigator.mediaDevices?.enumerateDevices?.()) ?? [];
    } catch {
      return;
    }
    const mics = devices.filter((d) => d.kind === "audioinput" && d.deviceId && d.deviceId !== "default");
    const want = this.calls?.micDeviceId ?? load(MIC_KEY);
    const opts = [el("option", { value: "", textContent: "Default microphone" })];
    mics.forEach((d, i) => opts.push(el("option", { value: d.deviceId, textContent: d.label || `Microphone ${i + 1}` })));
    sel.replaceChildren(...opts);
    sel.value = mics.some((d) => d.deviceId === want) ? want : "";
  }

  #startRinging(peer) {
    document.title = `📞 ${peer} is calling — Parley`;
    if (this.ringer) return;
    if (!this.calls?.call?.outgoing) this.#notify(`${this.#label(peer)} is calling`, "Open Parley to answer", `call:${peer}`);
    let ctx = null;
    try {
      ctx = new AudioContext();
    } catch {
      // no audio output: the page still shows the call
    }
    const ring = () => {
      if (!ctx || ctx.state !== "running") return;
      const t = ctx.currentTime;
      for (const [f, at] of [[440, 0], [480, 0], [440, 0.5], [480, 0.5]]) {
        const o = ctx.createOscillator();
        const g = ctx.createGain();
        g.gain.setValueAtTime(0.05, t + at);
        g.gain.setValueAtTime(0, t + at + 0.4);
        o.frequency.value = f;
        o.connect(g).connect(ctx.destination);
        o.start(t + at);
        o.stop(t + at + 0.4);
      }
    };
    ctx?.resume().then(ring, () => {});
    // A context still suspended after a moment: autoplay holds it back.
    setTimeout(() => ctx && ctx.state === "suspended" && this.ringer?.ctx === ctx && this.#soundBlocked(true), 500);
    this.ringer = { ctx, timer: setInterval(ring, 3000) };
  }

  /**
   * #startRingback plays the ringback tone the caller hears while the
   * peer's device rings: 440 + 480 Hz, 2 s on, 4 s off (ITU-T E.180's
   * North American cadence).
   */
  #startRingback() {
    if (this.ringback) return;
    let ctx = null;
    try {
      ctx = new AudioContext();
    } catch {
      return; // no audio output: the banner still says "Ringing"
    }
    const ring = () => {
      if (ctx.state !== "running") return;
      const t = ctx.currentTime;
      const g = ctx.createGain();
      g.gain.setValueAtTime(0.04, t);
      g.gain.setValueAtTime(0, t + 2);
      g.connect(ctx.destination);
      for (const f of [440, 480]) {
        const o = ctx.createOscillator();
        o.frequency.value = f;
        o.connect(g);
        o.start(t);
        o.stop(t + 2);
      }
      if (this.ringback?.ctx === ctx) this.ringback.played++;
    };
    this.ringback = { ctx, timer: setInterval(ring, 6000), played: 0 };
    ctx.resume().then(ring, () => {});
  }

  #stopRingback() {
    if (!this.ringback) return;
    clearInterval(this.ringback.timer);
    this.ringback.ctx.close().catch(() => {});
    this.ringback = null;
  }

  #stopRinging() {
    if (!this.ringer) {
      if (document.title !== "Parley" && !this.calls?.call) document.title = "Parley";
      return;
    }
    clearInterval(this.ringer.timer);
    this.ringer.ctx?.close().catch(() => {});
    this.ringer = null;
    document.title = "Parley";
    this.#updateTitle();
  }

  // ---- errors ----

  /** showError shows words in the error area; sticky ones stay until dismissed. */
  showError(words, sticky = false) {
    if (!words) return;
    const old = this.errors.get(words);
    if (old) old.remove();
    const close = el("button", { type: "button", className: "small quiet", textContent: "Dismiss", "aria-label": "Dismiss this message" });
    const item = el("div", { className: "error-item", role: "alert", dataset: { testid: "error" } }, el("p", { textContent: words }), close);
    close.addEventListener("click", () => this.#dismissError(words));
    $("errors").append(item);
    this.errors.set(words, item);
    if (!sticky) setTimeout(() => this.errors.get(words) === item && this.#dismissError(words), 12000);
  }

  #dismissError(words) {
    const item = this.errors.get(words);
    if (!item) return;
    item.remove();
    this.errors.delete(words);
  }

  // ---- debugging and tests ----

  /** debug describes the page's state (for people in the console, and tests). */
  debug() {
    return {
      name: this.name,
      publicKey: this.identity?.publicKey ?? "",
      encPublicKey: this.identity?.encPublicKey ?? "",
      online: !!this.sig?.online,
      presence: Object.fromEntries(this.presence),
      call: this.calls?.call ? { peer: this.calls.call.peer, state: this.calls.call.state, muted: this.calls.call.muted, outgoing: this.calls.call.outgoing } : null,
      last: this.calls?.last ?? null,
      blocked: [...(this.blocked ?? [])],
      contactsOnly: !!this.contactsOnly,
      refused: this.refused ?? null,
      notified: this.notified,
      drafts: Object.fromEntries(this.drafts ?? []),
      micPeak: this.micMeter?.peak ?? null,
      ringback: this.ringback ? { played: this.ringback.played, state: this.ringback.ctx.state } : null,
      links: Object.fromEntries([...(this.links?.links ?? [])].map(([p, l]) => [p, { state: l.state, dcOpen: l.dcOpen, offerer: l.offerer, session: l.session }])),
      stats: this.stats,
      files: Object.fromEntries([...(this.files?.transfers ?? [])].map(([id, t]) => [id, { peer: t.peer, out: t.out, state: t.state, bytes: t.bytes, size: t.file.size, name: t.file.name, code: t.code, reason: t.reason, path: t.path, sent: t.sentTotal ?? 0, resumed: t.resumed ?? 0 }])),
    };
  }
}

function parseList(s) {
  try {
    const v = JSON.parse(s || "[]");
    return Array.isArray(v) ? v.filter((x) => typeof x === "string") : [];
  } catch {
    return [];
  }
}

function wsURL() {
  const u = new URL("ws", location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  u.hash = "";
  u.search = "";
  return u.href;
}

const app = new App();
window.parley = app; // for the console and the browser tests: parley.debug(), parley.sampleStats()
app.boot();

/** parseJSON reads a {name: display name} object kept in localStorage ({} when absent or bad). */
function parseJSON(s) {
  try {
    const v = JSON.parse(s || "{}");
    if (!v || typeof v !== "object" || Array.isArray(v)) return {};
    return Object.fromEntries(Object.entries(v).filter(([k, d]) => checkName(k) === null && checkDisplayName(d) === null));
  } catch {
    return {};
  }
}
