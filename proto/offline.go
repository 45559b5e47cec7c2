package proto

import (
	"crypto/ed25519"
	"encoding/base64"
)

// Offline messages. A chat message for someone who is offline travels as a
// TypeSealed envelope, sealed end to end with primitives that both Go's
// standard library and browsers' WebCrypto provide:
//
//   - Each identity has a static X25519 "encryption key" (RFC 7748 §5),
//     separate from its Ed25519 identity key. Its public half is bound to
//     the identity by an Ed25519 signature (RFC 8032 §5.1.6) over
//     EncKeyPayload(name, encKey), sent in Auth, checked by the server,
//     kept in its name registry and carried in Presence (online and offline
//     users alike), so a sender can seal to someone who is not there.
//     Receivers check the binding against the identity key they pinned.
//   - shared = X25519(sender enc private, recipient enc public) (RFC 7748
//     §6.1; an all-zero result is refused).
//   - key = HKDF-SHA256(IKM = shared, salt = 16 random bytes carried in
//     the message, info = SealedInfo(sender identity, recipient identity)),
//     32 bytes (RFC 5869 §2.2–2.3). A fresh salt makes every message's key
//     fresh, so the random 96-bit nonce below never meets the same key twice.
//   - ciphertext = AES-256-GCM(key, nonce = 12 random bytes, AAD =
//     SealedAAD(id, sender name, recipient name), plaintext = the JSON of a
//     Chat whose ID equals the envelope's) with a 128-bit tag (NIST SP
//     800-38D §5.2.1, §8.2.2).
//
// The server stores the envelope durably and delivers it, in order, once
// the recipient signs in; the recipient answers with a TypeDelivered
// receipt, which the server turns into a TypeSealedReceipt for the sender —
// at once if the sender is online, else when they next sign in. The server
// sees who, when and how big, never the text. Static-static key agreement
// gives no forward secrecy: whoever later steals a recipient's encryption
// key can open what was sealed to it.
const (
	TypeSealed        Type = "sealed"         // C→C (stored by the server): an end-to-end sealed chat message
	TypeSealedReceipt Type = "sealed_receipt" // S→C: a sealed message you left was delivered to From
)

// SealedVersion is the sealing scheme this package defines (the first,
// NaCl box over converted identity keys, is gone).
const SealedVersion = 2

// Sizes of the sealing scheme.
const (
	EncKeySize     = 32 // X25519 public key (RFC 7748 §5)
	SealedSaltSize = 16 // HKDF salt (RFC 5869 §3.1: random, hash-length or less)
	SealedNonce    = 12 // AES-GCM IV (NIST SP 800-38D §5.2.1.1, 96 bits)
	SealedTagSize  = 16 // AES-GCM tag (128 bits)
)

// MaxSealedCiphertext bounds the ciphertext, in bytes before base64: room
// for a MaxTextLen message in its JSON wrapper with escapes.
const MaxSealedCiphertext = 3*MaxTextLen + 512

// SealedInfoLabel starts the HKDF info and the AAD.
const SealedInfoLabel = "parley-sealed-v2"

// Sealed is an end-to-end encrypted chat message. Ciphertext opens, with
// the recipient's encryption key and SenderEnc, to the JSON of a Chat whose
// ID equals ID.
type Sealed struct {
	V  int    `json:"v"` // SealedVersion
	ID string `json:"id"`
	// SenderKey is the sender's Ed25519 identity key (base64). The server
	// refuses a SenderKey that is not the key the sender signed in with.
	SenderKey string `json:"sender_key"`
	// SenderEnc is the sender's X25519 encryption key (base64) and
	// SenderEncSig its binding: an Ed25519 signature by SenderKey over
	// EncKeyPayload(sender name, SenderEnc).
	SenderEnc    string `json:"sender_enc"`
	SenderEncSig string `json:"sender_enc_sig"`
	Salt         string `json:"salt"`       // base64 of SealedSaltSize random bytes
	Nonce        string `json:"nonce"`      // base64 of SealedNonce random bytes
	Ciphertext   string `json:"ciphertext"` // base64 of the AES-GCM output (ciphertext || tag)
	// Stored is when the server stored it (unix ms); set by the server.
	Stored int64 `json:"stored,omitempty"`
}

func (s *Sealed) Validate() error {
	if s.V != SealedVersion {
		return Errorf(CodeBadRequest, "sealed version %d is not supported (want %d)", s.V, SealedVersion)
	}
	if err := ValidateID(s.ID); err != nil {
		return err
	}
	if _, err := DecodePublicKey(s.SenderKey); err != nil {
		return err
	}
	if err := validateEncBinding(s.SenderEnc, s.SenderEncSig, true); err != nil {
		return err
	}
	if !b64Len(s.Salt, SealedSaltSize) {
		return Errorf(CodeBadRequest, "sealed salt must be base64 of %d bytes", SealedSaltSize)
	}
	if !b64Len(s.Nonce, SealedNonce) {
		return Errorf(CodeBadRequest, "sealed nonce must be base64 of %d bytes", SealedNonce)
	}
	if base64.StdEncoding.DecodedLen(len(s.Ciphertext)) > MaxSealedCiphertext+3 {
		return Errorf(CodeTooLarge, "sealed ciphertext exceeds %d bytes", MaxSealedCiphertext)
	}
	b, err := base64.StdEncoding.DecodeString(s.Ciphertext)
	if err != nil || len(b) <= SealedTagSize {
		return Errorf(CodeBadRequest, "sealed ciphertext must be base64 of more than %d bytes", SealedTagSize)
	}
	if len(b) > MaxSealedCiphertext {
		return Errorf(CodeTooLarge, "sealed ciphertext of %d bytes exceeds %d", len(b), MaxSealedCiphertext)
	}
	if s.Stored < 0 {
		return Errorf(CodeBadRequest, "sealed stored time is negative")
	}
	return nil
}

// SaltBytes, NonceBytes and CiphertextBytes return the decoded fields
// (valid after Validate; nil otherwise).
func (s *Sealed) SaltBytes() []byte       { return unb64(s.Salt) }
func (s *Sealed) NonceBytes() []byte      { return unb64(s.Nonce) }
func (s *Sealed) CiphertextBytes() []byte { return unb64(s.Ciphertext) }

// SealedInfo is the HKDF info of a sealed message (RFC 5869 §3.2): the
// label, then the sender's and the recipient's raw 32-byte Ed25519
// identity keys, so a key is bound to both identities.
func SealedInfo(sender, recipient ed25519.PublicKey) []byte {
	b := make([]byte, 0, len(SealedInfoLabel)+2*ed25519.PublicKeySize)
	b = append(b, SealedInfoLabel...)
	b = append(b, sender...)
	return append(b, recipient...)
}

// SealedAAD is the AES-GCM additional data of a sealed message (NIST SP
// 800-38D §5.2.1.1): the message id and the sender's and recipient's names,
// so the server cannot re-address or re-label a stored message.
func SealedAAD(id, from, to string) []byte {
	return []byte(SealedInfoLabel + "\n" + id + "\n" + from + "\n" + to)
}

// EncKeyPayload is what the identity key signs to bind an X25519
// encryption key (base64, as sent) to name.
func EncKeyPayload(name, encKey string) []byte {
	return []byte("parley-enc-key-v1\n" + name + "\n" + encKey)
}

// SignEncKey returns the base64 encryption key pub and its binding
// signature by the identity key priv for name.
func SignEncKey(priv ed25519.PrivateKey, name string, pub []byte) (encKey, encSig string) {
	encKey = base64.StdEncoding.EncodeToString(pub)
	sig := ed25519.Sign(priv, EncKeyPayload(name, encKey))
	return encKey, base64.StdEncoding.EncodeToString(sig)
}

// VerifyEncKey checks that encSig binds encKey to name under the identity
// key id. It returns the decoded key. The error has CodeForbidden when the
// signature does not verify, CodeBadRequest when a field is malformed.
func VerifyEncKey(id ed25519.PublicKey, name, encKey, encSig string) ([]byte, error) {
	if err := validateEncBinding(encKey, encSig, true); err != nil {
		return nil, err
	}
	if len(id) != ed25519.PublicKeySize {
		return nil, Errorf(CodeBadRequest, "identity key of %d bytes", len(id))
	}
	if !ed25519.Verify(id, EncKeyPayload(name, encKey), unb64(encSig)) {
		return nil, Errorf(CodeForbidden, "the encryption key of %q is not signed by its identity key", truncate(name, 40))
	}
	return unb64(encKey), nil
}

// validateEncBinding checks the shape of an encryption key and its
// signature: both present (or, unless required, both absent).
func validateEncBinding(encKey, encSig string, required bool) error {
	if encKey == "" && encSig == "" && !required {
		return nil
	}
	if !b64Len(encKey, EncKeySize) {
		return Errorf(CodeBadRequest, "enc_key must be base64 of %d bytes", EncKeySize)
	}
	if !b64Len(encSig, ed25519.SignatureSize) {
		return Errorf(CodeBadRequest, "enc_sig must be base64 of %d bytes", ed25519.SignatureSize)
	}
	return nil
}

// b64Len reports whether s is standard base64 of exactly n bytes.
func b64Len(s string, n int) bool {
	if len(s) != base64.StdEncoding.EncodedLen(n) {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(s)
	return err == nil && len(b) == n
}

func unb64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

func init() {
	register(TypeSealed, func() Body { return new(Sealed) })
	register(TypeSealedReceipt, func() Body { return new(Receipt) })
}
