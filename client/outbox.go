package client

import (
	"sync"

	"github.com/parley-voice/parley/proto"
)

// OutMessage is a chat message handed to Send, kept until its receipt.
type OutMessage struct {
	ID   string
	To   string
	Text string
	Time int64 // sender's clock, unix ms
	// Seq is its number among our messages to To (proto.Chat.Seq),
	// assigned by Outbox.Queue.
	Seq uint64
}

// Outbox keeps the messages handed to Send until their receipt, so none is
// lost when the client stops, is killed or loses the network. When
// Config.Outbox is set (internal/history implements it in the profile),
// the client queues every message there before Send returns, sends again
// at the next start what a previous run left unreceipted, under the same
// ids (receivers drop ids they have seen), and finishes each at its
// receipt. Nil keeps the outbox in memory: a message survives reconnects,
// not the process.
type Outbox interface {
	// Queue stores m durably and assigns m.Seq, the next number of our
	// messages to m.To (1 for the first).
	Queue(m *OutMessage) error
	// Finish records that the message id to peer reached its end: its
	// receipt came, or the recipient refused it (refused is the code, or
	// "" for a delivery). It is no longer sent.
	Finish(peer, id string, refused proto.Code) error
	// Unsent returns the messages queued and not finished, oldest first.
	Unsent() ([]OutMessage, error)
	// WasSent reports whether we sent message id to peer: a read receipt
	// for anything else is a stranger's noise and is dropped.
	WasSent(peer, id string) bool
}

// memOutbox is the default Outbox: memory only.
type memOutbox struct {
	mu      sync.Mutex // guards the fields below
	seq     map[string]uint64
	unsent  []OutMessage
	sent    map[string]map[string]struct{} // peer -> ids, bounded by maxSent
	sentQ   map[string][]string
	maxSent int
}

// maxSent bounds the ids the memory outbox remembers per peer for WasSent.
const maxSent = 4096

func newMemOutbox() *memOutbox {
	return &memOutbox{seq: map[string]uint64{}, sent: map[string]map[string]struct{}{}, sentQ: map[string][]string{}, maxSent: maxSent}
}

func (o *memOutbox) Queue(m *OutMessage) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq[m.To]++
	m.Seq = o.seq[m.To]
	o.unsent = append(o.unsent, *m)
	s := o.sent[m.To]
	if s == nil {
		s = map[string]struct{}{}
		o.sent[m.To] = s
	}
	s[m.ID] = struct{}{}
	q := append(o.sentQ[m.To], m.ID)
	if len(q) > o.maxSent {
		delete(s, q[0])
		q = q[1:]
	}
	o.sentQ[m.To] = q
	return nil
}

func (o *memOutbox) Finish(peer, id string, _ proto.Code) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, m := range o.unsent {
		if m.ID == id && m.To == peer {
			o.unsent = append(o.unsent[:i], o.unsent[i+1:]...)
			break
		}
	}
	return nil
}

func (o *memOutbox) Unsent() ([]OutMessage, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]OutMessage(nil), o.unsent...), nil
}

func (o *memOutbox) WasSent(peer, id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.sent[peer][id]
	return ok
}

// SeqStore is a MessageStore that also knows the highest Seq it stored
// from each peer, so messages are taken in their sender's order across
// restarts too (internal/history implements it).
type SeqStore interface {
	LastSeq(peer string) uint64
}

// HoldingStore is a MessageStore that can also keep a message that came
// ahead of an earlier one of its sender: stored and acknowledged at once
// (so it leaves the sender's outbox and the server's mailbox), but hidden
// until the earlier one arrives, or until gapWait passes (Release). Without
// one, such a message waits in memory, unacknowledged.
type HoldingStore interface {
	SaveHeld(m MessageEvent) (isNew bool, err error)
	Release(peer, id string) error
	// HeldMessages returns what waits, at start: a previous run's.
	HeldMessages() ([]MessageEvent, error)
}

// RefusedEvent: Config.Accept refused a stranger's message or call, and
// the stranger was told so (not_accepted).
type RefusedEvent struct {
	From string `json:"from"`
	Kind string `json:"kind"` // "message" or "call"
	ID   string `json:"id"`   // the message or call id
}

func (RefusedEvent) event() {}

// EventName is its name in the JSON-lines mode.
func (RefusedEvent) EventName() string { return "refused" }
