package proto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // TURN REST credentials are HMAC-SHA1 by definition
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// A relay token lets one user open relay streams on one supernode until it
// expires. The signaling server mints it (it alone holds the signing key);
// the supernode verifies it with the server's public key, which it learns
// when it is promoted (SupernodeStatus.TokenKey).
//
// Encoding: "prt1." + base64url(payload JSON) + "." + base64url(signature),
// where the Ed25519 signature covers TokenSigningPrefix + payload bytes.
// The prefix separates token signatures from every other Parley signature
// (auth challenges, probe proofs), so none can be replayed as another.

// TokenPrefix starts every relay token.
const TokenPrefix = "prt1."

// TokenSigningPrefix is prepended to the payload before signing.
const TokenSigningPrefix = "parley-relay-token-v1\n"

// MaxTokenLen bounds an encoded relay token.
const MaxTokenLen = 1024

// RelayToken is the signed content of a relay token.
type RelayToken struct {
	// User is the Parley name the token was issued to.
	User string `json:"u"`
	// Supernode is the id of the one supernode that accepts it.
	Supernode string `json:"sn"`
	// Expiry and Issued are unix seconds.
	Expiry int64 `json:"exp"`
	Issued int64 `json:"iat"`
	// Nonce makes every token unique (base64url, for logs and revocation).
	Nonce string `json:"n,omitempty"`
}

// Validate checks the token's fields (not its signature or expiry).
func (t *RelayToken) Validate() error {
	if err := ValidateName(t.User); err != nil {
		return Errorf(CodeTokenInvalid, "token user: %s", messageOf(err))
	}
	if err := ValidateID(t.Supernode); err != nil {
		return Errorf(CodeTokenInvalid, "token supernode id is not an id")
	}
	if t.Expiry <= 0 || t.Issued <= 0 || t.Issued > t.Expiry {
		return Errorf(CodeTokenInvalid, "token times are not 0 < issued <= expiry")
	}
	if len(t.Nonce) > 64 {
		return Errorf(CodeTokenInvalid, "token nonce longer than 64 bytes")
	}
	return nil
}

// payload is the canonical JSON of t (field order fixed by the struct).
func (t *RelayToken) payload() []byte {
	b, _ := json.Marshal(t) // a struct of strings and ints cannot fail
	return b
}

func tokenSigned(payload []byte) []byte {
	return append([]byte(TokenSigningPrefix), payload...)
}

// SignRelayToken validates t and encodes it signed with priv.
func SignRelayToken(priv ed25519.PrivateKey, t *RelayToken) (string, error) {
	if err := t.Validate(); err != nil {
		return "", err
	}
	if len(priv) != ed25519.PrivateKeySize {
		return "", Errorf(CodeInternal, "token signing key has %d bytes", len(priv))
	}
	p := t.payload()
	return assembleToken(p, ed25519.Sign(priv, tokenSigned(p))), nil
}

func assembleToken(payload, sig []byte) string {
	enc := base64.RawURLEncoding
	return TokenPrefix + enc.EncodeToString(payload) + "." + enc.EncodeToString(sig)
}

// ParsedToken is a relay token split into its parts, signature unchecked.
type ParsedToken struct {
	Token     RelayToken
	Payload   []byte
	Signature []byte
}

// Encode reassembles the token string.
func (p *ParsedToken) Encode() string { return assembleToken(p.Payload, p.Signature) }

// ParseRelayToken splits and decodes s without checking the signature.
// Every failure is a *Error with CodeTokenInvalid.
func ParseRelayToken(s string) (*ParsedToken, error) {
	if s == "" {
		return nil, Errorf(CodeTokenInvalid, "no relay token")
	}
	if len(s) > MaxTokenLen {
		return nil, Errorf(CodeTokenInvalid, "relay token of %d bytes exceeds %d", len(s), MaxTokenLen)
	}
	rest, ok := strings.CutPrefix(s, TokenPrefix)
	if !ok {
		return nil, Errorf(CodeTokenInvalid, "relay token does not start with %q", TokenPrefix)
	}
	// base64 decoders skip CR and LF even in strict mode; a token with
	// them would be a second spelling of the same token.
	if strings.ContainsAny(rest, "\r\n") {
		return nil, Errorf(CodeTokenInvalid, "relay token has a line break")
	}
	p64, s64, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, Errorf(CodeTokenInvalid, "relay token has no signature part")
	}
	enc := base64.RawURLEncoding.Strict()
	payload, err := enc.DecodeString(p64)
	if err != nil {
		return nil, Errorf(CodeTokenInvalid, "relay token payload is not base64url")
	}
	sig, err := enc.DecodeString(s64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, Errorf(CodeTokenInvalid, "relay token signature must be base64url of %d bytes", ed25519.SignatureSize)
	}
	var t RelayToken
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil || dec.More() {
		return nil, Errorf(CodeTokenInvalid, "relay token payload is not a token")
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	// Only the canonical encoding is accepted, so one token has one
	// string (no malleability through whitespace or key order).
	if !bytes.Equal(payload, t.payload()) {
		return nil, Errorf(CodeTokenInvalid, "relay token payload is not canonical")
	}
	return &ParsedToken{Token: t, Payload: payload, Signature: sig}, nil
}

// VerifyRelayToken parses s and checks, in order, the signature against
// key, that it names supernode, and that it has not expired at now. It
// returns CodeTokenInvalid (forged, malformed, another supernode's) or
// CodeTokenExpired.
func VerifyRelayToken(s string, key ed25519.PublicKey, supernode string, now time.Time) (*RelayToken, error) {
	p, err := ParseRelayToken(s)
	if err != nil {
		return nil, err
	}
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, tokenSigned(p.Payload), p.Signature) {
		return nil, Errorf(CodeTokenInvalid, "relay token signature does not verify with the signaling server's key")
	}
	if p.Token.Supernode != supernode {
		return nil, Errorf(CodeTokenInvalid, "relay token is for supernode %q, not %q", p.Token.Supernode, supernode)
	}
	if exp := time.Unix(p.Token.Expiry, 0); now.After(exp) {
		return nil, Errorf(CodeTokenExpired, "relay token for %s expired %s ago", p.Token.User, now.Sub(exp).Round(time.Second))
	}
	return &p.Token, nil
}

// TURNCredentials returns time-limited TURN credentials in the "TURN REST
// API" form (draft-uberti-behave-turn-rest-00 section 2.2, coturn's
// use-auth-secret): username "<expiry unix>:<user>", password
// base64(HMAC-SHA1(secret, username)). The TURN server recomputes the
// password from its copy of secret, so nothing per user is stored.
func TURNCredentials(secret []byte, user string, expiry time.Time) (username, password string) {
	username = strconv.FormatInt(expiry.Unix(), 10) + ":" + user
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseTURNUsername splits a TURN REST username into expiry and user.
func ParseTURNUsername(username string) (expiry time.Time, user string, err error) {
	ts, user, ok := strings.Cut(username, ":")
	if !ok {
		return time.Time{}, "", Errorf(CodeAuthFailed, "TURN username %q is not <expiry>:<user>", truncate(username, 48))
	}
	n, perr := strconv.ParseInt(ts, 10, 64)
	if perr != nil || n <= 0 {
		return time.Time{}, "", Errorf(CodeAuthFailed, "TURN username expiry %q is not unix seconds", truncate(ts, 24))
	}
	if err := ValidateName(user); err != nil {
		return time.Time{}, "", Errorf(CodeAuthFailed, "TURN username user: %s", messageOf(err))
	}
	return time.Unix(n, 0), user, nil
}

// messageOf is the human part of err.
func messageOf(err error) string {
	if pe, ok := err.(*Error); ok {
		return pe.Message
	}
	return err.Error()
}
