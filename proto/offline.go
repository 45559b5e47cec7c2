package proto

import (
	"encoding/base64"
)

// Offline messages. A chat message for someone who is offline travels as a
// TypeSealed envelope: the text is sealed end to end with a NaCl box
// (Curve25519 + XSalsa20-Poly1305) from the sender's key to the recipient's,
// both derived from the Ed25519 identity keys that already own the names
// (RFC 7748 §4.1 birational map for the public key; RFC 8032 §5.1.5 key
// expansion for the private scalar). The signaling server stores the
// envelope durably and delivers it, in order, once the recipient signs in;
// the recipient stores it and answers with a TypeDelivered receipt, which
// the server turns into a TypeSealedReceipt for the sender — at once if the
// sender is online, else when they next sign in. The server sees who, when
// and how big, never the text.
const (
	TypeSealed        Type = "sealed"         // C→C (stored by the server): an end-to-end sealed chat message
	TypeSealedReceipt Type = "sealed_receipt" // S→C: a sealed message you left was delivered to From
)

// NonceSize is the size of a NaCl box nonce.
const NonceSize = 24

// MaxSealedBox bounds the sealed box (ciphertext), in bytes before base64:
// room for a MaxTextLen message in its JSON wrapper with escapes.
const MaxSealedBox = 3*MaxTextLen + 512

// boxOverhead is NaCl box's Poly1305 tag.
const boxOverhead = 16

// Sealed is an end-to-end encrypted chat message. Box opens, with the
// recipient's key and SenderKey, to the JSON of a Chat whose ID equals ID.
type Sealed struct {
	ID string `json:"id"`
	// SenderKey is the sender's Ed25519 identity key (base64). The server
	// refuses a SenderKey that is not the key the sender signed in with.
	SenderKey string `json:"sender_key"`
	Nonce     string `json:"nonce"` // base64 of NonceSize random bytes
	Box       string `json:"box"`   // base64 of the box
	// Stored is when the server stored it (unix ms); set by the server.
	Stored int64 `json:"stored,omitempty"`
}

func (s *Sealed) Validate() error {
	if err := ValidateID(s.ID); err != nil {
		return err
	}
	if _, err := DecodePublicKey(s.SenderKey); err != nil {
		return err
	}
	if n, err := base64.StdEncoding.DecodeString(s.Nonce); err != nil || len(n) != NonceSize {
		return Errorf(CodeBadRequest, "sealed nonce must be base64 of %d bytes", NonceSize)
	}
	if base64.StdEncoding.DecodedLen(len(s.Box)) > MaxSealedBox+3 {
		return Errorf(CodeTooLarge, "sealed box exceeds %d bytes", MaxSealedBox)
	}
	b, err := base64.StdEncoding.DecodeString(s.Box)
	if err != nil || len(b) <= boxOverhead {
		return Errorf(CodeBadRequest, "sealed box must be base64 of more than %d bytes", boxOverhead)
	}
	if len(b) > MaxSealedBox {
		return Errorf(CodeTooLarge, "sealed box of %d bytes exceeds %d", len(b), MaxSealedBox)
	}
	if s.Stored < 0 {
		return Errorf(CodeBadRequest, "sealed stored time is negative")
	}
	return nil
}

// NonceBytes returns the decoded nonce (valid after Validate).
func (s *Sealed) NonceBytes() *[NonceSize]byte {
	var n [NonceSize]byte
	b, _ := base64.StdEncoding.DecodeString(s.Nonce)
	copy(n[:], b)
	return &n
}

// BoxBytes returns the decoded box (valid after Validate).
func (s *Sealed) BoxBytes() []byte {
	b, _ := base64.StdEncoding.DecodeString(s.Box)
	return b
}

func init() {
	register(TypeSealed, func() Body { return new(Sealed) })
	register(TypeSealedReceipt, func() Body { return new(Receipt) })
}
