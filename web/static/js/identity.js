// The browser's identity: an Ed25519 key pair made with WebCrypto. The
// private key is not extractable — script can sign with it but never read
// it — and the CryptoKeyPair is kept in IndexedDB, so the display name the
// server bound to this key stays ours across reloads. Next to it is the
// X25519 encryption key pair that sealed offline messages are sealed to
// (proto/offline.go, sealed.js), also non-extractable; its public half is
// announced at sign-in, bound to the identity by an Ed25519 signature. The
// chosen name is kept in localStorage, and so are the identity keys first
// seen for other names (pins, trust on first use).
// (Ed25519: RFC 8032; X25519: RFC 7748; WebCrypto: Secure Curves.)

import { BackupError, escrow, exportBackup, importBackup, keysFromSeeds, newSeeds } from "./keybackup.js";
import { authPayload, b64, encKeyPayload } from "./proto.js";

const DB = "parley";
const STORE = "identity";
const KEY = "ed25519";
const ENC_KEY = "x25519";
const ESCROW = "escrow"; // the seeds, sealed for backups (keybackup.js)
const NAME_KEY = "parley.name";
const PINS_KEY = "parley.pins";

/** unsupportedReason says why this page cannot hold an identity here, or null. */
export function unsupportedReason() {
  if (!globalThis.isSecureContext || !globalThis.crypto?.subtle) return "insecure";
  if (!globalThis.indexedDB) return "no-indexeddb";
  return null;
}

function openDB() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("the identity store is blocked by another tab"));
  });
}

function tx(db, mode, fn) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, mode);
    const req = fn(t.objectStore(STORE));
    t.oncomplete = () => resolve(req.result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

/**
 * Identity holds the key pair and the base64 raw public key the server
 * binds names to.
 */
export class Identity {
  constructor(keyPair, publicKey, encKeyPair = null, encPublicKey = "", esc = null) {
    this.escrow = esc; // sealed seeds for backups, or null (a key made before backups)
    this.keyPair = keyPair;
    this.publicKey = publicKey; // base64 of the 32-byte raw Ed25519 key
    this.encKeyPair = encKeyPair; // X25519, or null where WebCrypto lacks it
    this.encPublicKey = encPublicKey; // base64 of the 32-byte raw X25519 key
    this.encSigs = new Map(); // name -> binding signature (Ed25519 is deterministic)
  }

  /** sign returns the base64 Ed25519 signature over proto.AuthPayload. */
  async signAuth(challenge, name) {
    const sig = await crypto.subtle.sign({ name: "Ed25519" }, this.keyPair.privateKey, authPayload(challenge, name, this.publicKey));
    return b64(new Uint8Array(sig));
  }

  /** signEncKey returns the base64 signature binding the encryption key to name (proto.EncKeyPayload). */
  async signEncKey(name) {
    let sig = this.encSigs.get(name);
    if (!sig) {
      sig = b64(new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, this.keyPair.privateKey, encKeyPayload(name, this.encPublicKey))));
      this.encSigs.set(name, sig);
    }
    return sig;
  }

  /** canBackUp: this key can be exported (it was made with an escrow). */
  get canBackUp() {
    return !!this.escrow;
  }

  /** backup returns the text of a key backup for name under passphrase. */
  backup(name, passphrase) {
    return exportBackup(this.escrow, name, this.publicKey, passphrase);
  }

  /** authFields returns the auth body for name: signature, and the bound encryption key when there is one. */
  async authFields(challenge, name) {
    const f = { name, public_key: this.publicKey, signature: await this.signAuth(challenge, name) };
    if (this.encKeyPair) {
      f.enc_key = this.encPublicKey;
      f.enc_sig = await this.signEncKey(name);
    }
    return f;
  }
}

/**
 * loadEncKeyPair returns the X25519 pair kept in IndexedDB under ENC_KEY,
 * generating one on first use; null when this browser has no WebCrypto
 * X25519 (the page then works without offline messages).
 */
async function loadEncKeyPair(db) {
  let kp = await tx(db, "readonly", (s) => s.get(ENC_KEY));
  if (kp?.privateKey && kp?.publicKey) return kp;
  try {
    kp = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  } catch (e) {
    console.warn("parley: WebCrypto X25519 is not available; offline messages are off:", e.message);
    return null;
  }
  try {
    await tx(db, "readwrite", (s) => s.add(kp, ENC_KEY));
  } catch {
    kp = await tx(db, "readonly", (s) => s.get(ENC_KEY)); // another tab stored one first
  }
  return kp;
}

/**
 * loadIdentity returns the key pair kept in IndexedDB, generating and
 * storing one on first use. It throws an Error with .code "unsupported"
 * when the browser has no WebCrypto Ed25519.
 */
/** putAll stores several values in one transaction; add refuses to replace KEY. */
function putAll(db, values, addKey) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, "readwrite");
    const st = t.objectStore(STORE);
    for (const [k, v] of Object.entries(values)) {
      if (k === KEY && addKey) st.add(v, k);
      else st.put(v, k);
    }
    t.oncomplete = () => resolve();
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

/**
 * makeIdentity makes a new identity from random seeds kept in an escrow
 * (so it can be backed up) and stores it, unless another tab stored one
 * first. It returns false where this browser cannot import the keys.
 */
async function makeIdentity(db) {
  let made;
  try {
    const { edSeed, xKey } = newSeeds();
    made = { ...(await keysFromSeeds(edSeed, xKey)), esc: await escrow(edSeed, xKey) };
    edSeed.fill(0);
    xKey.fill(0);
  } catch (e) {
    console.warn("parley: keys that can be backed up are not available here:", e.message);
    return false;
  }
  try {
    await putAll(db, { [KEY]: made.kp, [ENC_KEY]: made.encKp, [ESCROW]: made.esc }, true);
  } catch {
    // another tab made one first: use that
  }
  return true;
}

/**
 * restoreIdentity replaces this browser's identity with the one in a key
 * backup (text) and returns the name the backup was made for.
 */
export async function restoreIdentity(text, passphrase) {
  const b = await importBackup(text, passphrase);
  const keys = await keysFromSeeds(b.edSeed, b.xKey);
  if (keys.publicKey !== b.publicKey) throw new BackupError("not_backup", "The backup’s key does not match the public key it names.");
  const esc = await escrow(b.edSeed, b.xKey);
  b.edSeed.fill(0);
  b.xKey.fill(0);
  const db = await openDB();
  try {
    await putAll(db, { [KEY]: keys.kp, [ENC_KEY]: keys.encKp, [ESCROW]: esc }, false);
  } finally {
    db.close();
  }
  return b.name;
}

export async function loadIdentity() {
  const db = await openDB();
  try {
    let kp = await tx(db, "readonly", (s) => s.get(KEY));
    if ((!kp || !kp.privateKey || !kp.publicKey) && (await makeIdentity(db))) kp = await tx(db, "readonly", (s) => s.get(KEY));
    if (!kp || !kp.privateKey || !kp.publicKey) {
      try {
        kp = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
      } catch (e) {
        const err = new Error(`WebCrypto Ed25519 is not available: ${e.message}`);
        err.code = "unsupported";
        throw err;
      }
      // add, not put: if another tab stored a key meanwhile, use that one.
      try {
        await tx(db, "readwrite", (s) => s.add(kp, KEY));
      } catch {
        kp = await tx(db, "readonly", (s) => s.get(KEY));
      }
    }
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey));
    if (raw.length !== 32) throw new Error(`public key is ${raw.length} bytes, want 32`);
    const enc = await loadEncKeyPair(db);
    let encRaw = "";
    if (enc) {
      const r = new Uint8Array(await crypto.subtle.exportKey("raw", enc.publicKey));
      if (r.length !== 32) throw new Error(`encryption key is ${r.length} bytes, want 32`);
      encRaw = b64(r);
    }
    const esc = await tx(db, "readonly", (s) => s.get(ESCROW));
    return new Identity(kp, b64(raw), enc, encRaw, esc?.key ? esc : null);
  } finally {
    db.close();
  }
}

/**
 * savedName returns the name this tab used (it survives a reload) and the
 * name last used in this browser (to offer in a new tab), or "".
 */
export function savedName() {
  let tab = "";
  let last = "";
  try {
    tab = sessionStorage.getItem(NAME_KEY) || "";
  } catch {
    // storage disabled
  }
  try {
    last = localStorage.getItem(NAME_KEY) || "";
  } catch {
    // storage disabled
  }
  return { tab, last };
}

/**
 * saveName remembers name for this tab and as the browser's last name;
 * "" forgets it (the key stays: the name can be taken back later).
 */
export function saveName(name) {
  for (const store of [globalThis.sessionStorage, globalThis.localStorage]) {
    try {
      if (name) store.setItem(NAME_KEY, name);
      else store.removeItem(NAME_KEY);
    } catch {
      // Storage may be disabled; the name is then asked for again next time.
    }
  }
}

/**
 * nameInUse asks the other tabs of this browser whether one is signed in as
 * name (they share the key, so signing in here would push that tab out).
 */
export function nameInUse(name, waitMs = 150) {
  if (!globalThis.BroadcastChannel) return Promise.resolve(false);
  return new Promise((resolve) => {
    const ch = new BroadcastChannel("parley");
    const done = (v) => {
      clearTimeout(timer);
      ch.close();
      resolve(v);
    };
    ch.onmessage = (e) => e.data?.type === "here" && e.data.name === name && done(true);
    const timer = setTimeout(() => done(false), waitMs);
    ch.postMessage({ type: "who", name });
  });
}

/** answerWho makes this tab answer nameInUse for the name getName returns. */
export function answerWho(getName) {
  if (!globalThis.BroadcastChannel) return;
  const ch = new BroadcastChannel("parley");
  ch.onmessage = (e) => {
    const name = getName();
    if (e.data?.type === "who" && name && e.data.name === name) ch.postMessage({ type: "here", name });
  };
}

/**
 * pins remembers the identity key first seen for each name (trust on first
 * use), in localStorage, shared by the tabs of this browser. Sealed
 * messages are only sealed to an encryption key bound to the pinned key,
 * and only opened from it.
 */
export const pins = {
  all() {
    try {
      const v = JSON.parse(localStorage.getItem(PINS_KEY) || "{}");
      return v && typeof v === "object" && !Array.isArray(v) ? v : {};
    } catch {
      return {};
    }
  },
  /** get returns the key pinned for name, or "". */
  get(name) {
    const k = this.all()[name];
    return typeof k === "string" ? k : "";
  },
  /** pin records key for name unless one is pinned already; it returns the pinned key. */
  pin(name, key) {
    const all = this.all();
    if (typeof all[name] === "string" && all[name]) return all[name];
    all[name] = key;
    try {
      localStorage.setItem(PINS_KEY, JSON.stringify(all));
    } catch {
      // storage disabled: the pin lasts for this visit only
    }
    return key;
  },
  /** replace pins key for name (the person accepted a changed key). */
  replace(name, key) {
    const all = this.all();
    all[name] = key;
    try {
      localStorage.setItem(PINS_KEY, JSON.stringify(all));
    } catch {
      // this visit only
    }
  },
};

const VERIFIED_KEY = "parley.verified";

/** verified remembers whose key the person compared (name -> key). */
export const verified = {
  get(name, key) {
    try {
      return JSON.parse(localStorage.getItem(VERIFIED_KEY) || "{}")[name] === key && !!key;
    } catch {
      return false;
    }
  },
  set(name, key, on) {
    let all = {};
    try {
      all = JSON.parse(localStorage.getItem(VERIFIED_KEY) || "{}") || {};
    } catch {
      // start afresh
    }
    if (on) all[name] = key;
    else delete all[name];
    try {
      localStorage.setItem(VERIFIED_KEY, JSON.stringify(all));
    } catch {
      // this visit only
    }
  },
};
