// Key backups: the identity key that owns a name and the encryption key
// sealed messages wait for, wrapped under a passphrase in the file format
// of client/keybackup.go (the terminal's `parley key export|import`), so a
// name moves between browsers and terminals and is not lost with a device.
//
//   key      PBKDF2-HMAC-SHA256(passphrase, salt 16 B, 600,000 iterations) -> 32 B   RFC 8018 §5.2
//   seal     AES-256-GCM(key, nonce 12 B, aad "parley-key-backup-v1\n" + name,
//                        JSON {ed25519_seed, x25519})                              NIST SP 800-38D
//   file     JSON {parley_key_backup: 1, name, public_key, kdf, iterations, salt, nonce, ciphertext}
//
// The page's private keys are not extractable. So that they can still be
// backed up, a new identity is made from random seeds that are kept only
// sealed under a separate non-extractable AES-GCM key (the "escrow" in
// IndexedDB): script can ask for a backup, which needs the person's
// passphrase to be any use, but never reads a key in use. Identities made
// before backups existed have no escrow and cannot be exported.

import { b64 } from "./proto.js";

export const MIN_PASSPHRASE = 8; // client.MinPassphrase
const ITERATIONS = 600000;
const KDF = "PBKDF2-HMAC-SHA256";
const LABEL = "parley-key-backup-v1\n";
const enc = new TextEncoder();
const dec = new TextDecoder();

// PKCS #8 wrappers of raw 32-byte private keys (RFC 8410 section 7).
const ED25519_PKCS8 = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
const X25519_PKCS8 = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20];

export class BackupError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function unb64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function b64url(s) {
  return unb64(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
}

function pkcs8(prefix, raw) {
  const out = new Uint8Array(prefix.length + raw.length);
  out.set(prefix);
  out.set(raw, prefix.length);
  return out;
}

/**
 * keysFromSeeds imports raw seeds as key pairs whose private halves are
 * not extractable; it returns {kp, publicKey, encKp, encPublicKey} with
 * the public keys as base64 raw bytes.
 */
export async function keysFromSeeds(edSeed, xKey) {
  // The public halves come from a short-lived extractable import (JWK x).
  const edTmp = await crypto.subtle.importKey("pkcs8", pkcs8(ED25519_PKCS8, edSeed), { name: "Ed25519" }, true, ["sign"]);
  const edPub = b64url((await crypto.subtle.exportKey("jwk", edTmp)).x);
  const kp = {
    privateKey: await crypto.subtle.importKey("pkcs8", pkcs8(ED25519_PKCS8, edSeed), { name: "Ed25519" }, false, ["sign"]),
    publicKey: await crypto.subtle.importKey("raw", edPub, { name: "Ed25519" }, true, ["verify"]),
  };
  const xTmp = await crypto.subtle.importKey("pkcs8", pkcs8(X25519_PKCS8, xKey), { name: "X25519" }, true, ["deriveBits"]);
  const xPub = b64url((await crypto.subtle.exportKey("jwk", xTmp)).x);
  const encKp = {
    privateKey: await crypto.subtle.importKey("pkcs8", pkcs8(X25519_PKCS8, xKey), { name: "X25519" }, false, ["deriveBits"]),
    publicKey: await crypto.subtle.importKey("raw", xPub, { name: "X25519" }, true, []),
  };
  return { kp, publicKey: b64(edPub), encKp, encPublicKey: b64(xPub) };
}

/** escrow seals the seeds under a new non-extractable key, for later backups. */
export async function escrow(edSeed, xKey) {
  const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const plain = enc.encode(JSON.stringify({ ed25519_seed: b64(edSeed), x25519: b64(xKey) }));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, plain));
  return { key, iv, ct };
}

async function unescrow(e) {
  const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: e.iv }, e.key, e.ct);
  const s = JSON.parse(dec.decode(plain));
  return { edSeed: unb64(s.ed25519_seed), xKey: unb64(s.x25519) };
}

/** newSeeds returns fresh random seeds for an identity and an encryption key. */
export function newSeeds() {
  return { edSeed: crypto.getRandomValues(new Uint8Array(32)), xKey: crypto.getRandomValues(new Uint8Array(32)) };
}

async function aeadKey(passphrase, salt, iterations, usage) {
  const base = await crypto.subtle.importKey("raw", enc.encode(passphrase), "PBKDF2", false, ["deriveKey"]);
  return crypto.subtle.deriveKey({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, base, { name: "AES-GCM", length: 256 }, false, [usage]);
}

/** exportBackup returns the backup file's text for name, from an escrow. */
export async function exportBackup(esc, name, publicKey, passphrase) {
  if (!esc) throw new BackupError("no_escrow", "This browser’s key was made before backups existed, so it cannot be exported. Sign in with a new name to get a key that can be backed up.");
  if ([...passphrase].length < MIN_PASSPHRASE) throw new BackupError("weak", `The passphrase must be at least ${MIN_PASSPHRASE} characters.`);
  const { edSeed, xKey } = await unescrow(esc);
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const key = await aeadKey(passphrase, salt, ITERATIONS, "encrypt");
  const plain = enc.encode(JSON.stringify({ ed25519_seed: b64(edSeed), x25519: b64(xKey) }));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: enc.encode(LABEL + name), tagLength: 128 }, key, plain));
  return JSON.stringify({ parley_key_backup: 1, name, public_key: publicKey, kdf: KDF, iterations: ITERATIONS, salt: b64(salt), nonce: b64(nonce), ciphertext: b64(ct) }, null, 2);
}

/** importBackup opens a backup file's text; it returns {name, publicKey, edSeed, xKey}. */
export async function importBackup(text, passphrase) {
  let b;
  try {
    b = JSON.parse(text);
  } catch {
    throw new BackupError("not_backup", "That file is not a Parley key backup.");
  }
  if (!b || b.parley_key_backup !== 1 || b.kdf !== KDF || typeof b.name !== "string" || typeof b.public_key !== "string") {
    throw new BackupError("not_backup", "That file is not a Parley key backup.");
  }
  if (!Number.isSafeInteger(b.iterations) || b.iterations < 100000 || b.iterations > 10000000) throw new BackupError("not_backup", "The backup’s parameters are out of range.");
  let salt, nonce, ct;
  try {
    [salt, nonce, ct] = [unb64(b.salt), unb64(b.nonce), unb64(b.ciphertext)];
  } catch {
    throw new BackupError("not_backup", "The backup is damaged.");
  }
  const key = await aeadKey(passphrase, salt, b.iterations, "decrypt");
  let plain;
  try {
    plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: enc.encode(LABEL + b.name), tagLength: 128 }, key, ct);
  } catch {
    throw new BackupError("wrong_passphrase", "Wrong passphrase, or the backup was changed.");
  }
  const s = JSON.parse(dec.decode(plain));
  const edSeed = unb64(s.ed25519_seed);
  const xKey = unb64(s.x25519);
  if (edSeed.length !== 32 || xKey.length !== 32) throw new BackupError("not_backup", "The backup’s keys are damaged.");
  return { name: b.name, publicKey: b.public_key, edSeed, xKey };
}
