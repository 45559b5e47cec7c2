// Package history keeps a Parley user's chat history and contacts in the
// profile directory (one bbolt file), so they survive restarts. Received
// messages are written (and fsynced) before the client acknowledges them
// (it implements client.MessageStore). Contacts pin the first identity key
// seen for a name (trust on first use); a different key later is held as
// pending until the user accepts it, and safety numbers let two people
// compare keys out of band.
package history

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
	bolt "go.etcd.io/bbolt"
)

// Status is how far an outgoing message got. Statuses only move forward.
type Status string

const (
	Sending   Status = "sending"   // handed to the client, no receipt yet
	Stored    Status = "stored"    // sealed and left with the server for an offline peer
	Delivered Status = "delivered" // the peer's client stored it
	Read      Status = "read"      // the peer read it
	Failed    Status = "failed"    // could not be sent (see the error shown)
	Received  Status = "received"  // an incoming message
)

var rank = map[Status]int{Sending: 1, Failed: 2, Stored: 3, Delivered: 4, Read: 5, Received: 0}

// Message is one stored chat message.
type Message struct {
	Seq    uint64 `json:"-"`
	Peer   string `json:"peer"`
	ID     string `json:"id"`
	Out    bool   `json:"out"`
	Text   string `json:"text"`
	Time   int64  `json:"ts"` // sender's clock, unix ms
	At     int64  `json:"at"` // when stored here, unix ms
	Status Status `json:"status"`
	Path   string `json:"path,omitempty"`
	// Held marks a message that arrived while the peer's key was changed
	// and not yet accepted: it is not shown until the user accepts.
	Held bool `json:"held,omitempty"`
	// PeerSeq is the sender's number for the message (proto.Chat.Seq):
	// ours for outgoing ones, the peer's for incoming ones.
	PeerSeq uint64 `json:"pseq,omitempty"`
	// Unshown marks an incoming message stored but not yet shown, when
	// the DB tracks that (TrackShown): the JSON mode prints it at the
	// next start if it was killed in between.
	Unshown bool `json:"unshown,omitempty"`
	// Refused is the code a recipient refused an outgoing message with.
	Refused proto.Code `json:"refused,omitempty"`
	// Waiting marks an incoming message stored (and acknowledged) ahead
	// of an earlier one of the same sender: hidden until Release puts it
	// in its place at the end.
	Waiting bool `json:"waiting,omitempty"`
	// Call marks a line of the call log ("Missed call", "voice call ·
	// 0:22") rather than a message; Missed ones count as unread.
	Call   bool `json:"call,omitempty"`
	Missed bool `json:"missed,omitempty"`
}

// Contact is someone in the contact list.
type Contact struct {
	Name string `json:"name"`
	// Key is the pinned identity key (base64), empty until first seen.
	Key string `json:"key,omitempty"`
	// PendingKey is a different key the server announced for Name; it is
	// refused until the user accepts it.
	PendingKey string `json:"pending_key,omitempty"`
	Verified   bool   `json:"verified,omitempty"`
	Added      int64  `json:"added"`
	LastSeen   int64  `json:"last_seen,omitempty"`
	ReadUpTo   uint64 `json:"read_up_to,omitempty"`
	// OutSeq is the last number given to our messages to Name, InSeq the
	// highest of Name's messages to us we stored (proto.Chat.Seq).
	OutSeq uint64 `json:"out_seq,omitempty"`
	InSeq  uint64 `json:"in_seq,omitempty"`
	// Blocked refuses Name's messages and calls (they are told so).
	Blocked bool `json:"blocked,omitempty"`
	// Display is the display name Name last sent with a message
	// (proto.Chat.Display), shown beside the handle.
	Display string `json:"display,omitempty"`
}

// Label is how the contact is shown: "Alice Martin (alice)" when they
// sent a display name, else the handle.
func (c *Contact) Label() string {
	if c.Display == "" {
		return c.Name
	}
	return c.Display + " (" + c.Name + ")"
}

// KeyChanged reports whether a different key waits for acceptance.
func (c *Contact) KeyChanged() bool { return c.PendingKey != "" }

// KeyState is what ObserveKey found.
type KeyState int

const (
	KeyUnknown KeyState = iota // not a contact: nothing pinned
	KeyPinned                  // first key seen: pinned now
	KeySame                    // matches the pinned key
	KeyChanged                 // differs from the pinned key: held as pending
)

var (
	bucketContacts = []byte("contacts")
	bucketMsgs     = []byte("messages")
	bucketIDs      = []byte("message_ids")
)

// DB is an open history file. It is the client's MessageStore (with
// SeqStore) and Outbox.
type DB struct {
	db         *bolt.DB
	now        func() time.Time
	trackShown bool
}

var (
	_ client.MessageStore = (*DB)(nil)
	_ client.SeqStore     = (*DB)(nil)
	_ client.Outbox       = (*DB)(nil)
	_ client.HoldingStore = (*DB)(nil)
)

// TrackShown makes SaveIncoming mark messages unshown until MarkShown: for
// a front end that shows messages after storing them (the JSON mode
// prints them), so one killed in between shows them at its next start.
func (d *DB) TrackShown() { d.trackShown = true }

// Open opens (creating) the history file at path.
func Open(path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if err == bolt.ErrTimeout {
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, fmt.Errorf("history: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketContacts, bucketMsgs, bucketIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("history: init %s: %w", path, err)
	}
	return &DB{db: db, now: time.Now}, nil
}

// Close closes the file.
func (d *DB) Close() error { return d.db.Close() }

func seqKey(n uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], n)
	return k[:]
}

func idKey(out bool, id string) []byte {
	if out {
		return []byte("out:" + id)
	}
	return []byte("in:" + id)
}

func getContact(tx *bolt.Tx, name string) (Contact, bool) {
	var c Contact
	v := tx.Bucket(bucketContacts).Get([]byte(name))
	if v == nil || json.Unmarshal(v, &c) != nil {
		return Contact{}, false
	}
	return c, true
}

func putContact(tx *bolt.Tx, c Contact) error {
	v, err := json.Marshal(&c)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketContacts).Put([]byte(c.Name), v)
}

// append stores m for its peer unless its id is there already.
func (d *DB) append(tx *bolt.Tx, m *Message) (bool, error) {
	ids, err := tx.Bucket(bucketIDs).CreateBucketIfNotExists([]byte(m.Peer))
	if err != nil {
		return false, err
	}
	if ids.Get(idKey(m.Out, m.ID)) != nil {
		return false, nil
	}
	msgs, err := tx.Bucket(bucketMsgs).CreateBucketIfNotExists([]byte(m.Peer))
	if err != nil {
		return false, err
	}
	seq, err := msgs.NextSequence()
	if err != nil {
		return false, err
	}
	m.Seq = seq
	v, err := json.Marshal(m)
	if err != nil {
		return false, err
	}
	if err := msgs.Put(seqKey(seq), v); err != nil {
		return false, err
	}
	return true, ids.Put(idKey(m.Out, m.ID), seqKey(seq))
}

// SaveIncoming stores a received message (fsynced before it returns) and
// adds its sender to the contacts. It implements client.MessageStore.
func (d *DB) SaveIncoming(ev client.MessageEvent) (bool, error) {
	if err := proto.ValidateName(ev.From); err != nil {
		return false, err
	}
	isNew := false
	err := d.db.Update(func(tx *bolt.Tx) error {
		c, err := d.senderOf(tx, ev)
		if err != nil {
			return err
		}
		m := &Message{Peer: ev.From, ID: ev.ID, Text: ev.Text, Time: ev.Time, At: d.now().UnixMilli(),
			Status: Received, Path: ev.Path, Held: c.KeyChanged(), PeerSeq: ev.Seq, Unshown: d.trackShown}
		if isNew, err = d.append(tx, m); err != nil || !isNew {
			return err
		}
		if ev.Seq > c.InSeq {
			c.InSeq = ev.Seq
			return putContact(tx, c)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("history: save message from %s: %w", ev.From, err)
	}
	return isNew, nil
}

// senderOf is the contact of ev's sender, added if new, with the display
// name ev carries.
func (d *DB) senderOf(tx *bolt.Tx, ev client.MessageEvent) (Contact, error) {
	c, ok := getContact(tx, ev.From)
	if ok && (ev.Display == "" || ev.Display == c.Display) {
		return c, nil
	}
	if !ok {
		c = Contact{Name: ev.From, Added: d.now().UnixMilli()}
	}
	if ev.Display != "" {
		c.Display = ev.Display
	}
	return c, putContact(tx, c)
}

// SaveHeld stores a received message that came ahead of an earlier one of
// its sender, hidden (Waiting) until Release. It implements
// client.HoldingStore.
func (d *DB) SaveHeld(ev client.MessageEvent) (bool, error) {
	if err := proto.ValidateName(ev.From); err != nil {
		return false, err
	}
	isNew := false
	err := d.db.Update(func(tx *bolt.Tx) error {
		c, err := d.senderOf(tx, ev)
		if err != nil {
			return err
		}
		isNew, err = d.append(tx, &Message{Peer: ev.From, ID: ev.ID, Text: ev.Text, Time: ev.Time, At: d.now().UnixMilli(),
			Status: Received, Path: ev.Path, Held: c.KeyChanged(), PeerSeq: ev.Seq, Unshown: d.trackShown, Waiting: true})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("history: hold message from %s: %w", ev.From, err)
	}
	return isNew, nil
}

// Release shows a waiting message: it moves to the end of the
// conversation (its sender's order is kept) and counts for LastSeq. It
// implements client.HoldingStore.
func (d *DB) Release(peer, id string) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		ids, msgs := sub(tx, bucketIDs, peer), sub(tx, bucketMsgs, peer)
		if ids == nil || msgs == nil {
			return nil
		}
		k := ids.Get(idKey(false, id))
		if k == nil {
			return nil
		}
		var m Message
		if err := json.Unmarshal(msgs.Get(k), &m); err != nil || !m.Waiting {
			return err
		}
		if err := msgs.Delete(k); err != nil {
			return err
		}
		m.Waiting, m.At = false, d.now().UnixMilli()
		seq, err := msgs.NextSequence()
		if err != nil {
			return err
		}
		v, err := json.Marshal(&m)
		if err != nil {
			return err
		}
		if err := msgs.Put(seqKey(seq), v); err != nil {
			return err
		}
		if err := ids.Put(idKey(false, id), seqKey(seq)); err != nil {
			return err
		}
		if c, ok := getContact(tx, peer); ok && m.PeerSeq > c.InSeq {
			c.InSeq = m.PeerSeq
			return putContact(tx, c)
		}
		return nil
	})
}

// HeldMessages lists the waiting messages of every peer. It implements
// client.HoldingStore.
func (d *DB) HeldMessages() ([]client.MessageEvent, error) {
	held, err := d.scanMessages(func(m *Message) bool { return !m.Out && m.Waiting })
	out := make([]client.MessageEvent, 0, len(held))
	for _, m := range held {
		out = append(out, client.MessageEvent{From: m.Peer, ID: m.ID, Text: m.Text, Time: m.Time, Seq: m.PeerSeq, Path: m.Path})
	}
	return out, err
}

// scanMessages lists the stored messages of every peer that keep reports
// true for, oldest first per peer, with Seq set from their keys.
func (d *DB) scanMessages(keep func(*Message) bool) ([]Message, error) {
	var out []Message
	err := d.db.View(func(tx *bolt.Tx) error {
		msgs := tx.Bucket(bucketMsgs)
		return msgs.ForEachBucket(func(peer []byte) error {
			return msgs.Bucket(peer).ForEach(func(k, v []byte) error {
				var m Message
				if json.Unmarshal(v, &m) == nil && keep(&m) {
					m.Seq = binary.BigEndian.Uint64(k)
					out = append(out, m)
				}
				return nil
			})
		})
	})
	return out, err
}

// SaveOutgoing stores a message we sent.
func (d *DB) SaveOutgoing(peer, id, text string, ts int64, st Status) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		_, err := d.append(tx, &Message{Peer: peer, ID: id, Out: true, Text: text, Time: ts, At: d.now().UnixMilli(), Status: st})
		return err
	})
}

// LogCall puts a line of the call log into peer's conversation: text
// says what happened; a missed call counts as unread. id (the call's) keeps
// one line per call.
func (d *DB) LogCall(peer, id, text string, missed bool) error {
	if err := proto.ValidateName(peer); err != nil {
		return err
	}
	return d.db.Update(func(tx *bolt.Tx) error {
		if _, ok := getContact(tx, peer); !ok {
			if err := putContact(tx, Contact{Name: peer, Added: d.now().UnixMilli()}); err != nil {
				return err
			}
		}
		now := d.now().UnixMilli()
		_, err := d.append(tx, &Message{Peer: peer, ID: "call:" + id, Text: text, Time: now, At: now, Status: Received, Call: true, Missed: missed})
		return err
	})
}

// SetBlocked blocks or unblocks name (adding it to the contacts).
func (d *DB) SetBlocked(name string, blocked bool) error {
	if err := proto.ValidateName(name); err != nil {
		return err
	}
	return d.db.Update(func(tx *bolt.Tx) error {
		c, ok := getContact(tx, name)
		if !ok {
			c = Contact{Name: name, Added: d.now().UnixMilli()}
		}
		c.Blocked = blocked
		return putContact(tx, c)
	})
}

// SetStatus moves an outgoing message's status forward (never back). It
// reports whether anything changed.
func (d *DB) SetStatus(peer, id string, st Status) (bool, error) {
	changed := false
	err := d.update(peer, id, true, func(m *Message) bool {
		if rank[st] <= rank[m.Status] {
			return false
		}
		m.Status, changed = st, true
		return true
	})
	return changed, err
}

func sub(tx *bolt.Tx, root []byte, name string) *bolt.Bucket {
	return tx.Bucket(root).Bucket([]byte(name))
}

// Messages returns the last limit messages with peer, oldest first.
func (d *DB) Messages(peer string, limit int) ([]Message, error) {
	var out []Message
	err := d.db.View(func(tx *bolt.Tx) error {
		msgs := sub(tx, bucketMsgs, peer)
		if msgs == nil {
			return nil
		}
		c := msgs.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var m Message
			if json.Unmarshal(v, &m) == nil && !m.Waiting {
				m.Seq = binary.BigEndian.Uint64(k)
				out = append(out, m)
			}
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// Unread counts incoming messages from peer after the read mark.
func (d *DB) Unread(peer string) int {
	n := 0
	d.db.View(func(tx *bolt.Tx) error {
		ct, _ := getContact(tx, peer)
		msgs := sub(tx, bucketMsgs, peer)
		if msgs == nil {
			return nil
		}
		c := msgs.Cursor()
		for k, v := c.Seek(seqKey(ct.ReadUpTo + 1)); k != nil; k, v = c.Next() {
			var m Message
			if json.Unmarshal(v, &m) == nil && !m.Out && !m.Held && !m.Waiting && (!m.Call || m.Missed) {
				n++
			}
		}
		return nil
	})
	return n
}

// MarkRead moves peer's read mark to the end and returns the ids of the
// incoming messages it passed (for read receipts).
func (d *DB) MarkRead(peer string) ([]string, error) {
	var ids []string
	err := d.db.Update(func(tx *bolt.Tx) error {
		ct, ok := getContact(tx, peer)
		msgs := sub(tx, bucketMsgs, peer)
		if !ok || msgs == nil {
			return nil
		}
		c := msgs.Cursor()
		last := ct.ReadUpTo
		for k, v := c.Seek(seqKey(ct.ReadUpTo + 1)); k != nil; k, v = c.Next() {
			var m Message
			if json.Unmarshal(v, &m) != nil {
				continue
			}
			if m.Held {
				break // not shown yet: not read
			}
			last = binary.BigEndian.Uint64(k)
			if !m.Out && !m.Call {
				ids = append(ids, m.ID)
			}
		}
		if last == ct.ReadUpTo {
			return nil
		}
		ct.ReadUpTo = last
		return putContact(tx, ct)
	})
	return ids, err
}

// AddContact adds name to the contacts (a no-op if it is there).
func (d *DB) AddContact(name string) (Contact, error) {
	if err := proto.ValidateRegisterName(name); err != nil {
		return Contact{}, err
	}
	var c Contact
	err := d.db.Update(func(tx *bolt.Tx) error {
		var ok bool
		if c, ok = getContact(tx, name); ok {
			return nil
		}
		c = Contact{Name: name, Added: d.now().UnixMilli()}
		return putContact(tx, c)
	})
	return c, err
}

// Contact returns one contact.
func (d *DB) Contact(name string) (Contact, bool) {
	var c Contact
	var ok bool
	d.db.View(func(tx *bolt.Tx) error {
		c, ok = getContact(tx, name)
		return nil
	})
	return c, ok
}

// Contacts returns every contact, sorted by name.
func (d *DB) Contacts() ([]Contact, error) {
	var out []Contact
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContacts).ForEach(func(_, v []byte) error {
			var c Contact
			if json.Unmarshal(v, &c) == nil {
				out = append(out, c)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// ObserveKey records the key the server announced for a contact: the first
// is pinned; a different one is held as pending (KeyChanged).
func (d *DB) ObserveKey(name, key string) (KeyState, error) {
	if _, err := proto.DecodePublicKey(key); err != nil {
		return KeyUnknown, err
	}
	st := KeyUnknown
	err := d.db.Update(func(tx *bolt.Tx) error {
		c, ok := getContact(tx, name)
		switch {
		case !ok:
			return nil
		case c.Key == "":
			c.Key, st = key, KeyPinned
		case c.Key == key:
			st = KeySame
			if c.PendingKey == "" {
				return nil
			}
			c.PendingKey = "" // the old key is back
		default:
			st = KeyChanged
			if c.PendingKey == key {
				return nil
			}
			c.PendingKey = key
		}
		return putContact(tx, c)
	})
	return st, err
}

// AcceptKey makes a contact's pending key the pinned one and releases
// the messages held while it was pending.
func (d *DB) AcceptKey(name string) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		c, ok := getContact(tx, name)
		if !ok || c.PendingKey == "" {
			return fmt.Errorf("%w: %s", ErrNoPendingKey, name)
		}
		c.Key, c.PendingKey, c.Verified = c.PendingKey, "", false
		if err := putContact(tx, c); err != nil {
			return err
		}
		msgs := sub(tx, bucketMsgs, name)
		if msgs == nil {
			return nil
		}
		return msgs.ForEach(func(k, v []byte) error {
			var m Message
			if json.Unmarshal(v, &m) != nil || !m.Held {
				return nil
			}
			m.Held = false
			nv, _ := json.Marshal(&m)
			return msgs.Put(k, nv)
		})
	})
}

// SetVerified marks a contact's pinned key as compared in person.
func (d *DB) SetVerified(name string, v bool) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		c, ok := getContact(tx, name)
		if !ok {
			return fmt.Errorf("%w: %s", ErrNoContact, name)
		}
		c.Verified = v
		return putContact(tx, c)
	})
}

// SetLastSeen records when a contact was last online (unix ms).
func (d *DB) SetLastSeen(name string, ms int64) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		c, ok := getContact(tx, name)
		if !ok || c.LastSeen >= ms {
			return nil
		}
		c.LastSeen = ms
		return putContact(tx, c)
	})
}

// PinnedKey returns the pinned key of a contact, or nil. It fits
// client.Config.PeerKey.
func (d *DB) PinnedKey(name string) ed25519.PublicKey {
	c, ok := d.Contact(name)
	if !ok || c.Key == "" {
		return nil
	}
	k, err := proto.DecodePublicKey(c.Key)
	if err != nil {
		return nil
	}
	return k
}

// Queue stores an outgoing message (status Sending) before the client
// sends it, numbering it among ours to its peer. It implements
// client.Outbox.
func (d *DB) Queue(m *client.OutMessage) error {
	if err := proto.ValidateName(m.To); err != nil {
		return err
	}
	return d.db.Update(func(tx *bolt.Tx) error {
		c, ok := getContact(tx, m.To)
		if !ok {
			c = Contact{Name: m.To, Added: d.now().UnixMilli()}
		}
		c.OutSeq++
		m.Seq = c.OutSeq
		if err := putContact(tx, c); err != nil {
			return err
		}
		_, err := d.append(tx, &Message{Peer: m.To, ID: m.ID, Out: true, Text: m.Text, Time: m.Time, At: d.now().UnixMilli(), Status: Sending, PeerSeq: m.Seq})
		return err
	})
}

// Finish records an outgoing message's end: delivered, or refused by its
// recipient (Failed, with the code). It implements client.Outbox.
func (d *DB) Finish(peer, id string, refused proto.Code) error {
	return d.update(peer, id, true, func(m *Message) bool {
		if refused != "" {
			m.Status, m.Refused = Failed, refused
			return true
		}
		if rank[Delivered] <= rank[m.Status] && m.Status != Failed {
			return false
		}
		m.Status = Delivered
		return true
	})
}

// Unsent lists the outgoing messages queued and not finished (sending, or
// held by the server), oldest first per peer: the client sends them again
// at start under their ids. It implements client.Outbox.
func (d *DB) Unsent() ([]client.OutMessage, error) {
	queued, err := d.scanMessages(func(m *Message) bool { return m.Out && (m.Status == Sending || m.Status == Stored) })
	out := make([]client.OutMessage, 0, len(queued))
	for _, m := range queued {
		out = append(out, client.OutMessage{ID: m.ID, To: m.Peer, Text: m.Text, Time: m.Time, Seq: m.PeerSeq})
	}
	return out, err
}

// WasSent reports whether we sent message id to peer. It implements
// client.Outbox.
func (d *DB) WasSent(peer, id string) bool {
	found := false
	d.db.View(func(tx *bolt.Tx) error {
		if ids := sub(tx, bucketIDs, peer); ids != nil {
			found = ids.Get(idKey(true, id)) != nil
		}
		return nil
	})
	return found
}

// LastSeq is the highest number of peer's messages stored. It implements
// client.SeqStore.
func (d *DB) LastSeq(peer string) uint64 {
	c, _ := d.Contact(peer)
	return c.InSeq
}

// MarkShown clears Unshown on a stored incoming message.
func (d *DB) MarkShown(peer, id string) error {
	return d.update(peer, id, false, func(m *Message) bool {
		if !m.Unshown {
			return false
		}
		m.Unshown = false
		return true
	})
}

// Unshown lists the incoming messages stored but not marked shown, oldest
// first per peer.
func (d *DB) Unshown() ([]Message, error) {
	return d.scanMessages(func(m *Message) bool { return !m.Out && m.Unshown && !m.Waiting })
}

// update applies f to the stored message (out or in) id with peer and
// writes it back when f reports a change.
func (d *DB) update(peer, id string, out bool, f func(*Message) bool) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		ids, msgs := sub(tx, bucketIDs, peer), sub(tx, bucketMsgs, peer)
		if ids == nil || msgs == nil {
			return nil
		}
		k := ids.Get(idKey(out, id))
		if k == nil {
			return nil
		}
		var m Message
		if err := json.Unmarshal(msgs.Get(k), &m); err != nil {
			return err
		}
		if !f(&m) {
			return nil
		}
		v, err := json.Marshal(&m)
		if err != nil {
			return err
		}
		return msgs.Put(k, v)
	})
}
