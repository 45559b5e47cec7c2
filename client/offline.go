package client

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/parley-voice/parley/proto"
)

// Offline messages (see proto/offline.go for the scheme and the flow). A
// message for a peer who is offline is sealed to the peer's X25519
// encryption key — which presence carries, bound to the peer's identity key
// by a signature we check against the key we trust for the peer — and left
// with the server; the receipt comes back as a proto.TypeSealedReceipt,
// possibly days later and after restarts, and becomes a DeliveredEvent with
// Path "offline".
//
// Why a separate encryption key rather than one converted from the Ed25519
// identity key: a browser keeps its identity key non-extractable inside
// WebCrypto, so it cannot compute the converted scalar, and WebCrypto has
// X25519, HKDF and AES-GCM but no XSalsa20-Poly1305. A separate X25519 key
// bound by an identity signature works with standard primitives on both
// sides, and trust still rests on the one identity key people pin.

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

// StoredEvent: a message was sealed and the server holds it (✓); a
// DeliveredEvent follows when the peer's client takes it, now or at its
// next sign-in.
type StoredEvent struct {
	ID string `json:"id"`
	To string `json:"to"`
}

// ReadEvent: By read our message ID.
type ReadEvent struct {
	ID string `json:"id"`
	By string `json:"by"`
}

// TypingEvent: From started or stopped typing to us.
type TypingEvent struct {
	From   string `json:"from"`
	Typing bool   `json:"typing"`
}

func (StoredEvent) event() {}
func (ReadEvent) event()   {}
func (TypingEvent) event() {}

func (StoredEvent) EventName() string { return "stored" }
func (ReadEvent) EventName() string   { return "read" }
func (TypingEvent) EventName() string { return "typing" }

// SealKeys are our own keys for sealing and opening.
type SealKeys struct {
	Name string
	Key  ed25519.PrivateKey // identity
	Enc  *ecdh.PrivateKey   // X25519 encryption key
}

// SealPeer is what we need of a peer to seal to it: its name, the identity
// key we trust for it, and the encryption key with its binding signature
// (from presence).
type SealPeer struct {
	Name   string
	Key    ed25519.PublicKey
	EncKey string // base64 X25519 public key
	EncSig string // Ed25519 by Key over proto.EncKeyPayload(Name, EncKey)
}

// sealKey derives the AES-256 key of one message: X25519 (RFC 7748 §6.1;
// crypto/ecdh refuses an all-zero shared secret, i.e. a low-order peer key)
// then HKDF-SHA256 (RFC 5869 §2.2 extract with the message's salt, §2.3
// expand with info binding both identity keys).
func sealKey(priv *ecdh.PrivateKey, peerEnc []byte, salt []byte, sender, recipient ed25519.PublicKey) (cipher.AEAD, error) {
	pub, err := ecdh.X25519().NewPublicKey(peerEnc)
	if err != nil {
		return nil, fmt.Errorf("%w: encryption key: %v", ErrBadKey, err)
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: key agreement: %v", ErrBadKey, err)
	}
	key, err := hkdfKey(shared, salt, proto.SealedInfo(sender, recipient))
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	// 96-bit nonce, 128-bit tag: NIST SP 800-38D §5.2.1.1 and §5.2.1.2.
	return cipher.NewGCM(blk)
}

// Seal seals a chat message from me to peer. It checks the peer's
// encryption key binding against peer.Key first (ErrBadKey if it does not
// verify).
func Seal(me SealKeys, peer SealPeer, m *proto.Chat) (*proto.Sealed, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if me.Enc == nil || len(me.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: no key of our own to seal with", ErrBadKey)
	}
	peerEnc, err := proto.VerifyEncKey(peer.Key, peer.Name, peer.EncKey, peer.EncSig)
	if err != nil {
		return nil, fmt.Errorf("%w: %s's encryption key: %v", ErrBadKey, peer.Name, err)
	}
	plain, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, proto.SealedSaltSize)
	nonce := make([]byte, proto.SealedNonce)
	rand.Read(salt) // crypto/rand.Read never fails (Go 1.24+)
	rand.Read(nonce)
	myPub := me.Key.Public().(ed25519.PublicKey)
	aead, err := sealKey(me.Enc, peerEnc, salt, myPub, peer.Key)
	if err != nil {
		return nil, err
	}
	ct := aead.Seal(nil, nonce, plain, proto.SealedAAD(m.ID, me.Name, peer.Name))
	enc, sig := proto.SignEncKey(me.Key, me.Name, me.Enc.PublicKey().Bytes())
	b64 := base64.StdEncoding.EncodeToString
	s := &proto.Sealed{
		V:            proto.SealedVersion,
		ID:           m.ID,
		SenderKey:    b64(myPub),
		SenderEnc:    enc,
		SenderEncSig: sig,
		Salt:         b64(salt),
		Nonce:        b64(nonce),
		Ciphertext:   b64(ct),
	}
	return s, s.Validate()
}

// Open opens a sealed message that from (the server-stamped sender name)
// left for me. It checks that the sender's encryption key is bound to
// s.SenderKey and from, that the ciphertext authenticates under the keys,
// id and names, and that the inner id matches. Whether s.SenderKey is the
// key we trust for from is the caller's check.
func Open(me SealKeys, from string, s *proto.Sealed) (*proto.Chat, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if me.Enc == nil || len(me.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: no key of our own to open with", ErrBadKey)
	}
	sender, _ := proto.DecodePublicKey(s.SenderKey)
	senderEnc, err := proto.VerifyEncKey(sender, from, s.SenderEnc, s.SenderEncSig)
	if err != nil {
		return nil, fmt.Errorf("%w: sender's encryption key: %v", ErrBadKey, err)
	}
	aead, err := sealKey(me.Enc, senderEnc, s.SaltBytes(), sender, me.Key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, s.NonceBytes(), s.CiphertextBytes(), proto.SealedAAD(s.ID, from, me.Name))
	if err != nil {
		return nil, fmt.Errorf("%w: sealed message does not open with our key and the sender's", ErrBadKey)
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

// sealKeys are our keys for Seal and Open.
func (c *Client) sealKeys() SealKeys {
	return SealKeys{Name: c.cfg.Name, Key: c.cfg.Key, Enc: c.cfg.EncKey}
}

// peerKey is the identity key we trust for name: the caller's pinned key,
// else the key presence last showed.
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

// sendSealed sends m through the server, sealed to its recipient; the
// server's answer goes to onSealedAnswer (chat.go). It returns why it could
// not send (no key known, a binding that does not verify, not signed in)
// (loop goroutine).
func (c *Client) sendSealed(m *outMsg) error {
	if c.sig == nil {
		return ErrNotSignedIn
	}
	key := c.peerKey(m.To)
	p, known := c.presence[m.To]
	if !known && key == nil {
		return fmt.Errorf("%w: %s", ErrUnknownPeer, m.To)
	}
	if key == nil || p.EncKey == "" {
		return fmt.Errorf("%w: no encryption key known for %s", ErrBadKey, m.To)
	}
	s, err := Seal(c.sealKeys(), SealPeer{Name: m.To, Key: key, EncKey: p.EncKey, EncSig: p.EncSig},
		&proto.Chat{ID: m.ID, Text: m.Text, Time: m.Time, Seq: m.Seq, File: m.file, Display: c.DisplayName()})
	if err != nil {
		c.log.Warn("client: seal", "to", m.To, "err", err)
		return err
	}
	if err := c.sendSigID(proto.TypeSealed, m.ID, m.To, s, func(err error) { c.onSealedAnswer(m, err) }); err != nil {
		return err
	}
	m.inFlight = true
	return nil
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
		m, err := Open(c.sealKeys(), env.From, s)
		if err != nil {
			// Not for a key we have (or damaged): it can never be
			// opened here, so the server is told to drop it, and the
			// sender learns why.
			c.log.Warn("client: cannot open sealed message", "from", env.From, "err", err)
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeCannotOpen, "a sealed message from %s could not be opened and was refused: %v", env.From, err), Ref: s.ID})
			c.sendSig(proto.TypeDelivered, env.From, &proto.Receipt{ID: s.ID, Refused: proto.CodeCannotOpen})
			return
		}
		c.receive(env.From, *m, "server")
	case proto.TypeSealedReceipt:
		r, err := proto.DecodeBody[*proto.Receipt](env)
		if err != nil || env.From == "" {
			return
		}
		c.onReceipt(env.From, r.ID, r.Refused, "server")
	}
}

// encKeyFromIdentity derives an X25519 key from the identity seed with
// HKDF-SHA256 under its own label: the key a client uses when
// Config.EncKey is nil, so a library user without a profile still opens,
// after a restart, what was sealed to it. It is an independent key (the
// KDF output, not the identity scalar), bound like any other by signature.
func encKeyFromIdentity(priv ed25519.PrivateKey) (*ecdh.PrivateKey, error) {
	k, err := hkdfKey(priv.Seed(), nil, []byte("parley-enc-key-from-identity-v1"))
	if err != nil {
		return nil, err
	}
	return ecdh.X25519().NewPrivateKey(k)
}

// hkdfKey is HKDF-SHA256 (RFC 5869 §2) to 32 bytes.
func hkdfKey(secret, salt, info []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, secret, salt, string(info), 32)
}
