// Wire rules of the Parley signaling protocol, mirrored from the Go package
// proto (proto/envelope.go, proto/names.go, proto/datachannel.go). The page
// validates what it sends and what it receives by the same rules as the Go
// client, so a bad frame from anyone is dropped, never trusted.

export const VERSION = 1;
export const MAX_FRAME = 64 << 10; // proto.MaxFrameSize
export const MAX_NAME = 32; // proto.MaxNameLen
export const MAX_ID = 64; // proto.MaxIDLen
export const MAX_TEXT = 4000; // proto.MaxTextLen, in UTF-8 bytes
export const MAX_DC = 16 << 10; // proto.MaxDCMessage
export const DC_LABEL = "parley-chat"; // proto.DataChannelLabel
export const MAX_SEALED = 3 * MAX_TEXT + 512; // proto.MaxSealedCiphertext, bytes before base64

// Routed types are client-to-client messages the server forwards to "to".
export const ROUTED = new Set([
  "offer", "answer", "candidate", "bye", "restart",
  "ring", "accept", "decline", "hangup",
  "chat", "delivered", "read", "typing",
  "file",
]);
const SERVER_TYPES = new Set(["hello", "welcome", "presence", "ack", "error", "supernodes", "sealed_receipt", "presence_list", "directory_page"]);
export const MAX_PRESENCE_LIST = 64; // proto.MaxPresenceList
export const MAX_CONTACTS_PER_FRAME = 1000; // proto.MaxContactsPerFrame
export const MAX_DIRECTORY_LIMIT = 50; // proto.MaxDirectoryLimit
// Stored by the server for an offline recipient and delivered later; it
// names its sender like a routed message.
const FROM_PEER = new Set([...ROUTED, "sealed"]);

const RESERVED = new Set(["server", "parley", "system", "admin"]);
const NAME_RE = /^[a-z0-9][a-z0-9._-]*$/;
const ID_RE = /^[A-Za-z0-9._:-]+$/;

/** ProtoError is an error with a stable wire code (proto.Error). */
export class ProtoError extends Error {
  constructor(code, message, ref) {
    super(message || code);
    this.code = code;
    this.ref = ref || "";
  }
}

/** normalizeName turns what a person typed into a wire name (lower case, trimmed). */
export function normalizeName(typed) {
  return String(typed ?? "").trim().toLowerCase();
}

/**
 * checkName returns null when name obeys the name rules, else a sentence
 * saying what is wrong. register adds the reserved-name check.
 */
export function checkName(name, register = false) {
  if (typeof name !== "string" || name === "") return "Type a name first.";
  if (name.length > MAX_NAME) return `Names are at most ${MAX_NAME} characters.`;
  if (!NAME_RE.test(name)) {
    return "Use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit.";
  }
  if (register && RESERVED.has(name)) return `The name "${name}" is reserved.`;
  return null;
}

/** validID reports whether id is a usable message, call or session id. */
export function validID(id) {
  return typeof id === "string" && id.length >= 1 && id.length <= MAX_ID && ID_RE.test(id);
}

const encoder = new TextEncoder();

/** utf8Len is the length of s in UTF-8 bytes. */
export function utf8Len(s) {
  return encoder.encode(s).length;
}

/** checkText returns null for a sendable chat text, else why not. */
export function checkText(s) {
  if (typeof s !== "string" || s === "") return "The message is empty.";
  const n = utf8Len(s);
  if (n > MAX_TEXT) return `The message is too long (${n} bytes; the limit is ${MAX_TEXT}).`;
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s)) {
    return "The message contains broken characters.";
  }
  return null;
}

/**
 * checkDisplayName returns null for a usable display name (what a person
 * calls themselves, beside their handle), else why not: the rules of
 * proto.ValidateDisplayName — 1–40 characters (160 bytes), no control or
 * formatting characters but the emoji joiner, one plain space between
 * words and none at the ends.
 */
export function checkDisplayName(s) {
  if (typeof s !== "string" || s === "") return "The display name is empty.";
  if ([...s].length > 40 || utf8Len(s) > 160) return "The display name is longer than 40 characters.";
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s)) return "The display name contains broken characters.";
  if (/[\p{Cc}\p{Cf}]/u.test(s.replaceAll("\u200d", ""))) return "The display name contains a control or formatting character.";
  if (/^\s|\s$|\s\s|[^\S ]/u.test(s)) return "Use one plain space between words, none at the ends.";
  return null;
}

/** validDisplayName is s when it is a usable display name, else "" (a peer's bad one is dropped, its message kept). */
export function validDisplayName(s) {
  return typeof s === "string" && s !== "" && checkDisplayName(s) === null ? s : "";
}

/** randomID returns 12 URL-safe base64 characters (72 random bits), like the Go client. */
export function randomID() {
  const b = crypto.getRandomValues(new Uint8Array(9));
  return b64(b).replaceAll("+", "-").replaceAll("/", "_");
}

/** b64 encodes bytes as standard base64. */
export function b64(bytes) {
  let s = "";
  for (const x of bytes) s += String.fromCharCode(x);
  return btoa(s);
}

/** unb64 decodes standard base64, or returns null. */
export function unb64(s) {
  try {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}

/** authPayload is the byte string an auth signature covers (proto.AuthPayload). */
export function authPayload(challenge, name, publicKey) {
  return encoder.encode("parley-auth-v1\n" + challenge + "\n" + name + "\n" + publicKey);
}

// Sealed offline messages (proto/offline.go; the crypto is in sealed.js).
export const SEALED_VERSION = 2; // proto.SealedVersion
export const SEALED_LABEL = "parley-sealed-v2"; // proto.SealedInfoLabel

/** encKeyPayload is what an identity key signs to bind an X25519 key to name (proto.EncKeyPayload). */
export function encKeyPayload(name, encKey) {
  return encoder.encode("parley-enc-key-v1\n" + name + "\n" + encKey);
}

/** sealedInfo is the HKDF info of a sealed message (proto.SealedInfo): label || sender id key || recipient id key. */
export function sealedInfo(senderKey, recipientKey) {
  const label = encoder.encode(SEALED_LABEL);
  const out = new Uint8Array(label.length + senderKey.length + recipientKey.length);
  out.set(label, 0);
  out.set(senderKey, label.length);
  out.set(recipientKey, label.length + senderKey.length);
  return out;
}

/** sealedAAD is the AES-GCM additional data of a sealed message (proto.SealedAAD). */
export function sealedAAD(id, from, to) {
  return encoder.encode(SEALED_LABEL + "\n" + id + "\n" + from + "\n" + to);
}

/** b64n reports whether s is standard base64 of exactly n bytes. */
export function b64n(s, n) {
  return typeof s === "string" && s.length === 4 * Math.ceil(n / 3) && unb64(s)?.length === n;
}

/** encodeEnvelope builds the JSON text of one frame. */
export function encodeEnvelope(type, { id, to, body } = {}) {
  const env = { v: VERSION, type };
  if (id) env.id = id;
  if (to) env.to = to;
  if (body !== undefined) env.body = body;
  const text = JSON.stringify(env);
  const n = utf8Len(text);
  if (n > MAX_FRAME) throw new ProtoError("too_large", `${type} is ${n} bytes; the limit is ${MAX_FRAME}`);
  return text;
}

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const optStr = (v, max) => v === undefined || v === null || (typeof v === "string" && v.length <= max);

const optRef = (r) => r === undefined || r === "" || validID(r);
const entries = (es) => es === undefined || es === null ||
  (Array.isArray(es) && es.length <= MAX_PRESENCE_LIST && es.every((p) => isObj(p) && checkName(p.name) === null && BODY.presence(p)));

// Body checks for what a server or peer may send us (proto/messages.go).
const BODY = {
  hello: (b) => typeof b.challenge === "string" && (unb64(b.challenge)?.length ?? 0) >= 16,
  welcome: (b) => checkName(b.name) === null && (b.online === undefined || b.online === null ||
    (Array.isArray(b.online) && b.online.length <= 10000 && b.online.every((p) => isObj(p) && BODY.presence(p)))),
  presence: (b) => (b.name === undefined || b.name === "" || checkName(b.name) === null) &&
    ["online", "away", "offline"].includes(b.status) &&
    (b.public_key === undefined || b.public_key === "" || b64n(b.public_key, 32)) &&
    // enc_key and its binding come together or not at all (proto.Presence).
    ((b.enc_key === undefined || b.enc_key === "") && (b.enc_sig === undefined || b.enc_sig === "") ||
      b64n(b.enc_key, 32) && b64n(b.enc_sig, 64)),
  ack: (b) => validID(b.ref),
  error: (b) => typeof b.code === "string" && b.code !== "" && optStr(b.message, 1024),
  offer: (b) => validID(b.session) && typeof b.sdp === "string" && b.sdp.startsWith("v=0") && b.sdp.length <= 48 << 10,
  answer: (b) => BODY.offer(b),
  candidate: (b) => validID(b.session) && typeof b.candidate === "string" && b.candidate.length <= 1024 &&
    (b.candidate === "" || b.candidate.startsWith("candidate:")) && optStr(b.sdpMid, 64) && optStr(b.usernameFragment, 256) &&
    (b.sdpMLineIndex === undefined || b.sdpMLineIndex === null || Number.isInteger(b.sdpMLineIndex)),
  bye: (b) => validID(b.session) && optStr(b.reason, 256),
  restart: (b) => validID(b.session),
  ring: (b) => validID(b.call) && optStr(b.reason, 256),
  accept: (b) => BODY.ring(b),
  decline: (b) => BODY.ring(b),
  hangup: (b) => BODY.ring(b),
  chat: (b) => validID(b.id) && checkText(b.text) === null && (b.file === undefined || b.file === null || checkFileInfo(b.file) === null),
  // proto.FileControl: a step of a file transfer (files.js).
  file: (b) => checkFileControl(b) === null,
  delivered: (b) => validID(b.id),
  read: (b) => validID(b.id),
  typing: () => true,
  // proto.Sealed (an end-to-end sealed offline message) and its receipt.
  sealed: (b) => b.v === SEALED_VERSION && validID(b.id) && b64n(b.sender_key, 32) && b64n(b.sender_enc, 32) &&
    b64n(b.sender_enc_sig, 64) && b64n(b.salt, 16) && b64n(b.nonce, 12) &&
    typeof b.ciphertext === "string" && b.ciphertext.length > 24 && b.ciphertext.length <= 4 * Math.ceil(MAX_SEALED / 3) &&
    (b.stored === undefined || Number.isInteger(b.stored) && b.stored >= 0),
  sealed_receipt: (b) => validID(b.id),
  // proto/contacts.go: presence of several users (the answer to contacts)
  // and a page of the directory.
  presence_list: (b) => optRef(b.ref) && entries(b.entries),
  directory_page: (b) => optRef(b.ref) && entries(b.entries) && (b.next === undefined || b.next === "" || checkName(b.next) === null),
  // proto.SupernodeList: supernodes this user may relay through, and the
  // same supernodes as TURN servers for browsers.
  supernodes: (b) => (b.supernodes === undefined || b.supernodes === null ||
    (Array.isArray(b.supernodes) && b.supernodes.length <= 16 && b.supernodes.every((n) => isObj(n) && validID(n.id) && optStr(n.label, 64) &&
      optStr(n.turn_udp, 64) && optStr(n.turn_tcp, 64) && optStr(n.turn_tls, 64)))) &&
    (b.ice_servers === undefined || b.ice_servers === null || (Array.isArray(b.ice_servers) && b.ice_servers.length <= 64)) &&
    optStr(b.reason, 512),
};

/**
 * decodeEnvelope parses and validates one frame from the server. It throws
 * a ProtoError for anything malformed, so callers can drop it.
 */
export function decodeEnvelope(text) {
  if (typeof text !== "string") throw new ProtoError("bad_frame", "binary frames are not part of the protocol");
  if (text.length > MAX_FRAME) throw new ProtoError("too_large", `frame of ${text.length} bytes`);
  let env;
  try {
    env = JSON.parse(text);
  } catch (e) {
    throw new ProtoError("bad_frame", `not JSON: ${e.message}`);
  }
  if (!isObj(env)) throw new ProtoError("bad_frame", "not a JSON object");
  if (env.v !== VERSION) throw new ProtoError("bad_version", `protocol version ${env.v}`);
  if (typeof env.type !== "string" || !(env.type in BODY)) throw new ProtoError("unknown_type", `type ${String(env.type).slice(0, 32)}`);
  if (env.id !== undefined && !validID(env.id)) throw new ProtoError("bad_request", "bad id");
  if (FROM_PEER.has(env.type)) {
    if (checkName(env.from) !== null) throw new ProtoError("bad_request", `${env.type} without a valid sender`);
  } else if (!SERVER_TYPES.has(env.type)) {
    throw new ProtoError("unknown_type", `${env.type} is not sent to clients`);
  }
  const body = env.body === undefined || env.body === null ? {} : env.body;
  if (!isObj(body) || !BODY[env.type](body)) throw new ProtoError("bad_request", `malformed ${env.type} body`);
  env.body = body;
  return env;
}

/** decodeDC parses and validates a data-channel message (proto.DecodeDC). */
export function decodeDC(text) {
  if (typeof text !== "string") throw new ProtoError("bad_frame", "binary data-channel message");
  if (text.length > MAX_DC) throw new ProtoError("too_large", "data-channel message too large");
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new ProtoError("bad_frame", `data channel message: ${e.message}`);
  }
  if (!isObj(m)) throw new ProtoError("bad_frame", "data channel message is not an object");
  switch (m.type) {
    case "chat":
      if (!validID(m.id) || checkText(m.text) !== null) throw new ProtoError("bad_request", "malformed chat");
      if (m.file !== undefined && m.file !== null && checkFileInfo(m.file) !== null) throw new ProtoError("bad_request", "malformed file offer");
      return m;
    case "file": {
      const bad = checkFileControl(m);
      if (bad) throw new ProtoError("bad_request", bad);
      return m;
    }
    case "delivered":
    case "read":
      if (!validID(m.id)) throw new ProtoError("bad_request", `malformed ${m.type}`);
      return m;
    case "typing":
    case "mute": // in a call: the peer muted (muted: true) or unmuted its microphone
      return m;
  }
  throw new ProtoError("unknown_type", `unknown data channel message type ${String(m.type).slice(0, 32)}`);
}

// File transfer (proto/files.go; files.js does it).
export const FILE_CHANNEL_PREFIX = "parley-file:"; // proto.FileChannelPrefix
export const FILE_CHANNEL_PROTOCOL = "parley-file/1"; // proto.FileChannelProtocol
export const MAX_FILE_NAME = 255; // proto.MaxFileNameLen, UTF-8 bytes
export const MAX_FILE_SIZE = 2 ** 46; // proto.MaxFileSize
export const MAX_FILE_CHUNK = 64 << 10; // proto.MaxFileChunk
const HASH_RE = /^[0-9a-f]{64}$/;
const OPS = new Set(["offer", "accept", "decline", "done", "failed"]);

/** checkFileInfo returns null for a valid proto.FileInfo, else why not. */
export function checkFileInfo(f) {
  if (!isObj(f)) return "file is not an object";
  if (typeof f.name !== "string" || f.name === "" || utf8Len(f.name) > MAX_FILE_NAME) return "file name must be 1–255 bytes";
  // Control characters (Unicode Cc), as proto.FileInfo.Validate refuses them.
  if (/[\u0000-\u001f\u007f-\u009f]/.test(f.name) || checkText(f.name) !== null) return "file name has a control or broken character";
  if (!Number.isSafeInteger(f.size) || f.size < 0 || f.size > MAX_FILE_SIZE) return "file size out of range";
  if (f.type !== undefined && (typeof f.type !== "string" || f.type.length > 127 || !/^[\x21-\x7e]*$/.test(f.type))) return "file type malformed";
  if (typeof f.sha256 !== "string" || !HASH_RE.test(f.sha256)) return "file sha256 must be 64 lowercase hex digits";
  return null;
}

/** checkFileControl returns null for a valid proto.FileControl, else why not. */
export function checkFileControl(c) {
  if (!isObj(c) || !OPS.has(c.op)) return "unknown file op";
  if (!validID(c.id)) return "bad file transfer id";
  const offset = c.offset ?? 0;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > MAX_FILE_SIZE) return "file offset out of range";
  if (!optStr(c.reason, 256) || !optStr(c.code, 32)) return "file reason or code too long";
  switch (c.op) {
    case "offer":
      return checkFileInfo(c.file);
    case "accept":
      if ((offset === 0) !== !c.hash) return "file accept needs a hash exactly when its offset is not zero";
      if (c.hash && !HASH_RE.test(c.hash)) return "file accept hash malformed";
      return c.file === undefined || c.file === null ? null : "file accept carries no file";
    default:
      return (c.file === undefined || c.file === null) && !c.hash ? null : `file ${c.op} carries no file or hash`;
  }
}

/** fileChannelID returns the transfer id a data channel label names, or "". */
export function fileChannelID(label) {
  if (typeof label !== "string" || !label.startsWith(FILE_CHANNEL_PREFIX)) return "";
  const id = label.slice(FILE_CHANNEL_PREFIX.length);
  return validID(id) ? id : "";
}

/**
 * safeFileName is proto.SafeFileName: a name that is safe to save under —
 * no directory part ("../x", "a/b", "a\\b" become plain names), no leading
 * dot, no control characters or characters Windows forbids, at most 255
 * UTF-8 bytes, never empty.
 */
export function safeFileName(name) {
  let s = "";
  for (const ch of String(name ?? "")) {
    const c = ch.codePointAt(0);
    const bad = '/\\:*?"<>|'.includes(ch) || c < 0x20 || (c >= 0x7f && c <= 0x9f) || (c >= 0xd800 && c <= 0xdfff) || c === 0xfffd;
    s += bad ? "_" : ch;
  }
  s = s.trim().replace(/^\.+/, "").replace(/[. ]+$/, "");
  while (utf8Len(s) > MAX_FILE_NAME) s = Array.from(s).slice(0, -1).join("");
  if (s === "" || s === "_") s = "file";
  return s;
}
