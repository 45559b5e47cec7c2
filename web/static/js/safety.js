// Safety numbers: the 60 digits two people compare (read aloud or side by
// side) to check that each holds the other's real key, the same on both
// sides and the same as the terminal's (internal/history/safety.go, after
// Signal's numeric fingerprint): each party's half is 5200 rounds of
// SHA-512 over its key and name, cut to 30 digits; the halves are ordered
// so both sides agree.

import { unb64 } from "./proto.js";

const enc = new TextEncoder();

async function fingerprint(name, key) {
  const nameBytes = enc.encode(name);
  let h = new Uint8Array(2 + key.length + nameBytes.length);
  h.set(key, 2);
  h.set(nameBytes, 2 + key.length);
  const buf = new Uint8Array(64 + key.length);
  for (let i = 0; i < 5200; i++) {
    const input = i === 0 ? concat(h, key) : (buf.set(h, 0), buf);
    if (i > 0) buf.set(key, 64);
    h = new Uint8Array(await crypto.subtle.digest("SHA-512", input));
  }
  let out = "";
  for (let i = 0; i < 30; i += 5) {
    let n = 0;
    for (let j = 0; j < 5; j++) n = n * 256 + h[i + j];
    out += String(n % 100000).padStart(5, "0");
  }
  return out;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** safetyNumber returns the number for two (name, base64 key) pairs: 12 groups of 5 digits. */
export async function safetyNumber(nameA, keyA, nameB, keyB) {
  let [a, b] = await Promise.all([fingerprint(nameA, unb64(keyA)), fingerprint(nameB, unb64(keyB))]);
  if (b < a) [a, b] = [b, a];
  return (a + b).match(/.{5}/g).join(" ");
}
