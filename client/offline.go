package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"

	"github.com/parley-voice/parley/proto"
	"golang.org/x/crypto/nacl/box"
)

// Offline messages (see proto/offline.go for the flow). A message for a
// peer who is offline is sealed with a NaCl box to the peer's identity key
// and left with the server; the receipt comes back as a
// proto.TypeSealedReceipt, possibly days later and after restarts, and
// becomes a DeliveredEvent with Path "offline".
//
// Why convert the Ed25519 identity keys rather than publish an extra
// X25519 key: the Ed25519 key is already what owns a name, what presence
// carries and what contacts pin on first use, so a sealed message is bound
// to exactly the key a person verified (/verify), with no new key to
// distribute, sign or rotate. The conversion is the standard one (libsodium's
// crypto_sign_ed25519_pk_to_curve25519); the two uses of the key (Ed25519
// signatures over prefixed payloads, X25519 key agreement) do not interact.

// MessageStore keeps received messages. When Config.Store is set, the
// client calls SaveIncoming for every received message before it sends the
// delivery receipt, so a message is never acknowledged and then lost.
type MessageStore interface {
	// SaveIncoming stores m durably. isNew is false when a message with
	// the same (From, ID) was stored before: the client then acknowledges
	// it again but emits no MessageEvent. An error withholds the receipt;
	// the sender tries again.
	SaveIncoming(m MessageEvent) (isNew bool, err error)
}

// StoredEvent: a message for an offline peer was sealed and left with the
// server; a DeliveredEvent (Path "offline") follows when the peer fetches it.
type StoredEvent struct {
	ID string
	To string
}

// ReadEvent: By read our message ID.
type ReadEvent struct {
	ID string
	By string
}

// TypingEvent: From started or stopped typing to us.
type TypingEvent struct {
	From   string
	Typing bool
}

func (StoredEvent) event() {}
func (ReadEvent) event()   {}
func (TypingEvent) event() {}

// curveP is 2^255 - 19, the field prime of Curve25519 (RFC 7748 §4.1).
var curveP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))

// X25519Public converts an Ed25519 public key to the X25519 public key of
// the same secret: u = (1 + y) / (1 - y) mod p, the birational map between
// edwards25519 and curve25519 (RFC 7748 §4.1).
func X25519Public(pub ed25519.PublicKey) (*[32]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key of %d bytes", ErrBadKey, len(pub))
	}
	be := make([]byte, 32)
	for i := range 32 {
		be[i] = pub[31-i]
	}
	be[0] &= 0x7f // the top bit is the sign of x
	y := new(big.Int).SetBytes(be)
	if y.Cmp(curveP) >= 0 {
		return nil, fmt.Errorf("%w: y not reduced", ErrBadKey)
	}
	den := new(big.Int).Sub(big.NewInt(1), y)
	den.Mod(den, curveP)
	if den.Sign() == 0 {
		return nil, fmt.Errorf("%w: point at y=1 has no Montgomery form", ErrBadKey)
	}
	u := new(big.Int).Add(big.NewInt(1), y)
	u.Mul(u, den.ModInverse(den, curveP))
	u.Mod(u, curveP)
	var out [32]byte
	ub := u.FillBytes(make([]byte, 32))
	for i := range 32 {
		out[i] = ub[31-i]
	}
	return &out, nil
}

// X25519Private derives the X25519 private scalar of an Ed25519 key: the
// clamped first half of SHA-512(seed) (RFC 8032 §5.1.5), which is the
// scalar the Ed25519 public key is made with.
func X25519Private(priv ed25519.PrivateKey) *[32]byte {
	h := sha512.Sum512(priv.Seed())
	var s [32]byte
	copy(s[:], h[:32])
	s[0] &= 248
	s[31] &= 127
	s[31] |= 64
	return &s
}

// Seal seals a chat message from priv to the peer whose identity key is to.
func Seal(priv ed25519.PrivateKey, to ed25519.PublicKey, m *proto.Chat) (*proto.Sealed, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	peer, err := X25519Public(to)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var nonce [proto.NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	sealed := box.Seal(nil, plain, &nonce, peer, X25519Private(priv))
	s := &proto.Sealed{
		ID:        m.ID,
		SenderKey: base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)),
		Nonce:     base64.StdEncoding.EncodeToString(nonce[:]),
		Box:       base64.StdEncoding.EncodeToString(sealed),
	}
	return s, s.Validate()
}

// Open opens a sealed message addressed to priv. It authenticates the
// sender's key (the box is keyed by it) and checks the inner id.
func Open(priv ed25519.PrivateKey, s *proto.Sealed) (*proto.Chat, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	sender, _ := proto.DecodePublicKey(s.SenderKey)
	peer, err := X25519Public(sender)
	if err != nil {
		return nil, err
	}
	plain, ok := box.Open(nil, s.BoxBytes(), s.NonceBytes(), peer, X25519Private(priv))
	if !ok {
		return nil, fmt.Errorf("%w: box does not open with our key and the sender's", ErrBadKey)
	}
	var m proto.Chat
	if err := json.Unmarshal(plain, &m); err != nil {
		return nil, fmt.Errorf("%w: sealed content is not a chat message", ErrBadKey)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if m.ID != s.ID {
		return nil, fmt.Errorf("%w: sealed id %q does not match the content's %q", ErrBadKey, s.ID, m.ID)
	}
	return &m, nil
}

// peerKey is the key to seal to: the caller's pinned key, else the key
// presence last showed.
func (c *Client) peerKey(name string) ed25519.PublicKey {
	if c.cfg.PeerKey != nil {
		if k := c.cfg.PeerKey(name); len(k) == ed25519.PublicKeySize {
			return k
		}
	}
	if p, ok := c.presence[name]; ok && p.PublicKey != "" {
		if k, err := proto.DecodePublicKey(p.PublicKey); err == nil {
			return k
		}
	}
	return nil
}

// sendSealed leaves m with the server, sealed to its recipient. It reports
// false when no key is known for the recipient (loop goroutine).
func (c *Client) sendSealed(m *pendingMsg) bool {
	key := c.peerKey(m.to)
	if key == nil || c.sig == nil {
		return false
	}
	s, err := Seal(c.cfg.Key, key, &proto.Chat{ID: m.id, Text: m.text, Time: m.ts})
	if err != nil {
		c.log.Warn("client: seal", "to", m.to, "err", err)
		return false
	}
	m.sealed = true
	err = c.sendSigID(proto.TypeSealed, m.id, m.to, s, func(err error) {
		if c.chat.pending[m.id] != m {
			return
		}
		c.dropPending(m.id)
		if err != nil {
			pe, ok := err.(*proto.Error)
			if !ok {
				pe = proto.Errorf(proto.CodeInternal, "%v", err)
			}
			c.events.push(ErrorEvent{Err: pe, Ref: m.id})
			return
		}
		c.events.push(StoredEvent{ID: m.id, To: m.to})
	})
	return err == nil
}

// onSealed handles a sealed message left for us and the receipt for one
// we left (loop goroutine).
func (c *Client) onSealed(env *proto.Envelope) {
	switch env.Type {
	case proto.TypeSealed:
		s, err := proto.DecodeBody[*proto.Sealed](env)
		if err != nil || env.From == "" {
			return
		}
		if c.cfg.PeerKey != nil {
			if k := c.cfg.PeerKey(env.From); k != nil && base64.StdEncoding.EncodeToString(k) != s.SenderKey {
				// Not acknowledged: it stays with the server and comes
				// again at the next sign-in, once the key is accepted.
				c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeForbidden,
					"a message from %s is sealed with a key that is not the one you trust for %s; refused until you accept the new key", env.From, env.From), Ref: s.ID})
				return
			}
		}
		m, err := Open(c.cfg.Key, s)
		if err != nil {
			c.log.Warn("client: cannot open sealed message", "from", env.From, "err", err)
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeBadRequest, "a sealed message from %s could not be opened: %v", env.From, err), Ref: s.ID})
			return
		}
		if c.deliver(env.From, m.ID, m.Text, m.Time, "offline") {
			c.sendSig(proto.TypeDelivered, env.From, &proto.Receipt{ID: m.ID})
		}
	case proto.TypeSealedReceipt:
		r, err := proto.DecodeBody[*proto.Receipt](env)
		if err != nil || env.From == "" {
			return
		}
		if m := c.chat.pending[r.ID]; m != nil && m.to == env.From {
			c.dropPending(r.ID)
		}
		c.events.push(DeliveredEvent{ID: r.ID, To: env.From, Path: "offline"})
	}
}
