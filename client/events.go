package client

import (
	"encoding/json"
	"math"
	"sync"
	"time"

	"github.com/parley-voice/parley/proto"
)

// Event is something that happened; see the concrete types below. Each
// has a public name (EventName: "message", "call", ...) and a JSON shape
// (its json tags, or MarshalJSON) that boundaries such as `parley chat
// --json` print as they are; names and fields are a stable interface:
// fields may be added, never renamed. The compiler holds every event to
// having a name.
type Event interface {
	event()
	EventName() string
}

// ReadyEvent: signed in to the server (again, after a reconnect).
type ReadyEvent struct {
	Name      string `json:"name"`
	Reconnect bool   `json:"reconnect"`
}

// DisconnectedEvent: the signaling connection dropped; the client retries.
type DisconnectedEvent struct {
	Err   error  `json:"-"`     // shown as "error", in words
	Retry string `json:"retry"` // how long until the next attempt, e.g. "1.2s"
}

// MarshalJSON gives the error as words.
func (e DisconnectedEvent) MarshalJSON() ([]byte, error) {
	type shape struct {
		Retry string `json:"retry"`
		Error string `json:"error,omitempty"`
	}
	s := shape{Retry: e.Retry}
	if e.Err != nil {
		s.Error = e.Err.Error()
	}
	return json.Marshal(s)
}

// PresenceEvent: a user's status changed (or was listed at sign-in).
type PresenceEvent struct {
	proto.Presence
}

// MarshalJSON is the presence with "online" spelled out.
func (e PresenceEvent) MarshalJSON() ([]byte, error) {
	type shape struct {
		proto.Presence
		Online bool `json:"online"`
	}
	return json.Marshal(shape{Presence: e.Presence, Online: e.Online()})
}

// MessageEvent: a chat message arrived (exactly once per id).
type MessageEvent struct {
	From string `json:"from"`
	ID   string `json:"id"`
	Text string `json:"text"`
	Time int64  `json:"ts"`            // sender's clock, unix ms
	Seq  uint64 `json:"seq,omitempty"` // the sender's number for it (proto.Chat.Seq); 0: none
	Path string `json:"path"`          // "direct" (data channel) or "server" (sealed)
	// File is set when the message offers a file (a FileOfferEvent follows).
	File *proto.FileInfo `json:"file,omitempty"`
	// Display is the display name the sender sent with it
	// (proto.ValidateDisplayName), empty if none; show it beside From,
	// never instead of it.
	Display string `json:"display,omitempty"`
}

// DeliveredEvent: a message we sent was received by To.
type DeliveredEvent struct {
	ID   string `json:"id"`
	To   string `json:"to"`
	Path string `json:"path"`
}

// CallState is the state of a call.
type CallState string

const (
	CallRinging   CallState = "ringing"   // placed or incoming, not yet answered
	CallAccepted  CallState = "accepted"  // answered, media path not yet up
	CallConnected CallState = "connected" // media flowing
	CallEnded     CallState = "ended"
)

// CallEvent: a call changed state.
type CallEvent struct {
	With      string    `json:"with"`
	Call      string    `json:"call"`
	State     CallState `json:"state"`
	Direction string    `json:"direction"`        // "outgoing" or "incoming"
	Path      string    `json:"path,omitempty"`   // "direct" or "relay" once connected
	Via       string    `json:"via,omitempty"`    // supernode id (or relay address) when Path is "relay"
	Reason    string    `json:"reason,omitempty"` // why it ended, in the app's words
	// Code is why it ended, for programs (set when State is ended).
	Code proto.EndCode `json:"code,omitempty"`
	// PeerReason is text the peer sent with its hangup or decline: its
	// words, to be shown as such (control characters removed).
	PeerReason string `json:"peer_reason,omitempty"`
}

// StatsEvent: about once a second during a connected call.
type StatsEvent struct {
	With               string  `json:"with"`
	RTPPacketsSent     uint32  `json:"rtp_packets_sent"`
	RTPPacketsReceived uint32  `json:"rtp_packets_received"`
	RTTms              float64 `json:"rtt_ms"`
	JitterMs           float64 `json:"jitter_ms"`
	PacketsLost        int32   `json:"packets_lost"`
	Path               string  `json:"path"`
	Via                string  `json:"via,omitempty"`   // supernode id (or relay address) when Path is "relay"
	LocalCandidate     string  `json:"local_candidate"` // candidate type: host, srflx, prflx, relay
	RemoteCandidate    string  `json:"remote_candidate"`
}

// MarshalJSON rounds the times to 0.01 ms.
func (e StatsEvent) MarshalJSON() ([]byte, error) {
	type shape StatsEvent
	s := shape(e)
	s.RTTms, s.JitterMs = round2(s.RTTms), round2(s.JitterMs)
	return json.Marshal(s)
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// LinkEvent: the direct peer connection with a peer opened its chat data
// channel ("open", chat now goes peer to peer) or closed ("closed").
type LinkEvent struct {
	With  string `json:"with"`
	State string `json:"state"`
	Path  string `json:"path,omitempty"` // "direct" or "relay" when open
	Via   string `json:"via,omitempty"`
}

// MuteEvent: in a call, With muted (or unmuted) their microphone.
type MuteEvent struct {
	With  string `json:"with"`
	Muted bool   `json:"muted"`
}

// AudioEvent: the first audio packet of a call arrived from With.
type AudioEvent struct {
	With string `json:"with"`
}

// ErrorEvent: something failed that the user should hear about. Ref names
// the message or call it concerns, if any.
type ErrorEvent struct {
	Err *proto.Error `json:"-"` // shown as "code" and "message"
	Ref string       `json:"ref,omitempty"`
}

// MarshalJSON is the error's code and words.
func (e ErrorEvent) MarshalJSON() ([]byte, error) {
	type shape struct {
		Code    proto.Code `json:"code"`
		Message string     `json:"message"`
		Ref     string     `json:"ref,omitempty"`
	}
	s := shape{Code: proto.CodeInternal, Message: "unknown error", Ref: e.Ref}
	if e.Err != nil {
		s.Code, s.Message = e.Err.Code, e.Err.Message
	}
	return json.Marshal(s)
}

// EventKinds returns a zero value of every Event type the client emits:
// boundaries that map events (the JSON mode) test that they map each. A
// test holds this list to the types that implement Event.
func EventKinds() []Event {
	return []Event{
		ReadyEvent{}, DisconnectedEvent{}, PresenceEvent{}, MessageEvent{}, DeliveredEvent{},
		CallEvent{}, StatsEvent{}, ErrorEvent{}, LinkEvent{}, AudioEvent{}, NATEvent{},
		StoredEvent{}, ReadEvent{}, TypingEvent{}, RelayEvent{},
		FileOfferEvent{}, FileProgressEvent{}, FileDoneEvent{}, FileFailedEvent{},
		SecurityEvent{}, RefusedEvent{}, MuteEvent{},
	}
}

func (ReadyEvent) event()        {}
func (DisconnectedEvent) event() {}
func (PresenceEvent) event()     {}
func (MessageEvent) event()      {}
func (DeliveredEvent) event()    {}
func (CallEvent) event()         {}
func (StatsEvent) event()        {}
func (ErrorEvent) event()        {}
func (LinkEvent) event()         {}
func (AudioEvent) event()        {}
func (MuteEvent) event()         {}

func (ReadyEvent) EventName() string        { return "ready" }
func (DisconnectedEvent) EventName() string { return "disconnected" }
func (PresenceEvent) EventName() string     { return "presence" }
func (MessageEvent) EventName() string      { return "message" }
func (DeliveredEvent) EventName() string    { return "delivered" }
func (CallEvent) EventName() string         { return "call" }
func (StatsEvent) EventName() string        { return "stats" }
func (ErrorEvent) EventName() string        { return "error" }
func (LinkEvent) EventName() string         { return "link" }
func (AudioEvent) EventName() string        { return "audio" }
func (MuteEvent) EventName() string         { return "mute" }

// eventQueue delivers events in order without ever blocking the producer.
type eventQueue struct {
	mu     sync.Mutex // guards q, closed
	q      []Event
	closed bool
	wake   chan struct{}
	out    chan Event
	done   chan struct{}
}

func newEventQueue() *eventQueue {
	e := &eventQueue{wake: make(chan struct{}, 1), out: make(chan Event), done: make(chan struct{})}
	go e.pump()
	return e
}

func (e *eventQueue) push(ev Event) {
	e.mu.Lock()
	if !e.closed {
		e.q = append(e.q, ev)
	}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *eventQueue) pump() {
	defer close(e.out)
	var flush <-chan time.Time // after close: how long queued events may wait for a reader
	done := e.done             // until close is seen
	for {
		e.mu.Lock()
		if len(e.q) == 0 {
			closed := e.closed
			e.mu.Unlock()
			if closed {
				return
			}
			select {
			case <-e.wake:
			case <-e.done:
			}
			continue
		}
		ev := e.q[0]
		e.q[0] = nil
		e.q = e.q[1:]
		closed := e.closed
		e.mu.Unlock()
		if closed && flush == nil {
			flush, done = time.After(5*time.Second), nil
		}
		for sent := false; !sent; {
			select {
			case e.out <- ev:
				sent = true
			case <-flush:
				return // nobody is reading: drop the rest
			case <-done: // closed while this one waits for a reader
				flush, done = time.After(5*time.Second), nil
			}
		}
	}
}

// close stops the queue: events already queued are still delivered to a
// reader for up to 5 s, then the channel closes.
func (e *eventQueue) close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.mu.Unlock()
	close(e.done)
}

// mailbox is an unbounded queue of work for the client's loop.
type mailbox struct {
	mu   sync.Mutex // guards q
	q    []func()
	wake chan struct{}
}

func newMailbox() *mailbox { return &mailbox{wake: make(chan struct{}, 1)} }

func (m *mailbox) post(f func()) {
	m.mu.Lock()
	m.q = append(m.q, f)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *mailbox) take() []func() {
	m.mu.Lock()
	q := m.q
	m.q = nil
	m.mu.Unlock()
	return q
}
