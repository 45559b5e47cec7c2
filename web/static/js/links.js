// Links: the one RTCPeerConnection the page keeps with each peer, as the Go
// client does (client/link.go). A link carries an audio transceiver
// (sendrecv, silent until a call connects; RFC 8829 section 4.1.2) and the
// chat data channel, negotiated out of band as id 0 (RFC 8832 section 6:
// "negotiated" channels skip DCEP). The side that needs the link first
// offers; if both offer at once, the lexically smaller name's offer wins.
// Candidates trickle through the server (RFC 8838) and are buffered until
// the remote description is set.

import { DC_LABEL, decodeDC, randomID } from "./proto.js";

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** ICE restarts tried for one lost path, and how long it may take to return. */
const MAX_ICE_RESTARTS = 3;
const RESTART_GIVE_UP_MS = 20000;
/** The least time between two ICE restarts (the first one's answer is on its way). */
const RESTART_SPACING_MS = 2000;
/** A call's link that received nothing for MEDIA_STALL_MS lost its path (checked every MEDIA_CHECK_MS). */
export const MEDIA_STALL_MS = 700;
const MEDIA_CHECK_MS = 200;

/** NO_RELAY is why a relay-only link with no relay closes (calls.js reads it). */
export const NO_RELAY = "no network path: every call is relayed (“always relay”) and no relay is available";

/**
 * offerAction decides what an incoming offer with session does to the link
 * we have with peer (client/link.go onLinkSignal):
 *   "accept"    no link yet: answer it
 *   "restart"   a new offer on our answered session: the offerer restarts
 *               ICE after losing the path (RFC 8445 section 9): answer it
 *   "duplicate" our own session while we offer: ignore
 *   "ignore"    glare and our offer wins (our name is smaller)
 *   "replace"   glare we lose, or the peer reloaded: theirs replaces ours
 */
export function offerAction(link, me, peer, session) {
  if (!link) return "accept";
  if (link.session === session) return !link.offerer && link.remoteSet ? "restart" : "duplicate";
  if (link.offerer && !link.remoteSet && me < peer) return "ignore";
  return "replace";
}

/** Link is one peer connection. */
export class Link {
  constructor(peer, session, offerer) {
    this.peer = peer;
    this.session = session;
    this.offerer = offerer;
    this.pc = null;
    this.dc = null;
    this.transceiver = null;
    this.remoteSet = false;
    this.localSent = false;
    this.pendingIn = []; // remote candidates waiting for the remote description
    this.pendingOut = []; // local candidates waiting for our offer/answer to go out
    this.state = "new";
    this.dcOpen = false;
    this.closed = false;
    this.created = performance.now();
    this.connectedAt = 0;
    this.restarts = 0; // ICE restarts since the path was last up
    this.restartedAt = -Infinity; // when the last one was sent
    this.lostAt = 0; // when the path was lost (0 while it is up)
    this.mediaTimer = 0; // watchMedia's interval while a call is on the link
    this.rxBytes = -1; // audio packets received, as watchMedia last saw them
    this.rxAt = 0; // when that count last grew
    this.gathered = 0; // local candidates since the last gathering began
    this.restartWanted = false; // a restart waits for the server (#pathLost)
  }

  /** sender is the audio RTCRtpSender (replaceTrack target). */
  get sender() {
    return this.transceiver?.sender ?? null;
  }

  get connected() {
    return this.state === "connected";
  }
}

/** toRTCIceServers maps welcome ice_servers to RTCIceServer, dropping bad ones. */
export function toRTCIceServers(list) {
  const out = [];
  for (const s of Array.isArray(list) ? list : []) {
    const urls = (Array.isArray(s?.urls) ? s.urls : [s?.urls]).filter((u) => typeof u === "string" && /^(stun|stuns|turn|turns):/.test(u));
    if (!urls.length) continue;
    const server = { urls };
    if (typeof s.username === "string") server.username = s.username;
    if (typeof s.credential === "string") server.credential = s.credential;
    out.push(server);
  }
  return out;
}

/**
 * Links manages every peer's link. Hooks (all optional):
 *   onState(link)            connection state changed (link.state)
 *   onOpen(link)             data channel opened
 *   onMessage(link, msg)     valid data-channel message
 *   onTrack(link, stream)    remote audio arrived
 *   onDataChannel(link, dc)  the peer opened a data channel (a file transfer's)
 *   onClosed(link, reason)   link closed (by us, the peer, or failure)
 *   onInsecure(peer, why)    an offer or answer from peer was not signed by its key: refused
 * sign(type, to, body) signs an SDP body we send (sdpsig.js) and
 * verify(type, from, body) rejects one we receive that is not signed by
 * the key we trust for its sender.
 */
export class Links {
  constructor({ me, send, iceServers, hooks, rtcConfig = () => ({}), sign, verify, canSignal = () => true }) {
    this.canSignal = canSignal; // () => whether an offer can reach the peer now (signed in)
    this.me = me;
    this.send = send; // (type, to, body) => bool
    this.sign = sign; // async (type, to, body) => body with sig
    this.verify = verify; // async (type, from, body), throws when not signed by from
    this.iceServers = iceServers; // () => RTCIceServer[]
    this.hooks = hooks;
    this.rtcConfig = rtcConfig; // () => extra RTCConfiguration (e.g. relay-only)
    this.links = new Map();
    this.queue = Promise.resolve(); // serializes negotiation, like the Go client's loop
  }

  get(peer) {
    return this.links.get(peer) ?? null;
  }

  #run(fn) {
    this.queue = this.queue.then(fn).catch((e) => console.warn("parley: link:", e));
    return this.queue;
  }

  /** ensure returns the link to peer, creating it and offering if there is none. */
  ensure(peer) {
    let l = this.links.get(peer);
    if (l) return l;
    l = this.#newLink(peer, randomID(), true);
    this.links.set(peer, l);
    this.#run(async () => {
      if (l.closed) return;
      try {
        const offer = await l.pc.createOffer();
        await l.pc.setLocalDescription(offer);
        if (l.closed) return;
        const body = await this.sign("offer", peer, { session: l.session, sdp: l.pc.localDescription.sdp });
        if (!this.send("offer", peer, body)) {
          throw new Error("not connected to the server");
        }
        this.#localSent(l);
      } catch (e) {
        this.close(peer, l, `offer failed: ${e.message}`, false);
      }
    });
    return l;
  }

  /** handle processes offer, answer, candidate and bye from the server. */
  handle(env) {
    return this.#run(() => this.#handle(env));
  }

  async #handle(env) {
    const peer = env.from;
    const b = env.body;
    if (env.type === "offer" || env.type === "answer") {
      try {
        await this.verify(env.type, peer, b);
      } catch (e) {
        console.error("parley: refused an unsigned or tampered", env.type, "from", peer, e.message);
        const l = this.links.get(peer);
        if (l && l.session === b.session) this.close(peer, l, "insecure", true);
        else this.send("bye", peer, { session: b.session, reason: "insecure" });
        this.hooks.onInsecure?.(peer, e.message);
        return;
      }
    }
    switch (env.type) {
      case "offer": {
        const cur = this.links.get(peer);
        const act = offerAction(cur, this.me, peer, b.session);
        if (act === "duplicate" || act === "ignore") return;
        if (act === "restart") {
          await this.#answerRestart(cur, b.sdp);
          return;
        }
        if (act === "replace") this.close(peer, cur, "replaced by a new offer", false);
        const l = this.#newLink(peer, b.session, false);
        this.links.set(peer, l);
        try {
          await l.pc.setRemoteDescription({ type: "offer", sdp: b.sdp });
          l.remoteSet = true;
          // Answer with the transceiver the offer created, sending too.
          l.transceiver = l.pc.getTransceivers().find((t) => t.receiver.track?.kind === "audio" && !t.stopped) ?? null;
          if (l.transceiver) l.transceiver.direction = "sendrecv";
          await l.pc.setLocalDescription(await l.pc.createAnswer());
          if (l.closed) return;
          await this.#flushIn(l);
          const body = await this.sign("answer", peer, { session: l.session, sdp: l.pc.localDescription.sdp });
          if (!this.send("answer", peer, body)) {
            throw new Error("not connected to the server");
          }
          this.#localSent(l);
        } catch (e) {
          console.warn("parley: bad offer from", peer, e);
          this.close(peer, l, "bad offer", true);
        }
        return;
      }
      case "answer": {
        const l = this.links.get(peer);
        if (!l || l.session !== b.session || !l.offerer || l.remoteSet) return;
        try {
          await l.pc.setRemoteDescription({ type: "answer", sdp: b.sdp });
          l.remoteSet = true;
          await this.#flushIn(l);
        } catch (e) {
          console.warn("parley: bad answer from", peer, e);
          this.close(peer, l, "bad answer", true);
        }
        return;
      }
      case "candidate": {
        const l = this.links.get(peer);
        if (!l || l.session !== b.session || !b.candidate) return;
        const init = {
          candidate: b.candidate,
          sdpMid: b.sdpMid || null,
          sdpMLineIndex: b.sdpMLineIndex ?? null,
          usernameFragment: b.usernameFragment || null,
        };
        if (init.sdpMid === null && init.sdpMLineIndex === null) init.sdpMLineIndex = 0;
        if (!l.remoteSet) {
          if (l.pendingIn.length < 256) l.pendingIn.push(init);
          return;
        }
        await l.pc.addIceCandidate(init).catch((e) => console.debug("parley: bad candidate", e.message));
        return;
      }
      case "bye": {
        const l = this.links.get(peer);
        if (l && l.session === b.session) this.close(peer, l, "closed by peer", false);
        return;
      }
      case "restart": {
        // The answerer lost the path while ours may still look fine.
        const l = this.links.get(peer);
        if (l && l.session === b.session && l.offerer && l.remoteSet) this.#pathLost(l);
        return;
      }
    }
  }

  async #flushIn(l) {
    const list = l.pendingIn;
    l.pendingIn = [];
    for (const init of list) {
      await l.pc.addIceCandidate(init).catch((e) => console.debug("parley: bad candidate", e.message));
    }
  }

  #localSent(l) {
    l.localSent = true;
    for (const c of l.pendingOut) this.send("candidate", l.peer, c);
    l.pendingOut = [];
  }

  /**
   * #pathLost: l's path went away (the browser says disconnected, or a
   * call's media stopped: watchMedia, or the answerer says so: "restart").
   * The offerer restarts ICE with the current ICE servers, as the Go client
   * does, at most once per RESTART_SPACING_MS; the answerer asks it to
   * ("restart") and answers its offer. A path not back within
   * RESTART_GIVE_UP_MS closes the link.
   */
  #pathLost(l) {
    if (!l.lostAt) {
      l.lostAt = performance.now();
      setTimeout(() => {
        if (!l.closed && this.links.get(l.peer) === l && l.lostAt) this.close(l.peer, l, "connection lost and not recovered", true);
      }, RESTART_GIVE_UP_MS);
    }
    if (performance.now() - l.restartedAt <= RESTART_SPACING_MS) return;
    if (!this.canSignal()) {
      // No server to carry an offer: a restart applied here would only
      // end the pair a stall may still bring back. It waits (#checkMedia
      // asks again once the server is back; RESTART_GIVE_UP_MS still
      // closes a path that stays dead).
      l.restartWanted = true;
      return;
    }
    l.restartWanted = false;
    if (l.offerer && l.restarts < MAX_ICE_RESTARTS) {
      l.restartedAt = performance.now();
      this.#run(() => this.#restart(l));
    } else if (!l.offerer) {
      // Only the offerer restarts: ask it (its side of the path may look fine).
      l.restartedAt = performance.now();
      this.send("restart", l.peer, { session: l.session });
    }
  }

  /**
   * watchMedia watches peer's link while a call is on it: audio flows both
   * ways (50 packets/s), so a link that received nothing for
   * MEDIA_STALL_MS has lost its path. Chromium's own ICE takes several
   * seconds to say "disconnected"; the page restarts ICE at once.
   */
  watchMedia(peer, on) {
    const l = this.links.get(peer);
    if (!l) return;
    clearInterval(l.mediaTimer);
    l.mediaTimer = 0;
    if (!on) return;
    l.rxBytes = -1;
    l.rxAt = performance.now();
    l.mediaTimer = setInterval(() => this.#checkMedia(l), MEDIA_CHECK_MS);
  }

  async #checkMedia(l) {
    if (l.closed || this.links.get(l.peer) !== l) {
      clearInterval(l.mediaTimer);
      return;
    }
    // The peer's audio (RTP packets, silence included) is the measure:
    // transport byte counts also grow with ICE checks on other pairs.
    let bytes = -1;
    try {
      (await l.pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && typeof s.packetsReceived === "number") bytes = Math.max(bytes, s.packetsReceived);
      });
    } catch {
      return;
    }
    const now = performance.now();
    if (bytes !== l.rxBytes) {
      l.rxBytes = bytes;
      l.rxAt = now;
      if (l.lostAt && l.state === "connected") {
        l.lostAt = 0; // media again: the path is back
        l.restarts = 0;
      }
      return;
    }
    if (now - l.rxAt > MEDIA_STALL_MS && !l.lostAt) this.#pathLost(l);
    else if (l.lostAt && this.canSignal() && (l.restartWanted || (!l.offerer && now - l.restartedAt > RESTART_SPACING_MS))) {
      // A restart waiting for the server, or (answerer) another request
      // to the offerer every RESTART_SPACING_MS while the path stays down,
      // as the Go client's answerer does: one sent while the offerer was
      // itself still away from the server is lost.
      this.#pathLost(l);
    }
  }

  /** #restart sends an ICE-restart offer on l's session (offerer side). */
  async #restart(l) {
    if (l.closed || this.links.get(l.peer) !== l) return;
    l.restarts++;
    l.gathered = 0;
    try {
      l.pc.setConfiguration({ ...l.pc.getConfiguration(), iceServers: this.iceServers() });
      await l.pc.setLocalDescription(await l.pc.createOffer({ iceRestart: true }));
      l.remoteSet = false; // the answer to this offer is awaited
      this.send("offer", l.peer, await this.sign("offer", l.peer, { session: l.session, sdp: l.pc.localDescription.sdp }));
    } catch (e) {
      console.warn("parley: ICE restart with", l.peer, e);
    }
  }

  /** #answerRestart answers the offerer's ICE-restart offer. */
  async #answerRestart(l, sdp) {
    l.gathered = 0;
    try {
      l.pc.setConfiguration({ ...l.pc.getConfiguration(), iceServers: this.iceServers() });
      await l.pc.setRemoteDescription({ type: "offer", sdp });
      await l.pc.setLocalDescription(await l.pc.createAnswer());
      this.send("answer", l.peer, await this.sign("answer", l.peer, { session: l.session, sdp: l.pc.localDescription.sdp }));
    } catch (e) {
      console.warn("parley: answering ICE restart from", l.peer, e);
    }
  }

  #newLink(peer, session, offerer) {
    const l = new Link(peer, session, offerer);
    const pc = new RTCPeerConnection({ ...this.rtcConfig(), iceServers: this.iceServers(), bundlePolicy: "max-bundle" });
    l.pc = pc;
    if (offerer) l.transceiver = pc.addTransceiver("audio", { direction: "sendrecv" });
    l.dc = pc.createDataChannel(DC_LABEL, { negotiated: true, id: 0 });
    const live = () => !l.closed && this.links.get(peer) === l;

    pc.onicecandidate = (ev) => {
      const c = ev.candidate;
      if (live() && !c && !l.gathered && !l.connected) {
        // Gathering found nothing (relay-only and no relay, or no usable
        // interface): no path can ever form, so fail now, saying why,
        // rather than after ICE's timeouts (client/link.go onGathered).
        const relayOnly = pc.getConfiguration().iceTransportPolicy === "relay";
        queueMicrotask(() => live() && this.close(peer, l, relayOnly ? NO_RELAY : "no network path: no network interface could be used", true));
        return;
      }
      if (!live() || !c || !c.candidate) return; // null/empty: end of candidates
      l.gathered++;
      const body = { session, candidate: c.candidate };
      if (c.sdpMid !== null && c.sdpMid !== undefined) body.sdpMid = c.sdpMid;
      if (c.sdpMLineIndex !== null && c.sdpMLineIndex !== undefined) body.sdpMLineIndex = c.sdpMLineIndex;
      if (c.usernameFragment) body.usernameFragment = c.usernameFragment;
      if (l.localSent) this.send("candidate", peer, body);
      else l.pendingOut.push(body);
    };
    pc.onconnectionstatechange = () => {
      if (!live()) return;
      l.state = pc.connectionState;
      if (l.state === "connected" && !l.connectedAt) l.connectedAt = performance.now();
      if (l.state === "connected") {
        l.lostAt = 0;
        l.restarts = 0;
      }
      this.hooks.onState?.(l);
      // A path that was up and went away (a relay stopped, a network
      // changed): the offerer restarts ICE with the current ICE servers,
      // as the Go client does; the answerer answers that offer.
      if ((l.state === "disconnected" || l.state === "failed") && l.connectedAt) {
        if (l.state === "failed" && l.restarts >= MAX_ICE_RESTARTS) this.close(peer, l, "no network path (ICE failed)", true);
        else this.#pathLost(l);
        return;
      }
      if (l.state === "failed") this.close(peer, l, "no network path (ICE failed)", true);
    };
    pc.ondatachannel = (ev) => {
      if (live()) this.hooks.onDataChannel?.(l, ev.channel); // file channels (files.js)
      else ev.channel.close();
    };
    pc.ontrack = (ev) => {
      if (!live() || ev.track.kind !== "audio") return;
      this.hooks.onTrack?.(l, ev.streams[0] ?? new MediaStream([ev.track]));
    };
    l.dc.onopen = () => {
      if (!live()) return;
      l.dcOpen = true;
      this.hooks.onOpen?.(l);
    };
    l.dc.onclose = () => {
      l.dcOpen = false;
    };
    l.dc.binaryType = "arraybuffer";
    l.dc.onmessage = (ev) => {
      if (!live()) return;
      let msg;
      try {
        // The Go client sends its JSON as binary messages; both are accepted.
        msg = decodeDC(typeof ev.data === "string" ? ev.data : utf8.decode(ev.data));
      } catch (e) {
        console.debug("parley: bad data channel message from", peer, e.message);
        return;
      }
      this.hooks.onMessage?.(l, msg);
    };
    return l;
  }

  /** close forgets l and closes its peer connection; sendBye tells the peer. */
  close(peer, l, reason, sendBye) {
    if (!l) return;
    if (this.links.get(peer) === l) this.links.delete(peer);
    if (l.closed) return;
    l.closed = true;
    l.dcOpen = false;
    clearInterval(l.mediaTimer);
    if (sendBye) this.send("bye", peer, { session: l.session, reason: reason.slice(0, 256) });
    try {
      l.pc.close();
    } catch {
      // already closed
    }
    this.hooks.onClosed?.(l, reason);
  }

  /** closeAll closes every link. */
  closeAll(reason, sendBye) {
    for (const [peer, l] of [...this.links]) this.close(peer, l, reason, sendBye);
  }
}
