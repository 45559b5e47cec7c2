package signal

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-voice/parley/proto"
)

// Nodes. Every process is one incarnation (a random id per start) of a
// node. Presence records name the incarnation holding a session; a record
// whose incarnation is not alive reads as offline. Incarnations announce
// themselves on parley.node every heartbeat (plain NATS, no JetStream, so
// it works while a cluster elects leaders) and say goodbye when they stop.
//
//	alive      its own, or heard from within nodeDeadAfter, or (in a
//	           cluster, during the first nodeDeadAfter after this node
//	           began to listen) not yet known to be dead
//	dead       said goodbye, or silent for nodeDeadAfter: every node writes
//	           its users offline (compare-and-set: the first write wins)
//	back       one taken for dead for its silence that beats again is
//	           alive again (it was slow, not gone): it writes its users
//	           online again when it sees them offline (users.go, apply)

// Heartbeat timing.
const (
	nodeBeat      = time.Second
	nodeDeadAfter = 4 * time.Second
)

type nodeBeatMsg struct {
	Inc     string `json:"inc"`
	Name    string `json:"name,omitempty"`
	Leaving bool   `json:"leaving,omitempty"`
}

type nodes struct {
	s    *Server
	inc  string
	sub  *nats.Subscription
	stop chan struct{}

	mu      sync.Mutex          // guards the fields below
	started time.Time           // when start began to listen
	seen    map[string]int64    // incarnation -> last heartbeat (ms, our clock)
	died    map[string]int64    // incarnation -> when it was found dead (ms)
	left    map[string]struct{} // incarnations (of died) that said goodbye
}

func newIncarnation() string {
	b := make([]byte, 9)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func newNodes(s *Server, inc string) *nodes {
	return &nodes{s: s, inc: inc, started: time.Now(), stop: make(chan struct{}),
		seen: map[string]int64{}, died: map[string]int64{}, left: map[string]struct{}{}}
}

// start subscribes to heartbeats and starts beating.
func (n *nodes) start() error {
	sub, err := n.s.st.nc.Subscribe(subjNode, n.onBeat)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.started = time.Now() // the grace for others' first beats counts from here
	n.mu.Unlock()
	n.sub = sub
	n.beat(false)
	n.s.bg.Add(1)
	go n.loop()
	return nil
}

// close says goodbye and stops.
func (n *nodes) close() {
	close(n.stop)
	if n.sub != nil {
		n.sub.Unsubscribe()
	}
	n.beat(true)
	n.s.st.nc.Flush()
}

func (n *nodes) beat(leaving bool) {
	b, _ := json.Marshal(nodeBeatMsg{Inc: n.inc, Name: n.s.cfg.NodeName, Leaving: leaving})
	n.s.st.nc.Publish(subjNode, b)
}

func (n *nodes) onBeat(m *nats.Msg) {
	var b nodeBeatMsg
	if json.Unmarshal(m.Data, &b) != nil || b.Inc == "" || b.Inc == n.inc {
		return
	}
	now := time.Now().UnixMilli()
	n.mu.Lock()
	_, wasDead := n.died[b.Inc]
	_, hasLeft := n.left[b.Inc]
	back := wasDead && !hasLeft && !b.Leaving
	switch {
	case b.Leaving:
		n.died[b.Inc] = now
		n.left[b.Inc] = struct{}{}
		delete(n.seen, b.Inc)
	case back:
		delete(n.died, b.Inc)
		n.seen[b.Inc] = now
	case !wasDead:
		n.seen[b.Inc] = now
	}
	n.mu.Unlock()
	if back {
		n.s.log.Info("signal: node back after a silence", "node", b.Name, "incarnation", b.Inc)
		n.s.users.nodeBack(b.Inc)
	}
	if b.Leaving && !wasDead {
		n.s.log.Info("signal: node left", "node", b.Name, "incarnation", b.Inc)
		n.s.nodeDied(b.Inc, now)
	}
}

// alive reports whether incarnation inc may hold sessions.
func (n *nodes) alive(inc string) bool {
	if inc == "" {
		return false
	}
	if inc == n.inc {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, dead := n.died[inc]; dead {
		return false
	}
	if t, ok := n.seen[inc]; ok {
		return time.Now().UnixMilli()-t < nodeDeadAfter.Milliseconds()
	}
	// Unknown: in a cluster it may be a node whose first heartbeat has
	// not reached us yet.
	return n.s.st.cluster && time.Since(n.started) < nodeDeadAfter
}

// diedAt is when inc was found dead (ms), or 0.
func (n *nodes) diedAt(inc string) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.died[inc]
}

func (n *nodes) loop() {
	defer n.s.bg.Done()
	t := time.NewTicker(nodeBeat)
	defer t.Stop()
	sweep := time.NewTicker(30 * time.Second)
	defer sweep.Stop()
	graceDone := !n.s.st.cluster
	if graceDone {
		n.s.sweepDeadSessions()
	}
	janitor := time.NewTicker(n.s.cfg.Registration.SweepEvery)
	defer janitor.Stop()
	var lease *lease // the janitor's: one node expires names
	defer func() {
		if lease != nil {
			lease.release()
		}
	}()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.beat(false)
			n.checkDeaths()
			if !graceDone && time.Since(n.started) >= nodeDeadAfter {
				graceDone = true
				n.s.sweepDeadSessions()
			}
			if lease == nil {
				lease = n.s.tryLease("janitor")
			} else if !lease.renew() {
				lease = nil
			}
		case <-sweep.C:
			if graceDone {
				n.s.sweepDeadSessions()
			}
		case <-janitor.C:
			if lease != nil {
				n.s.janitor() // limits.go
			}
		}
	}
}

// checkDeaths finds incarnations that went silent.
func (n *nodes) checkDeaths() {
	now := time.Now().UnixMilli()
	var dead []string
	n.mu.Lock()
	for inc, t := range n.seen {
		if now-t >= nodeDeadAfter.Milliseconds() {
			delete(n.seen, inc)
			n.died[inc] = now
			dead = append(dead, inc)
		}
	}
	for inc, t := range n.died {
		if now-t > int64(time.Hour/time.Millisecond) {
			delete(n.died, inc) // records naming it were rewritten long ago
			delete(n.left, inc)
		}
	}
	n.mu.Unlock()
	for _, inc := range dead {
		n.s.log.Warn("signal: node silent, taking it as dead", "incarnation", inc, "after", nodeDeadAfter)
		n.s.nodeDied(inc, now)
	}
}

// nodeDied writes offline the users a dead incarnation held, and demotes
// its supernodes.
func (s *Server) nodeDied(inc string, at int64) {
	s.users.nodeDied(inc, at)
	s.sn.dir.nodeDied(inc)
}

// sweepDeadSessions finds records that name an incarnation that is not
// alive (a node that died before this one started, or this node's own
// previous run) and has them written offline.
func (s *Server) sweepDeadSessions() {
	s.users.mu.RLock()
	incs := map[string]bool{}
	for _, x := range s.users.m {
		if x.rec.Status != "" && x.rec.Status != proto.StatusOffline && x.rec.Node != s.inc {
			incs[x.rec.Node] = true
		}
	}
	s.users.mu.RUnlock()
	s.sn.dir.mu.Lock()
	for _, r := range s.sn.dir.recs {
		if r.State == proto.SupernodePromoted && r.Node != s.inc {
			incs[r.Node] = true
		}
	}
	s.sn.dir.mu.Unlock()
	now := time.Now().UnixMilli()
	for inc := range incs {
		if !s.nodes.alive(inc) {
			s.nodeDied(inc, now)
		}
	}
}

// lease is ownership of a key in the leases bucket while it is renewed.
type lease struct {
	s   *Server
	key string
	rev uint64
}

// tryLease takes the lease named key if nobody holds it.
func (s *Server) tryLease(key string) *lease {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	rev, err := s.st.leases.Create(ctx, key, []byte(s.inc))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			s.log.Debug("signal: lease", "key", key, "err", err)
		}
		return nil
	}
	return &lease{s: s, key: key, rev: rev}
}

// renew keeps the lease; false when it was lost.
func (l *lease) renew() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	rev, err := l.s.st.leases.Update(ctx, l.key, []byte(l.s.inc), l.rev)
	if err != nil {
		l.s.log.Debug("signal: lease lost", "key", l.key, "err", err)
		return false
	}
	l.rev = rev
	return true
}

// release gives the lease up (briefly: at a stop, it expires anyway).
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	l.s.st.leases.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
}
