package signal

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-voice/parley/proto"
)

// Users: one record per registered name in the users bucket (KV), holding
// what the name is bound to and where its owner is:
//
//	key   nkey(name)
//	value userRec: identity key (first key wins: KV create), encryption
//	      key and binding, registration time, whether it was ever used,
//	      and presence — status, the node incarnation holding the session,
//	      session id and start, last seen.
//
// Every node watches the whole bucket and keeps a compact replica (the
// directory and presence answers read it; no request waits on JetStream
// for it). Writes go through the bucket: a registration is a synchronous
// create (atomic across nodes), presence changes are written by a small
// pool of writers, with compare-and-set on the revision, from the node's
// own session table, so an old session's "offline" can never overwrite a
// newer session's "online", whichever node holds which.

// userRec is a user's record in the users bucket (JSON).
type userRec struct {
	Key    []byte `json:"k"`            // Ed25519 identity key (32 bytes)
	EncKey []byte `json:"e,omitempty"`  // X25519 encryption key (32 bytes)
	EncSig []byte `json:"es,omitempty"` // its binding signature (64 bytes)
	Reg    int64  `json:"r,omitempty"`  // registered, unix ms
	// Used is set once the owner signs in again after the registering
	// session, or sends something: names never used expire.
	Used    bool          `json:"u,omitempty"`
	Status  proto.Status  `json:"s,omitempty"` // online or away; empty when offline
	Node    string        `json:"n,omitempty"` // incarnation of the node holding the session
	Session string        `json:"i,omitempty"`
	NAT     proto.NATType `json:"nat,omitempty"` // its last NAT report's type, while online
	Since   int64         `json:"t,omitempty"`   // session start, unix ms
	Seen    int64         `json:"l,omitempty"`   // last seen, unix ms (while offline)
	// W is the incarnation that wrote this revision: it told the
	// watchers on its own node when the change happened (presence.go).
	W string `json:"w,omitempty"`
}

// user is one replica entry.
type user struct {
	rec userRec
	rev uint64
}

// encBinding is an encryption key and its binding signature, base64 as on
// the wire (proto.Auth.EncKey, EncSig).
type encBinding struct {
	Key, Sig string
}

// binding returns the record's encryption key as on the wire.
func (r *userRec) binding() encBinding {
	if len(r.EncKey) != proto.EncKeySize || len(r.EncSig) != ed25519.SignatureSize {
		return encBinding{}
	}
	return encBinding{Key: base64.StdEncoding.EncodeToString(r.EncKey), Sig: base64.StdEncoding.EncodeToString(r.EncSig)}
}

// setBinding stores a wire binding (already verified) in the record.
func (r *userRec) setBinding(b encBinding) {
	if b.Key == "" {
		return
	}
	k, err1 := base64.StdEncoding.DecodeString(b.Key)
	s, err2 := base64.StdEncoding.DecodeString(b.Sig)
	if err1 != nil || err2 != nil || len(k) != proto.EncKeySize || len(s) != ed25519.SignatureSize {
		return
	}
	r.EncKey, r.EncSig = k, s
}

// users is the replica and the writers.
type users struct {
	s *Server

	mu sync.RWMutex // guards m
	m  map[string]*user

	ready chan struct{} // closed when the initial values are loaded
	w     jetstream.KeyWatcher

	wmu      sync.Mutex // guards the fields below
	dirty    map[string]struct{}
	queue    []string
	inflight map[string]bool
	redo     map[string]bool
	wcond    *sync.Cond
	stopped  bool
	// ended records sessions of this node that ended and whose offline
	// state is still to be written: name -> session id and time.
	ended map[string]endedSession
	// dead lists incarnations whose users must be written offline.
	dead map[string]int64 // name -> when (ms), for names held by dead nodes
	// unseen lists names a write found no record of while this node
	// knows them (a session signed in with it): written again when the
	// watch brings the record (apply).
	unseen map[string]bool
	// back lists incarnations back after a silence, whose users this
	// node's watchers are to be told about again (retell wakes the watch).
	back   map[string]bool
	retell chan struct{}

	hooks atomic.Pointer[userHooks] // tests order events with it (export_test.go)
}

// userHooks let a test make this node's view of the bucket lag, as a
// replica's can in a cluster.
type userHooks struct {
	apply func(name string)      // the watch is about to apply a change of name
	fetch func(name string) bool // false: a read of name finds no record
}

type endedSession struct {
	id   string
	at   int64
	used bool // the session used the name (users.go: names never used expire)
}

// userWriters is how many goroutines write presence.
const userWriters = 4

func newUsers(s *Server) *users {
	u := &users{
		s:        s,
		m:        map[string]*user{},
		ready:    make(chan struct{}),
		dirty:    map[string]struct{}{},
		inflight: map[string]bool{},
		redo:     map[string]bool{},
		ended:    map[string]endedSession{},
		dead:     map[string]int64{},
		unseen:   map[string]bool{},
		back:     map[string]bool{},
		retell:   make(chan struct{}, 1),
	}
	u.wcond = sync.NewCond(&u.wmu)
	return u
}

// start loads the replica (waiting for the initial values) and starts the
// watch and the writers.
func (u *users) start(ctx context.Context) error {
	w, err := u.s.st.users.WatchAll(context.Background()) // lives until stop, not ctx
	if err != nil {
		return fmt.Errorf("signal: watch users: %w", err)
	}
	u.w = w
	u.s.bg.Add(1 + userWriters)
	go u.watchLoop()
	for range userWriters {
		go u.writeLoop()
	}
	select {
	case <-u.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("signal: load users: %w", ctx.Err())
	}
}

// stop ends the watch and the writers (after the pending writes).
func (u *users) stop() {
	u.wmu.Lock()
	u.stopped = true
	u.wcond.Broadcast()
	u.wmu.Unlock()
	if u.w != nil {
		u.w.Stop()
	}
}

func (u *users) watchLoop() {
	defer u.s.bg.Done()
	initial := true
	updates := u.w.Updates()
	for {
		select {
		case e, ok := <-updates:
			if !ok {
				if initial {
					close(u.ready)
				}
				return
			}
			if e == nil {
				if initial {
					initial = false
					close(u.ready)
				}
				continue
			}
			u.apply(e)
		case <-u.retell:
			u.retellBack()
		}
	}
}

// nodeBack has this node's watchers told again about the users whose
// records name incarnation inc, back after a silence: records it wrote
// while taken for dead read offline here when they arrived.
func (u *users) nodeBack(inc string) {
	u.wmu.Lock()
	u.back[inc] = true
	u.wmu.Unlock()
	select {
	case u.retell <- struct{}{}:
	default: // one is pending
	}
}

// retellBack runs in the watch loop, so it is ordered with the changes.
func (u *users) retellBack() {
	u.wmu.Lock()
	back := u.back
	u.back = map[string]bool{}
	u.wmu.Unlock()
	type entry struct {
		name string
		x    *user
	}
	var held []entry
	u.mu.RLock()
	for n, x := range u.m {
		if back[x.rec.Node] && rawStatus(&x.rec) != proto.StatusOffline {
			held = append(held, entry{n, x})
		}
	}
	u.mu.RUnlock()
	for _, e := range held {
		u.s.userChanged(e.name, e.x, e.x)
	}
}

// apply records one change from the bucket in the replica and tells the
// node's watchers what changed.
func (u *users) apply(e jetstream.KeyValueEntry) {
	name := unkey(e.Key())
	if h := u.hooks.Load(); h != nil {
		h.apply(name)
	}
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		u.mu.Lock()
		old := u.m[name]
		delete(u.m, name)
		u.mu.Unlock()
		if old != nil {
			u.s.userChanged(name, old, nil)
		}
		return
	}
	var r userRec
	if err := json.Unmarshal(e.Value(), &r); err != nil || len(r.Key) != ed25519.PublicKeySize {
		u.s.log.Warn("signal: a user record that does not decode", "name", name, "err", err)
		return
	}
	nu := &user{rec: r, rev: e.Revision()}
	u.mu.Lock()
	old := u.m[name]
	if old != nil && old.rev >= nu.rev {
		u.mu.Unlock()
		return
	}
	u.m[name] = nu
	u.mu.Unlock()
	u.s.userChanged(name, old, nu)
	// The record is what every other node shows. Write it again when it
	// is not what this node's sessions say: a write that found no record
	// (in a cluster a KV get may be answered by a replica that has not
	// yet applied the create this node just made), or a user signed in
	// here whom the record calls offline (another node took this one for
	// dead). The watch brings every revision, in order: whatever a read
	// missed, presence converges here.
	u.wmu.Lock()
	again := u.unseen[name]
	delete(u.unseen, name)
	u.wmu.Unlock()
	online := rawStatus(&r) != proto.StatusOffline && u.s.nodes.alive(r.Node)
	if again || !online && u.s.localSession(name) != nil {
		u.markDirty(name)
	}
}

// get returns a copy of name's record and its revision.
func (u *users) get(name string) (userRec, uint64, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	x, ok := u.m[name]
	if !ok {
		return userRec{}, 0, false
	}
	return x.rec, x.rev, true
}

// count is how many names the replica holds.
func (u *users) count() int {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return len(u.m)
}

// fetch reads name's record from the bucket itself (the replica may lag).
func (u *users) fetch(ctx context.Context, name string) (userRec, uint64, bool, error) {
	if h := u.hooks.Load(); h != nil && !h.fetch(name) {
		return userRec{}, 0, false, nil
	}
	e, err := u.s.st.users.Get(ctx, nkey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return userRec{}, 0, false, nil
	}
	if err != nil {
		return userRec{}, 0, false, err
	}
	var r userRec
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return userRec{}, 0, false, fmt.Errorf("user record %s: %w", name, err)
	}
	return r, e.Revision(), true, nil
}

// readThrough puts into the replica, from the bucket, the names it does
// not hold (registered a moment ago on another node, or while this node's
// watch was catching up).
func (u *users) readThrough(names []string) {
	var missing []string
	u.mu.RLock()
	for _, n := range names {
		if _, ok := u.m[n]; !ok {
			missing = append(missing, n)
		}
	}
	u.mu.RUnlock()
	if len(missing) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range missing {
		r, rev, ok, err := u.fetch(ctx, n)
		if err != nil || !ok {
			continue
		}
		u.mu.Lock()
		if x := u.m[n]; x == nil || x.rev < rev {
			u.m[n] = &user{rec: r, rev: rev}
		}
		u.mu.Unlock()
	}
}

// errRegistrationRefused wraps why a new name was not registered.
var errRegistrationRefused = errors.New("registration refused")

// bind binds name to key if it is free (KV create: the first key wins
// across every node), or checks that it is bound to key. It returns
// ErrNameTaken when another key holds it, and whether the name is new.
// check runs before a new name is created (limits); its error refuses.
func (u *users) bind(ctx context.Context, name string, key ed25519.PublicKey, enc encBinding, now time.Time, check func() error) (isNew bool, err error) {
	if r, _, ok := u.get(name); ok {
		if !bytes.Equal(r.Key, key) {
			return false, ErrNameTaken
		}
		return false, nil
	}
	r, _, ok, err := u.fetch(ctx, name)
	if err != nil {
		return false, err
	}
	if ok {
		if !bytes.Equal(r.Key, key) {
			return false, ErrNameTaken
		}
		return false, nil
	}
	if check != nil {
		if err := check(); err != nil {
			return false, err
		}
	}
	rec := userRec{Key: append([]byte(nil), key...), Reg: now.UnixMilli(), Seen: now.UnixMilli(), W: u.s.inc}
	rec.setBinding(enc)
	v, _ := json.Marshal(&rec)
	_, err = u.s.st.users.Create(ctx, nkey(name), v)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// Someone registered it a moment ago, maybe this identity on
		// another node.
		r, _, ok, ferr := u.fetch(ctx, name)
		if ferr != nil {
			return false, ferr
		}
		if ok && bytes.Equal(r.Key, key) {
			return false, nil
		}
		return false, ErrNameTaken
	}
	if err != nil {
		return false, err
	}
	u.s.stats.registrations.Add(1)
	return true, nil
}

// markDirty asks the writers to bring name's record in line with this
// node's sessions.
func (u *users) markDirty(name string) {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	u.markDirtyLocked(name)
}

func (u *users) markDirtyLocked(name string) {
	if _, ok := u.dirty[name]; ok {
		return
	}
	u.dirty[name] = struct{}{}
	u.queue = append(u.queue, name)
	u.wcond.Signal()
}

// sessionEnded records that this node's session id for name ended at at.
func (u *users) sessionEnded(name, id string, at int64, used bool) {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	u.ended[name] = endedSession{id: id, at: at, used: used}
	u.markDirtyLocked(name)
}

// nodeDied asks the writers to write offline every user whose record
// names incarnation inc.
func (u *users) nodeDied(inc string, at int64) {
	u.mu.RLock()
	var names []string
	for n, x := range u.m {
		if x.rec.Node == inc && x.rec.Status != "" && x.rec.Status != proto.StatusOffline {
			names = append(names, n)
		}
	}
	u.mu.RUnlock()
	u.wmu.Lock()
	defer u.wmu.Unlock()
	for _, n := range names {
		u.dead[n] = at
		u.markDirtyLocked(n)
	}
}

// writeLoop takes dirty names and writes their records. One name is
// written by one writer at a time; a name marked again meanwhile is
// written again after.
func (u *users) writeLoop() {
	defer u.s.bg.Done()
	for {
		u.wmu.Lock()
		for !u.stopped && len(u.queue) == 0 {
			u.wcond.Wait()
		}
		if len(u.queue) == 0 {
			u.wmu.Unlock()
			return // stopped, and nothing left to write
		}
		name := u.queue[0]
		u.queue[0] = ""
		u.queue = u.queue[1:]
		delete(u.dirty, name)
		if u.inflight[name] {
			u.redo[name] = true
			u.wmu.Unlock()
			continue
		}
		u.inflight[name] = true
		ended, hasEnded := u.ended[name]
		deadAt, isDead := u.dead[name]
		stopping := u.stopped
		u.wmu.Unlock()

		err := u.write(name, ended, hasEnded, deadAt, isDead)

		u.wmu.Lock()
		delete(u.inflight, name)
		switch {
		case errors.Is(err, errUnseen) && !stopping:
			// Kept (ended, dead): written when the watch brings the
			// record (apply), or again shortly if it has already.
			if _, _, ok := u.get(name); ok {
				u.redo[name] = true
			} else {
				u.unseen[name] = true
			}
		case err == nil:
			if e, ok := u.ended[name]; ok && e == ended {
				delete(u.ended, name)
			}
			if isDead && u.dead[name] == deadAt {
				delete(u.dead, name)
			}
		case !stopping:
			u.s.log.Warn("signal: write presence, retrying", "user", name, "err", err)
			u.redo[name] = true
		}
		if u.redo[name] {
			delete(u.redo, name)
			u.markDirtyLocked(name)
		}
		u.wmu.Unlock()
		if err != nil && !stopping {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// errUnseen: a write found no record of a name this node knows; apply
// marks it again when the watch brings the record.
var errUnseen = errors.New("record not seen yet")

// write brings name's record in line: online with this node's session if
// it has one; else offline if the record still names a session of this
// node that ended, or a node that died.
func (u *users) write(name string, ended endedSession, hasEnded bool, deadAt int64, isDead bool) error {
	timeout := 10 * time.Second
	u.wmu.Lock()
	if u.stopped {
		timeout = time.Second // stopping: the last writes must not hold it up
	}
	u.wmu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s := u.s
	fresh := false
	for attempt := 0; attempt < 8; attempt++ {
		r, rev, ok := u.get(name)
		if fresh || !ok {
			var err error
			var found bool
			if r, rev, found, err = u.fetch(ctx, name); err != nil {
				return err
			}
			if !found {
				if hasEnded || s.localSession(name) != nil {
					// A session signed in with it: the record exists,
					// and this read was answered by a replica that lags.
					return errUnseen
				}
				return nil // expired or never registered: nothing to show
			}
		}
		next, write := s.desiredRecord(name, r, ended, hasEnded, deadAt, isDead)
		if !write {
			if fresh {
				return nil
			}
			fresh = true // the replica may lag our own last write: ask the bucket
			continue
		}
		next.W = s.inc
		v, _ := json.Marshal(&next)
		_, err := s.st.users.Update(ctx, nkey(name), v, rev)
		if err == nil {
			if isDead && next.Node == "" && rawStatus(&r) != proto.StatusOffline {
				// A dead node's user, written offline by this node: its
				// watchers here hear it now (the event will be ours).
				pl := s.presLock(name)
				pl.Lock()
				if s.localSession(name) == nil {
					s.localChanged(name, s.presenceOf(name, &next))
				}
				pl.Unlock()
			}
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		fresh = true
		// Changed under us: read it again and decide again.
	}
	return fmt.Errorf("user record %s keeps changing", name)
}

// presence is what others see of a user: the record's status if the node
// holding the session is alive, else offline with the last time seen.
func (s *Server) presenceOf(name string, r *userRec) proto.Presence {
	p := proto.Presence{Name: name, Status: proto.StatusOffline, LastSeen: r.Seen}
	if r.Status != "" && r.Status != proto.StatusOffline {
		if s.nodes.alive(r.Node) {
			p.Status, p.LastSeen, p.NAT = r.Status, 0, r.NAT
		} else if at := s.nodes.diedAt(r.Node); at != 0 {
			p.LastSeen = at
		}
	}
	if len(r.Key) == ed25519.PublicKeySize {
		p.PublicKey = base64.StdEncoding.EncodeToString(r.Key)
	}
	b := r.binding()
	p.EncKey, p.EncSig = b.Key, b.Sig
	return p
}

// lookupPresence returns what others see of name, if it is registered:
// for someone signed in to this node, its session (the bucket may not
// have caught up yet); else the replica.
func (s *Server) lookupPresence(name string) (proto.Presence, bool) {
	if ss := s.localSession(name); ss != nil {
		ss.mu.Lock()
		st := ss.status
		ss.mu.Unlock()
		return ss.presence(st), true
	}
	r, _, ok := s.users.get(name)
	if !ok {
		return proto.Presence{}, false
	}
	return s.presenceOf(name, &r), true
}
