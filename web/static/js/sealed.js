// Sealed offline messages with WebCrypto only (proto/offline.go is the
// definition, client/offline.go the Go side; both must compute the same):
//
//   check      Ed25519.verify(peer identity, "parley-enc-key-v1\n"+name+"\n"+enc_key, enc_sig)   RFC 8032 §5.1.7
//   shared     X25519(our enc private, peer enc public) — deriveBits refuses all-zero           RFC 7748 §6.1
//   key        HKDF-SHA256(shared, salt = 16 random bytes,                                     RFC 5869 §2
//                          info = "parley-sealed-v2" || sender id key || recipient id key)
//   ciphertext AES-256-GCM(key, iv = 12 random bytes, 128-bit tag,                             NIST SP 800-38D
//                          aad = "parley-sealed-v2\n"+id+"\n"+from+"\n"+to, JSON {id,text,ts,seq})
//
// Private keys stay inside WebCrypto (non-extractable); this module only
// ever holds public keys, random salts and nonces, and ciphertext.

import { SEALED_VERSION, b64, checkFileInfo, checkText, encKeyPayload, sealedAAD, sealedInfo, unb64, validID } from "./proto.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** SealError is a sealing or opening failure; .code is "bad_key", "unsupported" or "bad_message". */
export class SealError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * verifyEncKey checks that encSig binds encKey (base64 X25519) to name under
 * the identity key idKey (base64 Ed25519), and returns the raw encryption
 * key. It throws a SealError("bad_key") when it does not.
 */
export async function verifyEncKey(idKey, name, encKey, encSig) {
  const id = unb64(idKey ?? "");
  const enc = unb64(encKey ?? "");
  const sig = unb64(encSig ?? "");
  if (id?.length !== 32 || enc?.length !== 32 || sig?.length !== 64) {
    throw new SealError("bad_key", `no usable encryption key for ${name}`);
  }
  const pub = await crypto.subtle.importKey("raw", id, { name: "Ed25519" }, false, ["verify"]);
  if (!(await crypto.subtle.verify({ name: "Ed25519" }, pub, sig, encKeyPayload(name, encKey)))) {
    throw new SealError("bad_key", `the encryption key of ${name} is not signed by the identity key you trust for ${name}`);
  }
  return enc;
}

/** messageKey derives one message's AES-256-GCM key (X25519, then HKDF-SHA256). */
async function messageKey(encPrivate, peerEnc, salt, senderId, recipientId, usage) {
  let shared;
  try {
    const pub = await crypto.subtle.importKey("raw", peerEnc, { name: "X25519" }, false, []);
    shared = await crypto.subtle.deriveBits({ name: "X25519", public: pub }, encPrivate, 256);
  } catch (e) {
    throw new SealError("bad_key", `key agreement failed: ${e.message}`);
  }
  const ikm = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt, info: sealedInfo(senderId, recipientId) },
    ikm,
    { name: "AES-GCM", length: 256 },
    false,
    [usage],
  );
}

/**
 * seal seals chat {id, text, ts} from us (identity, signed in as me) to
 * peer {name, key (the identity key we trust), encKey, encSig} and returns
 * the proto.Sealed body.
 */
export async function seal(identity, me, peer, chat) {
  if (!identity?.encKeyPair) throw new SealError("unsupported", "this browser has no X25519 key to seal with");
  const peerEnc = await verifyEncKey(peer.key, peer.name, peer.encKey, peer.encSig);
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const key = await messageKey(identity.encKeyPair.privateKey, peerEnc, salt, unb64(identity.publicKey), unb64(peer.key), "encrypt");
  const plain = encoder.encode(JSON.stringify({ id: chat.id, text: chat.text, ts: chat.ts, ...(chat.seq ? { seq: chat.seq } : {}), ...(chat.file ? { file: chat.file } : {}), ...(chat.display ? { display: chat.display } : {}) }));
  const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: sealedAAD(chat.id, me, peer.name), tagLength: 128 }, key, plain);
  return {
    v: SEALED_VERSION,
    id: chat.id,
    sender_key: identity.publicKey,
    sender_enc: identity.encPublicKey,
    sender_enc_sig: await identity.signEncKey(me),
    salt: b64(salt),
    nonce: b64(iv),
    ciphertext: b64(new Uint8Array(ct)),
  };
}

/**
 * open opens the sealed body that from (the server-stamped sender) left
 * for us (identity, signed in as me). The caller checks that
 * body.sender_key is the key it trusts for from. It returns {id, text, ts}
 * or throws a SealError.
 */
export async function open(identity, me, from, body) {
  if (!identity?.encKeyPair) throw new SealError("unsupported", "this browser has no X25519 key to open with");
  const senderEnc = await verifyEncKey(body.sender_key, from, body.sender_enc, body.sender_enc_sig);
  const key = await messageKey(identity.encKeyPair.privateKey, senderEnc, unb64(body.salt), unb64(body.sender_key), unb64(identity.publicKey), "decrypt");
  let plain;
  try {
    plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: unb64(body.nonce), additionalData: sealedAAD(body.id, from, me), tagLength: 128 },
      key,
      unb64(body.ciphertext),
    );
  } catch {
    throw new SealError("bad_message", "it does not open with this browser’s key and the sender’s");
  }
  let m;
  try {
    m = JSON.parse(decoder.decode(plain));
  } catch {
    throw new SealError("bad_message", "its content is not a chat message");
  }
  if (!m || typeof m !== "object" || !validID(m.id) || checkText(m.text) !== null) {
    throw new SealError("bad_message", "its content is not a valid chat message");
  }
  if (m.id !== body.id) throw new SealError("bad_message", `its id ${body.id} does not match the content’s ${m.id}`);
  if (m.file !== undefined && m.file !== null && checkFileInfo(m.file) !== null) throw new SealError("bad_message", "its file offer is malformed");
  const out = { id: m.id, text: m.text, ts: Number.isFinite(m.ts) ? m.ts : 0 };
  if (Number.isSafeInteger(m.seq) && m.seq > 0) out.seq = m.seq; // the sender's order (proto.Chat.Seq)
  if (m.file) out.file = m.file; // the offer of a file (files.js)
  if (typeof m.display === "string" && m.display) out.display = m.display; // checked by the receiver (validDisplayName)
  return out;
}
