package client

import (
	"sync"
	"time"

	"github.com/parley-voice/parley/proto"
)

// Event is something that happened; see the concrete types below.
type Event interface{ event() }

// ReadyEvent: signed in to the server (again, after a reconnect).
type ReadyEvent struct {
	Name      string
	Reconnect bool
}

// DisconnectedEvent: the signaling connection dropped; the client retries.
type DisconnectedEvent struct {
	Err   error
	Retry string // how long until the next attempt, e.g. "1.2s"
}

// PresenceEvent: a user's status changed (or was listed at sign-in).
type PresenceEvent struct {
	proto.Presence
}

// MessageEvent: a chat message arrived (exactly once per id).
type MessageEvent struct {
	From string
	ID   string
	Text string
	Time int64  // sender's clock, unix ms
	Seq  uint64 // the sender's number for it (proto.Chat.Seq); 0: none
	Path string // "direct" (data channel) or "server" (sealed)
	// File is set when the message offers a file (a FileOfferEvent follows).
	File *proto.FileInfo
}

// DeliveredEvent: a message we sent was received by To.
type DeliveredEvent struct {
	ID   string
	To   string
	Path string
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
	With      string
	Call      string
	State     CallState
	Direction string // "outgoing" or "incoming"
	Path      string // "direct" or "relay" once connected
	Via       string // supernode id (or relay address) when Path is "relay"
	Reason    string // why it ended, in the app's words
	// Code is why it ended, for programs (set when State is ended).
	Code proto.EndCode
	// PeerReason is text the peer sent with its hangup or decline: its
	// words, to be shown as such (control characters removed).
	PeerReason string
}

// StatsEvent: about once a second during a connected call.
type StatsEvent struct {
	With               string
	RTPPacketsSent     uint32
	RTPPacketsReceived uint32
	RTTms              float64
	JitterMs           float64
	PacketsLost        int32
	Path               string
	Via                string // supernode id (or relay address) when Path is "relay"
	LocalCandidate     string // candidate type: host, srflx, prflx, relay
	RemoteCandidate    string
}

// LinkEvent: the direct peer connection with a peer opened its chat data
// channel ("open", chat now goes peer to peer) or closed ("closed").
type LinkEvent struct {
	With  string
	State string
	Path  string // "direct" or "relay" when open
	Via   string
}

// AudioEvent: the first audio packet of a call arrived from With.
type AudioEvent struct {
	With string
}

// ErrorEvent: something failed that the user should hear about. Ref names
// the message or call it concerns, if any.
type ErrorEvent struct {
	Err *proto.Error
	Ref string
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
		SecurityEvent{}, RefusedEvent{},
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
			flush = time.After(5 * time.Second)
		}
		select {
		case e.out <- ev:
		case <-flush:
			return // nobody is reading: drop the rest
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
