// Words for people: every error the page can meet, said plainly. Codes are
// the stable wire codes of proto/errors.go plus a few local ones.

/**
 * serverError explains a ProtoError. ctx may name the other person (peer),
 * our name (name) and what we were doing (what: "message", "call").
 */
export function serverError(code, message = "", ctx = {}) {
  const peer = ctx.peer || "They";
  switch (code) {
    case "name_taken":
      return `The name “${ctx.name ?? ""}” already belongs to someone else (another browser or device holds its key). Please choose a different name.`;
    case "bad_name":
      return "That name can’t be used. Names are 1–32 lowercase letters, digits, ‘-’, ‘_’ or ‘.’, starting with a letter or digit, and a few words like “admin” are reserved.";
    case "auth_failed":
      return "The server did not accept this browser’s identity key. Reload the page to try again.";
    case "offline":
      if (ctx.what === "call") return `${peer} is offline right now, so the call could not ring.`;
      if (ctx.what === "message") return `${peer} is offline right now; the message was not delivered.`;
      return `${peer} is offline right now.`;
    case "rate_limited":
      return "You’re sending too fast. Wait a moment and try again.";
    case "replaced":
      return "You signed in with this name in another tab or on another device, so this page was disconnected.";
    case "shutting_down":
      return "The Parley server is restarting. Reconnecting…";
    case "unauthenticated":
      return "Signing in took too long. Reconnecting…";
    case "too_large":
      return "That was too large to send.";
    case "not_signed_in":
      return "You’re not connected to the server right now; it will be sent when the connection is back.";
    case "timeout":
      return "The server did not answer in time.";
    case "connection_lost":
      return "The connection to the server was lost.";
    case "unsupported":
      return "This browser can’t create the identity key Parley needs (Ed25519 in WebCrypto). Please use a current version of Chrome, Edge, Firefox or Safari.";
    case "insecure":
      return "This page needs a secure address to keep your identity key and use the microphone: open it over https://, or as http://localhost on the computer running Parley.";
    case "no-indexeddb":
      return "This browser doesn’t allow this page to store data (IndexedDB is off, perhaps in a private window), so your name can’t be kept.";
  }
  return message ? `Something went wrong: ${message}` : `Something went wrong (${code}).`;
}

/** mediaError explains a getUserMedia failure. */
export function mediaError(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow the microphone for this site (the icon in the address bar), then try again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in or pick another in the Microphone list, then try again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone could not be started; another app may be using it.";
    case "TypeError":
      return "This page can’t use the microphone on an insecure address; open it over https:// or on localhost.";
  }
  return `The microphone could not be used (${err?.message || err}).`;
}

/** callEnded words why the call with peer ended (reason from calls.js or the peer). */
export function callEnded(peer, reason, durationMs) {
  const took = durationMs > 0 ? ` after ${duration(durationMs)}` : "";
  return `Call with ${peer} ended${took}${reason ? ` — ${reason}` : ""}`;
}

/** duration formats milliseconds as m:ss or h:mm:ss. */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** ago words a past unix-ms time relative to now. */
export function ago(ms, now = Date.now()) {
  const s = Math.round((now - ms) / 1000);
  if (!Number.isFinite(s) || s < 0) return "";
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/**
 * peerEndWords says in the page's own words why peer ended a call, from
 * its code (proto.EndCode) only: whatever text the peer sent is shown
 * apart, as its words.
 */
export function peerEndWords(peer, code) {
  switch (code) {
    case "declined":
      return `${peer} declined`;
    case "busy":
      return `${peer} is busy`;
    case "no_answer":
      return "no answer";
    case "no_path":
      return `no network path: ${peer} could not reach you (firewalls or NATs block it and no relay was usable)`;
    case "refused":
      return `${peer} does not accept calls from you`; // contacts only, or blocked: never says which
    case "insecure":
      return `${peer} refused the connection: it was tampered with on the way`;
    case "gone":
      return `${peer} no longer has this call (their app restarted)`;
    case "offline":
      return `${peer} went offline`;
    case "no_relay":
      return `no network path: ${peer} relays every call (“always relay”) and no relay is available to ${peer}`;
  }
  return `${peer} hung up`;
}

/** cleanText drops control characters and bidirectional overrides from text someone else chose. */
export function cleanText(s) {
  return String(s).replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, "");
}
