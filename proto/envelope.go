package proto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Version is the protocol version spoken by this package. An envelope with
// another version is refused with CodeBadVersion.
const Version = 1

// MaxFrameSize is the largest signaling frame, in bytes, that either side
// accepts. Larger frames are refused with CodeTooLarge.
const MaxFrameSize = 64 << 10

// Type names an envelope's message type.
type Type string

// Envelope types. "C→S" is client to server, "S→C" server to client, and
// "C→C" a message the server routes from one client to another (the server
// stamps From with the authenticated sender).
const (
	TypeHello     Type = "hello"      // S→C: challenge to sign
	TypeAuth      Type = "auth"       // C→S: name, key, signature
	TypeWelcome   Type = "welcome"    // S→C: authenticated; ICE servers, who is online
	TypePresence  Type = "presence"   // S→C: someone came online, went away or left; C→S: set own status
	TypeAck       Type = "ack"        // S→C: the envelope with Ref was accepted and routed
	TypeError     Type = "error"      // either way: *Error
	TypeNATReport Type = "nat_report" // C→S: the client's NAT report
	TypePing      Type = "ping"       // C→S: application-level keepalive; answered by ack

	TypeOffer     Type = "offer"     // C→C: SDP offer for a peer connection
	TypeAnswer    Type = "answer"    // C→C: SDP answer
	TypeCandidate Type = "candidate" // C→C: trickled ICE candidate
	TypeBye       Type = "bye"       // C→C: peer connection closed
	TypeRestart   Type = "restart"   // C→C: the answerer lost the path: please restart ICE

	TypeRing    Type = "ring"    // C→C: incoming call
	TypeAccept  Type = "accept"  // C→C: call answered
	TypeDecline Type = "decline" // C→C: call declined
	TypeHangup  Type = "hangup"  // C→C: call ended

	TypeChat      Type = "chat"      // C→C: chat message through the server (fallback path)
	TypeDelivered Type = "delivered" // C→C: chat message received (delivery receipt)
	TypeRead      Type = "read"      // C→C: chat message read
	TypeTyping    Type = "typing"    // C→C: typing indicator
)

// Envelope is the one frame format on the signaling WebSocket.
type Envelope struct {
	V    int             `json:"v"`
	Type Type            `json:"type"`
	ID   string          `json:"id,omitempty"`
	From string          `json:"from,omitempty"`
	To   string          `json:"to,omitempty"`
	Body json.RawMessage `json:"body,omitempty"`
}

// Routed reports whether envelopes of type t are client-to-client messages
// that the server forwards to To.
func (t Type) Routed() bool {
	switch t {
	case TypeOffer, TypeAnswer, TypeCandidate, TypeBye, TypeRestart,
		TypeRing, TypeAccept, TypeDecline, TypeHangup,
		TypeChat, TypeDelivered, TypeRead, TypeTyping,
		TypeSealed, TypeFile:
		return true
	}
	return false
}

// Known reports whether t is a type this version defines.
func (t Type) Known() bool {
	_, ok := bodies[t]
	return ok
}

// Decode parses and validates one frame. It checks the size limit, that
// the frame is valid UTF-8, the version, the envelope fields and, for known types, the body. An unknown
// type is returned together with an error of CodeUnknownType so that a
// receiver can still reply to env.ID.
func Decode(data []byte) (*Envelope, error) {
	if len(data) > MaxFrameSize {
		return nil, Errorf(CodeTooLarge, "frame of %d bytes exceeds %d", len(data), MaxFrameSize)
	}
	var env Envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&env); err != nil {
		return nil, Errorf(CodeBadFrame, "not a JSON envelope: %v", err)
	}
	if dec.More() {
		return nil, Errorf(CodeBadFrame, "trailing data after envelope")
	}
	// encoding/json quietly turns invalid bytes into U+FFFD in what it
	// decodes, but a router forwards the raw body, and a browser closes
	// its WebSocket on a text frame that is not UTF-8 (RFC 6455 section
	// 8.1): such a frame is refused, with the envelope for its id.
	if !utf8.Valid(data) {
		return &env, Errorf(CodeBadRequest, "frame is not valid UTF-8")
	}
	if err := env.validate(); err != nil {
		return &env, err
	}
	return &env, nil
}

func (e *Envelope) validate() error {
	if e.V != Version {
		return Errorf(CodeBadVersion, "protocol version %d not supported (want %d)", e.V, Version)
	}
	if e.ID != "" {
		if err := ValidateID(e.ID); err != nil {
			return err
		}
	}
	if e.Type == "" {
		return Errorf(CodeBadFrame, "envelope has no type")
	}
	if !e.Type.Known() {
		return Errorf(CodeUnknownType, "unknown message type %q", truncate(string(e.Type), 32))
	}
	if e.From != "" {
		if err := ValidateName(e.From); err != nil {
			return err
		}
	}
	if e.Type.Routed() {
		if e.To == "" {
			return Errorf(CodeBadRequest, "%s needs a recipient (to)", e.Type)
		}
		if err := ValidateName(e.To); err != nil {
			return err
		}
	}
	_, err := e.body()
	return err
}

// Encode marshals env. It sets V when zero.
func Encode(env *Envelope) ([]byte, error) {
	if env.V == 0 {
		env.V = Version
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("proto: encode %s: %w", env.Type, err)
	}
	if len(b) > MaxFrameSize {
		return nil, Errorf(CodeTooLarge, "encoded %s is %d bytes, limit %d", env.Type, len(b), MaxFrameSize)
	}
	return b, nil
}

// New builds an envelope of type t with body b marshalled into it.
func New(t Type, id, to string, b Body) (*Envelope, error) {
	env := &Envelope{V: Version, Type: t, ID: id, To: to}
	if b != nil {
		if err := b.Validate(); err != nil {
			return nil, err
		}
		raw, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("proto: marshal %s body: %w", t, err)
		}
		env.Body = raw
	}
	return env, nil
}

// Body is a message body. Validate reports a *Error with CodeBadRequest (or
// a more specific code) when required fields are missing or malformed.
type Body interface {
	Validate() error
}

// body decodes and validates the body for the envelope's type.
func (e *Envelope) body() (Body, error) {
	mk, ok := bodies[e.Type]
	if !ok {
		return nil, Errorf(CodeUnknownType, "unknown message type %q", truncate(string(e.Type), 32))
	}
	if mk == nil {
		return nil, nil
	}
	b := mk()
	raw := e.Body
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		raw = []byte("{}")
	}
	if err := json.Unmarshal(raw, b); err != nil {
		return nil, Errorf(CodeBadRequest, "%s body: %v", e.Type, err)
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return b, nil
}

// DecodeBody decodes env's body into a value of type T (a pointer to one
// of this package's body structs) and validates it.
func DecodeBody[T Body](env *Envelope) (T, error) {
	var zero T
	b, err := env.body()
	if err != nil {
		return zero, err
	}
	t, ok := b.(T)
	if !ok {
		return zero, Errorf(CodeBadRequest, "%s body is %T, not %T", env.Type, b, zero)
	}
	return t, nil
}

var bodies = map[Type]func() Body{
	TypeHello:     func() Body { return new(Hello) },
	TypeAuth:      func() Body { return new(Auth) },
	TypeWelcome:   func() Body { return new(Welcome) },
	TypePresence:  func() Body { return new(Presence) },
	TypeAck:       func() Body { return new(Ack) },
	TypeError:     func() Body { return new(Error) },
	TypeNATReport: func() Body { return new(NATReport) },
	TypePing:      nil,

	TypeOffer:     func() Body { return new(SDP) },
	TypeAnswer:    func() Body { return new(SDP) },
	TypeCandidate: func() Body { return new(Candidate) },
	TypeBye:       func() Body { return new(Bye) },
	TypeRestart:   func() Body { return new(Restart) },

	TypeRing:    func() Body { return new(CallSignal) },
	TypeAccept:  func() Body { return new(CallSignal) },
	TypeDecline: func() Body { return new(CallSignal) },
	TypeHangup:  func() Body { return new(CallSignal) },

	TypeChat:      func() Body { return new(Chat) },
	TypeDelivered: func() Body { return new(Receipt) },
	TypeRead:      func() Body { return new(Receipt) },
	TypeTyping:    func() Body { return new(Typing) },
}

// Register adds a body type for t. It lets extensions (supernode messages)
// live in their own file; it must be called from an init function.
func register(t Type, mk func() Body) { bodies[t] = mk }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
