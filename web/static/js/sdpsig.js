// Signed DTLS fingerprints (proto/sdpsig.go): every offer and answer
// carries the sender's Ed25519 signature over the fingerprints of its SDP,
// the link session, the type and both names; a receiver refuses one whose
// signature does not verify under the key it trusts for the sender. A
// signaling server that swapped fingerprints to sit in the middle of a
// "direct" call is caught before DTLS starts.

import { b64, unb64 } from "./proto.js";

const LABEL = "parley-sdp-v1";

/** sdpFingerprints lists an SDP's a=fingerprint values (RFC 8122 §5), normalized and sorted as the Go side does. */
export function sdpFingerprints(sdp) {
  const out = [];
  for (const raw of String(sdp).split("\n")) {
    const line = raw.trim();
    if (!line.startsWith("a=fingerprint:")) continue;
    const f = line.slice("a=fingerprint:".length).trim().split(/\s+/).join(" ").toLowerCase();
    if (!out.includes(f)) out.push(f);
  }
  return out.sort();
}

/** sdpSigPayload is the byte string the signature covers. */
export function sdpSigPayload(type, session, from, to, fps) {
  return new TextEncoder().encode([LABEL, type, session, from, to, fps.join("\n")].join("\n"));
}

/** signSDP sets body.sig: identity signs body.sdp's fingerprints for an SDP of type from -> to. */
export async function signSDP(identity, type, from, to, body) {
  const payload = sdpSigPayload(type, body.session, from, to, sdpFingerprints(body.sdp));
  body.sig = b64(new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, identity.keyPair.privateKey, payload)));
  return body;
}

/**
 * verifySDP resolves when body (an SDP of type from -> to) is signed by the
 * base64 Ed25519 key pubB64, and rejects with the reason otherwise.
 */
export async function verifySDP(pubB64, type, from, to, body) {
  const fps = sdpFingerprints(body?.sdp ?? "");
  if (!fps.length) throw new Error(`the ${type} from ${from} declares no DTLS fingerprint`);
  if (!body.sig) throw new Error(`the ${type} from ${from} is not signed`);
  if (!pubB64) throw new Error(`no key is known for ${from} to check their ${type} against`);
  let ok = false;
  try {
    const key = await crypto.subtle.importKey("raw", unb64(pubB64), { name: "Ed25519" }, false, ["verify"]);
    ok = await crypto.subtle.verify({ name: "Ed25519" }, key, unb64(body.sig), sdpSigPayload(type, body.session, from, to, fps));
  } catch {
    ok = false;
  }
  if (!ok) throw new Error(`the ${type} from ${from} is not signed by ${from}'s key: its encryption fingerprint was changed on the way`);
}
