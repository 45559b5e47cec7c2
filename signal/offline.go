package signal

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/parley-voice/parley/proto"
	bolt "go.etcd.io/bbolt"
)

// The offline mailbox holds sealed chat messages (proto.TypeSealed) for
// users who are offline, and the receipts for them, until they sign in.
// To seal, a sender needs the recipient's encryption key: every user's
// (with its binding signature) is kept in the registry and carried in
// presence and welcome entries, offline users included.
//
//	sender --sealed--> server: check sender_key and the binding of
//	                           sender_enc, limits; store (fsync); ack
//	server --sealed--> recipient (after its welcome, in store order)
//	recipient --delivered(id)--> server: delete; sealed_receipt -> sender
//	                                    (stored for the sender while offline)
//
// A message stays stored until the recipient's receipt arrives, so one cut
// off mid-delivery is sent again at its next sign-in (the client drops
// duplicates by id); a server restart loses nothing once the sender has
// its ack. The store holds only ciphertext: the server cannot read it.

// OfflineLimits bounds the offline mailbox. Zero fields take the defaults.
type OfflineLimits struct {
	// MaxMessages is how many messages may wait for one recipient.
	// Zero means 200.
	MaxMessages int
	// MaxBytes bounds the sealed bytes waiting for one recipient. Zero
	// means 2 MiB.
	MaxBytes int
	// MaxMessageBytes bounds one sealed ciphertext. Zero means
	// proto.MaxSealedCiphertext.
	MaxMessageBytes int
	// MaxAge is how long a message waits before it is dropped. Zero means
	// 30 days.
	MaxAge time.Duration
	// MaxReceipts bounds the receipts waiting for one sender (the oldest
	// are dropped beyond it). Zero means 1000.
	MaxReceipts int
}

func (l *OfflineLimits) setDefaults() {
	if l.MaxMessages <= 0 {
		l.MaxMessages = 200
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = 2 << 20
	}
	if l.MaxMessageBytes <= 0 || l.MaxMessageBytes > proto.MaxSealedCiphertext {
		l.MaxMessageBytes = proto.MaxSealedCiphertext
	}
	if l.MaxAge <= 0 {
		l.MaxAge = 30 * 24 * time.Hour
	}
	if l.MaxReceipts <= 0 {
		l.MaxReceipts = 1000
	}
}

// stored is one waiting message.
type stored struct {
	Seq    uint64       `json:"-"`
	From   string       `json:"from"`
	Sealed proto.Sealed `json:"sealed"`
}

// receiptRec is one waiting receipt: By fetched the sender's message ID.
type receiptRec struct {
	Seq     uint64     `json:"-"`
	By      string     `json:"by"`
	ID      string     `json:"id"`
	Refused proto.Code `json:"refused,omitempty"`
}

// mailStore is where the mailbox keeps its records: bbolt (in the
// registry's file) when the server has a DataDir, else memory.
type mailStore interface {
	// put appends r for to unless (from, id) is already there (dup). It
	// drops expired records first and enforces the limits.
	put(to string, r stored, lim *OfflineLimits, cutoff int64) (dup bool, err error)
	// list returns to's records in order, dropping those older than cutoff.
	list(to string, cutoff int64) ([]stored, error)
	// remove deletes the record (from, id) for to; found reports whether it existed.
	remove(to, from, id string) (found bool, err error)
	putReceipt(to string, r receiptRec, max int) error
	receipts(to string) ([]receiptRec, error)
	removeReceipt(to string, seq uint64) error
}

// errMailboxFull and friends become proto errors in store.
var (
	errMailboxFull  = errors.New("mailbox full")
	errMailboxBytes = errors.New("mailbox bytes")
)

// mailbox is the server's offline-message service.
type mailbox struct {
	srv   *Server
	lim   OfflineLimits
	store mailStore
	now   func() time.Time

	mu   sync.Mutex          // guards sent; serializes deliveries so order holds
	sent map[string]sentMark // recipient -> what its current session already got
}

type sentMark struct {
	ss   *session
	upTo uint64
}

func newMailbox(s *Server, lim OfflineLimits) *mailbox {
	lim.setDefaults()
	m := &mailbox{srv: s, lim: lim, now: time.Now, sent: map[string]sentMark{}}
	if br, ok := s.reg.(*boltRegistry); ok {
		m.store = &boltMail{db: br.db}
	} else {
		m.store = newMemMail()
	}
	return m
}

func (m *mailbox) cutoff() int64 { return m.now().Add(-m.lim.MaxAge).UnixMilli() }

// intercept handles the routed messages that concern the mailbox: every
// sealed message, and a receipt for a stored message. It reports whether
// it took env (the caller routes it otherwise).
func (m *mailbox) intercept(ss *session, env *proto.Envelope) bool {
	switch env.Type {
	case proto.TypeSealed:
		m.accept(ss, env)
		return true
	case proto.TypeDelivered:
		r, err := proto.DecodeBody[*proto.Receipt](env)
		if err != nil {
			return false
		}
		found, err := m.store.remove(ss.name, env.To, r.ID)
		if err != nil {
			m.srv.log.Error("signal: offline store", "op", "remove", "err", err)
			ss.sendError(proto.Errorf(proto.CodeInternal, "offline store unavailable"), env.ID)
			return true
		}
		if !found {
			return false // an ordinary receipt: route it
		}
		ss.ack(env.ID)
		m.receipt(env.To, ss.name, r.ID, r.Refused)
		return true
	}
	return false
}

// accept stores a sealed message and, if the recipient is online, sends it.
func (m *mailbox) accept(ss *session, env *proto.Envelope) {
	s := m.srv
	sl, err := proto.DecodeBody[*proto.Sealed](env)
	if err != nil {
		ss.violation(asProtoErr(err), env.ID)
		return
	}
	if sl.SenderKey != ss.key {
		s.stats.spoofed.Add(1)
		ss.violation(proto.Errorf(proto.CodeForbidden, "sealed sender_key is not the key you signed in with"), env.ID)
		return
	}
	key, _ := proto.DecodePublicKey(ss.key)
	if _, err := proto.VerifyEncKey(key, ss.name, sl.SenderEnc, sl.SenderEncSig); err != nil {
		ss.violation(proto.Errorf(proto.CodeForbidden, "sealed sender_enc is not bound to your key and name: %v", err), env.ID)
		return
	}
	if !s.known(env.To) {
		ss.sendError(proto.Errorf(proto.CodeNotFound, "no user is named %q; nothing can be left for them", env.To), env.ID)
		return
	}
	if n := len(sl.CiphertextBytes()); n > m.lim.MaxMessageBytes {
		ss.sendError(proto.Errorf(proto.CodeTooLarge, "sealed message of %d bytes exceeds the offline limit of %d bytes", n, m.lim.MaxMessageBytes), env.ID)
		return
	}
	sl.Stored = m.now().UnixMilli()
	dup, err := m.store.put(env.To, stored{From: ss.name, Sealed: *sl}, &m.lim, m.cutoff())
	switch {
	case errors.Is(err, errMailboxFull):
		ss.sendError(proto.Errorf(proto.CodeOverBudget, "%s already has %d offline messages waiting (the limit); try again after they come online", env.To, m.lim.MaxMessages), env.ID)
		return
	case errors.Is(err, errMailboxBytes):
		ss.sendError(proto.Errorf(proto.CodeOverBudget, "%s's offline mailbox is full (%d bytes waiting is the limit); try again after they come online", env.To, m.lim.MaxBytes), env.ID)
		return
	case err != nil:
		s.log.Error("signal: offline store", "op", "put", "to", env.To, "err", err)
		ss.sendError(proto.Errorf(proto.CodeInternal, "offline store unavailable"), env.ID)
		return
	}
	if !dup {
		s.log.Debug("signal: stored offline message", "from", ss.name, "to", env.To, "bytes", len(sl.Ciphertext))
	}
	ss.ack(env.ID)
	s.mu.Lock()
	dst := s.online[env.To]
	s.mu.Unlock()
	if dst != nil {
		m.deliver(dst)
	}
}

// receipt tells sender that by fetched message id (or refused it, with
// that code), now or at sign-in.
func (m *mailbox) receipt(sender, by, id string, refused proto.Code) {
	s := m.srv
	s.mu.Lock()
	dst := s.online[sender]
	s.mu.Unlock()
	if dst != nil {
		if env, err := proto.New(proto.TypeSealedReceipt, "", "", &proto.Receipt{ID: id, Refused: refused}); err == nil {
			env.From = by
			if dst.sendEnv(env) {
				return
			}
		}
	}
	if err := m.store.putReceipt(sender, receiptRec{By: by, ID: id, Refused: refused}, m.lim.MaxReceipts); err != nil {
		s.log.Error("signal: offline store", "op", "receipt", "err", err)
	}
}

// deliver sends ss's waiting messages it has not had yet, in order, then
// its waiting receipts. Called after the welcome and after each store.
func (m *mailbox) deliver(ss *session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mark := m.sent[ss.name]
	if mark.ss != ss {
		mark = sentMark{ss: ss}
	}
	recs, err := m.store.list(ss.name, m.cutoff())
	if err != nil {
		m.srv.log.Error("signal: offline store", "op", "list", "err", err)
		return
	}
	for _, r := range recs {
		if r.Seq <= mark.upTo {
			continue
		}
		sl := r.Sealed
		env, err := proto.New(proto.TypeSealed, sl.ID, ss.name, &sl)
		if err != nil {
			// Stored by an older server (the retired NaCl scheme) or
			// damaged: no client can open it, so it goes.
			m.srv.log.Warn("signal: dropping an offline message that no longer validates", "to", ss.name, "from", r.From, "err", err)
			if _, err := m.store.remove(ss.name, r.From, sl.ID); err != nil {
				m.srv.log.Error("signal: offline store", "op", "remove", "err", err)
			}
			continue
		}
		env.From = r.From
		if !ss.sendEnv(env) {
			break
		}
		mark.upTo = r.Seq
	}
	if len(recs) == 0 {
		delete(m.sent, ss.name)
	} else {
		m.sent[ss.name] = mark
	}
	rcs, err := m.store.receipts(ss.name)
	if err != nil {
		m.srv.log.Error("signal: offline store", "op", "receipts", "err", err)
		return
	}
	for _, r := range rcs {
		env, err := proto.New(proto.TypeSealedReceipt, "", "", &proto.Receipt{ID: r.ID, Refused: r.Refused})
		if err != nil {
			continue
		}
		env.From = r.By
		if !ss.sendEnv(env) {
			return
		}
		m.store.removeReceipt(ss.name, r.Seq)
	}
}

// known reports whether name was ever registered (so mail can reach it).
func (s *Server) known(name string) bool {
	_, ok, err := s.reg.Lookup(name)
	return ok && err == nil
}

// presence describes ss's user with status st: identity key and
// encryption key with its binding, so peers can seal to them, and while
// online the type of NAT it last reported (callers plan links with it).
func (ss *session) presence(st proto.Status) proto.Presence {
	p := proto.Presence{Name: ss.name, Status: st, PublicKey: ss.key, EncKey: ss.enc.Key, EncSig: ss.enc.Sig}
	if st != proto.StatusOffline {
		ss.mu.Lock()
		if ss.nat != nil && ss.nat.Type != proto.NATUnknown {
			p.NAT = ss.nat.Type
		}
		ss.mu.Unlock()
	}
	return p
}

// encKeyOf is the encryption key to announce for name: the one it signed
// in with (already bound and stored), else the one the registry kept from
// an earlier sign-in of the same identity.
func (s *Server) encKeyOf(name string, sent encBinding) encBinding {
	if sent.Key != "" {
		return sent
	}
	e, _, err := s.reg.Lookup(name)
	if err != nil {
		s.log.Error("signal: registry", "op", "lookup", "name", name, "err", err)
	}
	return e.Enc
}

// maxOfflineListed bounds the offline users a welcome lists (the most
// recently seen first): each entry carries two keys and a signature
// (~270 bytes), and the welcome must fit in proto.MaxFrameSize.
const maxOfflineListed = 100

// offlineEntries lists the users seen going offline since the server
// started, most recent first, with their keys from the registry.
func (s *Server) offlineEntries() []proto.Presence {
	s.mu.Lock()
	out := make([]proto.Presence, 0, len(s.lastSeen))
	for n, t := range s.lastSeen {
		out = append(out, proto.Presence{Name: n, Status: proto.StatusOffline, LastSeen: t})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b proto.Presence) int {
		return cmp.Or(cmp.Compare(b.LastSeen, a.LastSeen), cmp.Compare(a.Name, b.Name))
	})
	out = out[:min(len(out), maxOfflineListed)]
	for i := range out {
		e, ok, err := s.reg.Lookup(out[i].Name)
		if err != nil || !ok {
			continue
		}
		out[i].PublicKey = base64.StdEncoding.EncodeToString(e.Key)
		out[i].EncKey, out[i].EncSig = e.Enc.Key, e.Enc.Sig
	}
	return out
}

// OfflineWaiting returns how many sealed messages wait for name.
func (s *Server) OfflineWaiting(name string) (int, error) {
	recs, err := s.offline.store.list(name, s.offline.cutoff())
	return len(recs), err
}

// --- bbolt store ---------------------------------------------------------

var (
	bucketOffline  = []byte("offline")
	bucketReceipts = []byte("offline_receipts")
)

// boltMail keeps the mailbox in the registry's bbolt file: bucket
// "offline" holds one sub-bucket per recipient, keyed by an 8-byte
// big-endian sequence (so iteration is store order); "offline_receipts"
// likewise per sender. Every write is a fsynced transaction.
type boltMail struct{ db *bolt.DB }

func seqKey(n uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], n)
	return k[:]
}

func (b *boltMail) put(to string, r stored, lim *OfflineLimits, cutoff int64) (bool, error) {
	dup := false
	err := b.db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketOffline)
		if err != nil {
			return err
		}
		bk, err := root.CreateBucketIfNotExists([]byte(to))
		if err != nil {
			return err
		}
		count, size := 0, len(r.Sealed.Ciphertext)
		var expired [][]byte
		c := bk.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var o stored
			if json.Unmarshal(v, &o) != nil || o.Sealed.Stored < cutoff {
				expired = append(expired, append([]byte(nil), k...))
				continue
			}
			if o.From == r.From && o.Sealed.ID == r.Sealed.ID {
				dup = true
				return nil
			}
			count++
			size += len(o.Sealed.Ciphertext)
		}
		for _, k := range expired {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		if count >= lim.MaxMessages {
			return errMailboxFull
		}
		if size > lim.MaxBytes {
			return errMailboxBytes
		}
		seq, err := bk.NextSequence()
		if err != nil {
			return err
		}
		v, err := json.Marshal(&r)
		if err != nil {
			return err
		}
		return bk.Put(seqKey(seq), v)
	})
	return dup, err
}

func (b *boltMail) list(to string, cutoff int64) ([]stored, error) {
	var out []stored
	var expired bool
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := sub(tx, bucketOffline, to)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			var o stored
			if json.Unmarshal(v, &o) != nil || o.Sealed.Stored < cutoff {
				expired = true
				return nil
			}
			o.Seq = binary.BigEndian.Uint64(k)
			out = append(out, o)
			return nil
		})
	})
	if err == nil && expired {
		err = b.db.Update(func(tx *bolt.Tx) error {
			bk := sub(tx, bucketOffline, to)
			if bk == nil {
				return nil
			}
			var del [][]byte
			bk.ForEach(func(k, v []byte) error {
				var o stored
				if json.Unmarshal(v, &o) != nil || o.Sealed.Stored < cutoff {
					del = append(del, append([]byte(nil), k...))
				}
				return nil
			})
			for _, k := range del {
				if err := bk.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return out, err
}

func (b *boltMail) remove(to, from, id string) (bool, error) {
	found := false
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := sub(tx, bucketOffline, to)
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var o stored
			if json.Unmarshal(v, &o) == nil && o.From == from && o.Sealed.ID == id {
				found = true
				return c.Delete()
			}
		}
		return nil
	})
	return found, err
}

func (b *boltMail) putReceipt(to string, r receiptRec, max int) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketReceipts)
		if err != nil {
			return err
		}
		bk, err := root.CreateBucketIfNotExists([]byte(to))
		if err != nil {
			return err
		}
		var keys [][]byte
		bk.ForEach(func(k, _ []byte) error {
			keys = append(keys, append([]byte(nil), k...))
			return nil
		})
		for i := 0; i+max <= len(keys); i++ { // drop the oldest beyond max-1
			if err := bk.Delete(keys[i]); err != nil {
				return err
			}
		}
		seq, err := bk.NextSequence()
		if err != nil {
			return err
		}
		v, _ := json.Marshal(&r)
		return bk.Put(seqKey(seq), v)
	})
}

func (b *boltMail) receipts(to string) ([]receiptRec, error) {
	var out []receiptRec
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := sub(tx, bucketReceipts, to)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			var r receiptRec
			if json.Unmarshal(v, &r) == nil {
				r.Seq = binary.BigEndian.Uint64(k)
				out = append(out, r)
			}
			return nil
		})
	})
	return out, err
}

func (b *boltMail) removeReceipt(to string, seq uint64) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		if bk := sub(tx, bucketReceipts, to); bk != nil {
			return bk.Delete(seqKey(seq))
		}
		return nil
	})
}

func sub(tx *bolt.Tx, root []byte, name string) *bolt.Bucket {
	r := tx.Bucket(root)
	if r == nil {
		return nil
	}
	return r.Bucket([]byte(name))
}

// --- memory store (no DataDir) --------------------------------------------

type memMail struct {
	mu   sync.Mutex // guards the fields below
	seq  uint64
	msgs map[string][]stored
	rcs  map[string][]receiptRec
}

func newMemMail() *memMail {
	return &memMail{msgs: map[string][]stored{}, rcs: map[string][]receiptRec{}}
}

func (m *memMail) prune(to string, cutoff int64) []stored {
	keep := m.msgs[to][:0]
	for _, o := range m.msgs[to] {
		if o.Sealed.Stored >= cutoff {
			keep = append(keep, o)
		}
	}
	if len(keep) == 0 {
		delete(m.msgs, to)
		return nil
	}
	m.msgs[to] = keep
	return keep
}

func (m *memMail) put(to string, r stored, lim *OfflineLimits, cutoff int64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.prune(to, cutoff)
	size := len(r.Sealed.Ciphertext)
	for _, o := range cur {
		if o.From == r.From && o.Sealed.ID == r.Sealed.ID {
			return true, nil
		}
		size += len(o.Sealed.Ciphertext)
	}
	if len(cur) >= lim.MaxMessages {
		return false, errMailboxFull
	}
	if size > lim.MaxBytes {
		return false, errMailboxBytes
	}
	m.seq++
	r.Seq = m.seq
	m.msgs[to] = append(cur, r)
	return false, nil
}

func (m *memMail) list(to string, cutoff int64) ([]stored, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]stored(nil), m.prune(to, cutoff)...), nil
}

func (m *memMail) remove(to, from, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, o := range m.msgs[to] {
		if o.From == from && o.Sealed.ID == id {
			m.msgs[to] = append(m.msgs[to][:i:i], m.msgs[to][i+1:]...)
			return true, nil
		}
	}
	return false, nil
}

func (m *memMail) putReceipt(to string, r receiptRec, max int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	r.Seq = m.seq
	q := append(m.rcs[to], r)
	if len(q) > max {
		q = q[len(q)-max:]
	}
	m.rcs[to] = q
	return nil
}

func (m *memMail) receipts(to string) ([]receiptRec, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]receiptRec(nil), m.rcs[to]...), nil
}

func (m *memMail) removeReceipt(to string, seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.rcs[to]
	for i, r := range q {
		if r.Seq == seq {
			m.rcs[to] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(m.rcs[to]) == 0 {
		delete(m.rcs, to)
	}
	return nil
}
