package signal

import (
	"bytes"
	"cmp"
	"slices"

	"github.com/parley-voice/parley/proto"
)

// Presence. Every node learns every change of the users bucket through
// its watch (users.go) and tells the sessions signed in to it that care.

// watches decides which local sessions hear of a user's presence.
type watches struct {
	s *Server
}

func newWatches(s *Server) *watches { return &watches{s: s} }

// sessionReady runs when ss has been welcomed (s.mu held).
func (w *watches) sessionReady(ss *session) {}

// sessionGone runs when ss ended.
func (w *watches) sessionGone(ss *session) {}

// notify tells the local sessions that watch name about p.
func (w *watches) notify(name string, p proto.Presence) {
	env, err := proto.New(proto.TypePresence, "", "", &p)
	if err != nil {
		return
	}
	b, err := proto.Encode(env)
	if err != nil {
		return
	}
	s := w.s
	s.mu.RLock()
	targets := make([]*session, 0, len(s.local))
	for n, o := range s.local {
		if n != name {
			targets = append(targets, o)
		}
	}
	s.mu.RUnlock()
	for _, o := range targets {
		o.enqueue(b)
	}
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
// tells watchers when what they see of the user changed.
func (s *Server) userChanged(name string, old, nu *user) {
	if nu == nil {
		if old != nil && rawStatus(&old.rec) != proto.StatusOffline {
			p := s.presenceOf(name, &old.rec)
			p.Status = proto.StatusOffline
			s.watches.notify(name, p)
		}
		return
	}
	if old == nil {
		if rawStatus(&nu.rec) == proto.StatusOffline {
			return // a new name, not signed in yet
		}
	} else if rawStatus(&old.rec) == rawStatus(&nu.rec) && bytes.Equal(old.rec.Key, nu.rec.Key) &&
		bytes.Equal(old.rec.EncKey, nu.rec.EncKey) && old.rec.NAT == nu.rec.NAT {
		return // the same to others (another session, last seen, used)
	}
	s.watches.notify(name, s.presenceOf(name, &nu.rec))
}

// maxOfflineListed bounds the offline users a welcome lists.
const maxOfflineListed = 100

// welcomeList is the presence a welcome carries: every user online and the
// most recently seen offline ones.
func (s *Server) welcomeList(me string) []proto.Presence {
	var on, off []proto.Presence
	s.users.mu.RLock()
	for n, x := range s.users.m {
		if n == me {
			continue
		}
		p := s.presenceOf(n, &x.rec)
		if p.Status == proto.StatusOffline {
			if p.LastSeen != 0 {
				off = append(off, p)
			}
			continue
		}
		on = append(on, p)
	}
	s.users.mu.RUnlock()
	slices.SortFunc(off, func(a, b proto.Presence) int {
		return cmp.Or(cmp.Compare(b.LastSeen, a.LastSeen), cmp.Compare(a.Name, b.Name))
	})
	return append(on, off[:min(len(off), maxOfflineListed)]...)
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
		return offline(ended.at)
	}
	if isDead && r.Node != "" && r.Node != s.inc && !s.nodes.alive(r.Node) {
		return offline(deadAt)
	}
	return r, false
}
