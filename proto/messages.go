package proto

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
)

// Hello is the server's first frame: a fresh challenge the client signs.
type Hello struct {
	Challenge string `json:"challenge"` // base64 of 32 random bytes
	Server    string `json:"server,omitempty"`
	Version   int    `json:"version"`
}

func (h *Hello) Validate() error {
	if b, err := base64.StdEncoding.DecodeString(h.Challenge); err != nil || len(b) < 16 {
		return Errorf(CodeBadRequest, "hello challenge must be base64 of at least 16 bytes")
	}
	return nil
}

// Auth proves the client holds the private key for PublicKey and claims Name.
// Signature is Ed25519 over AuthPayload(challenge, name, publicKey).
type Auth struct {
	Name      string     `json:"name"`
	PublicKey string     `json:"public_key"` // base64 of the 32-byte Ed25519 public key
	Signature string     `json:"signature"`  // base64 of the 64-byte signature
	Agent     string     `json:"agent,omitempty"`
	NAT       *NATReport `json:"nat,omitempty"`
	// EncKey is the client's X25519 encryption key (base64) for sealed
	// offline messages, EncSig its binding signature over
	// EncKeyPayload(Name, EncKey) by PublicKey (offline.go). Optional: a
	// client without one can neither receive nor send sealed messages.
	EncKey string `json:"enc_key,omitempty"`
	EncSig string `json:"enc_sig,omitempty"`
}

func (a *Auth) Validate() error {
	if err := ValidateRegisterName(a.Name); err != nil {
		return err
	}
	if _, err := a.Key(); err != nil {
		return err
	}
	if s, err := base64.StdEncoding.DecodeString(a.Signature); err != nil || len(s) != ed25519.SignatureSize {
		return Errorf(CodeBadRequest, "signature must be base64 of %d bytes", ed25519.SignatureSize)
	}
	if len(a.Agent) > 128 {
		return Errorf(CodeBadRequest, "agent longer than 128 bytes")
	}
	if err := validateEncBinding(a.EncKey, a.EncSig, false); err != nil {
		return err
	}
	if a.NAT != nil {
		return a.NAT.Validate()
	}
	return nil
}

// Key decodes the public key.
func (a *Auth) Key() (ed25519.PublicKey, error) {
	return DecodePublicKey(a.PublicKey)
}

// DecodePublicKey decodes a base64 Ed25519 public key. Only the canonical
// spelling is accepted (the decoder would also skip line breaks), so one
// key has one string everywhere it is compared or pinned.
func DecodePublicKey(s string) (ed25519.PublicKey, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(k) != ed25519.PublicKeySize || base64.StdEncoding.EncodeToString(k) != s {
		return nil, Errorf(CodeBadRequest, "public_key must be base64 of %d bytes", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(k), nil
}

// AuthPayload is the byte string an Auth signature covers. Binding the name
// and key to the server's one-time challenge stops replays.
func AuthPayload(challenge, name, publicKey string) []byte {
	return []byte("parley-auth-v1\n" + challenge + "\n" + name + "\n" + publicKey)
}

// VerifyAuth checks a's signature over challenge and, when a carries an
// encryption key, its binding to a's identity key and name.
func VerifyAuth(a *Auth, challenge string) error {
	key, err := a.Key()
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(a.Signature)
	if err != nil {
		return Errorf(CodeAuthFailed, "signature is not base64")
	}
	if !ed25519.Verify(key, AuthPayload(challenge, a.Name, a.PublicKey), sig) {
		return Errorf(CodeAuthFailed, "signature does not verify for %q", a.Name)
	}
	if a.EncKey != "" {
		if _, err := VerifyEncKey(key, a.Name, a.EncKey, a.EncSig); err != nil {
			return Errorf(CodeAuthFailed, "enc_key is not bound to the key of %q", a.Name)
		}
	}
	return nil
}

// SignAuth fills an Auth for name, signed with priv over challenge.
func SignAuth(priv ed25519.PrivateKey, challenge, name string) *Auth {
	pub := base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
	sig := ed25519.Sign(priv, AuthPayload(challenge, name, pub))
	return &Auth{Name: name, PublicKey: pub, Signature: base64.StdEncoding.EncodeToString(sig)}
}

// ICEServer mirrors WebRTC's RTCIceServer.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Welcome confirms authentication.
type Welcome struct {
	Name       string      `json:"name"`
	Session    string      `json:"session"`
	ICEServers []ICEServer `json:"ice_servers,omitempty"`
	// Online is empty from servers with contacts-scoped presence
	// (contacts.go): a client asks for the presence it wants. Servers
	// before that listed everyone here.
	Online []Presence `json:"online"`
	// HeartbeatSeconds is how often the client should ping when idle.
	HeartbeatSeconds int `json:"heartbeat_seconds,omitempty"`
	// Directory says the server answers directory queries.
	Directory bool `json:"directory,omitempty"`
	// MaxContacts is how many names a client may watch as contacts.
	MaxContacts int `json:"max_contacts,omitempty"`
}

func (w *Welcome) Validate() error {
	if err := ValidateName(w.Name); err != nil {
		return err
	}
	if len(w.Online) > 10000 {
		return Errorf(CodeBadRequest, "welcome lists too many users")
	}
	for i := range w.Online {
		if err := w.Online[i].Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Status is a user's presence status.
type Status string

const (
	StatusOnline  Status = "online"
	StatusAway    Status = "away"
	StatusOffline Status = "offline"
)

// Presence reports one user's state. From the server, Name is set; from a
// client (setting its own status) only Status is.
type Presence struct {
	Name      string `json:"name,omitempty"`
	Status    Status `json:"status"`
	PublicKey string `json:"public_key,omitempty"`
	LastSeen  int64  `json:"last_seen,omitempty"` // unix milliseconds
	// EncKey and EncSig are the user's encryption key and its binding
	// (see Auth), for sealing offline messages to them; set by the server
	// for online and offline users that registered one. Receivers verify
	// EncSig against the identity key they trust for Name.
	EncKey string `json:"enc_key,omitempty"`
	EncSig string `json:"enc_sig,omitempty"`
	// NAT is the type of the user's NAT from their last NAT report, set
	// by the server while they are online and have reported one. A caller
	// uses it with its own to decide how long to wait for a direct path
	// before taking a relayed one (client/path.go).
	NAT NATType `json:"nat,omitempty"`
}

// Online reports whether the user is reachable (online or away).
func (p *Presence) Online() bool { return p.Status == StatusOnline || p.Status == StatusAway }

func (p *Presence) Validate() error {
	if p.Name != "" {
		if err := ValidateName(p.Name); err != nil {
			return err
		}
	}
	switch p.Status {
	case StatusOnline, StatusAway, StatusOffline:
	default:
		return Errorf(CodeBadRequest, "presence status %q is not online, away or offline", truncate(string(p.Status), 16))
	}
	if p.PublicKey != "" {
		if _, err := DecodePublicKey(p.PublicKey); err != nil {
			return err
		}
	}
	if err := validateNATHint(p.NAT); err != nil {
		return err
	}
	return validateEncBinding(p.EncKey, p.EncSig, false)
}

// Ack acknowledges the envelope whose id is Ref.
type Ack struct {
	Ref string `json:"ref"`
}

func (a *Ack) Validate() error { return ValidateID(a.Ref) }

// MaxSDPLen bounds an SDP body.
const MaxSDPLen = 48 << 10

// SDP carries an offer or answer for the peer connection Session.
type SDP struct {
	Session string `json:"session"`
	SDP     string `json:"sdp"`
	// Sig is the sender's Ed25519 signature over the SDP's DTLS
	// fingerprints (sdpsig.go), base64. Receivers refuse an SDP without
	// a valid one.
	Sig string `json:"sig,omitempty"`
	// NAT is the sender's NAT type (its NAT report), when it knows it:
	// both sides of a link learn both types from the offer and the
	// answer, and plan the link's relays and acceptance waits with them
	// (client/path.go). Empty: unknown (browsers never send it). Not
	// signed: a server that lies about it can only make a call wait for
	// a relay longer or shorter.
	NAT NATType `json:"nat,omitempty"`
}

func (s *SDP) Validate() error {
	if err := ValidateID(s.Session); err != nil {
		return err
	}
	if err := validateNATHint(s.NAT); err != nil {
		return err
	}
	if s.SDP == "" || len(s.SDP) > MaxSDPLen {
		return Errorf(CodeBadRequest, "sdp must be 1–%d bytes", MaxSDPLen)
	}
	if !strings.HasPrefix(s.SDP, "v=0") {
		return Errorf(CodeBadRequest, "sdp does not start with v=0")
	}
	if s.Sig != "" {
		if b, err := base64.StdEncoding.DecodeString(s.Sig); err != nil || len(b) != ed25519.SignatureSize || base64.StdEncoding.EncodeToString(b) != s.Sig {
			return Errorf(CodeBadRequest, "sdp sig must be base64 of %d bytes", ed25519.SignatureSize)
		}
	}
	return nil
}

// Candidate carries one trickled ICE candidate (RTCIceCandidateInit). An
// empty Candidate string means end of candidates.
type Candidate struct {
	Session       string  `json:"session"`
	Candidate     string  `json:"candidate"`
	SDPMid        *string `json:"sdpMid,omitempty"`
	SDPMLineIndex *uint16 `json:"sdpMLineIndex,omitempty"`
	UsernameFrag  *string `json:"usernameFragment,omitempty"`
}

func (c *Candidate) Validate() error {
	if err := ValidateID(c.Session); err != nil {
		return err
	}
	if len(c.Candidate) > 1024 {
		return Errorf(CodeBadRequest, "candidate longer than 1024 bytes")
	}
	if c.Candidate != "" && !strings.HasPrefix(c.Candidate, "candidate:") {
		return Errorf(CodeBadRequest, "candidate does not start with \"candidate:\"")
	}
	if c.SDPMid != nil && len(*c.SDPMid) > 64 || c.UsernameFrag != nil && len(*c.UsernameFrag) > 256 {
		return Errorf(CodeBadRequest, "candidate mid or ufrag too long")
	}
	return nil
}

// Bye closes the peer connection Session.
type Bye struct {
	Session string `json:"session"`
	Reason  string `json:"reason,omitempty"`
}

func (b *Bye) Validate() error {
	if len(b.Reason) > 256 {
		return Errorf(CodeBadRequest, "reason longer than 256 bytes")
	}
	return ValidateID(b.Session)
}

// Restart asks the offerer of the peer connection Session to restart ICE
// (RFC 8445 section 9): only the offerer restarts, and an answerer whose
// path died while the offerer's own traffic still arrives (paths through
// relays need not be the same both ways) has no other way to say so.
type Restart struct {
	Session string `json:"session"`
}

func (r *Restart) Validate() error { return ValidateID(r.Session) }

// CallSignal rings, accepts, declines or hangs up the call Call.
type CallSignal struct {
	Call string `json:"call"`
	// Code says why a call was declined or ended, for the other side's
	// app to put in its own words: one of the EndCode values. An unknown
	// code reads as a plain hang-up.
	Code EndCode `json:"code,omitempty"`
	// Reason is free text from the peer. Apps show it as the peer's
	// words ("bob: ..."), never as their own verdict.
	Reason string `json:"reason,omitempty"`
	// Resume, on a ring, asks whether the peer still has call Call (its
	// link was re-created or its path came back after a loss): a peer that
	// has it ignores the ring; one that does not (it restarted) answers
	// hangup with code gone. A resume ring never rings.
	Resume bool `json:"resume,omitempty"`
}

// EndCode is why a call ended, as the side that ended it saw it.
type EndCode string

const (
	EndHungUp   EndCode = "hung_up"   // the peer hung up
	EndDeclined EndCode = "declined"  // the callee declined
	EndBusy     EndCode = "busy"      // the callee is in another call
	EndNoAnswer EndCode = "no_answer" // nobody answered in time
	EndNoPath   EndCode = "no_path"   // no network path (ICE failed)
	EndRefused  EndCode = "refused"   // the callee takes calls from contacts only, or blocked the caller
	EndInsecure EndCode = "insecure"  // the link's fingerprints were not signed by the caller's key
	EndNoRelay  EndCode = "no_relay"  // the side that ended it relays only ("always relay") and no relay was available
	EndGone     EndCode = "gone"      // asked to resume, the peer no longer had the call (it restarted)
	EndOffline  EndCode = "offline"   // the server said the peer went offline while the call had no flowing media (ours alone: never sent)
)

func (c *CallSignal) Validate() error {
	if len(c.Reason) > 256 {
		return Errorf(CodeBadRequest, "reason longer than 256 bytes")
	}
	if len(c.Code) > 32 {
		return Errorf(CodeBadRequest, "code longer than 32 bytes")
	}
	return ValidateID(c.Call)
}

// Chat is one chat message. ID is chosen by the sender and is the key for
// delivery receipts and duplicate suppression.
type Chat struct {
	ID   string `json:"id"`
	Text string `json:"text"`
	Time int64  `json:"ts,omitempty"` // sender's clock, unix milliseconds
	// Seq numbers the sender's messages to this recipient, from 1, in the
	// order they were written: the recipient shows them in that order
	// whatever path each took. Zero: unnumbered.
	Seq uint64 `json:"seq,omitempty"`
	// File, when set, makes the message the offer of a file (files.go):
	// ID is the transfer's id and Text says in words what is offered,
	// for clients that know nothing of files.
	File *FileInfo `json:"file,omitempty"`
	// Display is the sender's display name (ValidateDisplayName), sent
	// with each message so the recipient shows it beside the handle. Not
	// checked by Validate: a receiver drops an invalid one
	// (ValidDisplayName) and keeps the message.
	Display string `json:"display,omitempty"`
}

func (c *Chat) Validate() error {
	if err := ValidateID(c.ID); err != nil {
		return err
	}
	if c.File != nil {
		if err := c.File.Validate(); err != nil {
			return err
		}
	}
	return ValidateText(c.Text)
}

// Receipt says message ID was delivered (or read). A delivery receipt
// with Refused says the recipient got it but will not take it (and the
// sender should stop sending it): CodeCannotOpen, CodeNotAccepted.
type Receipt struct {
	ID      string `json:"id"`
	Refused Code   `json:"refused,omitempty"`
}

func (r *Receipt) Validate() error {
	if len(r.Refused) > 32 {
		return Errorf(CodeBadRequest, "refused code longer than 32 bytes")
	}
	return ValidateID(r.ID)
}

// Typing reports whether the sender is typing.
type Typing struct {
	Typing bool `json:"typing"`
}

func (t *Typing) Validate() error { return nil }
