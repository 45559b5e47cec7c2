package proto

import (
	"crypto/ed25519"
	"encoding/base64"
	"slices"
	"strings"
)

// Signed DTLS fingerprints: nobody in the middle.
//
// The signaling server carries every offer and answer, so a server that
// rewrote the a=fingerprint lines of both (RFC 8122 section 5) could
// terminate each side's DTLS itself and sit in the middle of every
// "direct" call and chat. Each peer therefore signs the fingerprints of
// the SDP it sends, together with the link's session id, the SDP type and
// both names, with its Ed25519 identity key (SDP.Sig). The receiver checks
// the signature against the key it trusts for the sender (pinned on first
// contact, or shown by presence) and refuses a link whose fingerprints are
// not signed by it. The server can still refuse to connect people; it
// cannot read or alter what they say.

// sdpSigLabel versions the signed payload.
const sdpSigLabel = "parley-sdp-v1"

// SDPFingerprints returns the DTLS certificate fingerprints an SDP
// declares (a=fingerprint:HASH VALUE, RFC 8122 section 5), session and
// media level alike, lower-cased and sorted, so both sides compute the
// same list whatever the order and case.
func SDPFingerprints(sdp string) []string {
	var out []string
	for _, line := range strings.Split(sdp, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "a=fingerprint:"); ok {
			f := strings.ToLower(strings.Join(strings.Fields(v), " "))
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	slices.Sort(out)
	return out
}

// SDPSigPayload is what an SDP signature covers: the type ("offer" or
// "answer"), the link session, sender and recipient names, and the
// fingerprints.
func SDPSigPayload(t Type, session, from, to string, fingerprints []string) []byte {
	return []byte(sdpSigLabel + "\n" + string(t) + "\n" + session + "\n" + from + "\n" + to + "\n" + strings.Join(fingerprints, "\n"))
}

// SignSDP signs the fingerprints of s (of type t, sent from from to to)
// with priv and sets s.Sig.
func SignSDP(priv ed25519.PrivateKey, t Type, from, to string, s *SDP) {
	sig := ed25519.Sign(priv, SDPSigPayload(t, s.Session, from, to, SDPFingerprints(s.SDP)))
	s.Sig = base64.StdEncoding.EncodeToString(sig)
}

// VerifySDP checks that s (of type t, from from to to) carries at least one
// fingerprint and a signature over them by key. It returns a *Error with
// CodeForbidden saying what is wrong.
func VerifySDP(key ed25519.PublicKey, t Type, from, to string, s *SDP) error {
	fps := SDPFingerprints(s.SDP)
	if len(fps) == 0 {
		return Errorf(CodeForbidden, "the %s from %s declares no DTLS fingerprint", t, from)
	}
	if s.Sig == "" {
		return Errorf(CodeForbidden, "the %s from %s is not signed", t, from)
	}
	sig, err := base64.StdEncoding.DecodeString(s.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize || len(key) != ed25519.PublicKeySize {
		return Errorf(CodeForbidden, "the %s from %s has a malformed signature", t, from)
	}
	if !ed25519.Verify(key, SDPSigPayload(t, s.Session, from, to, fps), sig) {
		return Errorf(CodeForbidden, "the %s from %s is not signed by %s's key: its encryption fingerprint was changed on the way", t, from, from)
	}
	return nil
}
