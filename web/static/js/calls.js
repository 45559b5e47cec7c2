// Calls: ring, accept, decline and hangup go through the server; media goes
// over the peer's link (client/call.go is the reference). The link's audio
// sender carries no track until the call is accepted AND the link is
// connected; then the microphone track is put on it with replaceTrack, so no
// renegotiation is needed (RFC 8829 section 4.1.2: a transceiver with no
// track sends nothing). On hang-up the track is stopped and removed.

import { NO_RELAY } from "./links.js";
import { randomID } from "./proto.js";
import { cleanText, mediaError, peerEndWords } from "./words.js";

/** NO_PATH_MS is how long an answered call may wait for its link to connect. */
export const NO_PATH_MS = 8000;

/** getMic opens the microphone (deviceId "" = the default). */
export async function getMic(deviceId) {
  if (!navigator.mediaDevices?.getUserMedia) {
    const e = new Error("getUserMedia is not available");
    e.name = "TypeError";
    throw e;
  }
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (deviceId) audio.deviceId = { exact: deviceId };
  const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
  const track = stream.getAudioTracks()[0];
  if (!track) {
    const e = new Error("no audio track");
    e.name = "NotFoundError";
    throw e;
  }
  return track;
}

/**
 * Calls holds at most one call and emits "change" whenever it changes, and
 * "error" (detail: words) for problems to show. A call is
 *   {id, peer, outgoing, accepted, rung, state: "ringing"|"accepted"|"connected", started, connectedAt, muted, mic}
 * (rung: the server handed our ring to the peer, whose device rings now)
 * and the last ended call is kept in `last` as {peer, reason, durationMs}.
 */
export class Calls extends EventTarget {
  constructor({ sig, links, openMic = getMic, ringTimeout = 60000, noPathTimeout = NO_PATH_MS, accept = () => true }) {
    super();
    this.accept = accept; // (peer) => false declines their calls ("refused")
    this.sig = sig;
    this.links = links;
    this.openMic = openMic;
    this.ringTimeout = ringTimeout;
    this.noPathTimeout = noPathTimeout;
    this.call = null;
    this.last = null;
    this.micDeviceId = "";
    this.insecure = new Map(); // peer -> when its tampered link was refused
    this.noRelay = new Map(); // peer -> when its link closed for want of a relay (relay-only)
  }

  #changed() {
    this.dispatchEvent(new CustomEvent("change"));
  }

  #error(words) {
    this.dispatchEvent(new CustomEvent("error", { detail: words }));
  }

  /** place rings peer. It resolves once the ring is sent (or the call failed). */
  async place(peer) {
    if (this.call) {
      this.#error(this.call.peer === peer ? `You’re already in a call with ${peer}.` : `Hang up the call with ${this.call.peer} first.`);
      return;
    }
    const k = { id: randomID(), peer, outgoing: true, accepted: false, state: "ringing", started: Date.now(), connectedAt: 0, muted: false, mic: null, micPromise: null };
    this.call = k;
    this.last = null;
    this.links.ensure(peer); // negotiate while the microphone opens
    this.#changed();
    if (!(await this.#openMicFor(k))) {
      if (this.call === k) this.#end("the microphone could not be used", false);
      return;
    }
    if (this.call !== k || k.accepted || !k.outgoing) return; // hung up, or glare made us the answerer
    try {
      await this.sig.request("ring", peer, { call: k.id }, { id: k.id });
      // The server handed the ring to the peer: it is ringing there now.
      if (this.call === k && k.outgoing && !k.accepted) {
        k.rung = true;
        this.#changed();
      }
    } catch (e) {
      if (this.call !== k) return;
      const why = e.code === "offline" ? `${peer} is offline` : e.code === "not_signed_in" ? "not connected to the server" : e.message;
      this.#end(`could not ring ${peer}: ${why}`, false);
    }
  }

  /** answer accepts the incoming call. */
  async answer() {
    const k = this.call;
    if (!k || k.outgoing || k.accepted) return;
    if (!(await this.#openMicFor(k))) return; // still ringing: the person may fix it and answer again
    if (this.call !== k || k.accepted) return;
    if (!this.sig.send("accept", k.peer, { call: k.id })) {
      this.#error("You’re not connected to the server right now, so the call can’t be answered. Reconnecting…");
      return;
    }
    k.accepted = true;
    k.acceptedAt = Date.now();
    k.state = "accepted";
    this.#changed();
    this.#maybeConnect();
  }

  /** decline refuses the incoming call. */
  decline() {
    const k = this.call;
    if (!k || k.outgoing || k.accepted) return;
    this.#end("you declined", true);
  }

  /** hangup ends the call in any state. */
  hangup() {
    if (this.call) this.#end(this.call.accepted || this.call.outgoing ? "you hung up" : "you declined", true);
  }

  /** setMuted mutes or unmutes the microphone (the track sends silence). */
  setMuted(muted) {
    const k = this.call;
    if (!k) return;
    k.muted = muted;
    if (k.mic) k.mic.enabled = !muted;
    this.#sendMute(k);
    this.#changed();
  }

  /** #sendMute tells the peer (on the data channel) whether we are muted. */
  #sendMute(k) {
    const l = this.links.get(k.peer);
    try {
      if (l?.dcOpen) l.dc.send(JSON.stringify({ type: "mute", muted: k.muted }));
    } catch {
      // the next toggle says it again
    }
  }

  /** onRemoteMute: the peer of the call muted (or unmuted) its microphone. */
  onRemoteMute(peer, muted) {
    const k = this.call;
    if (!k || k.peer !== peer) return;
    k.remoteMuted = !!muted;
    this.#changed();
  }

  /** setMic switches microphones, live during a call. */
  async setMic(deviceId) {
    this.micDeviceId = deviceId;
    const k = this.call;
    if (!k?.mic) return;
    let track;
    try {
      track = await this.openMic(deviceId);
    } catch (e) {
      this.#error(mediaError(e));
      return;
    }
    if (this.call !== k) {
      track.stop();
      return;
    }
    const old = k.mic;
    track.enabled = !k.muted;
    this.#watchMic(k, track);
    k.mic = track;
    if (k.state === "connected") await this.links.get(k.peer)?.sender?.replaceTrack(track).catch(() => {});
    old?.stop();
    this.#changed();
  }

  async #openMicFor(k) {
    if (k.mic) return true;
    if (!k.micPromise) k.micPromise = this.openMic(this.micDeviceId);
    try {
      const track = await k.micPromise;
      if (this.call !== k) {
        track.stop();
        return false;
      }
      if (!k.mic) {
        track.enabled = !k.muted;
        k.mic = track;
        this.#watchMic(k, track);
      }
      this.dispatchEvent(new CustomEvent("mic"));
      this.#changed(); // "opening your microphone" is over
      return true;
    } catch (e) {
      k.micPromise = null;
      this.#error(mediaError(e));
      return false;
    }
  }

  #watchMic(k, track) {
    track.onended = () => {
      if (this.call === k && k.mic === track) this.#error("Your microphone stopped (unplugged or taken by another app). Pick another in the Microphone list.");
    };
  }

  /** onSignal handles ring, accept, decline and hangup from the server. */
  onSignal(env) {
    const peer = env.from;
    const id = env.body.call;
    const k = this.call;
    switch (env.type) {
      case "ring":
        if (env.body.resume === true) {
          // The peer checks that we still have its call (its path came
          // back, or its link was made anew); a reload forgot it: say so.
          if (!k || k.peer !== peer || k.id !== id) this.sig.send("hangup", peer, { call: id, code: "gone" });
          return;
        }
        if (!(k && k.peer === peer) && !this.accept(peer)) {
          // Blocked, or not a contact while only contacts may call: the
          // caller's app says so in its own words (code "refused").
          this.sig.send("decline", peer, { call: id, code: "refused" });
          this.dispatchEvent(new CustomEvent("refused", { detail: { peer } }));
          return;
        }
        if (!k && Date.now() - (this.noRelay.get(peer) ?? -Infinity) < 10000) {
          // The link for this call already failed for want of a relay
          // (the ring came after the offer): say so at once.
          this.sig.send("decline", peer, { call: id, code: "no_relay" });
          this.last = { peer, reason: NO_RELAY, durationMs: 0, outgoing: false, connected: false };
          this.#changed();
          return;
        }
        if (Date.now() - (this.insecure.get(peer) ?? -Infinity) < 30000) {
          this.sig.send("decline", peer, { call: id, code: "insecure" });
          return;
        }
        if (k && k.peer === peer) {
          if (k.outgoing && !k.accepted && this.sig.name > peer) {
            // Both rang at once: the smaller name's call stands; we answer it.
            k.id = id;
            k.outgoing = false;
            this.answer();
            return;
          }
          if (k.id !== id && !k.outgoing) this.sig.send("decline", peer, { call: id, code: "busy" });
          return;
        }
        if (k) {
          this.sig.send("decline", peer, { call: id, code: "busy" });
          // The callee of a busy call sees that someone tried.
          this.dispatchEvent(new CustomEvent("ended", { detail: { id, peer, outgoing: false, connected: false, durationMs: 0, reason: "busy", missed: true, busy: true } }));
          return;
        }
        this.call = { id, peer, outgoing: false, accepted: false, state: "ringing", started: Date.now(), connectedAt: 0, muted: false, mic: null, micPromise: null };
        this.last = null;
        this.#changed();
        return;
      case "accept":
        if (!k || k.peer !== peer || k.id !== id || !k.outgoing || k.accepted) return;
        k.accepted = true;
        k.acceptedAt = Date.now();
        k.state = "accepted";
        this.#changed();
        this.#maybeConnect();
        return;
      case "decline":
      case "hangup":
        if (k && k.peer === peer && k.id === id) {
          const code = env.body.code || (env.type === "decline" ? "declined" : "hung_up");
          // Our words from the peer's code; its own text, if any, only
          // as its words.
          const said = typeof env.body.reason === "string" && env.body.reason ? ` (${peer}: “${cleanText(env.body.reason)}”)` : "";
          this.#end(peerEndWords(peer, code) + said, false);
        }
        return;
    }
  }

  /**
   * onInsecure ends a call whose link was refused as tampered with, and
   * declines peer's rings for a while (a ring follows its offer).
   */
  onInsecure(peer) {
    this.insecure.set(peer, Date.now());
    if (this.call?.peer === peer) this.#end(`the connection to ${peer} was tampered with on the way and refused`, true, "insecure");
  }

  /** onLinkState follows the link of the call's peer. */
  onLinkState(link) {
    if (this.call?.peer !== link.peer) return;
    this.#maybeConnect();
    this.#changed();
  }

  /** onLinkClosed ends a call whose media path is gone. */
  onLinkClosed(link, reason) {
    if (reason === NO_RELAY) this.noRelay.set(link.peer, Date.now());
    const k = this.call;
    if (!k || k.peer !== link.peer) return;
    if (reason === NO_RELAY) {
      this.#end(reason, true, "no_relay");
    } else if (reason.startsWith("no network path")) {
      this.#end(`no network path to ${k.peer}: the connection failed (firewalls or NATs block it and no relay was usable)`, true, "no_path");
    } else if (k.state === "connected") {
      this.#end(`the connection to ${k.peer} was lost`, true, "no_path");
    } else if ((k.accepted || k.outgoing) && (reason === "closed by peer" || reason === "replaced by a new offer")) {
      // Glare replaced the link, or the peer closed it: make sure a fresh
      // one carries the call (an incoming offer may already have made it).
      queueMicrotask(() => this.call === k && this.links.ensure(k.peer));
    }
  }

  /** onPresence ends the call when its peer goes offline. */
  onOffline(peer) {
    if (this.call?.peer === peer) this.#end(`${peer} went offline`, false, "offline");
  }

  /**
   * tick times out calls nobody answers, and answered calls whose link
   * found no path: the browser's own ICE takes ~30 s to fail, the Go
   * client's 6 s (issue 9: a call with no path ends within 10 s).
   */
  tick(now = Date.now()) {
    const k = this.call;
    // The ring timeout is for a call nobody answered; an accepted one
    // that finds no path ends after noPathTimeout (or with its link).
    if (k && !k.accepted && now - k.started > this.ringTimeout) this.#end(k.outgoing ? "no answer" : "missed call", true, "no_answer");
    else if (k && k.accepted && k.state !== "connected" && k.acceptedAt && now - k.acceptedAt > this.noPathTimeout && !this.links.get(k.peer)?.connected) {
      this.#end(`no network path to ${k.peer}: the connection failed (firewalls or NATs block it and no relay was usable)`, true, "no_path");
    }
  }

  async #maybeConnect() {
    const k = this.call;
    if (!k || !k.accepted || !k.mic || k.state === "connected") return;
    const l = this.links.get(k.peer) ?? this.links.ensure(k.peer);
    if (!l.connected) return;
    if (!l.sender) {
      this.#end(`${k.peer}’s connection carries no audio`, true);
      return;
    }
    k.state = "connected";
    k.connectedAt = Date.now();
    this.links.watchMedia?.(k.peer, true);
    if (k.muted) this.#sendMute(k);
    this.#changed();
    try {
      await l.sender.replaceTrack(k.mic);
    } catch (e) {
      if (this.call === k) this.#end(`could not send audio: ${e.message}`, true);
    }
  }

  /**
   * #end ends the call; notify tells the peer with a hangup (a decline
   * while it still rings for us) carrying code (proto.EndCode), never our
   * words: the peer words it itself.
   */
  #end(reason, notify, code = "hung_up") {
    const k = this.call;
    if (!k) return;
    this.call = null;
    if (notify) {
      const type = !k.outgoing && !k.accepted ? "decline" : "hangup";
      if (type === "decline" && code === "hung_up") code = "declined";
      this.sig.send(type, k.peer, { call: k.id, code });
    }
    const l = this.links.get(k.peer);
    this.links.watchMedia?.(k.peer, false);
    if (l?.sender && !l.closed) l.sender.replaceTrack(null).catch(() => {});
    k.mic?.stop();
    k.micPromise?.then((t) => t !== k.mic && t.stop()).catch(() => {});
    this.last = { peer: k.peer, reason, durationMs: k.connectedAt ? Date.now() - k.connectedAt : 0, outgoing: k.outgoing, connected: !!k.connectedAt };
    // For the call log: missed is an incoming call nobody here answered or
    // refused (the caller gave up, or it rang out).
    const missed = !k.outgoing && !k.accepted && (!notify || code === "no_answer");
    this.dispatchEvent(new CustomEvent("ended", { detail: { ...this.last, id: k.id, missed, declined: !k.outgoing && !k.accepted && notify && code !== "no_answer" } }));
    this.#changed();
  }
}
