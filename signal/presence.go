package signal

import (
	"bytes"
	"hash/fnv"
	"sync"

	"github.com/parley-voice/parley/proto"
)

// Presence is scoped: a session hears about the people it asked for
// (contacts), the people it talked to (it routed a message to them or got
// one from them: they are added, and their presence sent, before that
// message), and the entries of the directory page it watches. Every node
// learns every change of the users bucket through its watch (users.go)
// and tells the sessions signed in to it that watch that name: the cost
// of a change is the number of its watchers, never the number of users.
//
// A watched directory page that holds the whole answer (fewer matches
// than its limit) is "open": people who come online later and match its
// prefix are added to it (up to its limit) and sent. Open pages are
// indexed by prefix, so finding them costs one lookup per prefix of the
// name that came online.

// Why a session watches a name (bits).
const (
	whyContact uint8 = 1 << iota
	whyTalked
	whyDir
)

// maxTalked is how many people one session hears about for having talked
// with them (the oldest go first).
const maxTalked = 64

// sessWatch is one session's watches, guarded by watches.mu.
type sessWatch struct {
	contacts map[string]struct{}
	talked   []string // oldest first
	dir      []string
	open     bool // the directory page is open (see above)
	prefix   string
	limit    int
}

// watches decides which local sessions hear of a user's presence.
type watches struct {
	s *Server

	mu   sync.Mutex                       // guards the fields below and every session's sessWatch
	by   map[string]map[*session]uint8    // watched name -> watchers, with why
	open map[string]map[*session]struct{} // prefix -> sessions with an open directory page
	// told is the status this node last announced for each user (its own
	// sign-ins and sign-outs when they happen, others' from the bucket):
	// what the next change is compared with.
	told map[string]proto.Status
}

func newWatches(s *Server) *watches {
	return &watches{s: s, by: map[string]map[*session]uint8{}, open: map[string]map[*session]struct{}{},
		told: map[string]proto.Status{}}
}

// shownOnline reports whether this node's watchers were last told that
// name is online (or away).
func (w *watches) shownOnline(name string) bool {
	w.mu.Lock()
	st, ok := w.told[name]
	w.mu.Unlock()
	if ok {
		return st != proto.StatusOffline
	}
	r, _, found := w.s.users.get(name)
	if !found {
		return false
	}
	p := w.s.presenceOf(name, &r)
	return p.Online()
}

// addLocked makes ss watch name for why; it reports whether ss did not
// watch name at all before.
func (w *watches) addLocked(ss *session, name string, why uint8) bool {
	m := w.by[name]
	if m == nil {
		m = map[*session]uint8{}
		w.by[name] = m
	}
	old := m[ss]
	m[ss] = old | why
	return old == 0
}

// dropLocked ends ss's watch of name for why.
func (w *watches) dropLocked(ss *session, name string, why uint8) {
	m := w.by[name]
	if m == nil {
		return
	}
	if v := m[ss] &^ why; v != 0 {
		m[ss] = v
		return
	}
	delete(m, ss)
	if len(m) == 0 {
		delete(w.by, name)
	}
}

// sessionGone forgets every watch of ss.
func (w *watches) sessionGone(ss *session) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sw := &ss.watch
	for n := range sw.contacts {
		w.dropLocked(ss, n, 0xff)
	}
	for _, n := range sw.talked {
		w.dropLocked(ss, n, 0xff)
	}
	for _, n := range sw.dir {
		w.dropLocked(ss, n, 0xff)
	}
	w.closeOpenLocked(ss)
	*sw = sessWatch{}
}

func (w *watches) closeOpenLocked(ss *session) {
	sw := &ss.watch
	if !sw.open {
		return
	}
	if m := w.open[sw.prefix]; m != nil {
		delete(m, ss)
		if len(m) == 0 {
			delete(w.open, sw.prefix)
		}
	}
	sw.open = false
}

// presenceFrame encodes a presence message.
func presenceFrame(p *proto.Presence) []byte {
	env, err := proto.New(proto.TypePresence, "", "", p)
	if err != nil {
		return nil
	}
	b, err := proto.Encode(env)
	if err != nil {
		return nil
	}
	return b
}

// notify tells the local sessions that watch name about p, and adds name
// to open directory pages it now matches.
func (w *watches) notify(name string, p proto.Presence) {
	var frame []byte
	w.mu.Lock()
	defer w.mu.Unlock()
	send := func(ss *session) {
		if frame == nil {
			if frame = presenceFrame(&p); frame == nil {
				return
			}
		}
		ss.enqueue(frame)
	}
	for ss := range w.by[name] {
		if ss.name != name {
			send(ss)
		}
	}
	if !p.Online() || len(w.open) == 0 {
		return
	}
	for i := 0; i <= len(name); i++ {
		for ss := range w.open[name[:i]] {
			sw := &ss.watch
			if ss.name == name || w.by[name][ss] != 0 {
				continue
			}
			w.addLocked(ss, name, whyDir)
			sw.dir = append(sw.dir, name)
			if len(sw.dir) >= sw.limit {
				w.closeOpenLocked(ss) // full: a snapshot from now on
			}
			send(ss)
		}
	}
}

// setContacts applies a contacts message and sends the presence of the
// names it adds (in presence_list frames answering ref).
func (w *watches) setContacts(ss *session, c *proto.Contacts, ref string) *proto.Error {
	s := w.s
	w.mu.Lock()
	defer w.mu.Unlock()
	sw := &ss.watch
	if sw.contacts == nil {
		sw.contacts = map[string]struct{}{}
	}
	if c.Replace {
		keep := make(map[string]bool, len(c.Add))
		for _, n := range c.Add {
			keep[n] = true
		}
		for n := range sw.contacts {
			if !keep[n] {
				w.dropLocked(ss, n, whyContact)
				delete(sw.contacts, n)
			}
		}
	}
	for _, n := range c.Remove {
		if _, ok := sw.contacts[n]; ok {
			w.dropLocked(ss, n, whyContact)
			delete(sw.contacts, n)
		}
	}
	var refused int
	entries := make([]proto.Presence, 0, min(len(c.Add), proto.MaxPresenceList))
	flush := func() {
		if len(entries) == 0 {
			return
		}
		if env, err := proto.New(proto.TypePresenceList, "", "", &proto.PresenceList{Ref: ref, Entries: entries}); err == nil {
			ss.sendEnv(env)
		}
		entries = entries[:0]
	}
	for _, n := range c.Add {
		if n == ss.name {
			continue
		}
		if _, ok := sw.contacts[n]; !ok {
			if len(sw.contacts) >= s.cfg.MaxContacts {
				refused++
				continue
			}
			sw.contacts[n] = struct{}{}
			w.addLocked(ss, n, whyContact)
		}
		if p, ok := s.lookupPresence(n); ok {
			entries = append(entries, p)
			if len(entries) == proto.MaxPresenceList {
				flush()
			}
		}
	}
	flush()
	if refused > 0 {
		return proto.Errorf(proto.CodeOverBudget, "%d contacts not added: at most %d per session", refused, s.cfg.MaxContacts)
	}
	return nil
}

// talked makes ss hear about peer (a user it routes a message to or gets
// one from), sending peer's presence now if it did not before.
func (w *watches) talked(ss *session, peer string) {
	if ss.name == peer || ss.lastTalked.Load() == peer {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ss.lastTalked.Store(peer)
	if w.by[peer][ss] != 0 {
		return
	}
	p, ok := w.s.lookupPresence(peer)
	if !ok {
		return
	}
	sw := &ss.watch
	w.addLocked(ss, peer, whyTalked)
	sw.talked = append(sw.talked, peer)
	if len(sw.talked) > maxTalked {
		w.dropLocked(ss, sw.talked[0], whyTalked)
		sw.talked = sw.talked[1:]
	}
	if f := presenceFrame(&p); f != nil {
		ss.enqueue(f)
	}
}

// directory answers a directory query (and watches the page if asked).
func (w *watches) directory(ss *session, q *proto.DirectoryQuery, ref string) *proto.Error {
	s := w.s
	switch s.cfg.Directory {
	case DirectoryOff:
		return proto.Errorf(proto.CodeForbidden, "this server keeps no directory; add people by name")
	case DirectoryOnline:
		q.Online = true
	}
	limit := q.Limit
	if limit == 0 {
		limit = proto.MaxDirectoryLimit
	}
	names, next := s.dir.page(q, ss.name, limit)
	page := &proto.DirectoryPage{Ref: ref, Next: next}
	snapshot := func() {
		page.Entries = make([]proto.Presence, 0, len(names))
		for _, n := range names {
			if p, ok := s.lookupPresence(n); ok {
				page.Entries = append(page.Entries, p)
			}
		}
	}
	if q.Watch {
		w.mu.Lock()
		defer w.mu.Unlock()
		sw := &ss.watch
		for _, n := range sw.dir {
			w.dropLocked(ss, n, whyDir)
		}
		w.closeOpenLocked(ss)
		sw.dir = append(sw.dir[:0], names...)
		for _, n := range names {
			w.addLocked(ss, n, whyDir)
		}
		if q.Online && next == "" && len(names) < limit {
			sw.open, sw.prefix, sw.limit = true, q.Prefix, limit
			m := w.open[q.Prefix]
			if m == nil {
				m = map[*session]struct{}{}
				w.open[q.Prefix] = m
			}
			m[ss] = struct{}{}
			page.Watching = true
		}
	}
	snapshot()
	env, err := proto.New(proto.TypeDirectoryPage, "", "", page)
	if err != nil {
		return proto.Errorf(proto.CodeInternal, "directory page: %v", err)
	}
	ss.sendEnv(env)
	return nil
}

// rawStatus is the status a record states (without asking whether its
// node is alive).
func rawStatus(r *userRec) proto.Status {
	if r.Status == "" {
		return proto.StatusOffline
	}
	return r.Status
}

// userChanged runs for every change of the users bucket, in order: it
// keeps the directory index and tells watchers when what they see of the
// user changed.
func (s *Server) userChanged(name string, old, nu *user) {
	if nu == nil {
		s.dir.setRegistered(name, false)
		s.watches.mu.Lock()
		delete(s.watches.told, name)
		s.watches.mu.Unlock()
		if old != nil && rawStatus(&old.rec) != proto.StatusOffline {
			p := s.presenceOf(name, &old.rec)
			p.Status = proto.StatusOffline
			s.watches.notify(name, p)
		}
		return
	}
	if old == nil {
		s.dir.setRegistered(name, true)
	}
	if nu.rec.W == s.inc {
		return // written here: this node's index and watchers heard when it happened
	}
	lp, _ := s.lookupPresence(name) // a local session's word wins
	s.dir.setOnline(name, lp.Online())
	w := s.watches
	w.mu.Lock()
	prev, wasTold := w.told[name]
	if !wasTold {
		prev = proto.StatusOffline
		if old != nil {
			prev = rawStatus(&old.rec)
		}
	}
	sameKeys := old != nil && bytes.Equal(old.rec.Key, nu.rec.Key) && bytes.Equal(old.rec.EncKey, nu.rec.EncKey) && old.rec.NAT == nu.rec.NAT
	// Someone signed in here is as its session says, whatever another
	// node wrote before this node's own write lands.
	if prev == lp.Status && (sameKeys || old == nil) {
		w.mu.Unlock()
		return // the same to others (another session, last seen, used)
	}
	w.told[name] = lp.Status
	w.mu.Unlock()
	w.notify(name, lp)
}

// presLock is the lock ordering name's local presence changes.
func (s *Server) presLock(name string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(name))
	return &s.presLocks[h.Sum32()%uint32(len(s.presLocks))]
}

// localChanged tells this node's watchers about a change of a user signed
// in (or out) here, when it happens; other nodes learn it from the bucket.
// The caller holds presLock(name).
func (s *Server) localChanged(name string, p proto.Presence) {
	s.dir.setOnline(name, p.Online())
	s.watches.mu.Lock()
	s.watches.told[name] = p.Status
	s.watches.mu.Unlock()
	s.watches.notify(name, p)
}

// desiredRecord is what name's record should say, given this node's
// sessions: online with the session here, if there is one; else offline
// if the record still names a session of this node that ended, or a node
// that died. write is false when the record is right as it is.
func (s *Server) desiredRecord(name string, r userRec, ended endedSession, hasEnded bool, deadAt int64, isDead bool) (next userRec, write bool) {
	next = r
	if ss := s.localSession(name); ss != nil {
		ss.mu.Lock()
		st := ss.status
		ss.mu.Unlock()
		next.Status, next.Node, next.Session, next.Since, next.NAT = st, s.inc, ss.id, ss.since, ss.natType()
		next.setBinding(ss.enc)
		if ss.used.Load() {
			next.Used = true
		}
		return next, next.Status != r.Status || next.Node != r.Node || next.Session != r.Session || next.NAT != r.NAT ||
			next.Since != r.Since || next.Used != r.Used || !bytes.Equal(next.EncKey, r.EncKey) || !bytes.Equal(next.EncSig, r.EncSig)
	}
	offline := func(at int64) (userRec, bool) {
		next.Status, next.Node, next.Session, next.Since, next.Seen, next.NAT = "", "", "", 0, at, ""
		return next, true
	}
	if hasEnded && r.Node == s.inc && r.Session == ended.id {
		next.Used = next.Used || ended.used
		return offline(ended.at)
	}
	if hasEnded && ended.used && !r.Used {
		next.Used = true // a session too short for its own write used the name
		return next, true
	}
	if isDead && r.Node != "" && r.Node != s.inc && !s.nodes.alive(r.Node) {
		return offline(deadAt)
	}
	return r, false
}
